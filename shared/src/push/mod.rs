//! The outbound push engine: one for every connector. A connector says how to load a record,
//! how to build its request and, where the target's API can read, how to read the target's
//! figure back; the engine does everything else.
//!
//! Input: a durable consumer per target on subjects that name one record per message (for
//! stock, `inventory.level.<warehouse>.<sku>`, read by every target's consumer). A message carries no data: the record
//! is loaded when the push runs, so bursts coalesce and reordered or duplicated messages are
//! harmless.
//!
//! Per batch of ready messages (one database transaction, one connection):
//! 1. Take a transaction-scoped advisory lock per record (`try`: a record another batch or
//!    replica is pushing right now is retried shortly), so pushes of one record to one target
//!    never overlap and always go out in version order.
//! 2. Load the records and `push_state` (the version the target was last told). A record the
//!    target already has at this version is not sent again (version fencing), so a stale or
//!    duplicate message never sends an older version after a newer one.
//! 3. HTTP, concurrently within the batch: the push, or for a record whose latest change came
//!    from this very target (its own count or sale), a read-back first. Loop
//!    prevention never assumes: the target is skipped only when it shows our exact figure; a
//!    differing or unreadable figure is pushed. (A push of ours can cross the target's own
//!    change in the network and overwrite it; the read-back catches that, an assumption
//!    would leave the target stale for good.)
//! 4. In the same transaction: `push_state` for what was delivered, one `push_log` row and one
//!    `sync.events.<target>.outbound.<entity>` event per attempt, a `410 Gone` stops the target
//!    (critical alert; later pushes are skipped and logged; resuming queues what it missed).
//!
//! Failures: 5xx, 429 (`Retry-After` honoured) and transport errors are retried with backoff up
//! to the `push_max_attempts` runtime setting, then dead-lettered (replayable); other 4xx at once.
//!
//! Why a connection and locks are held across the batch's HTTP calls: the advisory locks die
//! with the session, so a crashed replica never blocks a record (a lease row would block it
//! until the lease expires), and the batch's results commit with the same transaction that read
//! the versions. The cost is one pooled connection per batch in flight (not per record), from the
//! engine's own pool, for as long as the batch's calls take (each bounded by the outbound
//! timeout; the consumer keeps the batch's messages with in-progress acks meanwhile).
//!
//! [`anti_entropy`] reads every record back on a schedule and corrects drift.

pub mod anti_entropy;
mod connector;
mod store;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::StreamExt;
use serde_json::Value;

pub use connector::{Connector, FollowUp, KeyPart, Loaded, Origin, PushConfig, RecordKey, Records};
pub use store::TargetStatus;

use crate::{
    bus::{ConsumerSpec, Delivery, HandlerError},
    db::PgPool,
    outbound::{self, Endpoint, OutboundRequest, Outcome},
    record_errors::Requeue,
    schemas::sync::SyncStatus,
};

/// One target's engine.
pub struct PushEngine<C: Connector> {
    /// The target system's name (`erp`, `ecommerce`, ...).
    pub target: String,
    pub endpoint: Endpoint,
    pub connector: C,
    pub config: PushConfig,
    /// The engine's own pool (a bulkhead: a slow target never starves other work).
    pub pool: PgPool,
    pub(crate) http: reqwest::Client,
    pub(crate) schema: &'static str,
    pub(crate) service: &'static str,
    pub(crate) settings: crate::settings::Settings,
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
}

/// What the batch decided for one record before any HTTP.
enum Plan {
    /// The target already has this version; only the follow-up runs.
    Current,
    /// The target is stopped (410): skipped and logged.
    Stopped(String),
    /// The latest change came from the target itself: read back, push if it differs.
    ReadBack,
    Push,
}

/// What happened to one record.
struct Done {
    outcome: Outcome,
    /// The target's answer (JSON), `Null` when none.
    answer: Value,
    /// The read-back showed our figure: nothing sent.
    confirmed: bool,
    /// Which call the outcome belongs to (for the log).
    what: &'static str,
}

/// Most records read back with one request.
pub const READ_MANY: usize = 50;

/// How long a record locked by another batch waits before it is tried again.
const BUSY_RETRY: Duration = Duration::from_millis(500);

/// Records, in the caller's transaction, that `target` holds these versions of its records
/// because it told us them itself (a page of a bulk load read from it is its read-back): its
/// engine neither pushes them to it nor reads them back from it.
pub async fn told(
    conn: &mut diesel_async::AsyncPgConnection,
    schema: &str,
    target: &str,
    versions: &[(String, i64)],
) -> diesel::QueryResult<()> {
    store::mark_pushed(conn, schema, target, versions).await
}

impl<C: Connector> PushEngine<C> {
    fn lock_name(&self, key: &str) -> String {
        format!("push/{}/{}/{key}", self.schema, self.target)
    }

    /// The consumer declaration for this engine.
    pub fn consumer_spec(
        &self,
        stream: &'static crate::bus::StreamSpec,
        filter: &str,
    ) -> ConsumerSpec {
        ConsumerSpec {
            // A cap against a message that kills its handler; the retry budget of pushes is the
            // `push_max_attempts` setting, counted in the push log (waits for a busy record
            // are no attempts). A long batch keeps its messages with in-progress acks, so the
            // default `ack_wait` stays short and a crashed replica's messages come back soon.
            max_deliver: 1000,
            concurrency: self.config.concurrency,
            batch: self.config.batch,
            // One durable per target and entity (a service may push several entities to one
            // target, each with its own engine).
            ..ConsumerSpec::new(
                &format!("{}-push-{}-{}", self.schema, self.target, self.connector.entity()),
                stream,
                filter,
            )
        }
    }

    /// Handles one batch of push messages; one outcome per delivery, in order.
    pub async fn handle(
        &self,
        deliveries: Vec<Delivery<C::Message>>,
    ) -> Vec<Result<(), HandlerError>> {
        let keys: Vec<String> =
            deliveries.iter().map(|d| self.connector.key(&d.envelope.data)).collect();
        let distinct: BTreeSet<String> = keys.iter().cloned().collect();
        let results = match self.push_batch(&distinct).await {
            Ok(results) => results,
            Err(e) => {
                let e = format!("{e:#}");
                return keys
                    .iter()
                    .map(|_| {
                        Err(HandlerError::Retry { error: anyhow::anyhow!("{e}"), after: None })
                    })
                    .collect();
            }
        };
        keys.iter()
            .zip(&deliveries)
            .map(|(key, delivery)| match results.get(key) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(e.duplicate()),
                // Waiting for another batch is no failed attempt of ours: the budget counts
                // attempts in the push log, and the wait grows to spare the bus.
                None => Err(HandlerError::Retry {
                    error: anyhow::anyhow!("record {key} is being pushed by another worker"),
                    after: Some(BUSY_RETRY.saturating_mul(delivery.delivered.clamp(1, 20) as u32)),
                }),
            })
            .collect()
    }

    /// One transaction for the batch; the outcome per locked key (keys locked elsewhere are
    /// missing from the answer).
    async fn push_batch(
        &self,
        keys: &BTreeSet<String>,
    ) -> anyhow::Result<BTreeMap<String, Result<(), HandlerError>>> {
        let budget = i64::from(self.settings.current().push_max_attempts.max(1));
        let mut conn = self.pool.get().await?;
        conn.transaction::<_, anyhow::Error, _>(async |conn| {
            let keys: Vec<String> = keys.iter().cloned().collect();
            let locked =
                store::try_lock(conn, &keys.iter().map(|k| self.lock_name(k)).collect::<Vec<_>>())
                    .await?;
            let keys: Vec<String> =
                keys.into_iter().zip(locked).filter(|(_, l)| *l).map(|(k, _)| k).collect();
            let mut out = BTreeMap::new();
            if keys.is_empty() {
                return Ok(out);
            }
            let stopped = store::stopped_reason(conn, self.schema, &self.target).await?;
            let pushed = store::pushed_versions(conn, self.schema, &self.target, &keys).await?;
            let records = self.connector.load(conn, &keys).await?;
            let versions: Vec<(String, i64)> =
                records.iter().map(|r| (r.key.clone(), r.version)).collect();
            // This attempt's number: 1 + the failed attempts logged for this very version since
            // it was last given up (a replay or requeue starts a fresh budget).
            let attempts =
                store::failed_attempts(conn, self.schema, &self.target, &versions).await?;
            // A key without a record (deleted) needs nothing.
            for key in &keys {
                if !records.iter().any(|r| &r.key == key) {
                    out.insert(key.clone(), Ok(()));
                }
            }
            let plans: Vec<(Loaded<C::Record>, Plan)> = records
                .into_iter()
                .map(|r| {
                    let plan = if let Some(reason) = &stopped {
                        Plan::Stopped(reason.clone())
                    } else if pushed.get(&r.key).is_some_and(|v| *v >= r.version) {
                        Plan::Current
                    } else if r.origin.as_ref().is_some_and(|o| o.system == self.target) {
                        Plan::ReadBack
                    } else {
                        Plan::Push
                    };
                    (r, plan)
                })
                .collect();
            // Read-backs first, many records per request where the target's API allows.
            let to_read: Vec<&Loaded<C::Record>> = plans
                .iter()
                .filter(|(_, plan)| matches!(plan, Plan::ReadBack))
                .map(|(record, _)| record)
                .collect();
            let read = self.read_many(&to_read).await;
            // Boxed: the transaction's future must be `Send`, which the compiler cannot prove
            // for a stream of closures borrowing the records.
            let calls: Vec<futures::future::BoxFuture<'_, Option<Done>>> = plans
                .iter()
                .map(|(record, plan)| {
                    Box::pin(self.call(record, plan, read.get(&record.key).copied())) as _
                })
                .collect();
            let done: Vec<Option<Done>> = futures::stream::iter(calls)
                .buffered(self.config.http_concurrency.max(1))
                .collect()
                .await;

            let mut log = Vec::new();
            let mut delivered = Vec::new();
            let mut stop_reason = None;
            for ((record, plan), done) in plans.iter().zip(done) {
                let attempt = attempts.get(&record.key).copied().unwrap_or(0) + 1;
                let Some(mut done) = done else {
                    // Current: only the follow-up, silent when it has nothing to do.
                    let follow = self.follow_up(conn, record, &Value::Null).await?;
                    if matches!(follow, Outcome::Delivered(_)) {
                        out.insert(record.key.clone(), Ok(()));
                        continue;
                    }
                    let failed = Done {
                        outcome: follow,
                        answer: Value::Null,
                        confirmed: false,
                        what: "follow-up",
                    };
                    let result =
                        self.settle(record, failed, attempt, budget, &mut log, &mut stop_reason);
                    out.insert(record.key.clone(), result);
                    continue;
                };
                if let Plan::Stopped(reason) = plan {
                    // Acked, not lost: resuming the target queues every record it missed.
                    log.push(
                        store::LogRow::of(
                            record,
                            SyncStatus::Skipped,
                            None,
                            Some(format!("target stopped: {reason}")),
                            attempt,
                        )?
                        .undelivered(),
                    );
                    out.insert(record.key.clone(), Ok(()));
                    continue;
                }
                if matches!(done.outcome, Outcome::Delivered(_)) {
                    delivered.push((record.key.clone(), record.version));
                    let follow = self.follow_up(conn, record, &done.answer).await?;
                    if !matches!(follow, Outcome::Delivered(_)) {
                        // The push itself is logged as synced; the follow-up is retried.
                        log.push(store::LogRow::of(
                            record,
                            SyncStatus::Synced,
                            done.outcome.status(),
                            None,
                            attempt,
                        )?);
                        done = Done {
                            outcome: follow,
                            answer: Value::Null,
                            confirmed: false,
                            what: "follow-up",
                        };
                    }
                }
                let result = self.settle(record, done, attempt, budget, &mut log, &mut stop_reason);
                out.insert(record.key.clone(), result);
            }
            store::mark_pushed(conn, self.schema, &self.target, &delivered).await?;
            store::write_log(
                conn,
                self.schema,
                self.service,
                &self.target,
                self.connector.entity(),
                &log,
            )
            .await?;
            if let Some(reason) = stop_reason {
                store::stop_target(conn, self.schema, self.service, &self.target, &reason).await?;
            }
            Ok(out)
        })
        .await
    }

    /// Logs one record's outcome and turns it into the consumer's answer.
    fn settle(
        &self,
        record: &Loaded<C::Record>,
        done: Done,
        attempt: i64,
        budget: i64,
        log: &mut Vec<store::LogRow>,
        stop_reason: &mut Option<String>,
    ) -> Result<(), HandlerError> {
        let what = done.what;
        let (status, error) = match &done.outcome {
            Outcome::Delivered(_) if done.confirmed => (
                SyncStatus::Skipped,
                Some("target already holds this value (read back)".to_owned()),
            ),
            Outcome::Delivered(_) => (SyncStatus::Synced, None),
            Outcome::Retry { error, .. } if attempt < budget => {
                (SyncStatus::Failed, Some(format!("{what}: {error}")))
            }
            Outcome::Retry { error, .. } => {
                (SyncStatus::DeadLettered, Some(format!("{what}: {error}")))
            }
            Outcome::Gone => (SyncStatus::DeadLettered, Some(format!("{what}: 410 Gone"))),
            Outcome::Rejected { status, body } => {
                (SyncStatus::DeadLettered, Some(format!("{what}: {status}: {body}")))
            }
        };
        match store::LogRow::of(record, status, done.outcome.status(), error, attempt) {
            Ok(row) => log.push(row),
            Err(e) => return Err(HandlerError::Retry { error: e.into(), after: None }),
        }
        match done.outcome {
            Outcome::Delivered(_) => {
                tracing::debug!(target = %self.target, key = %record.key, version = record.version, confirmed = done.confirmed, "pushed");
                Ok(())
            }
            Outcome::Retry { .. } if attempt >= budget => {
                Err(HandlerError::Permanent(anyhow::anyhow!(
                    "{what} to {}: retry budget of {budget} attempts exhausted",
                    self.target
                )))
            }
            Outcome::Gone => {
                *stop_reason = Some(format!("{what} answered 410 Gone"));
                Err(Outcome::Gone.into_handler_error(&format!("{what} to {}", self.target)))
            }
            other => Err(other.into_handler_error(&format!("{what} to {}", self.target))),
        }
    }

    /// The connector's follow-up in a savepoint: a failure is retried for this record alone,
    /// without rolling back the rest of the batch.
    async fn follow_up(
        &self,
        conn: &mut AsyncPgConnection,
        record: &Loaded<C::Record>,
        answer: &Value,
    ) -> anyhow::Result<Outcome> {
        let result = conn
            .transaction::<_, anyhow::Error, _>(async |conn| {
                let ctx = FollowUp { conn, http: &self.http, endpoint: &self.endpoint };
                self.connector.after_delivered(ctx, record, answer).await
            })
            .await;
        Ok(result.unwrap_or_else(|e| Outcome::Retry {
            status: None,
            after: None,
            error: format!("follow-up failed: {e:#}"),
        }))
    }

    /// The HTTP part for one record: `None` when nothing is to be sent (current or stopped
    /// records are handled by the caller; stopped ones get `Some` with a placeholder).
    /// Reads `records` back with as few requests as the connector allows: per record read this
    /// way, whether the target holds it (`None`: the read failed). Records the connector reads
    /// only one by one are absent.
    pub(crate) async fn read_many(
        &self,
        records: &[&Loaded<C::Record>],
    ) -> BTreeMap<String, Option<bool>> {
        let mut held = BTreeMap::new();
        let chunks: Vec<(&[&Loaded<C::Record>], OutboundRequest)> = records
            .chunks(READ_MANY)
            .filter_map(|chunk| Some((chunk, self.connector.read_many_request(chunk)?)))
            .collect();
        let answers: Vec<futures::future::BoxFuture<'_, _>> = chunks
            .iter()
            .map(|(_, request)| {
                Box::pin(outbound::exchange(&self.http, &self.endpoint, request)) as _
            })
            .collect();
        let answers: Vec<Result<(reqwest::StatusCode, Value), Outcome>> =
            futures::stream::iter(answers)
                .buffered(self.config.http_concurrency.max(1))
                .collect()
                .await;
        for ((chunk, _), answer) in chunks.iter().zip(answers) {
            for record in chunk.iter() {
                let holds = answer.as_ref().ok().map(|(_, a)| self.connector.holds(record, a));
                held.insert(record.key.clone(), holds);
            }
        }
        held
    }

    /// `read`: what a batched read-back found (`Some(None)`: it failed), `None` if the record
    /// was not read that way.
    async fn call(
        &self,
        record: &Loaded<C::Record>,
        plan: &Plan,
        read: Option<Option<bool>>,
    ) -> Option<Done> {
        match plan {
            Plan::Current => None,
            Plan::Stopped(_) => Some(Done {
                outcome: Outcome::Delivered(reqwest::StatusCode::NO_CONTENT),
                answer: Value::Null,
                confirmed: false,
                what: "push",
            }),
            Plan::ReadBack if read == Some(Some(true)) => Some(Done {
                outcome: Outcome::Delivered(reqwest::StatusCode::OK),
                answer: Value::Null,
                confirmed: true,
                what: "read-back",
            }),
            Plan::ReadBack if read.is_some() => {
                tracing::info!(target = %self.target, key = %record.key, found = ?read, "target does not show our value, or could not be read; pushing the current value");
                Some(self.push(record).await)
            }
            Plan::ReadBack => {
                if let Some(read) = self.connector.read_request(record) {
                    match outbound::exchange(&self.http, &self.endpoint, &read).await {
                        Ok((status, answer)) if self.connector.holds(record, &answer) => {
                            return Some(Done {
                                outcome: Outcome::Delivered(status),
                                answer: Value::Null,
                                confirmed: true,
                                what: "read-back",
                            });
                        }
                        Ok(_) => {
                            tracing::info!(target = %self.target, key = %record.key, "target's own change was crossed by a push; pushing the current value")
                        }
                        Err(outcome) => {
                            tracing::info!(target = %self.target, key = %record.key, status = ?outcome.status(), "read-back failed; pushing the current value")
                        }
                    }
                }
                Some(self.push(record).await)
            }
            Plan::Push => Some(self.push(record).await),
        }
    }

    async fn push(&self, record: &Loaded<C::Record>) -> Done {
        let request = self.connector.request(record);
        let (outcome, answer) = match outbound::exchange(&self.http, &self.endpoint, &request).await
        {
            Ok((status, answer)) => (self.connector.answered(record, status, &answer), answer),
            Err(Outcome::Rejected { status, .. })
                if self.connector.delivered_anyway(record, status.as_u16()) =>
            {
                (Outcome::Delivered(status), Value::Null)
            }
            Err(outcome) => (outcome, Value::Null),
        };
        Done { outcome, answer, confirmed: false, what: "push" }
    }
}

impl HandlerError {
    /// The same error again (for several deliveries of one record in a batch).
    fn duplicate(&self) -> Self {
        match self {
            HandlerError::Retry { error, after } => {
                HandlerError::Retry { error: anyhow::anyhow!("{error:#}"), after: *after }
            }
            HandlerError::Permanent(error) => HandlerError::Permanent(anyhow::anyhow!("{error:#}")),
        }
    }
}

/// What operators can do with a target, whatever its connector (its system, entity and
/// requeue are [`Requeue`]'s).
pub trait PushTarget: Requeue {
    /// Whether it is stopped, and how many records it is behind.
    fn status<'a>(&'a self) -> futures::future::BoxFuture<'a, anyhow::Result<TargetStatus>>;
    /// Clears a stop and queues every record the target has not been told; returns
    /// (was stopped, queued).
    fn resume<'a>(&'a self) -> futures::future::BoxFuture<'a, anyhow::Result<(bool, usize)>>;
    /// Runs an anti-entropy pass now.
    fn check<'a>(
        &'a self,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<anti_entropy::PassReport>>;
}

impl<C: Connector> Requeue for PushEngine<C> {
    fn target(&self) -> &str {
        &self.target
    }

    fn entity(&self) -> &str {
        self.connector.entity()
    }

    fn message(&self, key: &str) -> crate::bus::outbox::OutboxRow {
        self.connector.message(key)
    }
}

impl<C: Connector> PushTarget for PushEngine<C> {
    fn status<'a>(&'a self) -> futures::future::BoxFuture<'a, anyhow::Result<TargetStatus>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            store::status(&mut conn, self).await
        })
    }

    fn resume<'a>(&'a self) -> futures::future::BoxFuture<'a, anyhow::Result<(bool, usize)>> {
        Box::pin(async move {
            let mut conn = self.pool.get().await?;
            store::resume(&mut conn, self).await
        })
    }

    fn check<'a>(
        &'a self,
    ) -> futures::future::BoxFuture<'a, anyhow::Result<anti_entropy::PassReport>> {
        Box::pin(anti_entropy::pass(self))
    }
}

/// The push targets a service runs, for the operator endpoints.
pub type Targets = Arc<std::sync::RwLock<Vec<Arc<dyn PushTarget>>>>;
