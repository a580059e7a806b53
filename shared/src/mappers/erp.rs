//! ERP formats: `PUT /api/inventory/{sku}` with `{sku, warehouseCode, qtyOnHand}`; inbound
//! inventory messages become `count` adjustments.

use reqwest::Method;
use serde_json::json;

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::PUT,
        path: format!("/api/inventory/{}", level.sku),
        body: json!({"sku": level.sku, "warehouseCode": level.warehouse, "qtyOnHand": level.on_hand}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stock_level_uses_the_erp_field_names() {
        let req =
            stock_level(&StockLevel { sku: "A-1".into(), warehouse: "W1".into(), on_hand: 5 });
        assert_eq!(req.path, "/api/inventory/A-1");
        assert_eq!(req.body, json!({"sku": "A-1", "warehouseCode": "W1", "qtyOnHand": 5}));
    }
}
