//! CRM → local: the webhook source (verified by the shared ingress) and the consumer that
//! applies the events.
//!
//! `POST /webhooks/crm` takes one event or an array of them (`{eventId?, event, type, id,
//! timestamp, data}`), signed with Standard Webhooks or HubSpot v3; each event is published on
//! `webhooks.crm.<entity>`.
//!
//! The shared inbound path ([`shared::ingress::inbound`]) takes every ready event (up to
//! `CRM_INBOUND_BATCH`) into one transaction with origin `crm`, skips settled ones, records the
//! outcomes and announces the batch. What is the CRM's own: records locked in id order, the
//! three-way merge per event ([`crate::domain::merge`]) in memory, then per entity one insert,
//! one update and one sync-state upsert, and conflicts announced on
//! `sync.conflicts.detected.crm` ([`crate::working`]). An operator's requeue of a failed event
//! reads the record from the CRM as it is now (a `404` is a delete).

use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use serde_json::Value;
use shared::{
    http::{ApiError, verify::Verified},
    ingress::{AppliedBatch, Applying, Inbound, InboundEvent},
    mappers::crm as mapper,
    outbound::{self, Endpoint},
    schemas::crm::{ChangeKind, CrmEvent},
};

use crate::working::apply_all;

/// The durable consumer's name.
pub const CONSUMER: &str = "crm-inbound";

/// Splits a verified body into events (see the module doc); shape errors are 400s and invalid
/// values 422s, each naming the field.
pub fn parse(verified: &Verified, body: &[u8]) -> Result<Vec<InboundEvent>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::Invalid {
        status: actix_web::http::StatusCode::BAD_REQUEST,
        field: Some("body".into()),
        detail: format!("the body is not JSON: {e}"),
    })?;
    let events = mapper::parse_webhook(&value, verified.delivery_id.as_deref()).map_err(|e| {
        let status = if e.field.contains("data.") {
            actix_web::http::StatusCode::UNPROCESSABLE_ENTITY
        } else {
            actix_web::http::StatusCode::BAD_REQUEST
        };
        ApiError::Invalid { status, field: Some(e.field), detail: e.detail }
    })?;
    events
        .into_iter()
        .map(|(id, event)| {
            Ok(InboundEvent {
                id,
                entity: event.entity.as_str().to_owned(),
                data: serde_json::to_value(&event).map_err(anyhow::Error::from)?,
            })
        })
        .collect()
}

/// The CRM's inbound events, applied by the shared inbound path.
pub struct CrmInbound {
    pub http: reqwest::Client,
    /// The CRM's API, for requeues (`None`: requeue is refused, retry still works).
    pub crm: Option<Endpoint>,
}

impl Inbound for CrmInbound {
    type Event = CrmEvent;
    const SYSTEM: &'static str = "crm";

    fn entity(event: &CrmEvent) -> &str {
        event.entity.as_str()
    }

    fn record_id(event: &CrmEvent) -> &str {
        &event.id
    }

    fn retry_of(event: &CrmEvent) -> Option<i64> {
        event.retry_of
    }

    fn set_retry_of(event: &mut CrmEvent, row: Option<i64>) {
        event.retry_of = row;
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        events: &'a [Applying<'a, CrmEvent>],
    ) -> BoxFuture<'a, anyhow::Result<AppliedBatch>> {
        Box::pin(async move {
            let events: Vec<&CrmEvent> = events.iter().map(|a| a.event).collect();
            let (outcomes, messages) = apply_all(conn, &events).await?;
            Ok(AppliedBatch { outcomes, messages })
        })
    }

    /// The record as the CRM holds it now (a `404` is a delete).
    fn current<'a>(&'a self, stored: &'a CrmEvent) -> BoxFuture<'a, anyhow::Result<CrmEvent>> {
        Box::pin(async move {
            let (entity, external_id) = (stored.entity, stored.id.as_str());
            let crm =
                self.crm.as_ref().ok_or_else(|| anyhow::anyhow!("CRM_BASE_URL is not set"))?;
            match outbound::exchange(&self.http, crm, &mapper::read(entity, external_id)).await {
                Ok((_, answer)) => {
                    let remote = mapper::remote_record(&answer)
                        .ok_or_else(|| anyhow::anyhow!("the CRM's answer has no id"))?;
                    Ok(CrmEvent {
                        event: ChangeKind::Updated,
                        entity,
                        id: remote.id,
                        timestamp: remote.updated_at.unwrap_or_else(chrono::Utc::now),
                        data: remote.properties,
                        retry_of: None,
                    })
                }
                Err(outbound::Outcome::Rejected { status, .. })
                    if status == reqwest::StatusCode::NOT_FOUND =>
                {
                    Ok(CrmEvent {
                        event: ChangeKind::Deleted,
                        entity,
                        id: external_id.to_owned(),
                        timestamp: chrono::Utc::now(),
                        data: Default::default(),
                        retry_of: None,
                    })
                }
                Err(outcome) => anyhow::bail!(
                    "reading {entity} {external_id} from the CRM failed: {:?}",
                    outcome.status()
                ),
            }
        })
    }
}
