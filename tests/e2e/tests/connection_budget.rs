//! The PostgreSQL connection budget of a replica, as deploy/README.md states it, against the
//! real service binaries: what each declares in `db_pool_max_connections` (every pool plus
//! the LISTEN and readiness connections) is the README's formula, and what PostgreSQL sees
//! (`pg_stat_activity`, by `application_name`) never exceeds it, also under load with every
//! push target configured.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use harness::{TestDb, TestNats, process::spawn_ready};

/// The README's per-replica formula with `DATABASE_POOL_SIZE=3`, `PUSH_CONCURRENCY=1`
/// (a push pool of 3) and `ADJUST_WORKERS=2`: main pool + push engines x 3 + adjusters +
/// LISTEN + readiness.
const BUDGETS: [(&str, i64); 6] = [
    ("inventory-sync", 3 + 4 * 3 + 2 + 1 + 1),
    ("crm-sync", 3 + 3 * 3 + 1 + 1),
    ("erp-sync", 3 + 2 * 3 + 1 + 1),
    ("user-sync", 3 + 1 + 1),
    ("conflict-resolver", 3 + 1 + 1),
    ("sync-monitor", 3 + 1 + 1),
];
const API_KEY: &str = "budget-api-key-0123456789";

/// Connections PostgreSQL holds for `service` (a name of [`BUDGETS`]) in the test's database.
async fn held(db: &TestDb, service: &str) -> i64 {
    harness::count(
        db,
        &format!(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE application_name = '{service}' AND datname = current_database()"
        ),
    )
    .await
}

/// The sum of `db_pool_max_connections` in the service's `/metrics`.
async fn declared(base: &str) -> i64 {
    let text =
        harness::test_client().get(format!("{base}/metrics")).send().await.unwrap().text().await;
    text.unwrap()
        .lines()
        .filter(|l| l.starts_with("db_pool_max_connections{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// Samples [`held`] every 20 ms until `stop`; the highest count seen.
fn sample(db: Arc<TestDb>, service: &'static str, stop: Arc<AtomicBool>) -> Arc<AtomicI64> {
    let peak = Arc::new(AtomicI64::new(0));
    let seen = peak.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            seen.fetch_max(held(&db, service).await, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    peak
}

#[tokio::test]
async fn each_replica_holds_no_more_connections_than_the_budget_it_declares() {
    let (db, nats) = (Arc::new(TestDb::new().await), TestNats::new());
    let sandbox = sandbox::Sandbox::start().await.unwrap();
    let mut env: Vec<(String, String)> = [
        ("DATABASE_POOL_SIZE", "3"),
        ("PUSH_CONCURRENCY", "1"),
        ("ADJUST_WORKERS", "2"),
        ("INVENTORY_API_KEYS", &format!("budget:{API_KEY}")),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    env.extend(sandbox.connector_env());

    for (service, budget) in BUDGETS {
        let bin = harness::process::workspace_bin(service);
        let (mut child, base) = spawn_ready(&bin, &db, &nats, &env).await;
        // The LISTEN connection is declared once the relay listens, just after readiness.
        let declares = harness::eventually(Duration::from_secs(10), || async {
            let d = declared(&base).await;
            (d == budget).then_some(d)
        })
        .await;
        let stop = Arc::new(AtomicBool::new(false));
        let peak = sample(db.clone(), service, stop.clone());
        if service == "inventory-sync" {
            load(&db, &nats, &base).await;
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let peak = peak.load(Ordering::Relaxed);
        let _ = child.kill();
        let _ = child.wait();
        println!("{service}: declares {budget}, PostgreSQL saw at most {peak}");
        assert_eq!(
            declares,
            Some(budget),
            "{service} declares {} connections, deploy/README.md's formula says {budget}",
            declared(&base).await
        );
        assert!(peak >= 2, "{service}: the sampling saw its connections ({peak})");
        assert!(peak <= budget, "{service} held {peak} connections, over its budget of {budget}");
    }
}

/// 32 clients post 20 adjustments each over 50 skus; every one fans out to the four targets.
/// Returns when the outbox and the push consumers have drained.
async fn load(db: &TestDb, nats: &TestNats, base: &str) {
    use diesel_async::RunQueryDsl;
    let mut conn = db.connect().await;
    diesel::sql_query(
        "INSERT INTO inventory.products (sku, name) SELECT 'B' || g, 'Budget ' || g \
         FROM generate_series(0, 49) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let http = harness::test_client();
    let clients = (0..32).map(|client| {
        let (http, url) = (http.clone(), format!("{base}/adjustments"));
        async move {
            for n in 0..20 {
                let body = serde_json::json!({
                    "source": "budget", "sku": format!("B{}", (client * 7 + n) % 50),
                    "warehouse": "W1", "type": "receipt", "quantity": 1,
                    "reference": format!("budget-{client}-{n}")});
                let r = http.post(&url).header("X-API-Key", API_KEY).json(&body).send().await;
                assert_eq!(r.unwrap().status(), 201);
            }
        }
    });
    futures::future::join_all(clients).await;
    let drained = harness::eventually(Duration::from_secs(60), || async {
        let left = harness::pending(db, nats, "inventory").await;
        (left.outbox == 0 && left.consumers.is_empty()).then_some(())
    })
    .await;
    assert!(drained.is_some(), "the pushes drained");
}
