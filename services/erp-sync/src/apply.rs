//! Applies the ERP's events (`webhooks.erp.<entity>`), one transaction per batch.
//!
//! Every record is an upsert keyed by the ERP's id, fenced by the ERP's time of the event
//! (`payload.updatedAt`, else the time it was accepted): an event older than the row's
//! `erp_updated_at` changes nothing, so redeliveries and reordered events are harmless. The
//! events' recorded outcomes (`webhook_events`) are the consumers' inbox.
//!
//! - A sales order is stored with all its lines in the same transaction (an update carrying
//!   `lineItems` replaces them).
//! - A shipment whose status becomes `delivered` makes its order `delivered`, with
//!   `delivered_at`.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Jsonb, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::{Map, Value};
use shared::{
    bus::{Delivery, HandlerError},
    db::PgPool,
    ingress::EventStatus,
    mappers::{erp::webhook, fields},
    schemas::erp::ErpWebhook,
};
use uuid::Uuid;

use crate::SCHEMA;

/// The entities erp-sync applies (inventory is inventory-sync's).
pub const ENTITIES: [&str; 5] = ["salesOrder", "purchaseOrder", "invoice", "shipment", "customer"];

/// `(table, key column)` of an entity.
fn table(entity: &str) -> Option<(&'static str, &'static str)> {
    match entity {
        "salesOrder" => Some(("orders", "erp_order_id")),
        "purchaseOrder" => Some(("purchase_orders", "erp_po_id")),
        "invoice" => Some(("invoices", "erp_invoice_id")),
        "shipment" => Some(("shipments", "erp_shipment_id")),
        "customer" => Some(("customers", "erp_customer_id")),
        _ => None,
    }
}

/// The ERP's time of an event.
fn event_time(event: &ErpWebhook, accepted: DateTime<Utc>) -> DateTime<Utc> {
    event
        .payload
        .get("updatedAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(accepted, |t| t.with_timezone(&Utc))
}

/// Upserts one record; `Some(previous status)` when a row was written (`None`: stale).
async fn upsert(
    conn: &mut AsyncPgConnection,
    event: &ErpWebhook,
    at: DateTime<Utc>,
) -> anyhow::Result<Option<Option<String>>> {
    #[derive(diesel::QueryableByName)]
    struct Written {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        previous: Option<String>,
    }
    let (table, key) =
        table(&event.entity).ok_or_else(|| anyhow::anyhow!("unknown entity {}", event.entity))?;
    let field_table = webhook::fields(&event.entity)
        .ok_or_else(|| anyhow::anyhow!("no fields for {}", event.entity))?;
    let payload = event.payload.as_object().cloned().unwrap_or_default();
    let row = fields::to_local(field_table, &payload, "payload.")
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.detail))?;
    let cols: Vec<&str> =
        field_table.iter().map(|f| f.local).filter(|c| row.contains_key(*c)).collect();
    let names: String = cols.iter().map(|c| format!(", {c}")).collect();
    let values: String = cols.iter().map(|c| format!(", r.{c}")).collect();
    let set: String = cols.iter().map(|c| format!("{c} = excluded.{c}, ")).collect();
    let has_status = field_table.iter().any(|f| f.local == "status");
    let previous =
        if has_status { "(SELECT status FROM erp.{table} WHERE {key} = $2)" } else { "NULL::text" };
    let previous = previous.replace("{table}", table).replace("{key}", key);
    let written: Vec<Written> = diesel::sql_query(format!(
        "WITH before AS (SELECT {previous} AS previous) \
         INSERT INTO erp.{table} AS t ({key}, erp_updated_at{names}) \
         SELECT $2, $3{values} FROM jsonb_populate_record(NULL::erp.{table}, $1) r \
         ON CONFLICT ({key}) DO UPDATE SET {set}erp_updated_at = excluded.erp_updated_at, updated_at = now() \
         WHERE t.erp_updated_at <= excluded.erp_updated_at \
         RETURNING (SELECT previous FROM before) AS previous"
    ))
    .bind::<Jsonb, _>(Value::Object(row))
    .bind::<Text, _>(&event.entity_id)
    .bind::<Timestamptz, _>(at)
    .load(conn)
    .await?;
    Ok(written.into_iter().next().map(|w| w.previous))
}

/// Replaces a sales order's lines.
async fn replace_lines(conn: &mut AsyncPgConnection, event: &ErpWebhook) -> anyhow::Result<usize> {
    let payload: Map<String, Value> = event.payload.as_object().cloned().unwrap_or_default();
    if !payload.contains_key("lineItems") {
        return Ok(0);
    }
    let lines =
        webhook::lines(&payload).map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.detail))?;
    diesel::sql_query(
        "DELETE FROM erp.order_lines WHERE order_id = (SELECT id FROM erp.orders WHERE erp_order_id = $1)",
    )
    .bind::<Text, _>(&event.entity_id)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO erp.order_lines (order_id, line_number, sku, description, quantity, unit_price, discount, total) \
         SELECT o.id, r.line_number, r.sku, r.description, r.quantity, r.unit_price, r.discount, r.total \
         FROM erp.orders o, jsonb_populate_recordset(NULL::erp.order_lines, $2) r WHERE o.erp_order_id = $1",
    )
    .bind::<Text, _>(&event.entity_id)
    .bind::<Jsonb, _>(Value::Array(lines.into_iter().map(Value::Object).collect()))
    .execute(conn)
    .await
    .map_err(Into::into)
}

/// Applies one event in the caller's transaction; its outcome.
async fn apply_one(
    conn: &mut AsyncPgConnection,
    event: &ErpWebhook,
    accepted: DateTime<Utc>,
) -> anyhow::Result<(EventStatus, Option<String>)> {
    let at = event_time(event, accepted);
    let Some(previous) = upsert(conn, event, at).await? else {
        return Ok((EventStatus::Applied, Some("stale: a newer ERP state is stored".into())));
    };
    let status = event.payload.get("status").and_then(Value::as_str);
    let mut reason = None;
    match event.entity.as_str() {
        "salesOrder" => {
            let lines = replace_lines(conn, event).await?;
            if event.event_type == "updated" && previous.is_some() && previous.as_deref() != status
            {
                reason = Some(format!(
                    "status changed from {} to {}",
                    previous.as_deref().unwrap_or("-"),
                    status.unwrap_or("-")
                ));
            } else if lines > 0 {
                reason = Some(format!("{lines} lines"));
            }
        }
        "shipment" if status == Some("delivered") && previous.as_deref() != Some("delivered") => {
            let order = event.payload.get("orderId").and_then(Value::as_str).unwrap_or_default();
            diesel::sql_query(
                "UPDATE erp.orders SET status = 'delivered', delivered_at = coalesce(delivered_at, now()), \
                 updated_at = now() WHERE erp_order_id = $1",
            )
            .bind::<Text, _>(order)
            .execute(conn)
            .await?;
            reason = Some(format!("order {order} delivered"));
        }
        _ => {}
    }
    Ok((EventStatus::Applied, reason))
}

/// Applies `batch` in one transaction; on a database error, one event per transaction, and an
/// event that still fails is recorded `failed` (with an error-ledger row) and acknowledged.
pub async fn handle(
    db: &PgPool,
    batch: Vec<Delivery<ErpWebhook>>,
) -> Vec<Result<(), HandlerError>> {
    let mut conn = match db.get().await {
        Ok(conn) => conn,
        Err(e) => {
            let e = format!("{e}");
            return batch.iter().map(|_| Err(anyhow::anyhow!("database: {e}").into())).collect();
        }
    };
    let all: Vec<&Delivery<ErpWebhook>> = batch.iter().collect();
    if apply_batch(&mut conn, &all).await.is_ok() {
        return batch.iter().map(|_| Ok(())).collect();
    }
    let mut results = Vec::with_capacity(batch.len());
    for delivery in &batch {
        results.push(match apply_batch(&mut conn, &[delivery]).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let error = format!("{e:#}");
                tracing::warn!(entity = %delivery.envelope.data.entity, id = %delivery.envelope.data.entity_id, error, "ERP event cannot be applied");
                record_failure(&mut conn, delivery, &error).await.map_err(HandlerError::from)
            }
        });
    }
    results
}

async fn apply_batch(
    conn: &mut AsyncPgConnection,
    deliveries: &[&Delivery<ErpWebhook>],
) -> anyhow::Result<()> {
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.envelope.id).collect();
        let done = shared::ingress::settled(conn, SCHEMA, &ids).await?;
        for delivery in deliveries.iter().filter(|d| !done.contains(&d.envelope.id)) {
            let event = &delivery.envelope.data;
            let (status, reason) = apply_one(conn, event, delivery.envelope.occurred_at).await?;
            shared::ingress::record(
                conn,
                SCHEMA,
                "erp",
                &event.entity,
                &[(delivery.envelope.id, status, reason)],
            )
            .await?;
        }
        Ok(())
    })
    .await
}

async fn record_failure(
    conn: &mut AsyncPgConnection,
    delivery: &Delivery<ErpWebhook>,
    error: &str,
) -> anyhow::Result<()> {
    let event = &delivery.envelope.data;
    let payload = serde_json::to_value(event)?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        shared::ingress::record(
            conn,
            SCHEMA,
            "erp",
            &event.entity,
            &[(delivery.envelope.id, EventStatus::Failed, Some(error.to_owned()))],
        )
        .await?;
        shared::record_errors::record_failure(
            conn,
            SCHEMA,
            &[shared::record_errors::Failure {
                system: "erp",
                entity: &event.entity,
                record_id: &event.entity_id,
                direction: shared::schemas::sync::Direction::Inbound,
                error,
                payload: &payload,
            }],
        )
        .await?;
        Ok(())
    })
    .await
}
