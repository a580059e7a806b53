//! What the benchmarks share: closed and paced loops of concurrent clients, the same-run
//! baselines (JetStream publish, single-row INSERT), a watcher that sees rows commit, and the
//! figures they all report.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

/// Throughput and latency of a closed loop.
#[derive(Clone, Copy, Debug)]
pub struct Figures {
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// Runs `clients` workers, each calling `op(client, n)` back to back for `duration`; `op`
/// answers whether the operation succeeded. Every call's latency is recorded.
pub async fn closed_loop<F, Fut>(clients: usize, duration: Duration, op: F) -> Figures
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let (op, errors) = (op.clone(), errors.clone());
            tokio::spawn(async move {
                let mut histogram = new_histogram();
                let mut n = 0u64;
                while started.elapsed() < duration {
                    let t = Instant::now();
                    if !op(client, n).await {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = histogram.record(t.elapsed().as_micros() as u64);
                    n += 1;
                }
                histogram
            })
        })
        .collect();
    let mut total = new_histogram();
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = total.add(h);
        }
    }
    Figures {
        ops_per_sec: total.len() as f64 / started.elapsed().as_secs_f64(),
        p50_ms: total.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
        errors: AtomicU64::load(&errors, Ordering::Relaxed),
    }
}

/// A latency histogram in microseconds (3 significant figures).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new(3).unwrap_or_else(|e| panic!("histogram: {e}"))
}

/// The same-run baseline of an ingress: `clients` loops publishing `body(id)` (a fresh message
/// id each) to a file-backed work-queue stream like `WEBHOOKS` and awaiting its PubAck.
pub async fn jetstream_baseline(
    nats: &crate::TestNats,
    clients: usize,
    duration: Duration,
    body: fn(&str) -> Vec<u8>,
) -> Figures {
    let js = async_nats::jetstream::new(nats.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: format!("{}_BENCH", nats.prefix),
        subjects: vec![nats.subject("bench.>")],
        retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
        storage: async_nats::jetstream::stream::StorageType::File,
        duplicate_window: shared::bus::streams::DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("bench stream: {e}"));
    let subject = nats.subject("bench.webhook");
    closed_loop(clients, duration, move |client, n| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            let id = format!("nats-{client}-{n}");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            match js.publish_with_headers(subject, headers, body(&id).into()).await {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}

/// The same-run baseline of a write path: `clients` connections running single-row `INSERT`
/// transactions straight to PostgreSQL. `setup` runs once (e.g. a trigger-less copy of the
/// service's table); `insert` takes `$1`, a fresh id.
pub async fn insert_baseline(
    db: &crate::TestDb,
    clients: usize,
    duration: Duration,
    setup: &str,
    insert: &'static str,
) -> Figures {
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
    let mut conn =
        AsyncPgConnection::establish(&db.url).await.unwrap_or_else(|e| panic!("connect: {e}"));
    conn.batch_execute(setup).await.unwrap_or_else(|e| panic!("baseline setup: {e}"));
    let mut conns = Vec::new();
    for _ in 0..clients {
        let conn =
            AsyncPgConnection::establish(&db.url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        conns.push(Arc::new(tokio::sync::Mutex::new(conn)));
    }
    closed_loop(clients, duration, move |client, n| {
        let conn = conns[client].clone();
        async move {
            let mut conn = conn.lock().await;
            diesel::sql_query(insert)
                .bind::<diesel::sql_types::Text, _>(format!("pg-{client}-{n}"))
                .execute(&mut *conn)
                .await
                .is_ok()
        }
    })
    .await
}

/// Sees rows of a table commit: `key -> when it became visible`, polling every 10 ms.
pub struct Watcher {
    seen: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    pub stop: tokio_util::sync::CancellationToken,
}

/// What was sent, and when: `key -> send time`.
pub type Sent = HashMap<String, Instant>;

impl Watcher {
    /// Watches `table` (a `bigserial` `id` and a text column `key` that names what was sent).
    pub async fn start(db: &crate::TestDb, table: &str, key: &str) -> Self {
        use diesel::sql_types::{Array, BigInt, Text};
        use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = BigInt)]
            id: i64,
            #[diesel(sql_type = Text)]
            key: String,
        }
        let mut conn =
            AsyncPgConnection::establish(&db.url).await.unwrap_or_else(|e| panic!("connect: {e}"));
        let sql = format!(
            "SELECT id, {key} AS key FROM {table} WHERE id > $1 OR id = ANY($2) ORDER BY id LIMIT 20000"
        );
        let seen: Arc<std::sync::Mutex<Sent>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let (s, token) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            // Ids are handed out before commit, so a lower id may commit after a higher one
            // (concurrent batches): ids skipped below the highest seen are asked for again
            // until they show up, or for 5 s (a sequence also skips ids for good).
            let mut max_seen = 0i64;
            let mut missing: std::collections::BTreeMap<i64, Instant> = Default::default();
            while !token.is_cancelled() {
                let asked: Vec<i64> = missing.keys().copied().collect();
                let rows: Vec<Row> = diesel::sql_query(&sql)
                    .bind::<BigInt, _>(max_seen)
                    .bind::<Array<BigInt>, _>(asked)
                    .load(&mut conn)
                    .await
                    .unwrap_or_default();
                let now = Instant::now();
                {
                    let mut seen = s.lock().unwrap_or_else(|p| p.into_inner());
                    for r in rows {
                        missing.remove(&r.id);
                        for gap in max_seen + 1..r.id {
                            missing.insert(gap, now);
                        }
                        max_seen = max_seen.max(r.id);
                        seen.entry(r.key).or_insert(now);
                    }
                }
                missing.retain(|_, since| now.duration_since(*since) < Duration::from_secs(5));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self { seen, stop }
    }

    /// Waits until every key in `sent` is visible (at most 120 s): rows per second from
    /// `first` to the last commit, send-to-commit latency, and the keys never seen as errors.
    pub async fn settle(&self, sent: &Sent, first: Instant) -> Figures {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let done = {
                let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                sent.keys().all(|k| seen.contains_key(k))
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut histogram = new_histogram();
        let mut last = first;
        let mut missing = 0;
        for (id, at) in sent {
            match seen.get(id) {
                Some(visible) => {
                    let _ =
                        histogram.record(visible.saturating_duration_since(*at).as_micros() as u64);
                    last = last.max(*visible);
                }
                None => missing += 1,
            }
        }
        Figures {
            ops_per_sec: histogram.len() as f64 / last.duration_since(first).as_secs_f64(),
            p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            errors: missing,
        }
    }
}

/// Sends as fast as `clients` concurrent clients go for `duration`: `send(key)` answers whether
/// the key was accepted. Returns the accepted keys with their send times, the start, and the
/// closed loop's figures (accepted per second, send latency).
pub async fn saturated<F, Fut>(
    clients: usize,
    duration: Duration,
    tag: &'static str,
    send: F,
) -> (Sent, Instant, Figures)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let sent: Arc<std::sync::Mutex<Sent>> = Arc::default();
    let first = Instant::now();
    let figures = {
        let sent = sent.clone();
        closed_loop(clients, duration, move |client, n| {
            let (send, sent) = (send.clone(), sent.clone());
            async move {
                let key = format!("{tag}-{client}-{n}");
                let at = Instant::now();
                let ok = send(key.clone()).await;
                if ok {
                    sent.lock().unwrap_or_else(|p| p.into_inner()).insert(key, at);
                }
                ok
            }
        })
        .await
    };
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (sent, first, figures)
}

/// Sends at `rate` per second from `clients` paced senders (open loop) for `duration`.
/// Returns the accepted keys with their send times, the start, the rate actually sent, and
/// the refusals.
pub async fn paced<F, Fut>(
    clients: usize,
    rate: f64,
    duration: Duration,
    tag: &'static str,
    send: F,
) -> (Sent, Instant, f64, u64)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let sent: Arc<std::sync::Mutex<Sent>> = Arc::default();
    let interval = Duration::from_secs_f64(clients as f64 / rate);
    let first = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..clients)
        .map(|client| {
            let (send, sent, errors) = (send.clone(), sent.clone(), errors.clone());
            tokio::spawn(async move {
                // Spread the senders' ticks over one interval.
                let start =
                    tokio::time::Instant::now() + interval.mul_f64(client as f64 / clients as f64);
                let mut ticks = tokio::time::interval_at(start, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0u64;
                while first.elapsed() < duration {
                    ticks.tick().await;
                    let key = format!("{tag}-{client}-{n}");
                    let at = Instant::now();
                    if send(key.clone()).await {
                        sent.lock().unwrap_or_else(|p| p.into_inner()).insert(key, at);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for s in senders {
        let _ = s.await;
    }
    let sent = sent.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let offered = sent.len() as f64 / first.elapsed().as_secs_f64();
    (sent, first, offered, AtomicU64::load(&errors, Ordering::Relaxed))
}

/// Prints one line of a benchmark's table.
pub fn line(name: &str, f: &Figures) {
    println!(
        "{name:<38} {:>10.0} {:>9.2} {:>9.2} {:>7}",
        f.ops_per_sec, f.p50_ms, f.p99_ms, f.errors
    );
}

/// Prints the table's header.
pub fn header() {
    println!("{:<38} {:>10} {:>9} {:>9} {:>7}", "runner", "per s", "p50 ms", "p99 ms", "errors");
}

/// What every benchmark starts from: a migrated test database, a NATS prefix, and each phase's
/// length (`BENCH_SECS`, default 10).
pub struct Bench {
    pub db: crate::TestDb,
    pub nats: crate::TestNats,
    pub secs: u64,
    pub duration: Duration,
}

/// Runs a benchmark on 2 worker threads (this machine's cores, shared with PostgreSQL and NATS)
/// against a fresh, migrated database.
pub fn run<F, Fut>(benchmark: F)
where
    F: FnOnce(Bench) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
        let db = crate::TestDb::new().await;
        let nats = crate::TestNats::new();
        shared::db::migrate(&db.url).await.unwrap_or_else(|e| panic!("migrations: {e}"));
        benchmark(Bench { db, nats, secs, duration: Duration::from_secs(secs) }).await;
    });
}
