//! How operators retry and requeue the CRM records in the error ledger
//! ([`shared::record_errors`]).
//!
//! - Inbound (a CRM change that could not be applied): `retry` applies the stored event again;
//!   `requeue` reads the record from the CRM as it is now and applies that (a `404` is a
//!   delete).
//! - Outbound rows (pushes given up) are requeued by their push engine
//!   ([`shared::record_errors`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use shared::{
    bus::outbox::OutboxRow,
    mappers::crm as mapper,
    outbound::{self, Endpoint},
    record_errors::{Action, ErrorActions, RecordError},
    schemas::{
        Envelope,
        crm::{ChangeKind, CrmEvent, Entity},
    },
};

pub struct CrmErrors {
    pub http: reqwest::Client,
    pub crm: Option<Endpoint>,
}

impl CrmErrors {
    pub fn arc(self) -> Arc<dyn ErrorActions> {
        Arc::new(self)
    }

    async fn current(&self, entity: Entity, external_id: &str) -> anyhow::Result<CrmEvent> {
        let crm = self.crm.as_ref().ok_or_else(|| anyhow::anyhow!("CRM_BASE_URL is not set"))?;
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
    }
}

impl ErrorActions for CrmErrors {
    fn messages<'a>(
        &'a self,
        action: Action,
        row: &'a RecordError,
    ) -> BoxFuture<'a, anyhow::Result<Vec<OutboxRow>>> {
        Box::pin(async move {
            let event: CrmEvent = serde_json::from_value(row.last_payload.clone())?;
            let mut event = match action {
                Action::Requeue => self.current(event.entity, &event.id).await?,
                _ => event,
            };
            event.retry_of = Some(row.id);
            Ok(vec![OutboxRow::new(&Envelope::new("crm", event))])
        })
    }
}
