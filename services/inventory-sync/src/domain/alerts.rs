//! Stock alerts: raised when a level crosses a threshold, not on every change beyond it.

use std::collections::BTreeMap;

use serde_json::json;
use shared::schemas::sync::{AlertRaised, Severity};

use super::adjuster::Applied;

/// The alerts one applied adjustment raises.
pub fn crossings(
    a: &Applied,
    product: &str,
    reorder_point: i64,
    low_stock: bool,
) -> Vec<AlertRaised> {
    let (before, after) = (a.quantity_before, a.new_quantity);
    let fields = BTreeMap::from([
        ("sku".to_owned(), json!(a.sku)),
        ("product".to_owned(), json!(product)),
        ("warehouse".to_owned(), json!(a.warehouse)),
        ("current_qty".to_owned(), json!(after)),
        ("reorder_point".to_owned(), json!(reorder_point)),
    ]);
    let mut alerts = Vec::new();
    if before > 0 && after == 0 {
        alerts.push(AlertRaised {
            severity: Severity::Critical,
            kind: "out_of_stock".into(),
            title: format!("Out of Stock: {}", a.sku),
            text: format!(
                "🚨 *Out of Stock*\n\nSKU: {}\nProduct: {product}\nWarehouse: {}",
                a.sku, a.warehouse
            ),
            dedup_key: format!("out_of_stock/{}/{}", a.sku, a.warehouse),
            fields: fields.clone(),
        });
    } else if low_stock && reorder_point > 0 && before > reorder_point && after <= reorder_point {
        alerts.push(AlertRaised {
            severity: Severity::Warning,
            kind: "low_stock".into(),
            title: format!("Low Stock Alert: {}", a.sku),
            text: format!(
                "⚠️ *Low Stock Alert*\n\nSKU: {}\nProduct: {product}\nWarehouse: {}\nCurrent Qty: {after}\nReorder Point: {reorder_point}",
                a.sku, a.warehouse
            ),
            dedup_key: format!("low_stock/{}/{}", a.sku, a.warehouse),
            fields: fields.clone(),
        });
    }
    if before == 0 && after > 0 {
        alerts.push(AlertRaised {
            severity: Severity::Info,
            kind: "back_in_stock".into(),
            title: format!("Back in Stock: {}", a.sku),
            text: format!("✅ *Back in Stock*\n\nSKU: {}\nProduct: {product}\nWarehouse: {}\nCurrent Qty: {after}", a.sku, a.warehouse),
            dedup_key: format!("out_of_stock/{}/{}", a.sku, a.warehouse),
            fields,
        });
    }
    alerts
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use shared::schemas::inventory::AdjustmentType;

    use super::*;

    fn applied(before: i64, after: i64) -> Applied {
        Applied {
            ledger_id: 1,
            source: "pos".into(),
            reference: "r".into(),
            sku: "SKU-1".into(),
            warehouse: "W1".into(),
            kind: AdjustmentType::Shipment,
            quantity: (before - after).abs(),
            quantity_before: before,
            new_quantity: after,
            reason: None,
            created_at: Utc::now(),
            replayed: false,
        }
    }

    fn kinds(alerts: Vec<AlertRaised>) -> Vec<String> {
        alerts.into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn low_stock_fires_only_on_the_crossing() {
        assert_eq!(kinds(crossings(&applied(12, 10), "Mug", 10, true)), ["low_stock"]);
        assert!(crossings(&applied(10, 8), "Mug", 10, true).is_empty());
        assert!(crossings(&applied(12, 10), "Mug", 10, false).is_empty());
    }

    #[test]
    fn reaching_zero_is_out_of_stock_and_leaving_zero_is_back_in_stock() {
        assert_eq!(kinds(crossings(&applied(3, 0), "Mug", 10, true)), ["out_of_stock"]);
        assert_eq!(kinds(crossings(&applied(0, 5), "Mug", 10, true)), ["back_in_stock"]);
    }

    #[test]
    fn alert_text_matches_the_operators_format() {
        let alert = crossings(&applied(12, 10), "Mug", 10, true).remove(0);
        assert_eq!(
            alert.text,
            "⚠️ *Low Stock Alert*\n\nSKU: SKU-1\nProduct: Mug\nWarehouse: W1\nCurrent Qty: 10\nReorder Point: 10"
        );
        assert_eq!(alert.severity, Severity::Warning);
    }
}
