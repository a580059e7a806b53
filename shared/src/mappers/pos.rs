//! Point of sale: `POST /inventory/update` with `{item_id, quantity, location_id}`; one item is
//! read with `GET /inventory/{item_id}?location_id=`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::POST,
        path: "/inventory/update".into(),
        body: json!({"item_id": level.sku, "quantity": level.on_hand, "location_id": level.warehouse}),
    }
}

/// Reads the quantity of one item at one location.
pub fn read_stock_level(sku: &str, warehouse: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!(
            "/inventory/{}?location_id={}",
            super::path_segment(sku),
            super::path_segment(warehouse)
        ),
        body: Value::Null,
    }
}

/// The quantity in the answer to [`read_stock_level`].
pub fn level_in(answer: &Value) -> Option<i64> {
    answer.get("quantity").and_then(Value::as_i64)
}
