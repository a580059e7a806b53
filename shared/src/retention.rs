//! Retention: the history tables of every service schema are pruned on a schedule, so they do
//! not grow forever. What is still open is never removed.
//!
//! | table            | removed once older than the retention                    | kept whatever its age |
//! |------------------|----------------------------------------------------------|-----------------------|
//! | `push_log`       | attempts of a record at a version older than its latest  | every row at the record's latest version (what the target was last told, a refusal anti-entropy honours) |
//! | `webhook_events` | events `applied` or `conflict`                           | `received` (not applied yet) and `failed` (a dead letter or ledger row may replay them) |
//! | `dead_letters`   | dead letters replayed that long ago                      | dead letters not replayed |
//!
//! A pruned webhook event is forgotten as a duplicate too: a sender that delivers it again
//! after the retention has it applied again (idempotent: the record's own clock decides), so
//! the retention of `webhook_events` is at least a day, beyond any sender's redelivery window.
//!
//! Each replica runs the pass every `RETENTION_EVERY_SECS`; a pass deletes in batches, each in
//! its own short transaction under an advisory lock of the schema, so replicas never prune the
//! same schema at once and no batch holds locks for long.

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use crate::config::Retention;
use crate::{config::DAY, db::PgPool};

/// Rows one pass removed, per table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    pub push_log: u64,
    pub webhook_events: u64,
    pub dead_letters: u64,
}

/// Rows one statement deletes at most.
const BATCH: i64 = 5_000;

/// One statement per table: `$1` is the cutoff in seconds before now, `$2` the batch size.
fn statement(schema: &str, table: &str) -> String {
    match table {
        "push_log" => format!(
            "DELETE FROM {schema}.push_log WHERE id IN ( \
                 SELECT p.id FROM {schema}.push_log p \
                 WHERE p.created_at < now() - make_interval(secs => $1) \
                   AND p.version < (SELECT max(q.version) FROM {schema}.push_log q \
                                    WHERE q.target = p.target AND q.record_key = p.record_key) \
                 LIMIT $2)"
        ),
        "webhook_events" => format!(
            "DELETE FROM {schema}.webhook_events WHERE id IN ( \
                 SELECT id FROM {schema}.webhook_events \
                 WHERE status IN ('applied', 'conflict') \
                   AND updated_at < now() - make_interval(secs => $1) \
                 LIMIT $2)"
        ),
        _ => format!(
            "DELETE FROM {schema}.dead_letters WHERE id IN ( \
                 SELECT id FROM {schema}.dead_letters \
                 WHERE replayed_at < now() - make_interval(secs => $1) \
                 LIMIT $2)"
        ),
    }
}

/// Deletes one batch of `table` under the schema's pruning lock; `None` when another replica
/// holds it.
async fn prune_batch(
    conn: &mut AsyncPgConnection,
    schema: &'static str,
    table: &'static str,
    older_than: Duration,
) -> diesel::QueryResult<Option<u64>> {
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        locked: bool,
    }
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        let lock: Locked = diesel::sql_query(
            "SELECT pg_try_advisory_xact_lock(hashtext('datasync.retention.' || $1)) AS locked",
        )
        .bind::<Text, _>(schema)
        .get_result(conn)
        .await?;
        if !lock.locked {
            return Ok(None);
        }
        let deleted = diesel::sql_query(statement(schema, table))
            .bind::<diesel::sql_types::Double, _>(older_than.as_secs_f64())
            .bind::<BigInt, _>(BATCH)
            .execute(conn)
            .await?;
        Ok(Some(deleted as u64))
    })
    .await
}

/// One pass over `schema`: every table in batches until nothing older is left (or another
/// replica is pruning it).
pub async fn prune(
    pool: &PgPool,
    schema: &'static str,
    retention: &Retention,
) -> anyhow::Result<Pruned> {
    let mut conn = pool.get().await?;
    let mut pruned = Pruned::default();
    let tables = [
        ("push_log", retention.push_log),
        ("webhook_events", retention.webhook_events.map(|d| d.max(DAY))),
        ("dead_letters", retention.dead_letters),
    ];
    for (table, keep) in tables {
        let Some(keep) = keep else { continue };
        loop {
            let Some(deleted) = prune_batch(&mut conn, schema, table, keep).await? else {
                return Ok(pruned);
            };
            match table {
                "push_log" => pruned.push_log += deleted,
                "webhook_events" => pruned.webhook_events += deleted,
                _ => pruned.dead_letters += deleted,
            }
            crate::metrics::pruned(table, deleted);
            if deleted < BATCH as u64 {
                break;
            }
        }
    }
    Ok(pruned)
}

/// Runs a pass every `retention.every` until `shutdown` (the first one after a short delay,
/// so a fleet started together does not prune at once).
pub async fn run(
    pool: PgPool,
    schema: &'static str,
    retention: Retention,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_secs(60).min(retention.every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = retention.every;
        match prune(&pool, schema, &retention).await {
            Ok(pruned) => tracing::info!(
                schema,
                push_log = pruned.push_log,
                webhook_events = pruned.webhook_events,
                dead_letters = pruned.dead_letters,
                "retention pass"
            ),
            Err(e) => {
                tracing::warn!(schema, error = %e, "retention pass failed; next pass retries")
            }
        }
    }
}
