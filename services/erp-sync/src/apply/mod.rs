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
//!   exactly when it is applied) and sent by [`crate::mail::send`]: "New Order: <number>"
//!   with the total and currency to `ERP_SALES_EMAIL`; "Order Update: <number>" to the
//!   customer when the status changes; "Your Order Has Shipped!" with carrier, tracking
//!   number, estimated delivery and tracking link to the customer when a shipment is created.
//!   Text and HTML.
//!
//! The writes themselves are set-based ([`write`]); this module decides what each applied
//! event causes and records the outcomes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use diesel::sql_types::Text;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use serde_json::Value;
use shared::{
    bus::outbox::OutboxRow,
    ingress::{AppliedBatch, EventStatus, Inbound, Outcome},
    mappers::erp::webhook,
    outbound::{self, Endpoint},
    schemas::{
        Envelope,
        erp::{EmailRequested, ErpInventory, ErpWebhook},
        inventory::CountReported,
    },
};
use uuid::Uuid;

use crate::mail::{MailSettings, email};

mod write;

use write::{Written, deliver_orders, write};

/// The entities erp-sync consumes: all of them (inventory becomes canonical counts).
pub const ENTITIES: [&str; 6] = webhook::ENTITIES;

/// One event to apply: its id, when it was accepted, and the event.
pub type Applying<'a> = shared::ingress::Applying<'a, ErpWebhook>;

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
    let mut messages: Vec<OutboxRow> = emails
        .into_iter()
        .filter(|_| notify)
        .map(|email| OutboxRow::new(&Envelope::new(crate::SERVICE, EmailRequested { email })))
        .collect();
    let mut status = EventStatus::Applied;
    if let Some(conflict) = written.conflict {
        // The rest of the event applied; the crossing fields wait for conflict-resolver.
        tracing::warn!(entity = %conflict.entity, id = %conflict.external_id, fields = ?conflict.fields, "conflict with the ERP");
        status = EventStatus::Conflict;
        reason =
            Some(format!("conflict {} on {}", conflict.conflict_id, conflict.fields.join(", ")));
        messages.push(OutboxRow::new(&Envelope::new(crate::SERVICE, conflict)));
    }
    Ok(Applied { status, reason, messages })
}

/// The ERP's inbound events, applied by the shared inbound path.
#[derive(Clone)]
pub struct ErpInbound {
    pub mail: MailSettings,
    pub http: reqwest::Client,
    /// The ERP's API, for requeues (`None`: requeue is refused, retry still works).
    pub erp: Option<Endpoint>,
}

impl Inbound for ErpInbound {
    type Event = ErpWebhook;
    const SYSTEM: &'static str = "erp";

    fn entity(event: &ErpWebhook) -> &str {
        &event.entity
    }

    fn record_id(event: &ErpWebhook) -> &str {
        &event.entity_id
    }

    fn retry_of(event: &ErpWebhook) -> Option<i64> {
        event.retry_of
    }

    fn set_retry_of(event: &mut ErpWebhook, row: Option<i64>) {
        event.retry_of = row;
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        events: &'a [Applying<'a>],
    ) -> BoxFuture<'a, anyhow::Result<AppliedBatch>> {
        Box::pin(async move {
            // A bulk load's records are no news to anyone: no emails.
            let mail = (!events.iter().any(|a| a.loaded)).then_some(&self.mail);
            let applied = apply_all(conn, mail, events).await?;
            let mut batch = AppliedBatch { outcomes: Vec::new(), messages: Vec::new() };
            for applied in applied {
                batch.outcomes.push(Outcome { status: applied.status, reason: applied.reason });
                batch.messages.extend(applied.messages);
            }
            Ok(batch)
        })
    }

    /// A retry is fenced by the time the event was accepted, not by the time of the retry.
    fn stored(&self, applying: &Applying<'_>) -> ErpWebhook {
        let mut event = applying.event.clone();
        if let Some(fields) = event.payload.as_object_mut()
            && fields.get("updatedAt").is_none_or(Value::is_null)
        {
            fields.insert("updatedAt".into(), Value::from(applying.accepted.to_rfc3339()));
        }
        event
    }

    /// A customer or order as the ERP holds it now (the ERP has no read API for the other
    /// entities: retry them).
    fn current<'a>(&'a self, stored: &'a ErpWebhook) -> BoxFuture<'a, anyhow::Result<ErpWebhook>> {
        Box::pin(async move {
            let Some(list) = crate::entity::Entity::of_webhook(&stored.entity).and_then(|e| e.list)
            else {
                anyhow::bail!(
                    "the ERP has no read API for {}: retry the stored event",
                    stored.entity
                )
            };
            let erp =
                self.erp.as_ref().ok_or_else(|| anyhow::anyhow!("ERP_BASE_URL is not set"))?;
            let request = shared::mappers::erp::read_record(list, &stored.entity_id);
            match outbound::exchange(&self.http, erp, &request).await {
                Ok((_, Value::Object(mut record))) => {
                    record.remove("id");
                    Ok(ErpWebhook {
                        event_type: "updated".into(),
                        payload: Value::Object(record),
                        ..stored.clone()
                    })
                }
                Ok(_) => anyhow::bail!("the ERP's answer is not an object"),
                Err(outcome) => anyhow::bail!(
                    "reading {} {} from the ERP failed: {:?}",
                    stored.entity,
                    stored.entity_id,
                    outcome.status()
                ),
            }
        })
    }
}
