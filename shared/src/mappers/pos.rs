//! Point of sale: `POST /inventory/update` with `{item_id, quantity, location_id}`.

use reqwest::Method;
use serde_json::json;

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::POST,
        path: "/inventory/update".into(),
        body: json!({"item_id": level.sku, "quantity": level.on_hand, "location_id": level.warehouse}),
    }
}
