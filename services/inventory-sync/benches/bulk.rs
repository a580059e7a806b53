//! Bulk (initial) load speed, beside a baseline measured in the same run.
//!
//! Run: `cargo bench -p inventory-sync --bench bulk` (needs PostgreSQL with `psql` and NATS on
//! 127.0.0.1 as for the tests; `BULK_RECORDS` sets the size, default 20,000; `BULK_BATCH` the
//! page size, default 1000).
//!
//! - baseline: `COPY` of the same rows (sku, warehouse, quantity) into a table, through `psql`,
//!   timed from start to exit.
//! - service: the real `inventory-sync` binary (release build) loads them from the simulated
//!   ERP (`GET /api/inventory?offset=&limit=`, in a thread of this process) as a bulk job:
//!   timed from `POST /admin/bulk/jobs` to the job reading `completed`. Every record becomes a
//!   `count` in the ledger, a stock level and its events, as in production.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use diesel::sql_types::BigInt;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use harness::{TestDb, bench::Bench};
use serde_json::{Value, json};

fn sku(i: usize) -> String {
    format!("B{i:06}")
}

/// `COPY` of `records` rows through psql; seconds from start to exit.
fn copy_baseline(db: &TestDb, records: usize) -> f64 {
    let mut csv = String::with_capacity(records * 24);
    for i in 0..records {
        csv.push_str(&format!("{},W1,{}\n", sku(i), 1000 + i));
    }
    let started = Instant::now();
    let mut psql = Command::new("psql")
        .arg(&db.url)
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg(
            "CREATE TABLE copy_baseline (sku text, warehouse text, qty bigint); \
             COPY copy_baseline FROM STDIN WITH (FORMAT csv)",
        )
        .stdin(Stdio::piped())
        .spawn()
        .expect("psql (the PostgreSQL client) is needed for the COPY baseline");
    psql.stdin.take().unwrap().write_all(csv.as_bytes()).unwrap();
    assert!(psql.wait().unwrap().success(), "COPY failed");
    started.elapsed().as_secs_f64()
}

/// Starts the simulated ERP holding `records` levels on a thread of its own; returns the
/// variables that point inventory-sync at it.
fn start_erp(records: usize) -> Vec<(String, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let erp = sandbox::SimServer::start(sandbox::System::Erp).unwrap();
            for i in 0..records {
                erp.set_level(&sku(i), "W1", 1000 + i as i64);
            }
            let (url, key) = sandbox::System::Erp.connector_vars().unwrap();
            tx.send(vec![
                (url.to_owned(), erp.base_url().to_owned()),
                (key.to_owned(), erp.credential().to_owned()),
            ])
            .unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

async fn seed_products(db: &TestDb, records: usize) {
    let mut conn = AsyncPgConnection::establish(&db.url).await.unwrap();
    diesel::sql_query(
        "INSERT INTO inventory.products (sku, name) \
         SELECT 'B' || lpad(g::text, 6, '0'), 'Bulk ' || g FROM generate_series(0, $1 - 1) g",
    )
    .bind::<BigInt, _>(records as i64)
    .execute(&mut conn)
    .await
    .unwrap();
}

fn main() {
    harness::bench::run(|Bench { db, nats, .. }| async move {
        let var = |name: &str, default: usize| {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        };
        let (records, batch) = (var("BULK_RECORDS", 20_000), var("BULK_BATCH", 1000));
        seed_products(&db, records).await;
        let env = start_erp(records);

        let copy_secs = copy_baseline(&db, records);

        let (mut child, base) =
            harness::process::spawn_ready(env!("CARGO_BIN_EXE_inventory-sync"), &db, &nats, &env)
                .await;
        let http = harness::test_client();
        let started = Instant::now();
        let job: Value = http
            .post(format!("{base}/admin/bulk/jobs"))
            .bearer_auth(harness::ADMIN_TOKEN)
            .json(&json!({"source": "erp", "target": "inventory", "entity": "stock", "batch_size": batch}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = job["id"].as_str().unwrap().to_owned();
        let done = harness::eventually(Duration::from_secs(600), || async {
            let job: Value = http
                .get(format!("{base}/admin/bulk/jobs/{id}"))
                .bearer_auth(harness::ADMIN_TOKEN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
        })
        .await
        .expect("the bulk job ends");
        let load_secs = started.elapsed().as_secs_f64();
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let _ = child.wait();

        let rate = |secs: f64| records as f64 / secs;
        println!(
            "inventory-sync bulk load benchmark: {records} ERP stock records, pages of {batch}, \
             2 cores shared by the ERP simulator, the service, PostgreSQL and NATS"
        );
        println!("{:<22} {:>10} {:>12}", "runner", "seconds", "records/s");
        println!("{:<22} {:>10.3} {:>12.0}", "baseline (COPY)", copy_secs, rate(copy_secs));
        println!("{:<22} {:>10.3} {:>12.0}", "bulk job", load_secs, rate(load_secs));
        println!(
            "bulk job: {:.3}x the COPY baseline (job {}: {} processed, {} errors)",
            copy_secs / load_secs,
            done["status"],
            done["processed_records"],
            done["error_count"]
        );
    });
}
