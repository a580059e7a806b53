//! How operators retry and requeue the ERP records in the error ledger
//! ([`shared::record_errors`]).
//!
//! - Inbound (an ERP event that could not be applied): `retry` applies the stored event again;
//!   `requeue` reads a customer or order from the ERP as it is now and applies that (the ERP
//!   has no read API for the other entities: retry them).
//! - Outbound rows (pushes given up) are requeued by their push engine
//!   ([`shared::record_errors`]).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use shared::{
    bus::outbox::OutboxRow,
    mappers::erp as mapper,
    outbound::{self, Endpoint},
    record_errors::{Action, ErrorActions, RecordError},
    schemas::{Envelope, erp::ErpWebhook},
};

pub struct ErpErrors {
    pub http: reqwest::Client,
    pub erp: Option<Endpoint>,
}

impl ErpErrors {
    pub fn arc(self) -> Arc<dyn ErrorActions> {
        Arc::new(self)
    }

    /// The record of a stored event as the ERP holds it now, as the event reporting it.
    async fn current(&self, stored: &ErpWebhook) -> anyhow::Result<ErpWebhook> {
        let list = match stored.entity.as_str() {
            "customer" => "customers",
            "salesOrder" => "orders",
            other => anyhow::bail!("the ERP has no read API for {other}: retry the stored event"),
        };
        let erp = self.erp.as_ref().ok_or_else(|| anyhow::anyhow!("ERP_BASE_URL is not set"))?;
        let request = mapper::read_record(list, &stored.entity_id);
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
    }
}

impl ErrorActions for ErpErrors {
    fn messages<'a>(
        &'a self,
        action: Action,
        row: &'a RecordError,
    ) -> BoxFuture<'a, anyhow::Result<Vec<OutboxRow>>> {
        Box::pin(async move {
            let stored: ErpWebhook = serde_json::from_value(row.last_payload.clone())?;
            let mut event = match action {
                Action::Requeue => self.current(&stored).await?,
                _ => stored,
            };
            event.retry_of = Some(row.id);
            Ok(vec![OutboxRow::new(&Envelope::new("erp", event))])
        })
    }
}
