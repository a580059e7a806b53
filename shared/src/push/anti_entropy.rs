//! Anti-entropy: on a schedule, read every record back from the target (where its API can
//! read) and correct any drift.
//!
//! Read are the records the target is believed to hold (its `push_state` is at the record's
//! version) and those whose last push was given up (dead-lettered after its retry budget, so
//! nothing else would push them again); records with a push pending are left to it, and so are
//! records whose current version the target refused with a 4xx (counted once in the error
//! ledger; pushing them again would only repeat the refusal). Each page is read under the same advisory
//! locks the pushes take, so no push of ours is in flight while its record is compared. A record
//! that differs is reported (`push_log` status `drifted`, `sync.events`, the
//! `push_drift_total` metric, a warning) and pushed again: its `push_state` is forgotten and a
//! push message queued, in one transaction. A target changing a record itself between its
//! change and its report looks like drift too; the push then overwrites that change for a
//! moment, and the target's report, when it arrives, is applied and pushed or confirmed like
//! any other, so the end state is still the same figure everywhere.

use std::{sync::Arc, time::Duration};

use diesel_async::AsyncConnection;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Connector, PushEngine, store};
use crate::{bus::outbox, outbound, schemas::sync::SyncStatus};

/// Records read per transaction.
const PAGE: i64 = 200;

/// What one pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PassReport {
    pub target: String,
    /// Records compared with the target's figure.
    pub checked: u64,
    /// Records the target held differently (each is pushed again).
    pub drifted: u64,
    /// Records the target could not be asked about (read failed), or that were busy.
    pub unreadable: u64,
    /// Records whose current version the target refused for good (4xx): in the error ledger,
    /// not pushed again until they change or an operator retries them.
    pub refused: u64,
    /// Whether the target can be read at all (its connector has a read request).
    pub readable: bool,
}

/// Runs a pass every `every` until `shutdown`.
pub async fn run<C: Connector>(
    engine: Arc<PushEngine<C>>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match pass(&engine).await {
            Ok(report) if report.drifted > 0 => {
                tracing::warn!(target = %report.target, checked = report.checked, drifted = report.drifted, "anti-entropy corrected drift");
            }
            Ok(report) => {
                tracing::debug!(target = %report.target, checked = report.checked, "anti-entropy pass clean");
            }
            Err(e) => {
                tracing::warn!(target = %engine.target, error = format!("{e:#}"), "anti-entropy pass failed");
            }
        }
    }
}

/// One pass over every record.
pub async fn pass<C: Connector>(engine: &PushEngine<C>) -> anyhow::Result<PassReport> {
    let mut report = PassReport { target: engine.target.clone(), ..Default::default() };
    let mut after = String::new();
    loop {
        if engine.shutdown.is_cancelled() {
            break;
        }
        let mut conn = engine.pool.get().await?;
        let keys = store::records_page(&mut conn, engine, &after, PAGE).await?;
        let Some(last) = keys.last() else {
            break;
        };
        after = last.clone();
        let go_on = conn
            .transaction::<_, anyhow::Error, _>(async |conn| {
                check_page(conn, engine, &keys, &mut report).await
            })
            .await?;
        if !go_on || (keys.len() as i64) < PAGE {
            break;
        }
    }
    Ok(report)
}

/// Compares one page; `false` when the pass should stop (stopped or unreadable target).
async fn check_page<C: Connector>(
    conn: &mut diesel_async::AsyncPgConnection,
    engine: &PushEngine<C>,
    keys: &[String],
    report: &mut PassReport,
) -> anyhow::Result<bool> {
    if store::stopped_reason(conn, engine.schema, &engine.target).await?.is_some() {
        return Ok(false);
    }
    let names: Vec<String> = keys.iter().map(|k| engine.lock_name(k)).collect();
    let locked = store::try_lock(conn, &names).await?;
    let keys: Vec<String> =
        keys.iter().zip(locked).filter(|(_, l)| *l).map(|(k, _)| k.clone()).collect();
    report.unreadable += (names.len() - keys.len()) as u64;
    let pushed = store::pushed_versions(conn, engine.schema, &engine.target, &keys).await?;
    let abandoned = store::dead_lettered(conn, engine.schema, &engine.target, &keys).await?;
    let records = engine.connector.load(conn, &keys).await?;
    // Records the target is believed to hold, and records whose last push was given up (dead
    // letter): nothing else would ever push those again. Records with a push pending are left
    // to it.
    // A record the target refused for good (a 4xx) at this very version is counted once, in
    // the ledger, and left alone until the record changes (a new version) or an operator
    // retries it or resumes the target: pushing it again would only get the same refusal.
    let (refused, records): (Vec<_>, Vec<_>) = records
        .into_iter()
        .partition(|r| abandoned.get(&r.key).is_some_and(|g| g.refused(r.version)));
    report.refused += refused.len() as u64;
    let current: Vec<_> = records
        .into_iter()
        .filter(|r| {
            pushed.get(&r.key).is_some_and(|v| *v >= r.version) || abandoned.contains_key(&r.key)
        })
        .collect();
    let Some(first) = current.first() else {
        return Ok(true);
    };
    if engine.connector.read_request(first).is_none() {
        return Ok(false);
    }
    report.readable = true;
    // Many records per request where the target's API allows, one by one otherwise.
    let refs: Vec<&super::Loaded<C::Record>> = current.iter().collect();
    let many = engine.read_many(&refs).await;
    // Boxed: see `PushEngine::push_batch`.
    let reads: Vec<futures::future::BoxFuture<'_, Option<serde_json::Value>>> = current
        .iter()
        .filter(|r| !many.contains_key(&r.key))
        .map(|r| Box::pin(read(engine, r)) as _)
        .collect();
    let single: Vec<_> = futures::stream::iter(reads)
        .buffered(engine.config.http_concurrency.max(1))
        .collect()
        .await;
    let mut single = single.into_iter();
    // Per record: whether the target holds it (`None`: it could not be read), and what it showed.
    let answers: Vec<Option<(bool, serde_json::Value)>> = current
        .iter()
        .map(|record| match many.get(&record.key) {
            Some(held) => held.map(|held| (held, serde_json::Value::Null)),
            None => single
                .next()
                .flatten()
                .map(|answer| (engine.connector.holds(record, &answer), answer)),
        })
        .collect();
    let mut drifted = Vec::new();
    // Given-up records the target turned out to hold after all.
    let mut confirmed = Vec::new();
    let mut log = Vec::new();
    for (record, answer) in current.iter().zip(answers) {
        let Some((held, answer)) = answer else {
            report.unreadable += 1;
            continue;
        };
        report.checked += 1;
        if held {
            if abandoned.contains_key(&record.key) {
                confirmed.push((record.key.clone(), record.version));
            }
            continue;
        }
        report.drifted += 1;
        crate::metrics::push_drift(&engine.target);
        tracing::warn!(target = %engine.target, key = %record.key, found = %answer, "target drifted; pushing our value again");
        drifted.push(record.key.clone());
        let found: String = if answer.is_null() {
            "another value (or none)".to_owned()
        } else {
            answer.to_string().chars().take(300).collect()
        };
        log.push(store::LogRow::of(
            record,
            SyncStatus::Drifted,
            None,
            Some(format!("target held {found}")),
            0,
        )?);
    }
    store::mark_pushed(conn, engine.schema, &engine.target, &confirmed).await?;
    if !drifted.is_empty() {
        store::forget_pushed(conn, engine.schema, &engine.target, &drifted).await?;
        let messages: Vec<_> = drifted.iter().map(|k| engine.connector.message(k)).collect();
        outbox::enqueue(conn, engine.schema, &messages).await?;
        store::write_log(
            conn,
            engine.schema,
            engine.service,
            &engine.target,
            engine.connector.entity(),
            &log,
        )
        .await?;
    }
    Ok(true)
}

/// The target's figure for `record` (`Null` when the target answers 404: it has none); `None`
/// when it cannot be read.
async fn read<C: Connector>(
    engine: &PushEngine<C>,
    record: &super::Loaded<C::Record>,
) -> Option<serde_json::Value> {
    let request = engine.connector.read_request(record)?;
    match outbound::exchange(&engine.http, &engine.endpoint, &request).await {
        Ok((_, answer)) => Some(answer),
        Err(outbound::Outcome::Rejected { status, .. })
            if status == reqwest::StatusCode::NOT_FOUND =>
        {
            Some(serde_json::Value::Null)
        }
        Err(_) => None,
    }
}
