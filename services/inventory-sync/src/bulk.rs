//! Bulk load `stock` from the ERP to inventory: the ERP's stock levels, read a page at a time
//! (`GET /api/inventory?offset=&limit=`), become `count` adjustments with source `erp`. The
//! job engine ([`shared::bulk`]) runs, checkpoints and resumes the load; this holds only what
//! is inventory's own.
//!
//! Idempotent: each record's reference is `<job id>/<warehouse>/<sku>/<quantity>`, unique in
//! the ledger per source, so a page applied again after a crash changes nothing (and a page
//! read again after the ERP's level moved applies the new level). Records the ERP sends
//! malformed, or for products inventory does not know, are the job's record errors. When a
//! page lists a sku and warehouse twice, the last record wins.
//!
//! Every record is a count stamped with its source's time, like the ERP's live counts
//! (`inventory.count.erp`): the record's own `updatedAt` (and `version`) when the ERP sends
//! them, else the time the page was read (the ERP's state then includes every change before
//! it). So a snapshot read before a newer live count that is applied after it is stale and
//! skipped: it never undoes the newer count, and nothing is pushed for it.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde_json::Value;
use shared::{
    bulk::{BulkKind, BulkSource, Job, Page, RecordError},
    mappers,
    outbound::{Endpoint, Outcome},
    schemas::inventory::{AdjustmentType, Target},
};

use crate::domain::{
    adjuster::{Adjuster, Adjustment, Loaded, Refused},
    adjustment::AdjustmentRequest,
    plan::Stamp,
};

/// The key a fetched record carries its page's read time under (kept with the job's page).
const FETCHED_AT: &str = "_fetchedAt";

/// A stock record's stamp: the ERP's `updatedAt` and `version` when it sends them, else the
/// time its page was read; `None` when neither is there (a page of an earlier release).
fn stamp_of(record: &Value) -> Option<Stamp> {
    let time = |name: &str| {
        record
            .get(name)
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let at = time("updatedAt").or_else(|| time(FETCHED_AT))?;
    Some(Stamp { at, version: record.get("version").and_then(Value::as_i64) })
}

pub struct ErpStock {
    pub http: reqwest::Client,
    pub erp: Endpoint,
    pub adjuster: Adjuster,
}

impl ErpStock {
    pub fn kind() -> BulkKind {
        BulkKind::new("erp", "inventory", "stock")
    }

    pub fn offered(self) -> (BulkKind, Arc<dyn BulkSource>) {
        (Self::kind(), Arc::new(self))
    }
}

impl BulkSource for ErpStock {
    fn fetch<'a>(
        &'a self,
        cursor: Option<&'a Value>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Page, Outcome>> {
        Box::pin(async move {
            let fetched_at = Value::from(Utc::now().to_rfc3339());
            let mut page = shared::bulk::offset_page(
                &self.http,
                &self.erp,
                mappers::erp::inventory_page_path,
                mappers::erp::list_page,
                cursor,
                limit,
                None,
            )
            .await?;
            for record in &mut page.records {
                if let Value::Object(fields) = record {
                    fields.insert(FETCHED_AT.to_owned(), fetched_at.clone());
                }
            }
            Ok(page)
        })
    }

    fn apply<'a>(
        &'a self,
        job: &'a Job,
        records: &'a [Value],
    ) -> BoxFuture<'a, anyhow::Result<Vec<RecordError>>> {
        Box::pin(async move {
            let mut errors = Vec::new();
            let mut adjustments = Vec::with_capacity(records.len());
            let mut seen = std::collections::HashSet::new();
            // Last record per sku and warehouse wins: walk backwards, skip what was seen.
            for (i, record) in records.iter().enumerate().rev() {
                let record_id = mappers::erp::inventory_record_id(record, i);
                // Keyed by the record id (`warehouse/sku` when both are there), valid or not.
                if !seen.insert(record_id.clone()) {
                    continue;
                }
                let adjustment = mappers::erp::inventory_record(record).and_then(|level| {
                    Adjustment::try_from(AdjustmentRequest {
                        source: "erp".into(),
                        reference: format!(
                            "{}/{}/{}/{}",
                            job.id, level.warehouse, level.sku, level.on_hand
                        ),
                        sku: level.sku,
                        warehouse: level.warehouse,
                        kind: AdjustmentType::Count,
                        quantity: level.on_hand,
                        reason: Some(format!("bulk sync {}", job.id)),
                        expected_on_hand: None,
                    })
                    .map(|a| Adjustment {
                        stamp: stamp_of(record),
                        loaded: Some(Loaded { job_id: job.id.clone(), told: Some(Target::Erp) }),
                        ..a
                    })
                    .map_err(|e| e.to_string())
                });
                match adjustment {
                    Ok(a) => adjustments.push((record_id, a)),
                    Err(error) => errors.push(RecordError { record_id, error }),
                }
            }
            // The page is applied in one transaction (a few set-based statements).
            let (ids, adjustments): (Vec<String>, Vec<Adjustment>) =
                adjustments.into_iter().unzip();
            let results: Vec<(String, Result<_, Refused>)> =
                ids.into_iter().zip(self.adjuster.apply_all(adjustments).await).collect();
            errors.reverse();
            for (record_id, result) in results.into_iter().rev() {
                match result {
                    Ok(_) => {}
                    // Transient (e.g. the database is down): the engine retries the page.
                    Err(Refused::Failed(reason)) => anyhow::bail!("{record_id}: {reason}"),
                    // A newer count of the row is applied already: this one is history.
                    Err(stale @ Refused::Stale { .. }) => {
                        crate::metrics::stale_count();
                        tracing::info!(%record_id, %stale, "older bulk count skipped");
                    }
                    Err(refused) => {
                        errors.push(RecordError { record_id, error: refused.to_string() })
                    }
                }
            }
            Ok(errors)
        })
    }
}
