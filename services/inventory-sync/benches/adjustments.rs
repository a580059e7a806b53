//! Adjustment throughput and latency over HTTP, each beside a baseline measured in the same run.
//!
//! Run: `cargo bench -p inventory-sync --bench adjustments` (needs PostgreSQL and NATS on
//! 127.0.0.1 as for the tests; `BENCH_SECS` sets each phase's length, default 10).
//!
//! - service: the real `inventory-sync` binary (release build) as a child process; 64
//!   concurrent HTTP clients post `receipt` adjustments with unique references.
//! - baseline: 64 concurrent PostgreSQL connections running the plain transaction
//!   `UPDATE stock SET on_hand = on_hand + 1 ...; INSERT INTO ledger ...` in a loop.
//!
//! Both are measured (a) on one hot sku and (b) spread over 10,000 skus. Figures are printed;
//! nothing is asserted (this is a benchmark, not a test).
//!
//! The service is measured twice against the same baselines: with no push target configured
//! (the adjustment path alone, which is what the baseline does), and with all four targets
//! (ERP, shop, POS, WMS) pointing at the sandbox's simulated systems in a thread of this
//! process, so every adjustment also fans out and is pushed on the same two cores.
//! `PUSH_CONCURRENCY`, `ADJUST_WORKERS` and `ADJUST_MAX_BATCH` are passed through. After each
//! fan-out phase it also prints how long the pushes took to catch up (the push lag the
//! throughput was bought with).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use harness::bench::{Bench, Figures, closed_loop};
use harness::{TestDb, TestNats};

const CLIENTS: usize = 64;
const SPREAD_SKUS: usize = 10_000;
const API_KEY: &str = "bench-api-key-0123456789";

fn sku_for(hot: bool, i: u64) -> String {
    if hot { "HOT".into() } else { format!("S{}", i as usize % SPREAD_SKUS) }
}

async fn baseline(db: &TestDb, hot: bool, duration: Duration, run: &str) -> Figures {
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(Arc::new(tokio::sync::Mutex::new(
            AsyncPgConnection::establish(&db.url).await.unwrap(),
        )));
    }
    let run = run.to_owned();
    closed_loop(CLIENTS, duration, move |client, n| {
        let conn = conns[client].clone();
        let run = run.clone();
        async move {
            let mut conn = conn.lock().await;
            let sku = sku_for(hot, (client as u64) * 1_000_003 + n);
            conn.transaction::<_, diesel::result::Error, _>(async |c| {
                diesel::sql_query(
                    "UPDATE inventory.stock SET on_hand = on_hand + 1, version = version + 1, updated_at = now() \
                     WHERE sku = $1 AND warehouse = 'W1'",
                )
                .bind::<Text, _>(&sku)
                .execute(c)
                .await?;
                diesel::sql_query(
                    "INSERT INTO inventory.ledger (source, reference, sku, warehouse, type, quantity, delta, quantity_before, quantity_after) \
                     VALUES ('baseline', $1, $2, 'W1', 'receipt', 1, 1, 0, 1)",
                )
                .bind::<Text, _>(format!("{run}-{client}-{n}"))
                .bind::<Text, _>(&sku)
                .execute(c)
                .await?;
                Ok(())
            })
            .await
            .is_ok()
        }
    })
    .await
}

async fn service(url: String, hot: bool, duration: Duration, run: &str) -> Figures {
    let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let run = run.to_owned();
    closed_loop(CLIENTS, duration, move |client, n| {
        let (http, url, run) = (http.clone(), url.clone(), run.clone());
        async move {
            let body = serde_json::json!({
                "source": "bench", "sku": sku_for(hot, (client as u64) * 1_000_003 + n), "warehouse": "W1",
                "type": "receipt", "quantity": 1, "reference": format!("{run}-{client}-{n}")});
            match http.post(&url).header("X-API-Key", API_KEY).json(&body).send().await {
                Ok(r) => r.status() == 201,
                Err(_) => false,
            }
        }
    })
    .await
}

fn rss_mb(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn seed(db: &TestDb) {
    let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
    diesel::sql_query(
        "INSERT INTO inventory.products (sku, name) SELECT 'S' || g, 'Spread ' || g FROM generate_series(0, $1 - 1) g \
         UNION ALL SELECT 'HOT', 'Hot'",
    )
    .bind::<BigInt, _>(SPREAD_SKUS as i64)
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query(
        "INSERT INTO inventory.stock (sku, warehouse) SELECT sku, 'W1' FROM inventory.products",
    )
    .execute(&mut conn)
    .await
    .unwrap();
}

/// Seconds until the outbox is empty and every push consumer has delivered and had acknowledged
/// everything (at most 300).
async fn drain_secs(db: &TestDb, nats: &TestNats) -> f64 {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(300) {
        let left = harness::pending(db, nats, "inventory").await;
        if left.outbox == 0 && left.consumers.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed().as_secs_f64()
}

/// Starts the simulated ERP, shop, POS and WMS on a thread of their own; returns the
/// variables that point inventory-sync at them.
fn start_targets() -> Vec<(String, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let sandbox = sandbox::Sandbox::start().await.unwrap();
            tx.send(sandbox.connector_env()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// A running inventory-sync binary.
struct Service(harness::process::Running);

impl Service {
    async fn start(db: &TestDb, nats: &TestNats, targets: &[(String, String)]) -> Self {
        let mut env: Vec<(String, String)> = vec![
            ("DATABASE_POOL_SIZE".into(), "16".into()),
            ("INVENTORY_API_KEYS".into(), format!("bench:{API_KEY}")),
            ("RUST_LOG".into(), "warn".into()),
        ];
        env.extend(targets.iter().cloned());
        Self(
            harness::process::Running::start(
                env!("CARGO_BIN_EXE_inventory-sync"),
                db,
                nats,
                env,
                &["ADJUST_WORKERS", "ADJUST_MAX_BATCH", "PUSH_CONCURRENCY"],
            )
            .await,
        )
    }

    /// Peak RSS and the reconciliation status, then SIGTERM.
    async fn stop(self) -> (f64, reqwest::StatusCode) {
        let (_, hwm) = rss_mb(self.0.child.id());
        let reconciliation = harness::test_client()
            .get(format!("{}/reconciliation", self.0.base))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .status();
        self.0.stop();
        (hwm, reconciliation)
    }
}

fn main() {
    harness::bench::run(|Bench { db, nats, secs, duration }| async move {
        seed(&db).await;
        let targets = start_targets();

        println!(
            "inventory-sync adjustments benchmark: {CLIENTS} concurrent clients, {secs} s per phase, \
             2 cores shared by client, service, sandbox, PostgreSQL and NATS"
        );
        println!("  service         = no push targets configured: the adjustment path alone");
        println!(
            "  service+fanout  = ERP, shop, POS and WMS configured (sandbox): every adjustment also fans out and is pushed, on the same 2 cores"
        );
        println!(
            "{:<8} {:<15} {:>9} {:>9} {:>9} {:>7}",
            "case", "runner", "adj/s", "p50 ms", "p99 ms", "errors"
        );
        let cases = [("hot", true), ("spread", false)];
        let mut baselines = Vec::new();
        for (name, hot) in cases {
            baselines.push(baseline(&db, hot, duration, &format!("b-{name}")).await);
        }
        let mut summary = Vec::new();
        let mut drains = Vec::new();
        for (runner, env) in [("service", Vec::new()), ("service+fanout", targets)] {
            let svc = Service::start(&db, &nats, &env).await;
            for ((name, hot), b) in cases.into_iter().zip(&baselines) {
                let f = service(
                    format!("{}/adjustments", svc.0.base),
                    hot,
                    duration,
                    &format!("{runner}-{name}"),
                )
                .await;
                summary.push((
                    name,
                    runner,
                    f.ops_per_sec / b.ops_per_sec,
                    f.p99_ms,
                    f.p50_ms,
                    f.ops_per_sec,
                    f.errors,
                ));
                if runner == "service+fanout" {
                    drains.push((name, drain_secs(&db, &nats).await));
                }
            }
            let (hwm, reconciliation) = svc.stop().await;
            summary.push(("rss", runner, hwm, 0.0, 0.0, 0.0, reconciliation.as_u16() as u64));
        }
        for ((name, _), b) in cases.into_iter().zip(&baselines) {
            println!(
                "{name:<8} {:<15} {:>9.0} {:>9.2} {:>9.2} {:>7}",
                "baseline", b.ops_per_sec, b.p50_ms, b.p99_ms, b.errors
            );
            for (n, runner, _, p99, p50, ops, errors) in &summary {
                if *n == name {
                    println!("{name:<8} {runner:<15} {ops:>9.0} {p50:>9.2} {p99:>9.2} {errors:>7}");
                }
            }
        }
        for (name, secs) in &drains {
            println!(
                "{name} service+fanout: every push done {secs:.1} s after the phase ended (push lag)"
            );
        }
        for (name, runner, ratio, p99, _, _, extra) in &summary {
            if *name == "rss" {
                println!(
                    "{runner}: peak RSS {ratio:.1} MB, reconciliation after the run: HTTP {extra}"
                );
            } else {
                println!("{name} {runner}: throughput {ratio:.2}x the baseline, p99 {p99:.2} ms");
            }
        }
    });
}
