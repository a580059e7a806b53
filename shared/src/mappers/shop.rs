//! E-commerce (Shopify-style Admin API): inventory levels are set per inventory item and
//! location (`POST /admin/api/2024-10/inventory_levels/set.json`), and a product is made
//! unavailable (`inventory_policy: deny`) when it runs out everywhere.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub const API_VERSION: &str = "2024-10";

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::POST,
        path: format!("/admin/api/{API_VERSION}/inventory_levels/set.json"),
        body: json!({
            "inventory_item_id": level.sku,
            "location_id": level.warehouse,
            "available": level.on_hand,
        }),
    }
}

/// Reads one inventory level (`GET .../inventory_levels.json?inventory_item_ids=&location_ids=`).
pub fn read_stock_level(sku: &str, warehouse: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!(
            "/admin/api/{API_VERSION}/inventory_levels.json?inventory_item_ids={}&location_ids={}",
            super::path_segment(sku),
            super::path_segment(warehouse)
        ),
        body: Value::Null,
    }
}

/// Reads the levels of several items at several locations (Shopify's comma lists).
pub fn read_stock_levels(skus: &[&str], warehouses: &[&str]) -> OutboundRequest {
    let list = |v: &[&str]| v.iter().map(|s| super::path_segment(s)).collect::<Vec<_>>().join(",");
    OutboundRequest {
        method: Method::GET,
        path: format!(
            "/admin/api/{API_VERSION}/inventory_levels.json?inventory_item_ids={}&location_ids={}",
            list(skus),
            list(warehouses)
        ),
        body: Value::Null,
    }
}

/// The `available` figure of `sku` at `warehouse` in the shop's answer to [`read_stock_level`]
/// or [`read_stock_levels`].
pub fn level_of(answer: &Value, sku: &str, warehouse: &str) -> Option<i64> {
    answer
        .get("inventory_levels")?
        .as_array()?
        .iter()
        .find(|l| {
            l.get("inventory_item_id").and_then(Value::as_str) == Some(sku)
                && l.get("location_id").and_then(Value::as_str) == Some(warehouse)
        })?
        .get("available")?
        .as_i64()
}

/// Enables or disables selling the product.
pub fn product_availability(sku: &str, available: bool) -> OutboundRequest {
    OutboundRequest {
        method: Method::PUT,
        path: format!("/admin/api/{API_VERSION}/products/{}.json", super::path_segment(sku)),
        body: json!({"product": {
            "id": sku,
            "available": available,
            "inventory_policy": if available { "continue" } else { "deny" },
        }}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabling_a_product_denies_overselling() {
        let req = product_availability("A-1", false);
        assert_eq!(req.body["product"]["available"], false);
        assert_eq!(req.body["product"]["inventory_policy"], "deny");
    }
}
