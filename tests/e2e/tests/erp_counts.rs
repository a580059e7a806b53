//! The ERP's inventory messages through erp-sync into inventory-sync: erp-sync turns them into
//! counts stamped with the ERP's time, and an older count arriving after a newer one changes
//! nothing, whichever order the ERP's deliveries take.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use harness::{TestApp, TestDb, TestNats};
use serde_json::{Value, json};

const KEY: &str = "e2e-erp-webhook-key-0123456789";

async fn on_hand(app: &TestApp, sku: &str) -> Option<i64> {
    let stock: Value = app.admin_get(&format!("/stock/{sku}")).await.json().await.ok()?;
    stock["warehouses"].as_array()?.iter().find(|w| w["warehouse"] == "W1")?["on_hand"].as_i64()
}

/// The ERP reports its count of MUG-1 in W1 made at `at`.
async fn count(erp: &TestApp, at: &str, on_hand: i64) -> Value {
    let response = erp
        .http
        .post(erp.url("/webhooks/erp"))
        .header("X-API-Key", KEY)
        .json(&json!({"eventType": "updated", "entity": "inventory", "entityId": "MUG-1",
            "payload": {"qtyOnHand": on_hand, "warehouse": "W1", "updatedAt": at}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json().await.unwrap()
}

#[tokio::test]
async fn erp_counts_reach_inventory_sync_and_an_older_one_arriving_late_changes_nothing() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let mut erp_config =
        erp_sync::Config::unconnected(harness::common_config(erp_sync::SERVICE, &db, &nats))
            .unwrap();
    erp_config.api_keys = vec![KEY.into()];
    let inventory_config = inventory_sync::Config {
        common: harness::common_config(inventory_sync::SERVICE, &db, &nats),
        api_keys: vec![],
        hmac_secrets: vec![],
        targets: Default::default(),
        adjuster: shared::db::group_commit::GroupCommitConfig { workers: 2, max_batch: 64 },
        push: shared::push::PushConfig::default(),
    };
    let (erp, inventory) =
        tokio::join!(erp_sync::build(erp_config), inventory_sync::build(inventory_config));
    let (erp, inventory) = (TestApp::spawn(erp.unwrap()), TestApp::spawn(inventory.unwrap()));
    let put = inventory
        .http
        .put(inventory.url("/products/MUG-1"))
        .bearer_auth(harness::ADMIN_TOKEN)
        .json(&json!({"name": "Mug", "reorder_point": 0, "reorder_quantity": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    count(&erp, "2026-11-30T10:20:00Z", 30).await;
    let applied = harness::eventually(Duration::from_secs(20), || async {
        (on_hand(&inventory, "MUG-1").await == Some(30)).then_some(())
    });
    assert!(applied.await.is_some(), "the count of 10:20 is applied");
    // The ERP's count of 10:10, delivered late (a retry of the ERP's own queue).
    count(&erp, "2026-11-30T10:10:00Z", 12).await;
    // And a newer one after it.
    count(&erp, "2026-11-30T10:30:00Z", 25).await;
    let applied = harness::eventually(Duration::from_secs(20), || async {
        (on_hand(&inventory, "MUG-1").await == Some(25)).then_some(())
    });
    assert!(applied.await.is_some(), "the count of 10:30 is applied");
    harness::assert_settled(&db, &nats, "erp", 0).await;
    harness::assert_settled(&db, &nats, "inventory", 0).await;
    assert_eq!(
        db.count("SELECT count(*) AS n FROM inventory.ledger WHERE source = 'erp'").await,
        2,
        "the count of 10:10 was never applied"
    );
    assert_eq!(
        db.count("SELECT count(*) AS n FROM erp.webhook_events WHERE status = 'applied'").await,
        3
    );
    inventory.stop().await;
    erp.stop().await;
}
