//! ERP formats: `PUT /api/inventory/{sku}` with `{sku, warehouseCode, qtyOnHand}` (read back
//! with `GET /api/inventory/{sku}?warehouseCode=`); inbound
//! inventory messages become `count` adjustments; `GET /api/inventory?offset=&limit=` lists
//! stock levels a page at a time (`{data: [...], has_more}`) for bulk loads.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

pub fn stock_level(level: &StockLevel) -> OutboundRequest {
    OutboundRequest {
        method: Method::PUT,
        path: format!("/api/inventory/{}", super::path_segment(&level.sku)),
        body: json!({"sku": level.sku, "warehouseCode": level.warehouse, "qtyOnHand": level.on_hand}),
    }
}

/// Reads the ERP's level of one sku in one warehouse (`GET /api/inventory/{sku}?warehouseCode=`).
pub fn read_stock_level(sku: &str, warehouse: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!(
            "/api/inventory/{}?warehouseCode={}",
            super::path_segment(sku),
            super::path_segment(warehouse)
        ),
        body: Value::Null,
    }
}

/// Reads the ERP's levels of several skus, every warehouse (`GET /api/inventory?sku=A,B`):
/// answered like a page of the list, `{data: [...]}`.
pub fn read_stock_levels(skus: &[&str]) -> OutboundRequest {
    let skus: Vec<String> = skus.iter().map(|s| super::path_segment(s)).collect();
    OutboundRequest {
        method: Method::GET,
        path: format!("/api/inventory?sku={}", skus.join(",")),
        body: Value::Null,
    }
}

/// The quantity of `sku` in `warehouse` in the ERP's answer to [`read_stock_level`] or
/// [`read_stock_levels`].
pub fn level_of(answer: &Value, sku: &str, warehouse: &str) -> Option<i64> {
    let matches = |r: &&Value| {
        r.get("sku").and_then(Value::as_str) == Some(sku)
            && r.get("warehouseCode").and_then(Value::as_str) == Some(warehouse)
    };
    match answer.get("data").and_then(Value::as_array) {
        Some(records) => records.iter().find(matches)?.get("qtyOnHand")?.as_i64(),
        None => Some(answer).filter(matches)?.get("qtyOnHand")?.as_i64(),
    }
}

/// The path of one page of the ERP's stock levels.
pub fn inventory_page_path(offset: u64, limit: usize) -> String {
    format!("/api/inventory?offset={offset}&limit={limit}")
}

/// A page of the ERP's stock-level list: its records (raw, each read by
/// [`inventory_record`]) and whether more follow.
pub fn inventory_page(body: Value) -> Result<(Vec<Value>, bool), String> {
    let Value::Object(mut page) = body else {
        return Err("the ERP's inventory page is not a JSON object".to_owned());
    };
    let Some(Value::Array(records)) = page.remove("data") else {
        return Err("the ERP's inventory page has no `data` array".to_owned());
    };
    let has_more = page.get("has_more").and_then(Value::as_bool).unwrap_or(false);
    Ok((records, has_more))
}

/// One ERP stock-level record; the error names the missing or invalid field.
pub fn inventory_record(record: &Value) -> Result<StockLevel, String> {
    let text = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{name} is missing or not a non-empty string"))
    };
    let on_hand = record
        .get("qtyOnHand")
        .and_then(Value::as_i64)
        .ok_or_else(|| "qtyOnHand is missing or not an integer".to_owned())?;
    Ok(StockLevel { sku: text("sku")?, warehouse: text("warehouseCode")?, on_hand })
}

/// An identifier for a record in error reports: `warehouse/sku`, or whatever part is there.
pub fn inventory_record_id(record: &Value, index: usize) -> String {
    match (
        record.get("warehouseCode").and_then(Value::as_str),
        record.get("sku").and_then(Value::as_str),
    ) {
        (Some(w), Some(s)) => format!("{w}/{s}"),
        (None, Some(s)) => s.to_owned(),
        _ => format!("#{index}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inventory_record_round_trips_through_the_push_format() {
        let level = StockLevel { sku: "A-1".into(), warehouse: "W1".into(), on_hand: 5 };
        assert_eq!(inventory_record(&stock_level(&level).body), Ok(level));
    }

    #[test]
    fn invalid_inventory_records_name_the_field() {
        let err = inventory_record(&json!({"sku": "A", "warehouseCode": "W1", "qtyOnHand": "7"}));
        assert!(err.unwrap_err().contains("qtyOnHand"));
        let err = inventory_record(&json!({"sku": "", "warehouseCode": "W1", "qtyOnHand": 7}));
        assert!(err.unwrap_err().contains("sku"));
        assert_eq!(inventory_record_id(&json!({"sku": "A"}), 3), "A");
        assert_eq!(inventory_record_id(&json!({}), 3), "#3");
    }

    #[test]
    fn an_inventory_page_needs_a_data_array() {
        let (records, more) =
            inventory_page(json!({"data": [{"sku": "A"}], "has_more": true})).unwrap();
        assert_eq!((records.len(), more), (1, true));
        assert!(!inventory_page(json!({"data": []})).unwrap().1);
        assert!(inventory_page(json!({"items": []})).unwrap_err().contains("data"));
        assert!(inventory_page(json!([1])).is_err());
    }

    #[test]
    fn stock_level_uses_the_erp_field_names() {
        let req =
            stock_level(&StockLevel { sku: "A-1".into(), warehouse: "W1".into(), on_hand: 5 });
        assert_eq!(req.path, "/api/inventory/A-1");
        assert_eq!(req.body, json!({"sku": "A-1", "warehouseCode": "W1", "qtyOnHand": 5}));
    }
}
