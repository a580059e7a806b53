//! Group commit: many concurrent requests, few transactions.
//!
//! Requests are queued to a few executor tasks, sharded by a key (requests with the same key
//! always meet in the same executor, so a hot key forms one large batch instead of several
//! executors queueing on its row lock). Each executor takes every request waiting at that
//! moment, up to a batch limit, and applies them in ONE transaction with [`Batch::apply`], which
//! answers each request separately. Durability is unchanged (`synchronous_commit` stays on);
//! throughput comes from sharing the commit.
//!
//! Failures: a serialization failure, deadlock or unique-key race retries the batch (up to
//! three times). Any other database error in a batch of several retries the requests one by
//! one, so only the one at fault fails. A request whose batch cannot be applied (database
//! down) is answered [`Unavailable`]; nothing of it was written.
//!
//! Shutdown: executors are tracked by the service's one shutdown path, which stops them after
//! every other task (consumers and bulk pages may submit work while they finish); they answer
//! what is queued, then stop.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
};

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::PgPool;

/// How often a batch is retried after a serialization failure, deadlock or key race.
const BATCH_ATTEMPTS: usize = 3;

/// What a group commit applies.
pub trait Batch: Send + Sync + 'static {
    type Request: Clone + Send + Sync + 'static;
    type Response: Send + 'static;

    /// Applies `batch` inside the transaction `conn` is in; one response per request, in
    /// order. An `Err` rolls the whole batch back.
    fn apply<'a>(
        &'a self,
        conn: &'a mut AsyncPgConnection,
        batch: &'a [Self::Request],
    ) -> BoxFuture<'a, diesel::QueryResult<Vec<Self::Response>>>;
}

/// The batch could not be applied; nothing of the request was written. Retry later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// Tuning of the executors.
#[derive(Clone, Copy, Debug)]
pub struct GroupCommitConfig {
    /// Concurrent transactions (executors).
    pub workers: usize,
    /// Most requests per transaction.
    pub max_batch: usize,
}

struct Job<B: Batch> {
    request: B::Request,
    reply: oneshot::Sender<Result<B::Response, Unavailable>>,
}

/// Handle to the executors. Cheap to clone.
pub struct GroupCommit<B: Batch> {
    shards: Arc<[mpsc::Sender<Job<B>>]>,
    runner: Arc<Runner<B>>,
}

impl<B: Batch> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        Self { shards: self.shards.clone(), runner: self.runner.clone() }
    }
}

impl<B: Batch> GroupCommit<B> {
    /// Starts `config.workers` executors on `pool`, tracked by `tasks` and stopped by
    /// `shutdown`. `name` labels the `group_commit_batch_size` metric.
    pub fn start(
        name: &'static str,
        pool: PgPool,
        config: GroupCommitConfig,
        batch: B,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let runner = Arc::new(Runner { name, pool, batch });
        let max_batch = config.max_batch.max(1);
        let shards = (0..config.workers.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel::<Job<B>>(max_batch * 4);
                let executor = Executor { runner: runner.clone(), max_batch };
                tasks.spawn(executor.run(rx, shutdown.clone()));
                tx
            })
            .collect();
        Self { shards, runner }
    }

    /// Applies `requests` as ONE batch now, in the caller's task: for work that arrives as a
    /// batch already (a bulk load's page), with the executors' retries and one-by-one fallback.
    /// One answer per request, in order.
    pub async fn apply_all(
        &self,
        requests: Vec<B::Request>,
    ) -> Vec<Result<B::Response, Unavailable>> {
        self.runner.execute(requests).await
    }

    /// Queues one request without waiting for its commit (waits only while the queue is
    /// full): for bookkeeping the caller does not depend on. A failure is logged by the
    /// executor's retries, not returned.
    pub async fn enqueue(&self, shard: impl Hash, request: B::Request) -> Result<(), Unavailable> {
        let (reply, _) = oneshot::channel();
        self.queue(shard)
            .send(Job { request, reply })
            .await
            .map_err(|_| Unavailable("service is shutting down".into()))
    }

    fn queue(&self, shard: impl Hash) -> &mpsc::Sender<Job<B>> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        shard.hash(&mut hasher);
        &self.shards[(hasher.finish() % self.shards.len() as u64) as usize]
    }

    /// Applies one request (possibly batched with concurrent ones). Requests with the same
    /// `shard` key go to the same executor.
    pub async fn submit(
        &self,
        shard: impl Hash,
        request: B::Request,
    ) -> Result<B::Response, Unavailable> {
        let (reply, answer) = oneshot::channel();
        self.queue(shard)
            .send(Job { request, reply })
            .await
            .map_err(|_| Unavailable("service is shutting down".into()))?;
        answer.await.map_err(|_| Unavailable("executor stopped".into()))?
    }
}

/// Applies batches: one transaction each, with retries.
struct Runner<B: Batch> {
    name: &'static str,
    pool: PgPool,
    batch: B,
}

struct Executor<B: Batch> {
    runner: Arc<Runner<B>>,
    max_batch: usize,
}

impl<B: Batch> Executor<B> {
    async fn run(self, mut rx: mpsc::Receiver<Job<B>>, shutdown: CancellationToken) {
        loop {
            let first = tokio::select! {
                job = rx.recv() => job,
                _ = shutdown.cancelled() => break,
            };
            let Some(first) = first else { return };
            self.drain_into(first, &mut rx).await;
        }
        // Shutting down (after every task that submits work has stopped): answer what is still
        // queued.
        while let Ok(first) = rx.try_recv() {
            self.drain_into(first, &mut rx).await;
        }
    }

    async fn drain_into(&self, first: Job<B>, rx: &mut mpsc::Receiver<Job<B>>) {
        let mut jobs = vec![first];
        while jobs.len() < self.max_batch {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (requests, replies): (Vec<_>, Vec<_>) =
            jobs.into_iter().map(|j| (j.request, j.reply)).unzip();
        let answers = self.runner.execute(requests).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

impl<B: Batch> Runner<B> {
    /// One transaction for `requests`; one answer each, in order.
    async fn execute(&self, requests: Vec<B::Request>) -> Vec<Result<B::Response, Unavailable>> {
        for attempt in 1..=BATCH_ATTEMPTS {
            let result = async {
                let mut conn =
                    self.pool.get().await.map_err(|e| DieselError::QueryBuilderError(e.into()))?;
                conn.transaction::<_, DieselError, _>(async |conn| {
                    self.batch.apply(conn, &requests).await
                })
                .await
            }
            .await;
            match result {
                Ok(answers) => {
                    crate::metrics::group_commit(self.name, requests.len());
                    return answers.into_iter().map(Ok).collect();
                }
                Err(e) if retryable(&e) && attempt < BATCH_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, name = self.name, "batch conflicted, retrying");
                }
                Err(e) => {
                    tracing::error!(error = %e, batch = requests.len(), name = self.name, "batch failed");
                    if requests.len() > 1 && matches!(e, DieselError::DatabaseError(..)) {
                        // The database refused something in the batch: one by one, so only
                        // the request at fault fails.
                        let mut answers = Vec::with_capacity(requests.len());
                        for request in requests {
                            answers.extend(Box::pin(self.execute(vec![request])).await);
                        }
                        return answers;
                    }
                    break;
                }
            }
        }
        requests
            .iter()
            .map(|_| Err(Unavailable("database unavailable, retry later".into())))
            .collect()
    }
}

fn retryable(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::UniqueViolation | DatabaseErrorKind::SerializationFailure,
            _
        )
    ) || e.to_string().contains("deadlock detected")
}
