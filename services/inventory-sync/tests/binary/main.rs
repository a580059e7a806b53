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
