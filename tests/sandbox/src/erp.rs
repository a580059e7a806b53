//! The simulated ERP: its own records (customers, orders and products, each a JSON object
//! keyed by the ERP's id) and its stock levels.
//!
//! - `GET /api/{customers,orders,products}?offset=&limit=` lists them by id, a page at a time
//!   (`{data, has_more, total}`, each record with its `id`); `GET /api/<list>/<id>` reads one.
//! - `PATCH /api/orders/<id>` `{status}` changes an order's status; `PUT /api/customers/<id>`
//!   `{name, email, phone}` creates or replaces a customer's contact fields. Each change is
//!   stamped with the ERP's own `updatedAt`.
//! - `/api/inventory`: stock levels, listed a page at a time or filtered by `sku=A,B`, read
//!   one by one (`?warehouseCode=`) and set with `PUT`.
//! - The ERP's own users change records first ([`SimServer::erp_record`]); the ERP then
//!   reports the change as a webhook that the test delivers.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::http::{
    SimServer, State, held, int_field, percent_decode, problem, query_param, str_field,
};

/// `(list, id) -> record`.
pub(crate) type Records = BTreeMap<(String, String), Value>;

type Answer = Result<(u16, Value), (u16, Value)>;

/// `offset` (default 0) and `limit` (default 100, at most 1000) of a list request.
pub(crate) fn offset_window(query: &str) -> Result<(usize, usize), (u16, Value)> {
    let param = |name: &str, default: usize| -> Result<usize, (u16, Value)> {
        query_param(query, name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| problem(400, &format!("{name} must be a number")))
        })
    };
    let (offset, limit) = (param("offset", 0)?, param("limit", 100)?);
    if !(1..=1000).contains(&limit) {
        return Err(problem(400, "limit must be between 1 and 1000"));
    }
    Ok((offset, limit))
}

fn with_id(id: &str, record: &Value) -> Value {
    let mut record = record.clone();
    record["id"] = json!(id);
    record
}

/// The records API; `segments` start after `api`.
pub(crate) fn route(
    records: &mut Records,
    method: &str,
    segments: &[&str],
    query: &str,
    body: &Value,
) -> Answer {
    match (method, segments) {
        ("GET", [list]) => {
            let (offset, limit) = offset_window(query)?;
            let all: Vec<(&String, &Value)> = records
                .iter()
                .filter(|((k, _), _)| k == list)
                .map(|((_, id), v)| (id, v))
                .collect();
            let data: Vec<Value> =
                all.iter().skip(offset).take(limit).map(|(id, v)| with_id(id, v)).collect();
            Ok((
                200,
                json!({"data": data, "has_more": offset + limit < all.len(), "total": all.len()}),
            ))
        }
        ("GET", [list, id]) => {
            let id = percent_decode(id);
            let record = records
                .get(&((*list).to_owned(), id.clone()))
                .ok_or_else(|| problem(404, "no such record"))?;
            Ok((200, with_id(&id, record)))
        }
        ("PATCH", ["orders", id]) => {
            let status = str_field(body, "status")?.to_owned();
            let order = records
                .get_mut(&("orders".to_owned(), percent_decode(id)))
                .ok_or_else(|| problem(404, "no such order"))?;
            order["status"] = json!(status);
            order["updatedAt"] = json!(chrono::Utc::now().to_rfc3339());
            Ok((200, order.clone()))
        }
        ("PUT", ["customers", id]) => {
            let customer = records
                .entry(("customers".to_owned(), percent_decode(id)))
                .or_insert_with(|| json!({}));
            for name in ["name", "email", "phone"] {
                customer[name] = body.get(name).cloned().unwrap_or(Value::Null);
            }
            customer["updatedAt"] = json!(chrono::Utc::now().to_rfc3339());
            Ok((200, customer.clone()))
        }
        _ => Err(problem(404, "no such endpoint")),
    }
}

/// The stock levels API (`/api/inventory...`); `segments` start after `inventory`.
pub(crate) fn inventory_route(
    state: &mut State,
    method: &str,
    segments: &[&str],
    query: &str,
    body: &Value,
) -> Answer {
    match (method, segments) {
        ("GET", []) if query_param(query, "sku").is_some() => {
            // Filtered by skus (`sku=A,B`, every warehouse): `{data}`.
            let wanted: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| *k == "sku")
                .flat_map(|(_, v)| v.split(',').map(percent_decode).collect::<Vec<_>>())
                .collect();
            let data: Vec<Value> = state
                .levels
                .iter()
                .filter(|((sku, _), _)| wanted.contains(sku))
                .map(|((sku, wh), qty)| json!({"sku": sku, "warehouseCode": wh, "qtyOnHand": qty}))
                .collect();
            Ok((200, json!({"data": data})))
        }
        ("GET", []) => {
            // Offset pagination, ordered by sku then warehouse: `{data, has_more, total}`.
            let (offset, limit) = crate::erp::offset_window(query)?;
            let data: Vec<Value> = state
                .levels
                .iter()
                .skip(offset)
                .take(limit)
                .map(|((sku, wh), qty)| json!({"sku": sku, "warehouseCode": wh, "qtyOnHand": qty}))
                .collect();
            let total = state.levels.len();
            Ok((200, json!({"data": data, "has_more": offset + limit < total, "total": total})))
        }
        ("GET", [sku]) => {
            let sku = percent_decode(sku);
            let warehouse = query_param(query, "warehouseCode")
                .ok_or_else(|| problem(400, "warehouseCode is required"))?;
            let qty = held(state, &sku, &warehouse)?;
            Ok((200, json!({"sku": sku, "warehouseCode": warehouse, "qtyOnHand": qty})))
        }
        ("PUT", [sku]) => {
            if str_field(body, "sku")? != *sku {
                return Err(problem(422, "sku does not match the URL"));
            }
            let warehouse = str_field(body, "warehouseCode")?;
            let qty = int_field(body, "qtyOnHand")?;
            state.levels.insert(((*sku).to_owned(), warehouse.to_owned()), qty);
            Ok((200, json!({"sku": sku, "warehouseCode": warehouse, "qtyOnHand": qty})))
        }
        _ => Err(problem(404, "no such endpoint")),
    }
}

impl SimServer {
    /// Stores a record in one of the ERP's lists (`customers`, `orders`, `products`), as its
    /// own users do; returns the webhook the ERP reports it with
    /// (`{eventType, entity, entityId, payload}`; products are listed, not reported: `null`).
    pub fn erp_record(&self, collection: &str, id: &str, record: Value) -> Value {
        let mut state = self.state_guard();
        let key = (collection.to_owned(), id.to_owned());
        let event_type = if state.erp_records.contains_key(&key) { "updated" } else { "created" };
        state.erp_records.insert(key, record.clone());
        let entity = match collection {
            "customers" => "customer",
            "orders" => "salesOrder",
            _ => return Value::Null,
        };
        json!({"eventType": event_type, "entity": entity, "entityId": id, "payload": record})
    }

    /// A record of one of the ERP's lists as the ERP holds it now.
    pub fn erp_get(&self, collection: &str, id: &str) -> Option<Value> {
        self.state_guard().erp_records.get(&(collection.to_owned(), id.to_owned())).cloned()
    }
}
