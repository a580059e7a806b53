//! Drift reconciliation: on a schedule (`CRM_RECONCILE_SECS`) and on demand
//! (`POST /admin/crm/reconcile`), the CRM's records changed since the last pass are compared
//! with the last synced copies, so a webhook the CRM never delivered, or a delete, is caught.
//!
//! Per entity:
//! 1. The CRM's search API lists the records modified after the entity's cursor, oldest first
//!    (within the bulk quota share). A record whose CRM state we never saw (unknown here, or
//!    `updatedAt` newer than the state in `sync_state`) is drift: it is applied through the
//!    same merge as a webhook and reported.
//! 2. Archived (deleted) records are listed; one archived after the cursor that is still live
//!    here is a missed delete: it is soft-deleted and reported.
//! 3. The cursor moves to the newest change compared. Changes younger than
//!    `CRM_RECONCILE_GRACE_SECS` are left for their webhooks and compared by a later pass.
//!
//! Drift is reported on `sync.events.crm.inbound.<entity>` (status `drifted`), in the log, and
//! in `datasync_crm_drift_total{entity}`.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use diesel::{
    OptionalExtension,
    sql_types::{Text, Timestamptz},
};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use prometheus::{IntCounterVec, register_int_counter_vec};
use serde::Serialize;
use serde_json::Value;
use shared::{
    bus::outbox::{self, OutboxRow},
    mappers::crm as mapper,
    outbound::OutboundRequest,
    schemas::{
        Envelope,
        crm::{ChangeKind, CrmEvent, Entity},
        sync::{Direction, RecordSynced, SyncBatchRecorded, SyncStatus},
    },
};

use crate::{AppState, SCHEMA, SERVICE, bulk, working};

static DRIFT: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "datasync_crm_drift_total",
        "CRM changes found by drift reconciliation that no webhook had brought, by entity",
        &["entity"]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

/// Most search pages one pass reads per entity (the CRM's search stops at 10,000 results;
/// the next pass goes on from the cursor).
const MAX_PAGES: usize = 50;

/// What one pass found for one entity.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct EntityReport {
    pub entity: String,
    /// CRM records compared.
    pub checked: u64,
    /// Changes no webhook had brought (applied now).
    pub drifted: u64,
    /// Deletes no webhook had brought (applied now).
    pub deleted: u64,
    /// The CRM time up to which changes are now compared.
    pub cursor: DateTime<Utc>,
}

/// Runs a pass every `every` until shutdown.
pub async fn run_periodically(state: AppState, every: std::time::Duration) {
    loop {
        tokio::select! {
            _ = state.platform.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match pass(&state).await {
            Ok(reports) => tracing::info!(?reports, "drift reconciliation pass"),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "drift reconciliation failed"),
        }
    }
}

/// One pass over every entity.
pub async fn pass(state: &AppState) -> anyhow::Result<Vec<EntityReport>> {
    let mut reports = Vec::new();
    for entity in Entity::ALL {
        reports.push(entity_pass(state, entity).await?);
    }
    Ok(reports)
}

async fn cursor(
    conn: &mut AsyncPgConnection,
    entity: Entity,
) -> diesel::QueryResult<DateTime<Utc>> {
    #[derive(diesel::QueryableByName)]
    struct Cursor {
        #[diesel(sql_type = Timestamptz)]
        modified_after: DateTime<Utc>,
    }
    let found: Option<Cursor> =
        diesel::sql_query("SELECT modified_after FROM crm.reconcile_cursors WHERE entity = $1")
            .bind::<Text, _>(entity.as_str())
            .get_result(conn)
            .await
            .optional()?;
    Ok(found.map_or(DateTime::<Utc>::UNIX_EPOCH, |c| c.modified_after))
}

async fn save_cursor(
    conn: &mut AsyncPgConnection,
    entity: Entity,
    at: DateTime<Utc>,
) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO crm.reconcile_cursors (entity, modified_after) VALUES ($1, $2) \
         ON CONFLICT (entity) DO UPDATE SET modified_after = greatest(crm.reconcile_cursors.modified_after, $2), \
             updated_at = now()",
    )
    .bind::<Text, _>(entity.as_str())
    .bind::<Timestamptz, _>(at)
    .execute(conn)
    .await
    .map(|_| ())
}

fn archived_at(record: &Value) -> Option<DateTime<Utc>> {
    record
        .get("archivedAt")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

async fn entity_pass(state: &AppState, entity: Entity) -> anyhow::Result<EntityReport> {
    let crm = state.crm.as_ref().ok_or_else(|| anyhow::anyhow!("CRM_BASE_URL is not set"))?;
    let platform = &state.platform;
    let mut conn = platform.db.get().await?;
    let since = cursor(&mut conn, entity).await?;
    let horizon = Utc::now() - chrono::Duration::from_std(state.reconcile_grace)?;
    let mut report =
        EntityReport { entity: entity.as_str().into(), cursor: since, ..Default::default() };
    // Changes: the search, oldest first, up to the horizon.
    let mut changed = Vec::new();
    let mut after: Option<String> = None;
    // How far the search got: the horizon when it went through, else the newest change it
    // compared (a pass reads at most MAX_PAGES pages; the next one goes on from there).
    let mut searched_until = horizon;
    let mut pages = 0;
    'pages: loop {
        pages += 1;
        let request = mapper::search_modified(
            &state.field_map,
            entity,
            since.timestamp_millis(),
            after.as_deref(),
            100,
        );
        let (records, next) =
            bulk::page(&platform.http, crm, &state.budget, &platform.shutdown, &request)
                .await
                .map_err(|o| {
                    anyhow::anyhow!("searching the CRM's {entity} failed: {:?}", o.status())
                })?;
        for record in &records {
            let Some(remote) = mapper::remote_record(record) else { continue };
            let Some(at) = remote.updated_at else { continue };
            if at > horizon {
                break 'pages;
            }
            report.checked += 1;
            if let Ok(data) = state.field_map.to_local(entity, &remote.properties) {
                changed.push(CrmEvent {
                    event: ChangeKind::Updated,
                    entity,
                    id: remote.id,
                    timestamp: at,
                    data,
                    read: false,
                    merged: Vec::new(),
                    retry_of: None,
                });
            }
        }
        match next {
            Some(n) if pages < MAX_PAGES && !platform.shutdown.is_cancelled() => after = Some(n),
            Some(_) => {
                searched_until = changed.iter().map(|e| e.timestamp).max().unwrap_or(since);
                break;
            }
            None => break,
        }
    }
    // Deletes: archived after the cursor, up to where the search got.
    let mut after: Option<String> = None;
    loop {
        let request = OutboundRequest {
            method: reqwest::Method::GET,
            path: mapper::list_path(&state.field_map, entity, after.as_deref(), 100, true),
            body: Value::Null,
        };
        let (records, next) =
            bulk::page(&platform.http, crm, &state.budget, &platform.shutdown, &request)
                .await
                .map_err(|o| {
                    anyhow::anyhow!("listing the CRM's archived {entity} failed: {:?}", o.status())
                })?;
        for record in &records {
            let (Some(remote), Some(at)) = (mapper::remote_record(record), archived_at(record))
            else {
                continue;
            };
            if at > since && at <= searched_until {
                report.checked += 1;
                changed.push(CrmEvent {
                    event: ChangeKind::Deleted,
                    entity,
                    id: remote.id,
                    timestamp: at,
                    data: Default::default(),
                    read: false,
                    merged: Vec::new(),
                    retry_of: None,
                });
            }
        }
        match next {
            Some(n) if !platform.shutdown.is_cancelled() => after = Some(n),
            _ => break,
        }
    }
    changed.sort_by_key(|e| e.timestamp);
    // The cursor moves to the newest change compared, never past where the search got.
    let newest = changed.iter().map(|e| e.timestamp).filter(|t| *t <= searched_until).max();
    let events: Vec<&CrmEvent> = changed.iter().collect();
    let drifted = conn
        .transaction::<_, anyhow::Error, _>(async |conn| {
            shared::db::set_origin(conn, "crm").await?;
            let known = working::Working::load(conn, &events, true).await?;
            // Drift: a CRM state we never saw, checked before applying.
            let missed: Vec<bool> = events.iter().map(|e| known.missed(e)).collect();
            let (outcomes, mut messages) = working::apply_all(conn, &events).await?;
            let drifted: Vec<(&CrmEvent, String)> = events
                .iter()
                .zip(missed)
                .zip(outcomes)
                .filter(|((_, missed), _)| *missed)
                .map(|((e, _), o)| (*e, o.reason.unwrap_or_else(|| "applied".into())))
                .collect();
            if !drifted.is_empty() {
                messages.push(OutboxRow::new(&Envelope::new(
                    SERVICE,
                    SyncBatchRecorded {
                        system: "crm".into(),
                        direction: Direction::Inbound,
                        entity: entity.as_str().into(),
                        records: drifted
                            .iter()
                            .map(|(e, detail)| RecordSynced {
                                record_id: e.id.clone(),
                                status: SyncStatus::Drifted,
                                http_status: None,
                                detail: Some(format!(
                                    "drift ({:?} no webhook brought): {detail}",
                                    e.event
                                )),
                            })
                            .collect(),
                    },
                )));
            }
            outbox::enqueue(conn, SCHEMA, &messages).await?;
            if let Some(newest) = newest {
                save_cursor(conn, entity, newest).await?;
            }
            Ok(drifted.iter().map(|(e, _)| e.event).collect::<Vec<_>>())
        })
        .await?;
    report.deleted = drifted.iter().filter(|k| **k == ChangeKind::Deleted).count() as u64;
    report.drifted = drifted.len() as u64 - report.deleted;
    report.cursor = newest.unwrap_or(since).max(since);
    if !drifted.is_empty() {
        DRIFT.with_label_values(&[entity.as_str()]).inc_by(drifted.len() as u64);
        tracing::warn!(%entity, changes = report.drifted, deletes = report.deleted, "drift: CRM changes no webhook brought, applied now");
    }
    Ok(report)
}
