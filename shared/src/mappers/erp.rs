//! ERP formats: `PATCH /api/orders/{id}` and `PUT /api/customers/{id}` for local changes;
//! `PUT /api/inventory/{sku}` with `{sku, warehouseCode, qtyOnHand}` (read back
//! with `GET /api/inventory/{sku}?warehouseCode=`); inbound
//! inventory messages become `count` adjustments; `GET /api/inventory?offset=&limit=` lists
//! stock levels a page at a time (`{data: [...], has_more}`) for bulk loads.

use reqwest::Method;
use serde_json::{Value, json};

use crate::{outbound::OutboundRequest, schemas::inventory::StockLevel};

/// Reads one record of one of the ERP's lists as it is now (`GET /api/{list}/{id}`).
pub fn read_record(list: &str, id: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::GET,
        path: format!("/api/{list}/{}", super::path_segment(id)),
        body: Value::Null,
    }
}

/// An order's status changed here: `PATCH /api/orders/{id}` with `{status}`.
pub fn order_status(erp_order_id: &str, status: &str) -> OutboundRequest {
    OutboundRequest {
        method: Method::PATCH,
        path: format!("/api/orders/{}", super::path_segment(erp_order_id)),
        body: json!({"status": status}),
    }
}

/// A customer changed (or was created) here: `PUT /api/customers/{id}` with the ERP's names
/// of the customer fields (`name`, `email`, `phone`; absent values as `null`).
pub fn customer(erp_customer_id: &str, record: &serde_json::Map<String, Value>) -> OutboundRequest {
    let mut body = serde_json::Map::new();
    for field in webhook::fields("customer").unwrap_or_default() {
        body.insert(field.crm.to_owned(), record.get(field.local).cloned().unwrap_or(Value::Null));
    }
    OutboundRequest {
        method: Method::PUT,
        path: format!("/api/customers/{}", super::path_segment(erp_customer_id)),
        body: Value::Object(body),
    }
}

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
    list_path("inventory", offset, limit)
}

/// The path of one page of one of the ERP's lists (`inventory`, `customers`, `orders`,
/// `products`).
pub fn list_path(list: &str, offset: u64, limit: usize) -> String {
    format!("/api/{list}?offset={offset}&limit={limit}")
}

/// A page of one of the ERP's lists: its records (raw; stock levels are read by
/// [`inventory_record`]) and whether more follow.
pub fn list_page(body: Value) -> Result<(Vec<Value>, bool), String> {
    let Value::Object(mut page) = body else {
        return Err("the ERP's list page is not a JSON object".to_owned());
    };
    let Some(Value::Array(records)) = page.remove("data") else {
        return Err("the ERP's list page has no `data` array".to_owned());
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
        let (records, more) = list_page(json!({"data": [{"sku": "A"}], "has_more": true})).unwrap();
        assert_eq!((records.len(), more), (1, true));
        assert!(!list_page(json!({"data": []})).unwrap().1);
        assert!(list_page(json!({"items": []})).unwrap_err().contains("data"));
        assert!(list_page(json!([1])).is_err());
    }

    #[test]
    fn stock_level_uses_the_erp_field_names() {
        let req =
            stock_level(&StockLevel { sku: "A-1".into(), warehouse: "W1".into(), on_hand: 5 });
        assert_eq!(req.path, "/api/inventory/A-1");
        assert_eq!(req.body, json!({"sku": "A-1", "warehouseCode": "W1", "qtyOnHand": 5}));
    }
}

/// The ERP's webhook: `{eventType, entity, entityId, payload}` (see [`parse_webhook`]).
pub mod webhook {
    use serde_json::{Map, Value};
    use sha2::{Digest, Sha256};

    use crate::{
        mappers::fields::{Field, FieldError, Kind, field, invalid, to_local},
        schemas::erp::ErpWebhook,
    };

    /// The entities the ERP reports, by their webhook name.
    pub const ENTITIES: [&str; 6] =
        ["salesOrder", "purchaseOrder", "invoice", "inventory", "shipment", "customer"];

    const SALES_ORDER: &[Field] = &[
        field("orderNumber", "order_number", Kind::Text),
        field("customerId", "customer_id", Kind::Text),
        field("orderDate", "order_date", Kind::Date),
        field("requestedShipDate", "ship_date", Kind::Date),
        field("status", "status", Kind::Text),
        field("subtotal", "subtotal", Kind::Decimal),
        field("taxAmount", "tax", Kind::Decimal),
        field("shippingAmount", "shipping", Kind::Decimal),
        field("total", "total", Kind::Decimal),
        field("currency", "currency", Kind::Text),
    ];
    const LINE: &[Field] = &[
        field("sku", "sku", Kind::Text),
        field("description", "description", Kind::Text),
        field("quantity", "quantity", Kind::Decimal),
        field("unitPrice", "unit_price", Kind::Decimal),
        field("discount", "discount", Kind::Decimal),
        field("lineTotal", "total", Kind::Decimal),
    ];
    const CUSTOMER: &[Field] = &[
        field("name", "name", Kind::Text),
        field("email", "email", Kind::Text),
        field("phone", "phone", Kind::Text),
    ];
    const PRODUCT: &[Field] = &[
        field("name", "name", Kind::Text),
        field("description", "description", Kind::Text),
        field("unitPrice", "unit_price", Kind::Decimal),
        field("currency", "currency", Kind::Text),
    ];
    const INVOICE: &[Field] = &[
        field("invoiceNumber", "invoice_number", Kind::Text),
        field("orderId", "order_id", Kind::Text),
        field("customerId", "customer_id", Kind::Text),
        field("status", "status", Kind::Text),
        field("total", "total", Kind::Decimal),
        field("currency", "currency", Kind::Text),
        field("issueDate", "issue_date", Kind::Date),
        field("dueDate", "due_date", Kind::Date),
    ];
    const PURCHASE_ORDER: &[Field] = &[
        field("poNumber", "po_number", Kind::Text),
        field("supplier", "supplier", Kind::Text),
        field("status", "status", Kind::Text),
        field("total", "total", Kind::Decimal),
        field("currency", "currency", Kind::Text),
        field("expectedDate", "expected_date", Kind::Date),
    ];
    const SHIPMENT: &[Field] = &[
        field("orderId", "order_id", Kind::Text),
        field("carrier", "carrier", Kind::Text),
        field("trackingNumber", "tracking_number", Kind::Text),
        field("shipDate", "ship_date", Kind::Date),
        field("estimatedDelivery", "estimated_delivery", Kind::Date),
        field("status", "status", Kind::Text),
    ];

    /// The payload's field table of an entity (`None`: inventory, a count for inventory-sync).
    /// `product` is only listed (bulk loads), never reported by webhook.
    pub fn fields(entity: &str) -> Option<&'static [Field]> {
        match entity {
            "product" => Some(PRODUCT),
            "salesOrder" => Some(SALES_ORDER),
            "purchaseOrder" => Some(PURCHASE_ORDER),
            "invoice" => Some(INVOICE),
            "shipment" => Some(SHIPMENT),
            "customer" => Some(CUSTOMER),
            _ => None,
        }
    }

    /// Payload fields each entity must carry.
    fn required(entity: &str) -> &'static [&'static str] {
        match entity {
            "salesOrder" => &["orderNumber", "status"],
            "purchaseOrder" | "invoice" => &["status"],
            "shipment" => &["orderId", "status"],
            "product" => &["name"],
            _ => &[],
        }
    }

    /// Checks a record's payload as a webhook's would be: its fields, the required ones and, for
    /// a sales order, its lines. Errors name `payload.<field>`.
    pub fn check_payload(entity: &str, payload: &Map<String, Value>) -> Result<(), FieldError> {
        let Some(table) = fields(entity) else {
            return Ok(());
        };
        match payload.get("updatedAt") {
            None | Some(Value::Null) => {}
            Some(Value::String(at)) if chrono::DateTime::parse_from_rfc3339(at).is_ok() => {}
            Some(_) => {
                return Err(invalid(
                    "payload.updatedAt",
                    "must be an RFC 3339 time with its offset (2026-12-01T10:00:00Z)",
                ));
            }
        }
        let row = to_local(table, payload, "payload.")?;
        for name in required(entity) {
            let local = table.iter().find(|f| f.crm == *name).map_or(*name, |f| f.local);
            if row.get(local).is_none_or(Value::is_null) {
                return Err(invalid(format!("payload.{name}"), "is required"));
            }
        }
        if entity == "salesOrder" {
            lines(payload)?;
        }
        Ok(())
    }

    /// A sales order's lines as local rows (`line_number` from 1); an invalid line names
    /// `payload.lineItems[i].<field>`.
    pub fn lines(payload: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, FieldError> {
        let Some(items) = payload.get("lineItems") else {
            return Ok(Vec::new());
        };
        let items =
            items.as_array().ok_or_else(|| invalid("payload.lineItems", "must be an array"))?;
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("payload.lineItems[{i}].");
                let item = item
                    .as_object()
                    .ok_or_else(|| invalid(&at[..at.len() - 1], "must be an object"))?;
                let mut row = to_local(LINE, item, &at)?;
                for name in ["sku", "quantity"] {
                    if row.get(name).is_none_or(Value::is_null) {
                        return Err(invalid(format!("{at}{name}"), "is required"));
                    }
                }
                row.insert("line_number".into(), Value::from(i as i64 + 1));
                Ok(row)
            })
            .collect()
    }

    /// Reads and validates a verified ERP webhook: its id (the sender's delivery id, or a
    /// digest of its content when it carries the ERP's `updatedAt`, so a redelivery is
    /// recognised) and the event. An unknown entity
    /// or event type is an error naming it; so is an invalid payload field.
    pub fn parse_webhook(
        body: &Value,
        delivery_id: Option<&str>,
    ) -> Result<(String, ErpWebhook), FieldError> {
        let text = |name: &str| -> Result<String, FieldError> {
            body.get(name)
                .and_then(|v| {
                    v.as_str().map(str::to_owned).or_else(|| v.as_i64().map(|n| n.to_string()))
                })
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(name, "is required and must be a string"))
        };
        let entity = text("entity")?;
        if !ENTITIES.contains(&entity.as_str()) {
            return Err(invalid(
                "entity",
                format!("Unknown entity: {entity} (one of {})", ENTITIES.join(", ")),
            ));
        }
        let event_type = text("eventType")?;
        let known = matches!(event_type.as_str(), "created" | "updated")
            || (entity == "inventory" && event_type == "counted");
        if !known {
            return Err(invalid(
                "eventType",
                format!("Unknown event type: {event_type} (created or updated)"),
            ));
        }
        let entity_id = text("entityId")?;
        let payload = body
            .get("payload")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("payload", "is required and must be an object"))?;
        match fields(&entity) {
            Some(_) => check_payload(&entity, payload)?,
            None => {
                let count = serde_json::from_value::<crate::schemas::erp::ErpInventory>(
                    Value::Object(payload.clone()),
                )
                .map_err(|e| invalid("payload", e.to_string()))?;
                if count.updated_at.is_none() && count.version.is_none() {
                    return Err(invalid(
                        "payload.updatedAt",
                        "is required (the ERP's time of the count, RFC 3339), or payload.version",
                    ));
                }
                if count.qty_on_hand < 0 {
                    return Err(invalid("payload.qtyOnHand", "must not be negative"));
                }
            }
        }
        let webhook = ErpWebhook {
            event_type,
            entity,
            entity_id,
            payload: Value::Object(payload.clone()),
            retry_of: None,
        };
        // Without the sender's delivery id, a digest of the content identifies the event only
        // when the content carries the ERP's own time of the state (`updatedAt`): the same
        // time is the same state, so a redelivery is recognised however late. Without it, equal
        // content is no proof of a redelivery (a status that goes A -> B -> A sends A twice):
        // every delivery is its own event, which is harmless when it is one (applying the same
        // state again changes nothing and sends no email).
        let digest = || -> String {
            let digest = Sha256::digest(serde_json::to_vec(&webhook).unwrap_or_default());
            digest.iter().map(|b| format!("{b:02x}")).collect()
        };
        let stamped = webhook.payload.get("updatedAt").is_some_and(|v| !v.is_null());
        let id = match delivery_id {
            Some(id) => id.to_owned(),
            None if stamped => digest(),
            None => format!("{}-{}", digest(), uuid::Uuid::now_v7().simple()),
        };
        Ok((id, webhook))
    }

    #[cfg(test)]
    mod tests {
        use serde_json::json;

        use super::*;

        #[test]
        fn unknown_entities_and_event_types_are_named_and_payloads_checked() {
            let order = json!({"eventType": "created", "entity": "salesOrder", "entityId": "SO-1",
                "payload": {"orderNumber": "1001", "status": "open", "total": 12.5,
                    "lineItems": [{"sku": "A", "quantity": 2, "unitPrice": 6.25}]}});
            let (id, event) = parse_webhook(&order, None).unwrap();
            assert_eq!(event.entity.as_str(), "salesOrder");
            assert_ne!(
                parse_webhook(&order, None).unwrap().0,
                id,
                "equal content without the ERP's time is no proof of a redelivery"
            );
            let mut stamped = order.clone();
            stamped["payload"]["updatedAt"] = json!("2026-12-01T10:00:00Z");
            let (id, _) = parse_webhook(&stamped, None).unwrap();
            assert_eq!(id.len(), 64);
            assert_eq!(
                parse_webhook(&stamped, None).unwrap().0,
                id,
                "a redelivery has the same id"
            );
            let mut bad = order.clone();
            bad["entity"] = json!("lead");
            assert_eq!(parse_webhook(&bad, None).unwrap_err().field, "entity");
            let mut bad = order.clone();
            bad["eventType"] = json!("exploded");
            assert_eq!(parse_webhook(&bad, None).unwrap_err().field, "eventType");
            let mut bad = order.clone();
            bad["payload"]["lineItems"][0]["quantity"] = json!("two");
            assert_eq!(
                parse_webhook(&bad, None).unwrap_err().field,
                "payload.lineItems[0].quantity"
            );
            let mut bad = order;
            bad["payload"].as_object_mut().unwrap().remove("orderNumber");
            assert_eq!(parse_webhook(&bad, None).unwrap_err().field, "payload.orderNumber");
            let count = json!({"eventType": "updated", "entity": "inventory", "entityId": "SKU-1",
                "payload": {"qtyOnHand": "x", "warehouse": "W1", "version": 3}});
            assert_eq!(parse_webhook(&count, None).unwrap_err().field, "payload");
            let count = json!({"eventType": "updated", "entity": "inventory", "entityId": "SKU-1",
                "payload": {"qtyOnHand": 4, "warehouse": "W1"}});
            assert_eq!(parse_webhook(&count, None).unwrap_err().field, "payload.updatedAt");
            let count = json!({"eventType": "counted", "entity": "inventory", "entityId": "SKU-1",
                "payload": {"qtyOnHand": 4, "warehouse": "W1", "updatedAt": "2026-12-01T10:00:00Z"}});
            assert!(parse_webhook(&count, None).is_ok());
        }
    }
}
