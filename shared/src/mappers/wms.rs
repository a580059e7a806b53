//! Warehouse management: `PUT /api/inventory` with `{sku, location, qty}`; one level is read
//! with `GET /api/inventory?sku=&location=`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::PUT,
        path: "/api/inventory".into(),
        body: json!({"sku": level.sku, "location": level.warehouse, "qty": level.on_hand}),
    }
}

/// Reads the quantity of one sku at one location.
pub fn read_stock_level(sku: &str, warehouse: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!(
            "/api/inventory?sku={}&location={}",
            super::path_segment(sku),
            super::path_segment(warehouse)
        ),
        body: Value::Null,
    }
}

/// The quantity in the answer to [`read_stock_level`].
pub fn level_in(answer: &Value) -> Option<i64> {
    answer.get("qty").and_then(Value::as_i64)
}
