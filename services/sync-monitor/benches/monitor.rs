//! sync-monitor's two figures, each beside a baseline measured in the same run.
//!
//! Run: `cargo bench -p sync-monitor --bench monitor` (PostgreSQL and NATS on 127.0.0.1 as for
//! the tests; `EVENTS` sets the backlog, default 20,000; `STORED` the stored events of the
//! latency phase, default 1,000,000; `BENCH_SECS` each latency phase's length, default 10).
//!
//! 1. `sync.events` consumed per second. A backlog of single-record `sync.recorded` messages
//!    waits in JetStream, then is drained:
//!    - baseline: a plain pull consumer on a stream like `SYNC_EVENTS`, fetching batches of 256
//!      and acknowledging each message;
//!    - service: the real `sync-monitor` binary (release build), restarted onto the backlog,
//!      storing every message (its rows, hourly counts and last success) a batch per
//!      transaction. Timed from the first stored row to the last.
//! 2. `GET /api/health` with `STORED` sync events stored (a week of six integrations), one
//!    client back to back, beside `GET /healthz` of the same process.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use harness::bench::{Bench, Figures, closed_loop, header, line};
use shared::schemas::{
    Envelope,
    sync::{Direction, SyncRecorded, SyncStatus},
};

const BIN: &str = env!("CARGO_BIN_EXE_sync-monitor");

fn env_or(name: &str, default: i64) -> i64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn event(n: i64) -> Envelope<SyncRecorded> {
    Envelope::new(
        "inventory-sync",
        SyncRecorded {
            system: ["crm", "erp", "ecommerce", "pos", "wms", "directory"][(n % 6) as usize].into(),
            direction: Direction::Outbound,
            entity: "level".into(),
            record_id: format!("W1/SKU-{n}"),
            status: if n % 50 == 0 { SyncStatus::Failed } else { SyncStatus::Synced },
            http_status: Some(200),
            detail: None,
        },
    )
}

/// Publishes `n` messages to `subject` with pipelined acknowledgements.
async fn publish(
    js: &async_nats::jetstream::Context,
    subject: impl Fn(&Envelope<SyncRecorded>) -> String,
    n: i64,
) {
    let mut pending = Vec::with_capacity(4096);
    for i in 0..n {
        let e = event(i);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.id.to_string().as_str());
        pending.push(
            js.publish_with_headers(subject(&e), headers, serde_json::to_vec(&e).unwrap().into())
                .await
                .unwrap(),
        );
        if pending.len() == 4096 {
            for ack in pending.drain(..) {
                ack.await.unwrap();
            }
        }
    }
    for ack in pending {
        ack.await.unwrap();
    }
}

async fn stored(db: &harness::TestDb) -> i64 {
    db.count("SELECT count(*) AS n FROM monitor.sync_events").await
}

fn main() {
    harness::bench::run(|Bench { db, nats, secs, duration }| async move {
        let backlog = env_or("EVENTS", 20_000);
        let stored_events = env_or("STORED", 1_000_000);
        let js = async_nats::jetstream::new(nats.client().await);

        // 1a. Baseline: a plain consumer draining the same backlog.
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: format!("{}_BENCH_EVENTS", nats.prefix),
                subjects: vec![nats.subject("bench.>")],
                storage: async_nats::jetstream::stream::StorageType::File,
                duplicate_window: shared::bus::streams::DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .unwrap();
        publish(&js, |e| nats.subject(&format!("bench.{}", e.subject())), backlog).await;
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(format!("{}_bench", nats.prefix)),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .unwrap();
        let started = Instant::now();
        let mut consumed = 0;
        while consumed < backlog {
            let mut batch = consumer.fetch().max_messages(256).messages().await.unwrap();
            while let Some(message) = batch.next().await {
                let message = message.unwrap();
                let _: Envelope<SyncRecorded> = serde_json::from_slice(&message.payload).unwrap();
                message.ack().await.unwrap();
                consumed += 1;
            }
        }
        let baseline_rate = consumed as f64 / started.elapsed().as_secs_f64();

        // 1b. The monitor: started once (stream and durable declared), stopped, the backlog
        // published, restarted onto it.
        let env = vec![
            ("MONITOR_CHECK_SECS".to_owned(), "0".to_owned()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
            ("DATABASE_POOL_SIZE".to_owned(), "8".to_owned()),
        ];
        let first = harness::process::Running::start(BIN, &db, &nats, env.clone(), &[]).await;
        first.stop();
        publish(&js, |e| nats.subject(&e.subject()), backlog).await;
        let svc = harness::process::Running::start(BIN, &db, &nats, env, &[]).await;
        let (mut t0, mut n0) = (None, 0);
        let deadline = Instant::now() + Duration::from_secs(600);
        let drained = loop {
            let n = stored(&db).await;
            if t0.is_none() && n > 0 {
                (t0, n0) = (Some(Instant::now()), n);
            }
            if n >= backlog {
                break t0.map(|t| (n - n0) as f64 / t.elapsed().as_secs_f64().max(0.001));
            }
            assert!(Instant::now() < deadline, "the monitor stored {n} of {backlog}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let service_rate = drained.unwrap_or_default();

        // 2. `/api/health` with a week of stored events.
        let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
        let loaded = Instant::now();
        diesel::sql_query(
            "INSERT INTO monitor.sync_events (message_id, seq, at, system, direction, entity, record_id, status, http_status) \
             SELECT gen_random_uuid(), 0, now() - (g * interval '1 second') * (604800.0 / $1), \
                    (ARRAY['crm','erp','ecommerce','pos','wms','directory'])[1 + g % 6], 'outbound', 'level', \
                    'W1/SKU-' || (g % 5000), CASE WHEN g % 50 = 0 THEN 'retrying' ELSE 'synced' END, 200 \
             FROM generate_series(1, $1) g",
        )
        .bind::<BigInt, _>(stored_events)
        .execute(&mut conn)
        .await
        .unwrap();
        diesel::sql_query(
            "INSERT INTO monitor.hourly (system, hour, synced, errors) \
             SELECT system, date_trunc('hour', at), count(*) FILTER (WHERE status = 'synced'), \
                    count(*) FILTER (WHERE status = 'retrying') FROM monitor.sync_events GROUP BY 1, 2 \
             ON CONFLICT (system, hour) DO UPDATE SET synced = excluded.synced, errors = excluded.errors",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        diesel::sql_query("ANALYZE monitor.sync_events").execute(&mut conn).await.unwrap();
        let load_secs = loaded.elapsed().as_secs_f64();
        let total = stored(&db).await;
        let http = reqwest::Client::new();
        let check_started = Instant::now();
        let check = http
            .post(format!("{}/api/health/check", svc.base))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(check.status(), 200);
        let check_ms = check_started.elapsed().as_secs_f64() * 1000.0;
        let get = |path: &'static str| {
            let (http, base) = (http.clone(), svc.base.clone());
            move |_: usize, _: u64| {
                let (http, url) = (http.clone(), format!("{base}{path}"));
                async move {
                    match http.get(url).bearer_auth(harness::ADMIN_TOKEN).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    }
                }
            }
        };
        let healthz = closed_loop(1, duration, get("/healthz")).await;
        let health = closed_loop(1, duration, get("/api/health")).await;
        svc.stop();

        println!(
            "sync-monitor benchmark: a backlog of {backlog} single-record sync.events messages; {total} stored \
             events for the latency phase (loaded in {load_secs:.1} s); {secs} s per latency phase; 2 cores shared \
             by the service, PostgreSQL and NATS"
        );
        header();
        let rate = |r: f64| Figures { ops_per_sec: r, p50_ms: 0.0, p99_ms: 0.0, errors: 0 };
        line("baseline: JetStream pull + ack", &rate(baseline_rate));
        line("service: sync.events consumed+stored", &rate(service_rate));
        line("baseline: GET /healthz", &healthz);
        line("service: GET /api/health (1M events)", &health);
        println!(
            "sync.events consumed: {service_rate:.0}/s, {:.2}x the same-run JetStream consumer baseline ({baseline_rate:.0}/s)",
            service_rate / baseline_rate
        );
        println!(
            "/api/health with {total} stored events: p50 {:.2} ms, p99 {:.2} ms ({:.1}x the /healthz p50 of {:.2} ms); \
             a health check took {check_ms:.0} ms",
            health.p50_ms,
            health.p99_ms,
            health.p50_ms / healthz.p50_ms.max(0.001),
            healthz.p50_ms
        );
    });
}
