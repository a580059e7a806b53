//! Applies the ERP's events (`webhooks.erp.<entity>`), one transaction per batch.
//!
//! Inventory messages are not stock erp-sync writes: each becomes a canonical count
//! (`inventory.count.erp`, [`CountReported`]) stamped with the ERP's `updatedAt` and
//! `version`, which inventory-sync applies only when newer than the last ERP count it applied.
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
//! - Emails are written to the outbox in the same transaction (so an event causes its email
//!   exactly when it is applied) and sent by [`send`]: "New Order: <number>" with the total
//!   and currency to `ERP_SALES_EMAIL`; "Order Update: <number>" to the customer when the
//!   status changes; "Your Order Has Shipped!" with carrier, tracking number, estimated
//!   delivery and tracking link to the customer when a shipment is created. Text and HTML.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use shared::{
    bus::{
        Delivery, HandlerError,
        outbox::{self, OutboxRow},
    },
    db::PgPool,
    ingress::{EventStatus, Transient},
    mappers::{erp::webhook, fields},
    notify::{Email, Mailer},
    outbound::Outcome,
    schemas::{
        Envelope,
        erp::{EmailRequested, ErpInventory, ErpWebhook},
        inventory::CountReported,
    },
};
use uuid::Uuid;

use crate::SCHEMA;

/// The entities erp-sync consumes: all of them (inventory becomes canonical counts).
pub const ENTITIES: [&str; 6] = webhook::ENTITIES;

/// `(table, key column)` of an entity.
fn table(entity: &str) -> Option<(&'static str, &'static str)> {
    match entity {
        "salesOrder" => Some(("orders", "erp_order_id")),
        "purchaseOrder" => Some(("purchase_orders", "erp_po_id")),
        "invoice" => Some(("invoices", "erp_invoice_id")),
        "shipment" => Some(("shipments", "erp_shipment_id")),
        "customer" => Some(("customers", "erp_customer_id")),
        "product" => Some(("products", "erp_product_id")),
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

/// What applying an event did to its row: whether it is new, and the status it had before.
struct Written {
    inserted: bool,
    previous: Option<String>,
    /// The status stored now (a pushed status changed here may have been kept).
    current: Option<String>,
    /// The ERP's time of the event.
    at: DateTime<Utc>,
}

/// An event's recorded outcome: its id, status and reason.
type Recorded = (Uuid, EventStatus, Option<String>);

/// One event to apply: its id, when it was accepted, and the event.
pub struct Applying<'a> {
    pub id: Uuid,
    pub accepted: DateTime<Utc>,
    pub event: &'a ErpWebhook,
}

/// What became of one event: its outcome and the messages it causes, for the outbox.
pub struct Applied {
    pub status: EventStatus,
    pub reason: Option<String>,
    pub messages: Vec<OutboxRow>,
}

/// Applies `events` in the caller's transaction, whose origin is `erp`, set-based: per entity
/// one lock of the rows, one insert, one update and one replacement of order lines. Events of
/// the same record in one call are applied in order (in rounds). One answer per event, in
/// order. `mail: None` (a bulk load) sends no email.
pub async fn apply_all(
    conn: &mut AsyncPgConnection,
    mail: Option<&MailSettings>,
    events: &[Applying<'_>],
) -> anyhow::Result<Vec<Applied>> {
    let mut answers: Vec<Option<Applied>> = events.iter().map(|_| None).collect();
    // Round r holds the r-th event of each record, entity by entity.
    let mut rounds: Vec<BTreeMap<&str, Vec<usize>>> = Vec::new();
    let mut seen: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.event.entity == "inventory" {
            let count = count_of(e.event, e.id, e.accepted)?;
            let reason =
                format!("count of {} in {} sent to inventory-sync", count.sku, count.warehouse);
            answers[i] = Some(Applied {
                status: EventStatus::Applied,
                reason: Some(reason),
                messages: vec![OutboxRow::new(&Envelope::new(crate::SERVICE, count))],
            });
            continue;
        }
        let n = seen.entry((e.event.entity.as_str(), e.event.entity_id.as_str())).or_default();
        if rounds.len() <= *n {
            rounds.push(BTreeMap::new());
        }
        rounds[*n].entry(e.event.entity.as_str()).or_default().push(i);
        *n += 1;
    }
    for round in rounds {
        for (entity, indices) in round {
            let written = write(conn, entity, events, &indices).await?;
            let mut delivered = Vec::new();
            for (i, written) in indices.into_iter().zip(written) {
                answers[i] =
                    Some(consequences(conn, mail, events[i].event, written, &mut delivered).await?);
            }
            deliver_orders(conn, delivered).await?;
        }
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| anyhow::anyhow!("an event was not applied")))
        .collect()
}

/// Writes the events `indices` of `entity` (one per record): `None` for an event older than
/// the stored row.
async fn write(
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
    }
    let (table, key) = table(entity).ok_or_else(|| anyhow::anyhow!("unknown entity {entity}"))?;
    let fields =
        webhook::fields(entity).ok_or_else(|| anyhow::anyhow!("no fields for {entity}"))?;
    let has_status = fields.iter().any(|f| f.local == "status");
    let keys: Vec<&str> = indices.iter().map(|&i| events[i].event.entity_id.as_str()).collect();
    let existing: HashMap<String, Existing> = diesel::sql_query(format!(
        "SELECT {key} AS key, erp_updated_at, {status} AS status FROM erp.{table} \
         WHERE {key} = ANY($1) ORDER BY {key} FOR UPDATE",
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
            },
            line_count,
        )));
    }

    // Rows in key order, as the locks above: concurrent batches never wait on each other in a
    // circle.
    let by_key = |a: &Value, b: &Value| a[key].as_str().cmp(&b[key].as_str());
    inserts.sort_by(by_key);
    updates.sort_by(by_key);
    let columns: Vec<&str> = fields.iter().map(|f| f.local).collect();
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
        // A field the event leaves out keeps its value. A pushed field changed here keeps the
        // local value against an ERP event older than that change (the change is on its way to
        // the ERP, or there already).
        let pushed = crate::push::Pushable::columns_of(entity);
        let set: String = columns
            .iter()
            .map(|c| {
                if pushed.contains(c) {
                    format!(
                        "{c} = CASE WHEN NOT u.present ? '{c}' THEN t.{c} \
                         WHEN t.local_changed_at > u.erp_updated_at THEN t.{c} ELSE u.{c} END, "
                    )
                } else {
                    format!("{c} = CASE WHEN u.present ? '{c}' THEN u.{c} ELSE t.{c} END, ")
                }
            })
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

/// What the emails say and where they go.
#[derive(Clone, Debug)]
pub struct MailSettings {
    /// `ERP_SALES_EMAIL`: who hears of new orders (unset: nobody).
    pub sales: Option<String>,
    /// `ERP_TRACKING_URL`: the tracking link, `{tracking}` replaced by the tracking number.
    pub tracking_url: String,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self { sales: None, tracking_url: "https://track.carrier.com/{tracking}".into() }
    }
}

/// The durable consumer that sends erp-sync's emails.
pub const MAIL_CONSUMER: &str = "erp-email";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// An email with its text part, and an HTML part of the same lines.
fn email(to: String, subject: String, lines: &[String]) -> Email {
    let html = lines.iter().map(|l| format!("<p>{}</p>", escape(l))).collect::<String>();
    Email {
        to: vec![to],
        subject,
        text: lines.join("\n"),
        html: Some(format!("<html><body>{html}</body></html>")),
        message_id: None,
    }
}

fn text_of(payload: &Value, name: &str) -> String {
    match payload.get(name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "-".into(),
    }
}

/// The email address of the ERP's customer `customer_id`, if known.
async fn customer_email(
    conn: &mut AsyncPgConnection,
    customer_id: &str,
) -> anyhow::Result<Option<String>> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        email: Option<String>,
    }
    let found: Vec<Found> =
        diesel::sql_query("SELECT email FROM erp.customers WHERE erp_customer_id = $1")
            .bind::<Text, _>(customer_id)
            .load(conn)
            .await?;
    Ok(found.into_iter().next().and_then(|f| f.email).filter(|e| !e.is_empty()))
}

/// The order number and customer of the ERP's order `order_id`.
async fn order_of(
    conn: &mut AsyncPgConnection,
    order_id: &str,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        order_number: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        customer_id: Option<String>,
    }
    let found: Vec<Found> = diesel::sql_query(
        "SELECT order_number, customer_id FROM erp.orders WHERE erp_order_id = $1",
    )
    .bind::<Text, _>(order_id)
    .load(conn)
    .await?;
    Ok(found.into_iter().next().map(|f| (f.order_number, f.customer_id)))
}

/// The canonical count of an ERP inventory message, for inventory-sync (erp-sync never writes
/// stock): stamped with the ERP's time and version, keyed by the inbound event's id.
fn count_of(
    event: &ErpWebhook,
    id: Uuid,
    accepted: DateTime<Utc>,
) -> anyhow::Result<CountReported> {
    let count: ErpInventory = serde_json::from_value(event.payload.clone())
        .map_err(|e| anyhow::anyhow!("payload: {e}"))?;
    Ok(CountReported {
        source: "erp".into(),
        reference: id.to_string(),
        sku: event.entity_id.clone(),
        warehouse: count.warehouse,
        on_hand: count.qty_on_hand,
        counted_at: count.updated_at.unwrap_or(accepted),
        version: count.version,
        reason: Some(format!("ERP inventory {}", event.event_type)),
    })
}

/// Marks the orders of delivered shipments `delivered` (with `delivered_at`), locking them in
/// key order. Each order's ERP state becomes at least as new as its shipment's, so an older
/// event of the order cannot take `delivered` back.
async fn deliver_orders(
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

/// What an applied event causes beyond its row: the order a delivered shipment delivers, and
/// the emails (only with `mail`).
async fn consequences(
    conn: &mut AsyncPgConnection,
    mail: Option<&MailSettings>,
    event: &ErpWebhook,
    written: Option<(Written, Option<usize>)>,
    delivered: &mut Vec<(String, DateTime<Utc>)>,
) -> anyhow::Result<Applied> {
    let Some((written, lines)) = written else {
        return Ok(Applied {
            status: EventStatus::Applied,
            reason: Some("stale: a newer ERP state is stored".into()),
            messages: vec![],
        });
    };
    let notify = mail.is_some();
    let mail = mail.cloned().unwrap_or_default();
    let payload = &event.payload;
    let status = written.current.as_deref();
    let mut reason = None;
    let mut emails = Vec::new();
    match event.entity.as_str() {
        "salesOrder" => {
            let number = text_of(payload, "orderNumber");
            if written.inserted {
                reason = Some(format!("{} lines", lines.unwrap_or_default()));
                if let Some(sales) = &mail.sales {
                    emails.push(email(
                        sales.clone(),
                        format!("New Order: {number}"),
                        &[
                            format!("A new order {number} was placed."),
                            format!(
                                "Order total: {} {}",
                                text_of(payload, "total"),
                                text_of(payload, "currency")
                            ),
                        ],
                    ));
                }
            } else if written.previous.as_deref() != status {
                let change = format!(
                    "status changed from {} to {}",
                    written.previous.as_deref().unwrap_or("-"),
                    status.unwrap_or("-")
                );
                let customer =
                    payload.get("customerId").and_then(Value::as_str).unwrap_or_default();
                match customer_email(conn, customer).await?.filter(|_| notify) {
                    Some(to) => emails.push(email(
                        to,
                        format!("Order Update: {number}"),
                        &[format!("Your order status is now: {}", status.unwrap_or("-"))],
                    )),
                    None => {
                        reason = Some(format!("{change}; customer {customer} has no known email"))
                    }
                }
                reason.get_or_insert(change);
            }
        }
        "shipment" => {
            let order_id = text_of(payload, "orderId");
            if written.inserted {
                let order = order_of(conn, &order_id).await?;
                let to = match order.as_ref().and_then(|(_, c)| c.as_deref()) {
                    Some(customer) => customer_email(conn, customer).await?,
                    None => None,
                };
                match (order, to) {
                    (Some((number, _)), Some(to)) => {
                        let tracking = text_of(payload, "trackingNumber");
                        let link = mail
                            .tracking_url
                            .replace("{tracking}", &shared::mappers::path_segment(&tracking));
                        emails.push(email(
                            to,
                            "Your Order Has Shipped!".into(),
                            &[
                                format!("Good news! Your order {number} has shipped."),
                                format!("Carrier: {}", text_of(payload, "carrier")),
                                format!("Tracking: {tracking}"),
                                format!(
                                    "Estimated Delivery: {}",
                                    text_of(payload, "estimatedDelivery")
                                ),
                                format!("Track your package: {link}"),
                            ],
                        ));
                    }
                    _ => {
                        reason = Some(format!(
                            "order {order_id} or its customer's email is not known: no email"
                        ))
                    }
                }
            }
            if status == Some("delivered") && written.previous.as_deref() != Some("delivered") {
                delivered.push((order_id.clone(), written.at));
                reason = Some(format!("order {order_id} delivered"));
            }
        }
        _ => {}
    }
    let messages = emails
        .into_iter()
        .filter(|_| notify)
        .map(|email| OutboxRow::new(&Envelope::new(crate::SERVICE, EmailRequested { email })))
        .collect();
    Ok(Applied { status: EventStatus::Applied, reason, messages })
}

/// Sends one email once: a redelivery after the send was recorded sends nothing; the
/// `Message-ID` is the request's id, so a copy sent again after a crash between the send and
/// its record carries the same id.
pub async fn send(
    db: &PgPool,
    mailer: &Mailer,
    delivery: Delivery<EmailRequested>,
) -> Result<(), HandlerError> {
    let id = delivery.envelope.id.to_string();
    let mut conn = db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
    if shared::bus::inbox::seen(&mut conn, SCHEMA, MAIL_CONSUMER, &id).await? {
        return Ok(());
    }
    let mut email = delivery.envelope.data.email;
    email.message_id = Some(format!("{id}@erp-sync.datasync"));
    match mailer.send(&email).await {
        Outcome::Delivered(_) => {
            shared::bus::inbox::first_delivery(&mut conn, SCHEMA, MAIL_CONSUMER, &id).await?;
            tracing::info!(subject = %email.subject, "email sent");
            Ok(())
        }
        failed => Err(failed.into_handler_error("email")),
    }
}

/// Applies `batch` in one transaction; on a database error, one event per transaction, and an
/// event that still fails is recorded `failed` (with an error-ledger row) and acknowledged.
pub async fn handle(
    db: &PgPool,
    mail: std::sync::Arc<MailSettings>,
    batch: Vec<Delivery<ErpWebhook>>,
) -> Vec<Result<(), HandlerError>> {
    shared::ingress::apply_batch(
        db,
        &batch,
        |conn, deliveries| {
            let mail = mail.clone();
            Box::pin(async move { apply_batch(conn, &mail, deliveries).await })
        },
        |conn, delivery, error| Box::pin(record_failure(conn, delivery, error)),
    )
    .await
}

async fn apply_batch(
    conn: &mut AsyncPgConnection,
    mail: &MailSettings,
    deliveries: &[&Delivery<ErpWebhook>],
) -> anyhow::Result<()> {
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        // What this transaction writes came from the ERP: the capture trigger queues no push.
        shared::db::set_origin(conn, "erp").await?;
        let ids: Vec<Uuid> = deliveries.iter().map(|d| d.envelope.id).collect();
        let done = shared::ingress::settled(conn, SCHEMA, &ids).await?;
        let pending: Vec<&Delivery<ErpWebhook>> =
            deliveries.iter().copied().filter(|d| !done.contains(&d.envelope.id)).collect();
        let applying: Vec<Applying> = pending
            .iter()
            .map(|d| Applying {
                id: d.envelope.id,
                accepted: d.envelope.occurred_at,
                event: &d.envelope.data,
            })
            .collect();
        let applied = apply_all(conn, Some(mail), &applying).await?;
        let mut statuses: BTreeMap<&str, Vec<Recorded>> = BTreeMap::new();
        let mut messages = Vec::new();
        for (delivery, applied) in pending.iter().zip(applied) {
            let event = &delivery.envelope.data;
            statuses.entry(event.entity.as_str()).or_default().push((
                delivery.envelope.id,
                applied.status,
                applied.reason,
            ));
            messages.extend(applied.messages);
        }
        outbox::enqueue(conn, SCHEMA, &messages).await?;
        for (entity, statuses) in statuses {
            shared::ingress::record(conn, SCHEMA, "erp", entity, &statuses).await?;
        }
        // A retried ledger row closes once its retry is applied.
        let retried: Vec<i64> = pending.iter().filter_map(|d| d.envelope.data.retry_of).collect();
        shared::record_errors::resolve(conn, SCHEMA, &retried).await?;
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
    let mut payload = serde_json::to_value(event)?;
    // A retry is fenced by the time the event was accepted, not by the time of the retry.
    if let Some(fields) = payload.get_mut("payload").and_then(Value::as_object_mut)
        && fields.get("updatedAt").is_none_or(Value::is_null)
    {
        fields.insert("updatedAt".into(), Value::from(delivery.envelope.occurred_at.to_rfc3339()));
    }
    let failure = shared::record_errors::Failure {
        system: "erp",
        entity: &event.entity,
        record_id: &event.entity_id,
        direction: shared::schemas::sync::Direction::Inbound,
        error,
        payload: &payload,
    };
    shared::ingress::record_failed(conn, SCHEMA, delivery.envelope.id, &failure).await
}
