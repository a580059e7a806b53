//! The real `inventory-sync` binary: refuses bad configuration with one line, serves until
//! SIGTERM, and loses nothing when it is killed outright.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use harness::{ADMIN_TOKEN, TestDb, TestNats};
use serde_json::{Value, json};

harness::binary_tests!("inventory-sync");

const POS_KEY: &str = "crash-test-pos-key-0123456789";

fn env_for(sandbox: &sandbox::Sandbox) -> Vec<(String, String)> {
    let mut env = sandbox.connector_env();
    env.push(("INVENTORY_API_KEYS".to_owned(), format!("pos:{POS_KEY}")));
    env
}

#[tokio::test]
async fn a_service_killed_with_sigkill_loses_no_accepted_adjustment_or_push() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let sandbox = sandbox::Sandbox::start().await.unwrap();
    let env = env_for(&sandbox);
    let http = harness::test_client();
    let (mut child, base) = harness::process::spawn_ready(BIN, &db, &nats, &env).await;

    let product = http
        .put(format!("{base}/products/CRASH-1"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "Crash test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(product.status(), 200);
    // The ERP answers slowly: its pushes are in flight when the process dies.
    sandbox.erp.set_latency(Some(Duration::from_secs(3)));
    for i in 1..=20 {
        let response = http
            .post(format!("{base}/adjustments"))
            .header("X-API-Key", POS_KEY)
            .json(&json!({"source": "pos", "sku": "CRASH-1", "warehouse": "W1", "type": "receipt",
                "quantity": i, "reference": format!("r{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    child.kill().unwrap(); // SIGKILL: no graceful shutdown, nothing flushed
    child.wait().unwrap();
    // The ERP finishes the requests it already had (orphaned by the kill) before the restart.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    sandbox.erp.set_latency(None);

    let (mut restarted, base) = harness::process::spawn_ready(BIN, &db, &nats, &env).await;
    let total = (1..=20).sum::<i64>();
    for sim in [&sandbox.erp, &sandbox.shop, &sandbox.wms] {
        assert!(
            // Up to the consumers' ack wait (30 s) for messages the killed process held.
            sim.wait_until(Duration::from_secs(60), |x| x.level("CRASH-1", "W1") == Some(total))
                .await,
            "{:?} has {:?}",
            sim.system(),
            sim.level("CRASH-1", "W1")
        );
    }
    let admin_get = |path: &'static str| {
        let request = http.get(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN).send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(admin_get("/stock/CRASH-1").await["on_hand"], total);
    let ledger = admin_get("/ledger/CRASH-1?limit=100").await;
    assert_eq!(ledger.as_array().unwrap().len(), 20, "each adjustment exactly once");
    let reconciliation = admin_get("/reconciliation").await;
    assert_eq!(reconciliation["mismatches"], json!([]), "{reconciliation}");
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}

#[tokio::test]
async fn a_bulk_load_killed_with_sigkill_ends_exact_after_a_restart() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let sandbox = sandbox::Sandbox::start().await.unwrap();
    let env = env_for(&sandbox);
    let http = harness::test_client();
    let (mut child, base) = harness::process::spawn_ready(BIN, &db, &nats, &env).await;
    let records = 300;
    for i in 0..records {
        sandbox.erp.set_level(&format!("KILL-{i:03}"), "W1", 1 + i);
    }
    {
        use diesel_async::RunQueryDsl;
        let mut conn = db.connect().await;
        diesel::sql_query(
            "INSERT INTO inventory.products (sku, name) \
             SELECT 'KILL-' || lpad(g::text, 3, '0'), 'Kill ' || g FROM generate_series(0, 299) g",
        )
        .execute(&mut conn)
        .await
        .unwrap();
    }
    // Pages of 25 read slowly: the process dies in the middle of the load.
    sandbox.erp.set_latency(Some(Duration::from_millis(150)));
    let job: Value = http
        .post(format!("{base}/admin/bulk/jobs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"source": "erp", "target": "inventory", "entity": "stock", "batch_size": 25}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    let job_of = |base: String| {
        let (http, id) = (http.clone(), id.clone());
        async move {
            http.get(format!("{base}/admin/bulk/jobs/{id}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        }
    };
    harness::eventually(Duration::from_secs(30), || async {
        let job = job_of(base.clone()).await?;
        (job["processed_records"].as_i64()? >= 100).then_some(())
    })
    .await
    .expect("the load is under way");
    child.kill().unwrap(); // SIGKILL: the page in progress is neither checkpointed nor released
    child.wait().unwrap();
    sandbox.erp.set_latency(None);

    let (mut restarted, base) = harness::process::spawn_ready(BIN, &db, &nats, &env).await;
    // Another process takes the job over once the dead one's lease (30 s) has run out.
    let done = harness::eventually(Duration::from_secs(90), || async {
        let job = job_of(base.clone()).await?;
        (job["status"] == "completed").then_some(job)
    })
    .await
    .expect("the load completes after the restart");
    assert_eq!(
        (done["processed_records"].as_i64(), done["error_count"].as_i64()),
        (Some(300), Some(0))
    );
    let n = |sql: &'static str| db.count(sql);
    assert_eq!(
        n("SELECT count(*) AS n FROM inventory.ledger WHERE source = 'erp'").await,
        records,
        "each record counted exactly once"
    );
    assert_eq!(
        n("SELECT count(*) AS n FROM inventory.stock s WHERE s.on_hand = \
           1 + substr(s.sku, 6)::bigint")
        .await,
        records,
        "every level is the ERP's"
    );
    // The shop and the WMS receive every level; the ERP, where the page came from, none.
    for sim in [&sandbox.shop, &sandbox.wms] {
        assert!(
            sim.wait_until(Duration::from_secs(60), |x| x.level("KILL-299", "W1") == Some(300))
                .await,
            "{:?}",
            sim.system()
        );
    }
    assert!(
        sandbox.erp.requests().iter().all(|r| r.method == "GET" && r.query.contains("offset=")),
        "nothing read back from or pushed to the ERP"
    );
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}
