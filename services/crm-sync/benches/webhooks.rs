//! CRM webhook throughput and latency, each figure beside a baseline measured in the same run.
//!
//! Run: `cargo bench -p crm-sync --bench webhooks` (needs PostgreSQL and NATS on 127.0.0.1 as
//! for the tests; `BENCH_SECS` sets each phase's length, default 10).
//!
//! - service: the real `crm-sync` binary (release build) as a child process. 64 concurrent
//!   clients post signed webhooks (Standard Webhooks, a fresh `webhook-id` each), one new
//!   contact per webhook, while the service's consumer applies them on the same two cores.
//! - ingress: webhooks answered `202` per second (the event is durably in JetStream then),
//!   against 64 concurrent publish-and-await-PubAck loops of the same payload size straight to
//!   JetStream with async-nats (a stream of the same kind, one message id each).
//! - end to end: contacts committed per second, from the first webhook of the phase to the
//!   commit of its last row, against 64 connections running single-row `INSERT` transactions
//!   into a copy of `crm.contacts` (same columns and indexes, no trigger) straight to
//!   PostgreSQL. A watcher sees each row commit (polling every 10 ms for new ids), which gives
//!   the webhook-to-row latency.
//! - paced: webhooks sent at 80% of the INSERT baseline's rate (open loop, 64 senders), and
//!   the webhook-to-row latency's p99 at that rate; then the same at half the service's own
//!   end-to-end rate (its latency when it is not overloaded).
//!
//! `CRM_INBOUND_BATCH` and `CRM_INBOUND_CONCURRENCY` are passed through to the service.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::{
    collections::HashMap,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use harness::bench::{Figures, closed_loop};
use harness::{TestDb, TestNats};
use hdrhistogram::Histogram;

const CLIENTS: usize = 64;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "created", "type": "contact", "id": id,
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": {"firstName": "Bench", "lastName": format!("Contact {id}"), "email": format!("{id}@example.com"),
                 "phone": "+33 1 23 45 67 89", "title": "Buyer", "leadSource": "webinar", "status": "new",
                 "account": {"name": "Benchmark Industries"}}
    }))
    .unwrap()
}

/// Publish-and-await-ack of the webhook body to a stream of the same kind as WEBHOOKS.
async fn nats_baseline(nats: &TestNats, duration: Duration) -> Figures {
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
    .unwrap();
    let subject = nats.subject("bench.contact");
    closed_loop(CLIENTS, duration, move |client, n| {
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

/// Single-row INSERT transactions into a trigger-less copy of `crm.contacts`.
async fn insert_baseline(db: &TestDb, duration: Duration) -> Figures {
    let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
    diesel::sql_query("CREATE TABLE public.bench_contacts (LIKE crm.contacts INCLUDING ALL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(Arc::new(tokio::sync::Mutex::new(
            AsyncPgConnection::establish(&db.url).await.unwrap(),
        )));
    }
    closed_loop(CLIENTS, duration, move |client, n| {
        let conn = conns[client].clone();
        async move {
            let mut conn = conn.lock().await;
            let id = format!("pg-{client}-{n}");
            diesel::sql_query(
                "INSERT INTO public.bench_contacts (external_id, external_source, first_name, last_name, email, \
                     phone, company, title, source, status, origin, synced_at) \
                 VALUES ($1, 'crm', 'Bench', $2, $3, '+33 1 23 45 67 89', 'Benchmark Industries', 'Buyer', \
                     'webinar', 'new', 'crm', now())",
            )
            .bind::<Text, _>(&id)
            .bind::<Text, _>(format!("Contact {id}"))
            .bind::<Text, _>(format!("{id}@example.com"))
            .execute(&mut *conn)
            .await
            .is_ok()
        }
    })
    .await
}

/// Sees rows commit: `external_id -> when it became visible`.
struct Watcher {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Watcher {
    async fn start(db: &TestDb) -> Self {
        let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let (s, token) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            #[derive(diesel::QueryableByName)]
            struct Row {
                #[diesel(sql_type = BigInt)]
                id: i64,
                #[diesel(sql_type = Text)]
                external_id: String,
            }
            // Ids are handed out before commit, so a lower id may commit after a higher one
            // (concurrent batches): ids skipped below the highest seen are asked for again
            // until they show up, or for 5 s (a sequence also skips ids for good).
            let mut max_seen = 0i64;
            let mut missing: std::collections::BTreeMap<i64, Instant> = Default::default();
            while !token.is_cancelled() {
                let asked: Vec<i64> = missing.keys().copied().collect();
                let rows: Vec<Row> = diesel::sql_query(
                    "SELECT id, external_id FROM crm.contacts WHERE id > $1 OR id = ANY($2) ORDER BY id LIMIT 20000",
                )
                .bind::<BigInt, _>(max_seen)
                .bind::<diesel::sql_types::Array<BigInt>, _>(asked)
                .load(&mut conn)
                .await
                .unwrap_or_default();
                let now = Instant::now();
                {
                    let mut seen = s.lock().unwrap();
                    for r in rows {
                        missing.remove(&r.id);
                        for gap in max_seen + 1..r.id {
                            missing.insert(gap, now);
                        }
                        max_seen = max_seen.max(r.id);
                        seen.entry(r.external_id).or_insert(now);
                    }
                }
                missing.retain(|_, since| now.duration_since(*since) < Duration::from_secs(5));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Self { seen, stop }
    }

    /// Waits until every id in `sent` is visible (at most 120 s); `(rows/s from first send to
    /// last commit, p50 ms, p99 ms, missing)`.
    async fn settle(
        &self,
        sent: &HashMap<String, Instant>,
        first: Instant,
    ) -> (f64, f64, f64, usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            let done = {
                let seen = self.seen.lock().unwrap();
                sent.keys().all(|k| seen.contains_key(k))
            };
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = self.seen.lock().unwrap();
        let mut histogram = Histogram::<u64>::new(3).unwrap();
        let mut last = first;
        let mut missing = 0;
        for (id, at) in sent {
            match seen.get(id) {
                Some(visible) => {
                    histogram
                        .record(visible.saturating_duration_since(*at).as_micros() as u64)
                        .unwrap();
                    last = last.max(*visible);
                }
                None => missing += 1,
            }
        }
        let rate = histogram.len() as f64 / last.duration_since(first).as_secs_f64();
        (
            rate,
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            histogram.value_at_quantile(0.99) as f64 / 1000.0,
            missing,
        )
    }
}

/// Posts one signed webhook for contact `id`; whether it was accepted (202).
async fn post(http: &reqwest::Client, url: &str, id: &str) -> bool {
    let body = body(id);
    let t = chrono::Utc::now().timestamp();
    let delivery = format!("msg_{id}");
    let signature = shared::http::verify::sign_standard(SECRET, &delivery, t, &body).unwrap();
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery)
        .header("webhook-timestamp", t.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status() == 202,
        Err(_) => false,
    }
}

struct Service {
    child: std::process::Child,
    base: String,
}

impl Service {
    async fn start(db: &TestDb, nats: &TestNats) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_POOL_SIZE".into(), "16".into()),
            ("CRM_WEBHOOK_SECRETS".into(), SECRET.into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(
            ["CRM_INBOUND_BATCH", "CRM_INBOUND_CONCURRENCY"]
                .into_iter()
                .filter_map(|k| Some((k.to_owned(), std::env::var(k).ok()?))),
        );
        let (child, base) =
            harness::process::spawn_ready(env!("CARGO_BIN_EXE_crm-sync"), db, nats, &env).await;
        Self { child, base }
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Webhooks sent at `rate` per second by 64 paced senders for `duration`; `(rate sent, rows/s,
/// p50 ms, p99 ms, errors)` of webhook -> committed row.
async fn paced(
    http: &reqwest::Client,
    url: &str,
    watcher: &Watcher,
    rate: f64,
    duration: Duration,
    tag: &'static str,
) -> (f64, f64, f64, f64, u64) {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let interval = Duration::from_secs_f64(CLIENTS as f64 / rate);
    let first = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (http, url, sent, errors) =
                (http.clone(), url.to_owned(), sent.clone(), errors.clone());
            tokio::spawn(async move {
                // Spread the senders' ticks over one interval.
                let start =
                    tokio::time::Instant::now() + interval.mul_f64(client as f64 / CLIENTS as f64);
                let mut ticks = tokio::time::interval_at(start, interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut n = 0u64;
                while first.elapsed() < duration {
                    ticks.tick().await;
                    let id = format!("{tag}-{client}-{n}");
                    let at = Instant::now();
                    if post(&http, &url, &id).await {
                        sent.lock().unwrap().insert(id, at);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let offered = sent.len() as f64 / first.elapsed().as_secs_f64();
    let (rows, p50, p99, missing) = watcher.settle(&sent, first).await;
    (offered, rows, p50, p99, AtomicU64::load(&errors, Ordering::Relaxed) + missing as u64)
}

fn main() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let secs: u64 = std::env::var("BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
        let duration = Duration::from_secs(secs);
        let db = TestDb::new().await;
        let nats = TestNats::new();
        shared::db::migrate(&db.url).await.unwrap();
        println!(
            "crm-sync webhooks benchmark: {CLIENTS} concurrent clients, {secs} s per phase, 2 cores shared by \
             clients, service, PostgreSQL and NATS; one new contact per webhook ({} bytes)",
            body("c-0-0").len()
        );

        let nats_base = nats_baseline(&nats, duration).await;
        let insert_base = insert_baseline(&db, duration).await;

        let svc = Service::start(&db, &nats).await;
        let url = format!("{}/webhooks/crm", svc.base);
        let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
        let watcher = Watcher::start(&db).await;

        // Saturated: as fast as 64 clients go.
        let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let first = Instant::now();
        let ingress = {
            let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
            closed_loop(CLIENTS, duration, move |client, n| {
                let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
                async move {
                    let id = format!("s-{client}-{n}");
                    let at = Instant::now();
                    let ok = post(&http, &url, &id).await;
                    if ok {
                        sent.lock().unwrap().insert(id, at);
                    }
                    ok
                }
            })
            .await
        };
        let sent_saturated = sent.lock().unwrap().clone();
        let (e2e_rate, e2e_p50, e2e_p99, missing) = watcher.settle(&sent_saturated, first).await;

        // Paced at 80% of the INSERT baseline, then at half the service's own end-to-end rate.
        let target = insert_base.ops_per_sec * 0.8;
        let (offered, paced_rate, paced_p50, paced_p99, paced_errors) =
            paced(&http, &url, &watcher, target, duration, "p").await;
        let own_target = e2e_rate * 0.5;
        let (own_offered, own_rate, own_p50, own_p99, own_errors) =
            paced(&http, &url, &watcher, own_target, duration, "q").await;
        watcher.stop.cancel();
        svc.stop();

        println!("{:<34} {:>10} {:>9} {:>9} {:>7}", "runner", "per s", "p50 ms", "p99 ms", "errors");
        let line = |name: &str, f: &Figures| {
            println!("{name:<34} {:>10.0} {:>9.2} {:>9.2} {:>7}", f.ops_per_sec, f.p50_ms, f.p99_ms, f.errors)
        };
        line("baseline: JetStream publish+ack", &nats_base);
        line("service: signed webhooks -> 202", &ingress);
        line("baseline: single-row INSERT tx", &insert_base);
        println!("{:<34} {e2e_rate:>10.0} {e2e_p50:>9.2} {e2e_p99:>9.2} {missing:>7}", "service: webhook -> committed row");
        println!(
            "{:<34} {paced_rate:>10.0} {paced_p50:>9.2} {paced_p99:>9.2} {paced_errors:>7}",
            format!("service paced at {target:.0}/s")
        );
        println!(
            "{:<34} {own_rate:>10.0} {own_p50:>9.2} {own_p99:>9.2} {own_errors:>7}",
            format!("service paced at {own_target:.0}/s")
        );
        println!("webhooks accepted: {:.2}x the JetStream publish baseline (target 0.8x)", ingress.ops_per_sec / nats_base.ops_per_sec);
        println!("webhook -> committed row: {:.2}x the single-row INSERT baseline (target 1x)", e2e_rate / insert_base.ops_per_sec);
        println!(
            "at 80% of the INSERT baseline ({target:.0}/s offered, {offered:.0}/s sent): webhook -> row p99 {paced_p99:.1} ms (target < 100 ms)"
        );
        println!(
            "at half the service's own webhook -> row rate ({own_target:.0}/s offered, {own_offered:.0}/s sent): webhook -> row p99 {own_p99:.1} ms"
        );
    });
}
