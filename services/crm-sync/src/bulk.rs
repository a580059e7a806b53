//! Bulk (initial) loads of contacts, accounts and opportunities from the CRM's list API, run
//! by the shared job engine ([`shared::bulk`]), and the email that tells operators a load
//! ended.
//!
//! A page is `GET /crm/v3/objects/<type>?limit=&after=` (the cursor is the job's checkpoint).
//! Each record goes through the CRM's inbound path as a webhook would
//! ([`shared::ingress::apply_loaded`]; its `updatedAt` is the change's time), so a page applied twice, or a record a webhook already brought, changes nothing, and
//! a record with unpushed local changes is merged, never overwritten. Records the mapper
//! refuses are the job's record errors.
//!
//! Every request of a load spends the bulk share of the CRM's quota ([`QuotaBudget`]): at the
//! reserve it pauses until the CRM's window ends, then goes on by itself.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use shared::{
    bulk::{BulkKind, BulkSource, Job, Page, Preview, RecordError},
    bus::{Delivery, HandlerError},
    db::PgPool,
    mappers::crm as mapper,
    notify::{Mailer, escape_html},
    outbound::{self, Endpoint, OutboundRequest, Outcome, quota::QuotaBudget},
    schemas::Email,
    schemas::{
        crm::{ChangeKind, CrmEvent, Entity},
        sync::BulkJobChanged,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{SCHEMA, inbound::CrmInbound, working};

/// One entity's load from the CRM.
pub struct CrmLoad {
    pub entity: Entity,
    /// The CRM's inbound path, which applies the listed records as its webhooks.
    pub inbound: CrmInbound,
    pub http: reqwest::Client,
    pub crm: Endpoint,
    pub db: PgPool,
    pub budget: Arc<QuotaBudget>,
    pub shutdown: CancellationToken,
}

impl CrmLoad {
    pub fn offered(self) -> (BulkKind, Arc<dyn BulkSource>) {
        (BulkKind::new("crm", "crm", self.entity.table()), Arc::new(self))
    }

    /// A listed record as the change it stands for (the CRM's properties, mapped by the
    /// inbound path), or why it cannot be applied.
    fn event(&self, record: &Value) -> Result<CrmEvent, RecordError> {
        let remote = mapper::remote_record(record).ok_or_else(|| RecordError {
            record_id: "?".into(),
            error: "the record has no id".into(),
        })?;
        let timestamp = remote.updated_at.ok_or_else(|| RecordError {
            record_id: remote.id.clone(),
            error: "the record has no updatedAt".into(),
        })?;
        Ok(CrmEvent {
            event: ChangeKind::Updated,
            entity: self.entity,
            id: remote.id,
            timestamp,
            data: remote.properties,
            read: false,
            merged: Vec::new(),
            retry_of: None,
        })
    }

    fn events(&self, records: &[Value]) -> (Vec<CrmEvent>, Vec<RecordError>) {
        shared::bulk::split(records, |_, record| self.event(record))
    }
}

/// One page of a list (or search) call within the quota budget.
pub async fn page(
    http: &reqwest::Client,
    crm: &Endpoint,
    budget: &QuotaBudget,
    shutdown: &CancellationToken,
    request: &OutboundRequest,
) -> Result<(Vec<Value>, Option<String>), Outcome> {
    budget.wait_turn(shutdown).await;
    let (status, answer) =
        outbound::exchange_with_headers(http, crm, request, Some(budget)).await?;
    let results = answer.get("results").and_then(Value::as_array).cloned();
    let (_, next) = mapper::page(&answer).map_err(|body| Outcome::Rejected { status, body })?;
    Ok((results.unwrap_or_default(), next))
}

impl BulkSource for CrmLoad {
    fn fetch<'a>(
        &'a self,
        cursor: Option<&'a Value>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, Outcome>> {
        Box::pin(async move {
            let after = cursor.and_then(|c| c.get("after")).and_then(Value::as_str);
            let request = OutboundRequest {
                method: reqwest::Method::GET,
                path: mapper::list_path(
                    &self.inbound.map,
                    self.entity,
                    after,
                    limit.min(100),
                    false,
                ),
                body: Value::Null,
            };
            let (records, next) =
                page(&self.http, &self.crm, &self.budget, &self.shutdown, &request).await?;
            Ok(Page { records, next: next.map(|after| json!({"after": after})) })
        })
    }

    fn apply<'a>(
        &'a self,
        job: &'a Job,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Vec<RecordError>>> {
        Box::pin(shared::ingress::apply_loaded(
            &self.inbound,
            &self.db,
            SCHEMA,
            job,
            self.events(records),
        ))
    }

    fn preview<'a>(
        &'a self,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Option<Preview>>> {
        Box::pin(async move {
            let (events, mut errors) = self.events(records);
            // Mapped to local columns as the inbound path maps them.
            let mut mapped = Vec::with_capacity(events.len());
            for mut event in events {
                match self.inbound.map.to_local(self.entity, &event.data) {
                    Ok(data) => {
                        event.data = data;
                        mapped.push(event);
                    }
                    Err(e) => errors.push(RecordError {
                        record_id: event.id,
                        error: format!("{}: {}", e.field, e.detail),
                    }),
                }
            }
            let events: Vec<&CrmEvent> = mapped.iter().collect();
            let mut conn = self.db.get().await?;
            let mut preview = working::preview(&mut conn, &events).await?;
            preview.errors = errors
                .into_iter()
                .map(|e| shared::bulk::PreviewError { record_id: e.record_id, error: e.error })
                .collect();
            Ok(Some(preview))
        })
    }
}

/// The durable consumer that emails the end of each CRM bulk load.
pub const MAIL_CONSUMER: &str = "crm-bulk-mail";

/// The email for a load that ended (`None` while it runs).
pub fn completion_email(job: &BulkJobChanged, to: &[String]) -> Option<Email> {
    let (title, verdict) = match job.status.as_str() {
        "completed" => ("Bulk Sync Complete", "completed"),
        "failed" => ("Bulk Sync Failed", "failed"),
        _ => return None,
    };
    let error = job.error.as_deref().map(|e| format!("\nError: {e}")).unwrap_or_default();
    let text = format!(
        "The bulk sync {id} of {entity} from {source} {verdict}.\n\n\
         Records: {total}\nProcessed: {processed}\nErrors: {errors}{error}\n",
        id = job.job_id,
        entity = job.entity,
        source = job.source,
        total = job.total_records,
        processed = job.processed_records,
        errors = job.error_count,
    );
    let html = format!(
        "<html><body><h2>{title}: {id}</h2><p>The bulk sync of <b>{entity}</b> from {source} \
         {verdict}.</p><table><tr><th align=\"left\">Records</th><td>{total}</td></tr>\
         <tr><th align=\"left\">Processed</th><td>{processed}</td></tr>\
         <tr><th align=\"left\">Errors</th><td>{errors}</td></tr></table>{error}</body></html>",
        id = escape_html(&job.job_id),
        entity = escape_html(&job.entity),
        source = escape_html(&job.source),
        total = job.total_records,
        processed = job.processed_records,
        errors = job.error_count,
        error = job
            .error
            .as_deref()
            .map(|e| format!("<p>Error: {}</p>", escape_html(e)))
            .unwrap_or_default(),
    );
    Some(Email {
        to: to.to_vec(),
        subject: format!("{title}: {}", job.job_id),
        text,
        html: Some(html),
        message_id: None,
    })
}

/// Sends the email of an ended load once: a redelivery after the send was recorded sends
/// nothing (a crash between the send and its record sends it again: at least once).
pub async fn mail(
    db: &PgPool,
    mailer: &Mailer,
    to: &[String],
    delivery: Delivery<BulkJobChanged>,
) -> Result<(), HandlerError> {
    let job = &delivery.envelope.data;
    if job.service != crate::SERVICE {
        return Ok(());
    }
    let Some(email) = completion_email(job, to) else {
        return Ok(());
    };
    let id = delivery.envelope.id.to_string();
    mailer.send_once(db, SCHEMA, MAIL_CONSUMER, &id, &email).await.map(|_| ())
}
