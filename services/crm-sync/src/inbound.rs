//! CRM → local: the webhook source (verified by the shared ingress) and the consumer that
//! applies the events.
//!
//! `POST /webhooks/crm` takes a HubSpot app's webhook (an array of up to 100 native events:
//! `contact.*`, `company.*`, `deal.*` with `.creation`, `.propertyChange`, `.deletion`,
//! `.privacyDeletion`, `.restore`, `.merge`; each `eventId` is the event's id, so a retried
//! delivery is stored once) or the seed's `{eventId?, event, type, id, timestamp, data}`,
//! signed with Standard Webhooks or HubSpot v3; each event is published on
//! `webhooks.crm.<entity>` and answered at once (HubSpot allows a few seconds).
//!
//! The shared inbound path ([`shared::ingress::inbound`]) takes every ready event (up to
//! `CRM_INBOUND_BATCH`) into one transaction with origin `crm`, skips settled ones, records the
//! outcomes and announces the batch. What is the CRM's own: HubSpot's creation, restore and
//! merge events carry no properties, so the batch first reads those records with one
//! `batch/read` per object type (before a database connection is taken); properties are
//! mapped to local columns with the configured field map; a merge deletes the records merged
//! away and updates the winner. Then records locked in id order, the three-way merge per event
//! ([`crate::domain::merge`]) in memory, per entity one insert, one update and one sync-state
//! upsert, and conflicts announced on `sync.conflicts.detected.crm` ([`crate::working`]). An
//! operator's requeue of a failed event reads the record from the CRM as it is now (a `404` is
//! a delete).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use diesel_async::AsyncPgConnection;
use futures::future::BoxFuture;
use serde_json::Value;
use shared::{
    http::{ApiError, verify::Verified},
    ingress::{AppliedBatch, Applying, EventStatus, Inbound, InboundEvent, Outcome},
    mappers::crm::{self as mapper, FieldMap, RemoteRecord},
    outbound::{self, Endpoint},
    schemas::crm::{ChangeKind, CrmEvent, Entity},
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
#[derive(Clone)]
pub struct CrmInbound {
    pub http: reqwest::Client,
    /// The CRM's API, for the records HubSpot's events do not carry and for requeues
    /// (`None`: such events fail, requeue is refused, retry still works).
    pub crm: Option<Endpoint>,
    /// Which CRM property holds which local column.
    pub map: Arc<FieldMap>,
}

/// What one received event becomes: the changes to apply, or its outcome already.
type Prepared = Result<Vec<CrmEvent>, Outcome>;

impl CrmInbound {
    fn crm(&self) -> anyhow::Result<&Endpoint> {
        self.crm.as_ref().ok_or_else(|| anyhow::anyhow!("CRM_BASE_URL is not set"))
    }

    /// The records the events must read, with one `batch/read` per object type and 100 ids.
    async fn read_records(
        &self,
        events: &[CrmEvent],
    ) -> anyhow::Result<HashMap<(Entity, String), RemoteRecord>> {
        let mut wanted: BTreeMap<Entity, BTreeSet<String>> = BTreeMap::new();
        for e in events.iter().filter(|e| e.read) {
            wanted.entry(e.entity).or_default().insert(e.id.clone());
        }
        let mut found = HashMap::new();
        for (entity, ids) in wanted {
            let ids: Vec<String> = ids.into_iter().collect();
            for chunk in ids.chunks(mapper::BATCH_READ_MAX) {
                let request = mapper::batch_read(&self.map, entity, chunk);
                let (_, answer) =
                    outbound::exchange(&self.http, self.crm()?, &request).await.map_err(|o| {
                        anyhow::anyhow!("reading {entity} records from the CRM failed: {o:?}")
                    })?;
                let results = answer.get("results").and_then(Value::as_array);
                for record in results.into_iter().flatten().filter_map(mapper::remote_record) {
                    found.insert((entity, record.id.clone()), record);
                }
            }
        }
        Ok(found)
    }

    /// The changes one event makes (see the module doc): an event still marked `read` after
    /// [`Inbound::prepare`] is about a record the CRM no longer has.
    fn prepare_one(&self, event: &CrmEvent) -> Prepared {
        let failed = |reason: String| Outcome { status: EventStatus::Failed, reason: Some(reason) };
        let mut out = Vec::new();
        for loser in &event.merged {
            out.push(CrmEvent {
                event: ChangeKind::Deleted,
                id: loser.clone(),
                data: Default::default(),
                read: false,
                merged: Vec::new(),
                ..event.clone()
            });
        }
        if event.read {
            if out.is_empty() {
                return Err(Outcome::applied(Some(
                    "not in the CRM any more (deleted or merged since)".into(),
                )));
            }
            return Ok(out);
        }
        if event.event == ChangeKind::Deleted {
            out.push(event.clone());
            return Ok(out);
        }
        let data = self
            .map
            .to_local(event.entity, &event.data)
            .map_err(|e| failed(format!("{}: {}", e.field, e.detail)))?;
        if data.is_empty() && event.event == ChangeKind::Updated {
            let names: Vec<&String> = event.data.keys().collect();
            return Err(Outcome::applied(Some(format!("not synced: {names:?}"))));
        }
        out.push(CrmEvent {
            event: if event.event == ChangeKind::Created {
                ChangeKind::Created
            } else {
                ChangeKind::Updated
            },
            data,
            read: false,
            merged: Vec::new(),
            ..event.clone()
        });
        Ok(out)
    }
}

impl Inbound for CrmInbound {
    /// HubSpot's creation, restore and merge events carry no properties: their records are
    /// read here (one `batch/read` per object type), and each such event takes the record's
    /// properties as the CRM holds them now, at the later of its time and the record's.
    fn prepare<'a>(
        &'a self,
        mut events: Vec<CrmEvent>,
    ) -> BoxFuture<'a, anyhow::Result<Vec<CrmEvent>>> {
        Box::pin(async move {
            if !events.iter().any(|e| e.read) {
                return Ok(events);
            }
            let read = self.read_records(&events).await?;
            for event in events.iter_mut().filter(|e| e.read) {
                if let Some(r) = read.get(&(event.entity, event.id.clone())) {
                    event.data = r.properties.clone();
                    event.timestamp =
                        r.updated_at.map_or(event.timestamp, |t| t.max(event.timestamp));
                    event.read = false;
                }
            }
            Ok(events)
        })
    }

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
            let prepared: Vec<Prepared> =
                events.iter().map(|a| self.prepare_one(a.event)).collect();
            let flat: Vec<&CrmEvent> =
                prepared.iter().filter_map(|p| p.as_ref().ok()).flatten().collect();
            let (applied, messages) = apply_all(conn, &flat).await?;
            let mut applied = applied.into_iter();
            // One outcome per received event: a merge's is its first that is not plainly
            // applied, else its winner's (the last).
            let outcomes = prepared
                .into_iter()
                .map(|p| match p {
                    Err(outcome) => outcome,
                    Ok(parts) => {
                        let mine: Vec<Outcome> = applied.by_ref().take(parts.len()).collect();
                        mine.iter()
                            .find(|o| o.status != EventStatus::Applied)
                            .or(mine.last())
                            .cloned()
                            .unwrap_or_else(|| Outcome::applied(None))
                    }
                })
                .collect();
            Ok(AppliedBatch { outcomes, messages })
        })
    }

    /// The record as the CRM holds it now (a `404` is a delete).
    fn current<'a>(&'a self, stored: &'a CrmEvent) -> BoxFuture<'a, anyhow::Result<CrmEvent>> {
        Box::pin(async move {
            let (entity, external_id) = (stored.entity, stored.id.as_str());
            let crm = self.crm()?;
            let read = mapper::read(&self.map, entity, external_id);
            match outbound::exchange(&self.http, crm, &read).await {
                Ok((_, answer)) => {
                    let remote = mapper::remote_record(&answer)
                        .ok_or_else(|| anyhow::anyhow!("the CRM's answer has no id"))?;
                    Ok(CrmEvent {
                        event: ChangeKind::Updated,
                        entity,
                        id: remote.id,
                        timestamp: remote.updated_at.unwrap_or_else(chrono::Utc::now),
                        data: remote.properties,
                        read: false,
                        merged: Vec::new(),
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
                        read: false,
                        merged: Vec::new(),
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
