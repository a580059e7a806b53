//! The set-based writes of a batch of ERP events: per entity one lock of the rows (in key
//! order), one insert, one update and one replacement of order lines, fenced by the ERP's time
//! of each event; and the orders that delivered shipments deliver.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use shared::{
    ingress::Transient,
    mappers::{erp::webhook, fields},
    schemas::erp::ErpWebhook,
};

use super::Applying;

/// The ERP's time of an event.
fn event_time(event: &ErpWebhook, accepted: DateTime<Utc>) -> DateTime<Utc> {
    event
        .payload
        .get("updatedAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(accepted, |t| t.with_timezone(&Utc))
}

/// What applying an event did to its row: whether it is new, and the status it had before.
pub(super) struct Written {
    pub inserted: bool,
    pub previous: Option<String>,
    /// The status stored now (a pushed status changed here may have been kept).
    pub current: Option<String>,
    /// The ERP's time of the event.
    pub at: DateTime<Utc>,
    /// The conflict it raised with a local change ([`crate::conflicts`]).
    pub conflict: Option<shared::schemas::conflict::ConflictDetected>,
}

/// Writes the events `indices` of `entity` (one per record): `None` for an event older than
/// the stored row.
pub(super) async fn write(
    conn: &mut AsyncPgConnection,
    entity: &str,
    events: &[Applying<'_>],
    indices: &[usize],
) -> anyhow::Result<Vec<Option<(Written, Option<usize>)>>> {
    #[derive(diesel::QueryableByName)]
    struct Existing {
        #[diesel(sql_type = Text)]
        key: String,
        #[diesel(sql_type = Timestamptz)]
        erp_updated_at: DateTime<Utc>,
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        status: Option<String>,
        #[diesel(sql_type = Jsonb)]
        row: Value,
    }
    let kind = crate::entity::Entity::of_webhook(entity)
        .ok_or_else(|| anyhow::anyhow!("unknown entity {entity}"))?;
    let (table, key) = (kind.table, kind.key);
    let fields =
        webhook::fields(entity).ok_or_else(|| anyhow::anyhow!("no fields for {entity}"))?;
    let has_status = fields.iter().any(|f| f.local == "status");
    let keys: Vec<&str> = indices.iter().map(|&i| events[i].event.entity_id.as_str()).collect();
    let existing: HashMap<String, Existing> = diesel::sql_query(format!(
        "SELECT {key} AS key, erp_updated_at, {status} AS status, to_jsonb(t) AS row \
         FROM erp.{table} t WHERE {key} = ANY($1) ORDER BY {key} FOR UPDATE",
        status = if has_status { "status" } else { "NULL::text" },
    ))
    .bind::<Array<Text>, _>(&keys)
    .load::<Existing>(conn)
    .await?
    .into_iter()
    .map(|e| (e.key.clone(), e))
    .collect();

    let mut written = Vec::with_capacity(indices.len());
    let (mut inserts, mut updates, mut lines, mut replaced) = (vec![], vec![], vec![], vec![]);
    for &i in indices {
        let event = events[i].event;
        let at = event_time(event, events[i].accepted);
        let stored = existing.get(&event.entity_id);
        if stored.is_some_and(|s| s.erp_updated_at > at) {
            written.push(None);
            continue;
        }
        let payload = event.payload.as_object().cloned().unwrap_or_default();
        let mut row = fields::to_local(fields, &payload, "payload.")
            .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.detail))?;
        row.insert(key.into(), Value::from(event.entity_id.clone()));
        row.insert("erp_updated_at".into(), Value::from(at.to_rfc3339()));
        let mut line_count = None;
        if entity == "salesOrder" && payload.contains_key("lineItems") {
            let mut items = webhook::lines(&payload)
                .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.detail))?;
            line_count = Some(items.len());
            for item in &mut items {
                item.insert("order_key".into(), Value::from(event.entity_id.clone()));
            }
            lines.extend(items.into_iter().map(Value::Object));
            replaced.push(event.entity_id.as_str());
        }
        // The pushed fields: a crossing edit with a local change is a conflict.
        let conflict = crate::conflicts::settle(
            kind,
            stored.and_then(|s| s.row.as_object()),
            &mut row,
            &event.entity_id,
            at,
        )
        .map(|raised| raised.detected);
        let current = row.get("status").and_then(Value::as_str).map(str::to_owned);
        match stored {
            None => inserts.push(Value::Object(row)),
            Some(_) => updates.push(Value::Object(row)),
        }
        written.push(Some((
            Written {
                inserted: stored.is_none(),
                previous: stored.and_then(|s| s.status.clone()),
                current,
                at,
                conflict,
            },
            line_count,
        )));
    }

    // Rows in key order, as the locks above: concurrent batches never wait on each other in a
    // circle.
    let by_key = |a: &Value, b: &Value| a[key].as_str().cmp(&b[key].as_str());
    inserts.sort_by(by_key);
    updates.sort_by(by_key);
    let mut columns: Vec<&str> = fields.iter().map(|f| f.local).collect();
    if !kind.pushed.is_empty() {
        // The agreed copy of the pushed fields ([`crate::conflicts::settle`]).
        columns.push("synced");
    }
    if !inserts.is_empty() {
        let expected = inserts.len();
        let names: String = columns.iter().map(|c| format!(", {c}")).collect();
        let values: String = columns.iter().map(|c| format!(", r.{c}")).collect();
        let inserted = diesel::sql_query(format!(
            "INSERT INTO erp.{table} ({key}, erp_updated_at{names}) \
             SELECT r.{key}, r.erp_updated_at{values} FROM jsonb_populate_recordset(NULL::erp.{table}, $1) r \
             ON CONFLICT ({key}) DO NOTHING"
        ))
        .bind::<Jsonb, _>(Value::Array(inserts))
        .execute(conn)
        .await?;
        if inserted < expected {
            // Another transaction created one of these records meanwhile: apply again.
            return Err(Transient(format!("{entity}: created concurrently")).into());
        }
    }
    if !updates.is_empty() {
        // A field the event leaves out keeps its value (the pushed fields' values were decided
        // above).
        if !kind.pushed.is_empty() {
            // And the open conflict's bookkeeping.
            columns.extend(["held", "conflict_id"]);
        }
        let set: String = columns
            .iter()
            .map(|c| format!("{c} = CASE WHEN u.present ? '{c}' THEN u.{c} ELSE t.{c} END, "))
            .collect();
        #[derive(diesel::QueryableByName)]
        struct Now {
            #[diesel(sql_type = Text)]
            key: String,
            #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
            status: Option<String>,
        }
        let now: HashMap<String, Option<String>> = diesel::sql_query(format!(
            "UPDATE erp.{table} t SET {set}erp_updated_at = u.erp_updated_at, updated_at = now() \
             FROM (SELECT r.*, x.row AS present FROM jsonb_array_elements($1) x(row) \
                   CROSS JOIN LATERAL jsonb_populate_record(NULL::erp.{table}, x.row) r) u \
             WHERE t.{key} = u.{key} RETURNING t.{key} AS key, {status} AS status",
            status = if has_status { "t.status" } else { "NULL::text" },
        ))
        .bind::<Jsonb, _>(Value::Array(updates))
        .load::<Now>(conn)
        .await?
        .into_iter()
        .map(|n| (n.key, n.status))
        .collect();
        for (&i, written) in indices.iter().zip(written.iter_mut()) {
            if let Some((w, _)) = written
                && !w.inserted
                && let Some(status) = now.get(&events[i].event.entity_id)
            {
                w.current = status.clone();
            }
        }
    }
    if !replaced.is_empty() {
        diesel::sql_query(
            "DELETE FROM erp.order_lines WHERE order_id IN \
             (SELECT id FROM erp.orders WHERE erp_order_id = ANY($1))",
        )
        .bind::<Array<Text>, _>(&replaced)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "INSERT INTO erp.order_lines (order_id, line_number, sku, description, quantity, unit_price, discount, total) \
             SELECT o.id, r.line_number, r.sku, r.description, r.quantity, r.unit_price, r.discount, r.total \
             FROM jsonb_array_elements($1) x(line) \
             CROSS JOIN LATERAL jsonb_populate_record(NULL::erp.order_lines, x.line) r \
             JOIN erp.orders o ON o.erp_order_id = x.line->>'order_key'",
        )
        .bind::<Jsonb, _>(Value::Array(lines))
        .execute(conn)
        .await?;
    }
    Ok(written)
}

/// Marks the orders of delivered shipments `delivered` (with `delivered_at`), locking them in
/// key order. Each order's ERP state becomes at least as new as its shipment's, so an older
/// event of the order cannot take `delivered` back.
pub(super) async fn deliver_orders(
    conn: &mut AsyncPgConnection,
    mut delivered: Vec<(String, DateTime<Utc>)>,
) -> anyhow::Result<()> {
    if delivered.is_empty() {
        return Ok(());
    }
    delivered.sort();
    let (ids, times): (Vec<String>, Vec<DateTime<Utc>>) = delivered.into_iter().unzip();
    // In the order every batch of orders locks them: concurrent batches never wait in a circle.
    diesel::sql_query(
        "SELECT 1 FROM erp.orders WHERE erp_order_id = ANY($1) ORDER BY erp_order_id FOR UPDATE",
    )
    .bind::<Array<Text>, _>(&ids)
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE erp.orders o SET status = 'delivered', delivered_at = coalesce(o.delivered_at, now()), \
         erp_updated_at = greatest(o.erp_updated_at, d.at), updated_at = now() \
         FROM (SELECT o.id, max(x.at) AS at FROM unnest($1::text[], $2::timestamptz[]) x(erp_order_id, at) \
               JOIN erp.orders o USING (erp_order_id) GROUP BY o.id) d \
         WHERE o.id = d.id",
    )
    .bind::<Array<Text>, _>(&ids)
    .bind::<Array<Timestamptz>, _>(&times)
    .execute(conn)
    .await?;
    Ok(())
}
