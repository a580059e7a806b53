//! The webhook ingress: one path for every inbound webhook of every connector.
//!
//! `POST /webhooks/<system>`:
//! 1. The body is read up to the size limit (`MAX_BODY_BYTES`; larger is a 413 problem).
//! 2. The raw bytes are verified with the system's schemes ([`crate::http::verify`]: Standard
//!    Webhooks, HubSpot v3, the datasync signature or an API key); the secret that matched must
//!    belong to this system (a sender speaks only for itself). Failure is a 401, nothing stored.
//! 3. The connector's parser splits the body into events (one for most senders, several for
//!    HubSpot's batches), each with the sender's id for it; a bad body is a 4xx naming the field.
//! 4. Each event is published to JetStream on `webhooks.<system>.<entity>` with `Nats-Msg-Id` =
//!    `<system>:<id>` and an envelope id derived from the same (UUID v5), so a redelivery by
//!    the sender is dropped by JetStream and answers the same ids.
//! 5. A `received` row per event is queued for `<schema>.webhook_events` (group commit, not
//!    waited for), and the answer is `202 {event_id, event_ids}`; a redelivery answers the
//!    same, with `Idempotent-Replayed: true`.
//!
//! The consumer that applies an event records `applied`, `conflict` or `failed` with
//! [`record`] in the transaction of its effect; a dead-lettered event becomes `failed` with the
//! dead letter's error. `GET /events/{id}` reports it.

pub mod inbound;

use std::sync::{Arc, OnceLock};

use actix_web::{HttpRequest, HttpResponse, get, post, web};
use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

pub use crate::bus::events::{EventStatus, record, settled};
pub use inbound::{AppliedBatch, Applying, Inbound, Outcome, apply_loaded};

use crate::{
    bus::{Bus, events as store},
    db::group_commit::GroupCommit,
    http::{
        ApiError, AuthConfig, Reader,
        verify::{Scheme, Signed, Verified, verify_any},
    },
};

/// One event of a verified webhook.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundEvent {
    /// The sender's id of this event (its delivery id, or the event's own id in a batch).
    pub id: String,
    /// The entity it is about; the subject is `webhooks.<system>.<entity>`.
    pub entity: String,
    /// The envelope's `data`, as the consumer will decode it.
    pub data: serde_json::Value,
}

/// How one system's webhooks are authenticated and read.
#[derive(Clone)]
pub struct WebhookSource {
    /// The system's name (`crm`, `erp`, ...): the path `/webhooks/<system>`.
    pub system: &'static str,
    /// Accepted schemes; the request is judged by the first whose credential it carries.
    pub schemes: Vec<Scheme>,
    /// Splits a verified body into events; an error is the answer (4xx naming the field).
    pub parse: fn(&Verified, &[u8]) -> Result<Vec<InboundEvent>, ApiError>,
}

impl WebhookSource {
    /// A source with no scheme yet: every request is refused until one is added ([`Self::with`]).
    pub fn new(
        system: &'static str,
        parse: fn(&Verified, &[u8]) -> Result<Vec<InboundEvent>, ApiError>,
    ) -> Self {
        Self { system, schemes: Vec::new(), parse }
    }

    /// Accepts `scheme` (e.g. `Scheme::StandardWebhooks`) with `secrets`, each speaking for this
    /// system; no secrets adds nothing.
    pub fn with(
        mut self,
        scheme: fn(Vec<crate::http::verify::NamedSecret>) -> Scheme,
        secrets: &[secrecy::SecretString],
    ) -> Self {
        if !secrets.is_empty() {
            let named = secrets.iter().map(|s| (self.system.to_owned(), s.clone())).collect();
            self.schemes.push(scheme(named));
        }
        self
    }

    /// The source, if any scheme has a secret (else its webhooks are refused: `None`).
    pub fn configured(self) -> Option<Self> {
        (!self.schemes.is_empty()).then_some(self)
    }
}

/// Namespace of the envelope ids derived from `<system>:<event id>`.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_6a3e_8c1b_4e59_9a57_3f0e_2b8c_d401);

/// The envelope id of an event: the same for every delivery of it.
pub fn event_id(system: &str, id: &str) -> Uuid {
    Uuid::new_v5(&EVENT_NAMESPACE, format!("{system}:{id}").as_bytes())
}

/// A running ingress.
pub struct Ingress {
    pub(crate) sources: Vec<WebhookSource>,
    pub(crate) bus: Bus,
    pub(crate) db: crate::db::PgPool,
    pub(crate) schema: &'static str,
    pub(crate) received: GroupCommit<store::Received>,
}

/// Where a service's ingress lives once started (registered for the handlers by the app).
pub type IngressSlot = Arc<OnceLock<Arc<Ingress>>>;

/// The answer to an accepted webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// The first (usually the only) event's id.
    pub event_id: Uuid,
    /// Every event of the webhook, in order.
    pub event_ids: Vec<Uuid>,
}

/// The header marking an answer to a delivery that was accepted before.
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

impl Ingress {
    fn source(&self, system: &str) -> Result<&WebhookSource, ApiError> {
        self.sources
            .iter()
            .find(|s| s.system == system)
            .ok_or_else(|| ApiError::NotFound(format!("webhook source {system}")))
    }

    /// Verifies, splits and publishes one webhook; `(answer, every event was a redelivery)`.
    pub async fn accept(
        &self,
        system: &str,
        signed: &Signed<'_>,
        now_ms: i64,
    ) -> Result<(Accepted, bool), ApiError> {
        let source = self.source(system)?;
        let verified = verify_any(&source.schemes, signed, now_ms)?;
        if verified.sender != source.system {
            return Err(ApiError::Unauthorized("these credentials belong to another sender"));
        }
        let events = (source.parse)(&verified, signed.body)?;
        if events.is_empty() {
            return Err(ApiError::field("body", "the webhook carries no event"));
        }
        for event in &events {
            if !crate::schemas::is_subject_safe(&event.entity) || event.entity.contains('.') {
                return Err(ApiError::field(
                    "entity",
                    format!("invalid entity {:?}", event.entity),
                ));
            }
            if event.id.is_empty() || event.id.len() > 200 {
                return Err(ApiError::field("id", "an event id must be 1-200 characters"));
            }
        }
        let now = chrono::Utc::now();
        let trace = crate::telemetry::current_traceparent();
        let mut acks = Vec::with_capacity(events.len());
        for event in &events {
            let envelope = crate::schemas::Envelope {
                id: event_id(system, &event.id),
                kind: format!("{system}.webhook_received"),
                source: system.to_owned(),
                occurred_at: now,
                trace: trace.clone(),
                data: &event.data,
            };
            let payload = Bytes::from(serde_json::to_vec(&envelope).map_err(anyhow::Error::from)?);
            let subject = format!("webhooks.{system}.{}", event.entity);
            let msg_id = format!("{system}:{}", event.id);
            let ack = self
                .bus
                .send(&subject, &msg_id, envelope.trace.as_deref(), payload)
                .await
                .map_err(|e| ApiError::Unavailable(format!("event bus: {e}")))?;
            acks.push(ack);
        }
        let mut replayed = true;
        for ack in acks {
            let ack = ack.await.map_err(|e| ApiError::Unavailable(format!("event bus: {e}")))?;
            replayed &= ack.duplicate;
        }
        let ids: Vec<Uuid> = events.iter().map(|e| event_id(system, &e.id)).collect();
        let rows: Vec<store::ReceivedRow> = events
            .iter()
            .zip(&ids)
            .map(|(e, id)| store::ReceivedRow {
                id: *id,
                system: system.to_owned(),
                entity: e.entity.clone(),
                delivery_id: e.id.clone(),
            })
            .collect();
        // The events are durable in JetStream already: the `received` rows are queued, not
        // waited for (the consumer's own status row comes either way, and may come first).
        if let Err(e) = self.received.enqueue(ids[0], rows).await {
            tracing::warn!(error = %e, system, "received status not recorded");
        }
        tracing::info!(system, events = ids.len(), replayed, sender = %verified.sender, "webhook accepted");
        Ok((Accepted { event_id: ids[0], event_ids: ids }, replayed))
    }
}

/// Records an inbound event that cannot be applied, in one transaction: its status `failed`
/// with the error, and a row in the error ledger (`failure.payload` is what a retry sends
/// again).
pub async fn record_failed(
    conn: &mut diesel_async::AsyncPgConnection,
    schema: &'static str,
    event_id: Uuid,
    failure: &crate::record_errors::Failure<'_>,
) -> anyhow::Result<()> {
    use diesel_async::AsyncConnection;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        record(
            conn,
            schema,
            failure.system,
            failure.entity,
            &[(event_id, EventStatus::Failed, Some(failure.error.to_owned()))],
        )
        .await?;
        crate::record_errors::record_failure(conn, schema, std::slice::from_ref(failure)).await?;
        Ok(())
    })
    .await
}

/// A failure worth retrying although it is not a database error (another transaction raced
/// this one): [`apply_batch`] never records it as the event's failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Transient(pub String);

/// Whether an error is about the data (retrying cannot help) rather than the connection, a
/// lock, a timeout or a race ([`Transient`]).
pub fn is_data_error(e: &anyhow::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    if e.downcast_ref::<Transient>().is_some() {
        return false;
    }
    let text = format!("{e:#}");
    match e.downcast_ref::<Error>() {
        Some(Error::DatabaseError(kind, _)) => match kind {
            DatabaseErrorKind::CheckViolation
            | DatabaseErrorKind::NotNullViolation
            | DatabaseErrorKind::ForeignKeyViolation => true,
            // Data exceptions (SQLSTATE class 22) come as `Unknown`: told by their message.
            DatabaseErrorKind::Unknown => [
                "out of range",
                "invalid input syntax",
                "value too long",
                "unsupported Unicode",
                "invalid byte sequence",
            ]
            .iter()
            .any(|m| text.contains(m)),
            _ => false,
        },
        Some(_) => false,
        // Mapping errors (a value the mapper refuses).
        None => true,
    }
}

/// How a consumer applies a batch of inbound events: all in one transaction (`apply`); when
/// that fails, one event per transaction, and an event whose failure is about its data is
/// handed to `failed` (which records it, e.g. with [`record_failed`]) and acknowledged; other
/// failures are retried. One outcome per delivery, in order.
pub async fn apply_batch<T, A, F>(
    db: &crate::db::PgPool,
    batch: &[crate::bus::Delivery<T>],
    apply: A,
    failed: F,
) -> Vec<Result<(), crate::bus::HandlerError>>
where
    A: for<'a> Fn(
        &'a mut diesel_async::AsyncPgConnection,
        &'a [&'a crate::bus::Delivery<T>],
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>>,
    F: for<'a> Fn(
        &'a mut diesel_async::AsyncPgConnection,
        &'a crate::bus::Delivery<T>,
        &'a str,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<()>>,
{
    use crate::bus::HandlerError;
    let mut conn = match db.get().await {
        Ok(conn) => conn,
        Err(e) => {
            let e = format!("{e}");
            return batch.iter().map(|_| Err(anyhow::anyhow!("database: {e}").into())).collect();
        }
    };
    let all: Vec<&crate::bus::Delivery<T>> = batch.iter().collect();
    let started = std::time::Instant::now();
    match apply(&mut conn, &all).await {
        Ok(()) => {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            tracing::debug!(events = batch.len(), ms, "batch applied");
            return batch.iter().map(|_| Ok(())).collect();
        }
        Err(e) if batch.len() > 1 => {
            tracing::warn!(error = %format!("{e:#}"), events = batch.len(), "batch failed; applying its events one by one");
        }
        Err(_) => {}
    }
    let mut results = Vec::with_capacity(batch.len());
    for delivery in batch {
        results.push(match apply(&mut conn, &[delivery]).await {
            Ok(()) => Ok(()),
            Err(e) if is_data_error(&e) => {
                let error = format!("{e:#}");
                tracing::warn!(subject = %delivery.subject, error, "event cannot be applied");
                failed(&mut conn, delivery, &error).await.map_err(HandlerError::from)
            }
            Err(e) => Err(HandlerError::from(e)),
        });
    }
    results
}

/// The full URI the sender called, for signatures over it (HubSpot): scheme and host as the
/// request arrived (a proxy's `Forwarded`/`X-Forwarded-*` headers are honoured by actix).
/// The URL a sender signed: the configured `PUBLIC_URL` with the request's path, else `http://`
/// and the request's own `Host`. Never `X-Forwarded-Host` / `Forwarded`, which any client sets.
fn full_uri(req: &HttpRequest, public_url: Option<&str>) -> String {
    let path = req.uri().path_and_query().map_or(req.path(), |p| p.as_str());
    match public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => {
            let host = req
                .headers()
                .get(actix_web::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            format!("http://{host}{path}")
        }
    }
}

fn ingress(slot: &IngressSlot) -> Result<Arc<Ingress>, ApiError> {
    slot.get().cloned().ok_or_else(|| ApiError::NotFound("webhook ingress".into()))
}

/// Accepts a webhook from `system` (see the module doc for what happens).
#[utoipa::path(post, path = "/webhooks/{system}", tag = "webhooks",
    params(("system" = String, Path, description = "the sending system")),
    security(("signature" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "durably accepted (with `Idempotent-Replayed: true` for a redelivery)", body = Accepted),
        (status = 400, description = "the body is not what the sender sends"),
        (status = 401, description = "missing or invalid signature or key"),
        (status = 404, description = "no such webhook source"),
        (status = 413, description = "body over the size limit"),
        (status = 422, description = "a field is invalid"),
        (status = 503, description = "the event bus is unavailable: retry")))]
#[post("/webhooks/{system}")]
pub async fn post_webhook(
    req: HttpRequest,
    payload: web::Payload,
    system: web::Path<String>,
    slot: web::Data<IngressSlot>,
    auth: web::Data<AuthConfig>,
) -> Result<HttpResponse, ApiError> {
    let ingress = ingress(&slot)?;
    let source = ingress.source(&system)?;
    // No credential of any scheme: refused before the body is read.
    if !source.schemes.iter().any(|s| s.present(req.headers())) {
        return Err(ApiError::Unauthorized("no signature or API key header"));
    }
    let mut payload = payload.into_inner();
    let body = <web::Bytes as actix_web::FromRequest>::from_request(&req, &mut payload);
    let body = crate::http::read_body(body, &req, auth.max_body).await?;
    let uri = full_uri(&req, auth.public_url.as_deref());
    let signed =
        Signed { method: req.method().as_str(), uri: &uri, headers: req.headers(), body: &body };
    let (accepted, replayed) =
        ingress.accept(&system, &signed, chrono::Utc::now().timestamp_millis()).await?;
    let mut response = HttpResponse::Accepted();
    if replayed {
        response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    }
    Ok(response.json(accepted))
}

/// What became of an accepted event: `received`, `applied`, `conflict` or `failed` (with the
/// reason).
#[utoipa::path(get, path = "/events/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "an event id from a 202 answer")),
    security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "the event's status", body = store::EventRecord), (status = 404, description = "no such event")))]
#[get("/events/{id}")]
pub async fn get_event(
    _: Reader,
    id: web::Path<Uuid>,
    slot: web::Data<IngressSlot>,
) -> Result<HttpResponse, ApiError> {
    let ingress = ingress(&slot)?;
    let mut conn = ingress.db.get().await?;
    match store::find(&mut conn, ingress.schema, *id).await? {
        Some(event) => Ok(HttpResponse::Ok().json(event)),
        None => Err(ApiError::NotFound(format!("event {id}"))),
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(post_webhook).service(get_event);
}
