//! Warehouse management: `PUT /api/inventory` with `{sku, location, qty}`.

use reqwest::Method;
use serde_json::json;

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::PUT,
        path: "/api/inventory".into(),
        body: json!({"sku": level.sku, "location": level.warehouse, "qty": level.on_hand}),
    }
}
