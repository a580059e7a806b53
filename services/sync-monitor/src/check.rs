//! A health check: the figures of every integration (from what the monitor stored and from
//! the real JetStream consumers' pending counts), the rules ([`crate::health`]), the report
//! stored, the gauges set, and a notification per change of the platform's state.
//!
//! Runs every `MONITOR_CHECK_SECS` (300) by one replica at a time (an advisory lock), and on
//! demand (`POST /api/health/check`). One notification per change, never per check: degraded
//! goes to Slack; unhealthy to Slack and PagerDuty (`trigger`, key `MONITOR_INCIDENT_KEY`); the
//! recovery resolves the incident with the same key and tells Slack.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Jsonb, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::TryStreamExt;
use serde_json::Value;
use shared::{
    bus::{
        Bus,
        outbox::{self, OutboxRow},
        streams,
    },
    schemas::{Envelope, sync::Severity},
};

use crate::{
    AppState,
    health::{self, Figures, INTEGRATIONS, Overall, Report},
    notify::Notification,
};

/// Minutes of lag allowed when `max_sync_lag_secs` names no value for an integration.
pub const DEFAULT_MAX_LAG_SECS: u64 = 30 * 60;

/// The integration a consumer serves: one named by a segment of its filter subject
/// (`webhooks.crm.>`, `outbound.erp.order`) or a part of its name (`push-ecommerce`).
pub fn consumer_integration(filter: &str, durable: &str) -> Option<&'static str> {
    INTEGRATIONS.into_iter().find(|i| {
        filter.split('.').any(|s| s == *i) || durable.split(['-', '_', '.']).any(|s| s == *i)
    })
}

/// Messages waiting (not yet delivered, or delivered and not acknowledged) per integration, in
/// the streams that carry work to and from the integrations.
pub async fn queue_depths(bus: &Bus) -> anyhow::Result<BTreeMap<&'static str, u64>> {
    let mut depths = BTreeMap::new();
    for spec in [
        &streams::WEBHOOKS,
        &streams::OUTBOUND,
        &streams::INVENTORY_LEVELS,
        &streams::INVENTORY_COUNTS,
    ] {
        let Ok(stream) = bus.js.get_stream(bus.name(spec.name)).await else { continue };
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.try_next().await? {
            let filters: Vec<String> = std::iter::once(info.config.filter_subject.clone())
                .chain(info.config.filter_subjects.iter().cloned())
                .map(|f| bus.strip_prefix(&f).to_owned())
                .collect();
            let durable = info.config.durable_name.clone().unwrap_or_else(|| info.name.clone());
            let durable =
                durable.strip_prefix(bus.prefix()).unwrap_or(&durable).trim_start_matches('_');
            if let Some(system) = filters.iter().find_map(|f| consumer_integration(f, durable)) {
                *depths.entry(system).or_default() +=
                    info.num_pending + info.num_ack_pending as u64;
            }
        }
    }
    Ok(depths)
}

/// Open error-ledger rows per integration, from every service in `MONITOR_SERVICES` (their
/// `system`), and the services that could not be read.
async fn ledger_counts(state: &AppState) -> (BTreeMap<String, i64>, Vec<String>) {
    let calls = state.services.iter().map(|(service, base)| async move {
        let answer = state
            .http
            .get(format!("{base}/admin/record-errors?limit=1000"))
            .bearer_auth(state.token_for(service))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await;
        let body = match answer {
            Ok(r) if r.status().is_success() => r.json::<Value>().await.ok(),
            _ => None,
        };
        (service.clone(), body)
    });
    let mut counts = BTreeMap::new();
    let mut unreachable = Vec::new();
    for (service, body) in futures::future::join_all(calls).await {
        match body {
            Some(body) => {
                for row in body["errors"].as_array().into_iter().flatten() {
                    if let Some(system) = row["system"].as_str() {
                        *counts.entry(system.to_owned()).or_default() += 1;
                    }
                }
            }
            None => unreachable.push(service),
        }
    }
    (counts, unreachable)
}

#[derive(diesel::QueryableByName)]
struct Counts {
    #[diesel(sql_type = Text)]
    system: String,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_sync: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    synced: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    escalated: i64,
    #[diesel(sql_type = BigInt)]
    dead_letters: i64,
    #[diesel(sql_type = BigInt)]
    bulk_running: i64,
    #[diesel(sql_type = BigInt)]
    bulk_failed: i64,
}

/// What the monitor stored about each integration, one query.
async fn counts(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vec<Counts>> {
    diesel::sql_query(
        "WITH i(system) AS (SELECT unnest($1::text[])), \
         recent AS (SELECT system, count(*) FILTER (WHERE status IN ('synced', 'skipped', 'drifted')) AS synced, \
                           count(*) FILTER (WHERE status IN ('retrying', 'dead_lettered')) AS errors \
                    FROM monitor.sync_events WHERE at > now() - interval '1 hour' GROUP BY system), \
         c AS (SELECT system, count(*) FILTER (WHERE status = 'pending') AS pending, \
                      count(*) FILTER (WHERE status = 'escalated') AS escalated \
               FROM monitor.conflicts WHERE status <> 'resolved' GROUP BY system), \
         d AS (SELECT integration AS system, count(*) AS n FROM monitor.service_dead_letters WHERE state = 'open' GROUP BY 1), \
         b AS (SELECT CASE WHEN source = ANY($1::text[]) THEN source ELSE target END AS system, \
                      count(*) FILTER (WHERE status IN ('pending', 'running')) AS running, \
                      count(*) FILTER (WHERE status = 'failed' AND updated_at > now() - interval '1 day') AS failed \
               FROM monitor.bulk_jobs GROUP BY 1) \
         SELECT i.system, l.at AS last_sync, coalesce(recent.synced, 0) AS synced, coalesce(recent.errors, 0) AS errors, \
                coalesce(c.pending, 0) AS pending, coalesce(c.escalated, 0) AS escalated, coalesce(d.n, 0) AS dead_letters, \
                coalesce(b.running, 0) AS bulk_running, coalesce(b.failed, 0) AS bulk_failed \
         FROM i LEFT JOIN monitor.last_success l USING (system) LEFT JOIN recent USING (system) \
              LEFT JOIN c USING (system) LEFT JOIN d USING (system) LEFT JOIN b USING (system) \
         ORDER BY array_position($1::text[], i.system)",
    )
    .bind::<diesel::sql_types::Array<Text>, _>(INTEGRATIONS.to_vec())
    .load(conn)
    .await
}

/// Runs one check now: the report, stored, with its notifications.
pub async fn run(state: &AppState) -> anyhow::Result<Report> {
    let depths = match queue_depths(&state.bus).await {
        Ok(depths) => depths,
        Err(e) => {
            tracing::warn!(error = %e, "reading the consumers' pending counts failed");
            BTreeMap::new()
        }
    };
    let (ledgers, unreachable) = ledger_counts(state).await;
    let settings = state.settings.current();
    let mut conn = state.db.get().await?;
    let figures: Vec<Figures> = counts(&mut conn)
        .await?
        .into_iter()
        .map(|c| {
            let max_lag =
                settings.max_sync_lag_secs.get(&c.system).copied().unwrap_or(DEFAULT_MAX_LAG_SECS);
            let queue_depth = depths.get(c.system.as_str()).copied().unwrap_or(0);
            let ledger_open = ledgers.get(c.system.as_str()).copied().unwrap_or(0);
            Figures {
                active: c.last_sync.is_some()
                    || c.errors > 0
                    || c.dead_letters > 0
                    || queue_depth > 0
                    || ledger_open > 0,
                max_lag_minutes: i64::try_from(max_lag / 60).unwrap_or(i64::MAX),
                name: c.system,
                last_sync: c.last_sync,
                synced_1h: c.synced,
                error_count_1h: c.errors,
                pending_conflicts: c.pending,
                escalated_conflicts: c.escalated,
                queue_depth,
                dead_letters: c.dead_letters,
                ledger_open,
                bulk_running: c.bulk_running,
                bulk_failed: c.bulk_failed,
            }
        })
        .collect();
    let report = health::evaluate(figures, &unreachable, &state.limits, Utc::now());
    let incident_key = state.incident_key.clone();
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        store(conn, &report).await?;
        let before = transition(conn, &report).await?;
        if let Some(before) = before {
            let rows: Vec<OutboxRow> = notifications(before, &report, &incident_key)
                .into_iter()
                .map(|n| OutboxRow::new(&Envelope::new(crate::SERVICE, n)))
                .collect();
            outbox::enqueue(conn, crate::SCHEMA, &rows).await?;
            tracing::warn!(
                from = before.as_str(),
                to = report.status.as_str(),
                issues = report.issues.len(),
                "platform health changed"
            );
        }
        Ok(())
    })
    .await?;
    crate::metrics::record(&report);
    Ok(report)
}

/// Stores the report and every integration's status, and prunes reports older than the
/// retention.
async fn store(conn: &mut AsyncPgConnection, report: &Report) -> diesel::QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO monitor.health_reports (overall, integrations, issues) VALUES ($1, $2, $3)",
    )
    .bind::<Text, _>(report.status.as_str())
    .bind::<Jsonb, _>(serde_json::to_value(&report.integrations).unwrap_or(Value::Null))
    .bind::<Jsonb, _>(serde_json::to_value(&report.issues).unwrap_or(Value::Null))
    .execute(conn)
    .await?;
    for i in &report.integrations {
        let status = match i.status {
            "ok" => "healthy",
            "warning" => "degraded",
            "error" => "error",
            _ => "unknown",
        };
        upsert_status(
            conn,
            &i.figures.name,
            status,
            serde_json::to_value(i).unwrap_or(Value::Null),
        )
        .await?;
    }
    Ok(())
}

async fn upsert_status(
    conn: &mut AsyncPgConnection,
    system: &str,
    status: &str,
    detail: Value,
) -> diesel::QueryResult<usize> {
    diesel::sql_query(
        "INSERT INTO monitor.integration_status (system, status, since, checked_at, detail) \
         VALUES ($1, $2, now(), now(), $3) \
         ON CONFLICT (system) DO UPDATE SET checked_at = now(), detail = excluded.detail, \
           since = CASE WHEN monitor.integration_status.status = excluded.status \
                        THEN monitor.integration_status.since ELSE now() END, \
           status = excluded.status",
    )
    .bind::<Text, _>(system)
    .bind::<Text, _>(status)
    .bind::<Jsonb, _>(detail)
    .execute(conn)
    .await
}

/// Records the platform's state; the state before when it changed. The row is locked, so two
/// replicas checking at once notify one change once.
async fn transition(
    conn: &mut AsyncPgConnection,
    report: &Report,
) -> diesel::QueryResult<Option<Overall>> {
    #[derive(diesel::QueryableByName)]
    struct Previous {
        #[diesel(sql_type = Text)]
        status: String,
    }
    diesel::sql_query(
        "INSERT INTO monitor.integration_status (system, status, since, checked_at) \
         VALUES ('overall', 'healthy', now(), now()) ON CONFLICT DO NOTHING",
    )
    .execute(conn)
    .await?;
    let previous: Previous = diesel::sql_query(
        "SELECT status FROM monitor.integration_status WHERE system = 'overall' FOR UPDATE",
    )
    .get_result(conn)
    .await?;
    let before = match previous.status.as_str() {
        "unhealthy" => Overall::Unhealthy,
        "degraded" => Overall::Degraded,
        _ => Overall::Healthy,
    };
    upsert_status(
        conn,
        "overall",
        report.status.as_str(),
        serde_json::to_value(&report.issues).unwrap_or(Value::Null),
    )
    .await?;
    Ok((before != report.status).then_some(before))
}

/// What a change of state from `before` to the report's state tells whom.
pub fn notifications(before: Overall, report: &Report, incident_key: &str) -> Vec<Notification> {
    let text = health::slack_text(report);
    let note = |channel: &str, severity, title: &str, resolve| Notification {
        channel: channel.into(),
        severity,
        title: title.into(),
        text: text.clone(),
        dedup_key: incident_key.into(),
        resolve,
    };
    let mut out = Vec::new();
    match report.status {
        Overall::Unhealthy => {
            out.push(note("slack", Severity::Critical, "Data sync system unhealthy", false));
            out.push(note("pagerduty", Severity::Critical, "Data sync system unhealthy", false));
        }
        Overall::Degraded => {
            out.push(note("slack", Severity::Warning, "Data sync system degraded", false))
        }
        Overall::Healthy => {
            out.push(note("slack", Severity::Info, "Data sync system healthy again", false))
        }
    }
    if before == Overall::Unhealthy {
        // It recovered from what paged someone: the incident is resolved.
        out.push(note("pagerduty", Severity::Info, "Data sync system recovered", true));
    }
    out
}

/// A scheduled check, unless another replica ran one within the last `every` (most of it):
/// whether it ran.
pub async fn scheduled(state: &AppState, every: std::time::Duration) -> anyhow::Result<bool> {
    #[derive(diesel::QueryableByName)]
    struct Due {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        due: bool,
    }
    // A session lock on a connection of its own, held across the check.
    let mut lock = state.db.get().await?;
    let secs = (every.as_secs_f64() * 0.9).max(1.0);
    let due: Due = diesel::sql_query(
        "SELECT pg_try_advisory_lock(hashtext('datasync.monitor.check')) AND \
         coalesce((SELECT max(checked_at) FROM monitor.health_reports) < now() - make_interval(secs => $1), true) AS due",
    )
    .bind::<diesel::sql_types::Double, _>(secs)
    .get_result(&mut lock)
    .await?;
    let result = if due.due { run(state).await.map(|_| true) } else { Ok(false) };
    diesel::sql_query("SELECT pg_advisory_unlock(hashtext('datasync.monitor.check'))")
        .execute(&mut lock)
        .await?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Limits;

    #[test]
    fn consumers_belong_to_the_integration_their_subject_or_name_names() {
        assert_eq!(consumer_integration("webhooks.crm.>", "crm-inbound"), Some("crm"));
        assert_eq!(consumer_integration("outbound.erp.order", "push-erp-order"), Some("erp"));
        assert_eq!(
            consumer_integration("inventory.level.>", "levels-ecommerce"),
            Some("ecommerce")
        );
        assert_eq!(consumer_integration("outbound.email.erp", "erp-mail"), Some("erp"));
        assert_eq!(consumer_integration("sync.conflicts.detected.>", "resolver-detected"), None);
    }

    #[test]
    fn each_change_of_state_notifies_once_and_recovery_resolves_the_page() {
        let report = |status| Report {
            status,
            integrations: vec![],
            issues: vec![],
            pending_conflicts: 0,
            escalated_conflicts: 0,
            queue_depth: 0,
        };
        let _ = Limits::default();
        let channels = |v: Vec<Notification>| {
            v.into_iter().map(|n| (n.channel, n.resolve)).collect::<Vec<_>>()
        };
        assert_eq!(
            channels(notifications(Overall::Healthy, &report(Overall::Degraded), "k")),
            [("slack".into(), false)]
        );
        assert_eq!(
            channels(notifications(Overall::Degraded, &report(Overall::Unhealthy), "k")),
            [("slack".into(), false), ("pagerduty".into(), false)]
        );
        assert_eq!(
            channels(notifications(Overall::Unhealthy, &report(Overall::Healthy), "k")),
            [("slack".into(), false), ("pagerduty".into(), true)]
        );
        let page =
            notifications(Overall::Healthy, &report(Overall::Unhealthy), "datasync/sync-health");
        assert!(page.iter().all(|n| n.dedup_key == "datasync/sync-health"));
        assert_eq!(page[1].title, "Data sync system unhealthy");
    }
}
