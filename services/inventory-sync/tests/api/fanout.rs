use std::time::Duration;

use futures::StreamExt;
use sandbox::Fault;
use serde_json::{Value, json};

use crate::helpers::{WAIT, adjustment, spawn};

#[tokio::test]
async fn every_target_except_the_source_receives_the_new_level_in_its_own_format() {
    let t = spawn().await;
    t.put_product("TEE-1", 0).await;
    // The POS took the receipt itself: it holds 7 before it tells us.
    t.sandbox.pos.set_level("TEE-1", "W1", 7);

    let (status, _) = t.adjust(&adjustment("pos", "TEE-1", "receipt", 7, "r1")).await;
    assert_eq!(status, 201);

    let s = &t.sandbox;
    for sim in [&s.erp, &s.shop, &s.wms] {
        assert!(
            sim.wait_until(WAIT, |x| x.level("TEE-1", "W1") == Some(7)).await,
            "{:?} got {:?}",
            sim.system(),
            sim.requests()
        );
    }
    assert!(s.pos.wait_until(WAIT, |x| !x.requests().is_empty()).await, "the source is read back");
    assert!(
        s.pos.requests().iter().all(|r| r.method == "GET"),
        "the source holds the level already and is not pushed to: {:?}",
        s.pos.requests()
    );
    let erp = &s.erp.accepted()[0];
    assert_eq!((erp.method.as_str(), erp.path.as_str()), ("PUT", "/api/inventory/TEE-1"));
    assert_eq!(erp.body, json!({"sku": "TEE-1", "warehouseCode": "W1", "qtyOnHand": 7}));
    let wms = &s.wms.accepted()[0];
    assert_eq!(wms.body, json!({"sku": "TEE-1", "location": "W1", "qty": 7}));
    let shop = s
        .shop
        .accepted()
        .into_iter()
        .find(|r| r.path.ends_with("inventory_levels/set.json"))
        .unwrap();
    assert_eq!(
        shop.body,
        json!({"inventory_item_id": "TEE-1", "location_id": "W1", "available": 7})
    );
    let logged = harness::eventually(WAIT, || async {
        (t.count("SELECT count(*) AS n FROM inventory.push_log WHERE status = 'synced'").await == 3)
            .then_some(())
    });
    assert!(logged.await.is_some(), "every push is logged");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn failing_targets_are_retried_honouring_retry_after_until_they_accept() {
    let t = spawn().await;
    t.put_product("TEE-2", 0).await;
    t.sandbox.erp.fail_next(2, Fault::Status(503));
    t.sandbox.erp.fail_next(1, Fault::RateLimited { retry_after_secs: 1 });

    t.adjust(&adjustment("wms", "TEE-2", "receipt", 3, "r1")).await;

    assert!(
        t.sandbox.erp.wait_until(WAIT * 2, |x| x.level("TEE-2", "W1") == Some(3)).await,
        "{:?}",
        t.sandbox.erp.requests()
    );
    let statuses: Vec<u16> = t.sandbox.erp.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 429, 200]);
    let logged = harness::eventually(WAIT, || async {
        (t.count("SELECT count(*) AS n FROM inventory.push_log WHERE target = 'erp' AND status = 'retrying'").await == 3).then_some(())
    });
    assert!(logged.await.is_some(), "failed attempts are logged");
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.dead_letters").await, 0);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_target_that_keeps_failing_becomes_a_dead_letter_that_can_be_replayed() {
    let t = spawn().await;
    t.put_product("TEE-3", 0).await;
    t.set_push_max_attempts(2).await;
    t.sandbox.wms.fail_next(2, Fault::Status(500));

    t.adjust(&adjustment("pos", "TEE-3", "receipt", 9, "r1")).await;

    let dead: Vec<Value> = harness::eventually(WAIT * 2, || async {
        let rows: Vec<Value> = t.app.admin_get("/admin/dead-letters").await.json().await.ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("a dead letter");
    assert_eq!(dead[0]["consumer"], "inventory-push-wms-stock_level");
    assert!(dead[0]["error"].as_str().unwrap().contains("budget"), "{}", dead[0]);
    assert_eq!(t.sandbox.wms.level("TEE-3", "W1"), None);

    let id = dead[0]["id"].as_str().unwrap();
    let replay = t
        .app
        .http
        .post(t.app.url(&format!("/admin/dead-letters/{id}/replay")))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 202);
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("TEE-3", "W1") == Some(9)).await);
    let again = t
        .app
        .http
        .post(t.app.url(&format!("/admin/dead-letters/{id}/replay")))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "a dead letter is replayed once");
    t.assert_settled(1).await;
}

#[tokio::test]
async fn stock_thresholds_raise_alerts_once_and_toggle_shop_availability() {
    let t = spawn().await;
    t.put_product("TEE-4", 5).await;
    let client = t.nats.client().await;
    let mut alerts = client.subscribe(t.nats.subject("alerts.>")).await.unwrap();
    client.flush().await.unwrap();

    t.adjust(&adjustment("wms", "TEE-4", "receipt", 8, "in")).await;
    assert!(t.sandbox.shop.wait_until(WAIT, |x| x.product_available("TEE-4") == Some(true)).await);
    t.adjust(&adjustment("pos", "TEE-4", "shipment", 3, "s1")).await; // 5: crosses the reorder point
    t.adjust(&adjustment("pos", "TEE-4", "shipment", 1, "s2")).await; // 4: still below, no new alert
    t.adjust(&adjustment("pos", "TEE-4", "shipment", 4, "s3")).await; // 0: out of stock
    assert!(t.sandbox.shop.wait_until(WAIT, |x| x.product_available("TEE-4") == Some(false)).await);
    t.adjust(&adjustment("wms", "TEE-4", "receipt", 2, "in2")).await; // back in stock
    assert!(t.sandbox.shop.wait_until(WAIT, |x| x.product_available("TEE-4") == Some(true)).await);

    let mut kinds = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), alerts.next()).await {
        let envelope: Value = serde_json::from_slice(&msg.payload).unwrap();
        kinds
            .push((msg.subject.to_string(), envelope["data"]["kind"].as_str().unwrap().to_owned()));
        if kinds.len() == 3 {
            break;
        }
    }
    let p = &t.nats.prefix;
    assert_eq!(
        kinds,
        [
            (format!("{p}.alerts.warning"), "low_stock".to_owned()),
            (format!("{p}.alerts.critical"), "out_of_stock".to_owned()),
            (format!("{p}.alerts.info"), "back_in_stock".to_owned()),
        ]
    );
    let deny = t
        .sandbox
        .shop
        .accepted()
        .into_iter()
        .find(|r| r.body["product"]["available"] == false)
        .unwrap();
    assert_eq!(deny.body["product"]["inventory_policy"], "deny");
    t.assert_settled(0).await;
}

/// Publishes the ERP's count of `sku` in W1, counted at `minute` past 09:00 by the ERP.
async fn publish_count(
    t: &crate::helpers::TestInventory,
    sku: &str,
    reference: &str,
    on_hand: i64,
    minute: u32,
    message: &str,
) {
    let at = format!("2026-12-01T09:{minute:02}:00Z").parse().unwrap();
    t.publish_count(sku, reference, on_hand, at, message).await;
}

#[tokio::test]
async fn an_older_erp_count_arriving_late_changes_nothing() {
    let t = spawn().await;
    t.put_product("TEE-6", 0).await;
    publish_count(&t, "TEE-6", "count-b", 30, 20, "m1").await;
    let on_hand = |n: i64| {
        let t = &t;
        async move {
            harness::eventually(WAIT, || async {
                (t.on_hand("TEE-6", "W1").await == n).then_some(())
            })
            .await
            .is_some()
        }
    };
    assert!(on_hand(30).await);
    // The count of 09:10 (sent before the one of 09:20, delayed, replayed from a dead letter,
    // or taken by another replica) arrives after it: stock does not move back.
    publish_count(&t, "TEE-6", "count-a", 12, 10, "m2").await;
    // A count of the same time as the applied one is not newer either.
    publish_count(&t, "TEE-6", "count-a2", 11, 20, "m3").await;
    // A sale in between moves stock; the next newer count then sets it.
    t.adjust(&adjustment("pos", "TEE-6", "shipment", 2, "sale-1")).await;
    publish_count(&t, "TEE-6", "count-c", 25, 30, "m4").await;
    assert!(on_hand(25).await);
    t.assert_settled(0).await;
    assert_eq!(
        t.count("SELECT count(*) AS n FROM inventory.ledger WHERE source = 'erp'").await,
        2,
        "only the counts of 09:20 and 09:30"
    );
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM inventory.ledger WHERE source = 'erp' AND reference LIKE 'count-a%'"
        )
        .await,
        0
    );
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM inventory.count_marks              WHERE source = 'erp' AND sku = 'TEE-6' AND reference = 'count-c'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn erp_counts_become_count_adjustments_exactly_once() {
    let t = spawn().await;
    t.put_product("TEE-5", 0).await;
    // The ERP has not been told about the POS receipt yet when its own count arrives: the
    // ERP holds its count (read back), so nothing is echoed to it.
    t.sandbox.erp.fail_next(1, Fault::RateLimited { retry_after_secs: 5 });
    t.adjust(&adjustment("pos", "TEE-5", "receipt", 3, "r1")).await;
    assert!(
        t.sandbox.erp.wait_until(WAIT, |x| x.requests().len() == 1).await,
        "the ERP push got its 429"
    );
    t.sandbox.erp.set_level("TEE-5", "W1", 42); // the ERP counted, then reports
    for attempt in 0..2 {
        // The second publish has another message id: only the ledger's unique key can stop it.
        publish_count(&t, "TEE-5", "erp-event-1", 42, 0, &format!("delivery-{attempt}")).await;
    }

    assert!(
        harness::eventually(WAIT, || async {
            (t.on_hand("TEE-5", "W1").await == 42).then_some(())
        })
        .await
        .is_some()
    );
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("TEE-5", "W1") == Some(42)).await);
    tokio::time::sleep(Duration::from_secs(6)).await; // past the ERP's Retry-After
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.ledger WHERE source = 'erp'").await, 1);
    assert!(
        t.sandbox.erp.requests().iter().all(|r| r.body["qtyOnHand"] != 42),
        "ERP's own count is not pushed back to it"
    );
    let writes = t.sandbox.erp.requests().into_iter().filter(|r| r.method != "GET").count();
    assert_eq!(writes, 1, "only the push that got the 429");
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM inventory.push_log \
             WHERE target = 'erp' AND status = 'skipped' AND value->>'on_hand' = '42'"
        )
        .await,
        1,
        "the ERP was read back and not pushed to"
    );
    t.assert_settled(0).await;
}

#[tokio::test]
async fn every_applied_change_is_published_once_and_every_push_is_announced() {
    let t = spawn().await;
    t.put_product("TEE-6", 0).await;
    let client = t.nats.client().await;
    let mut adjusted = client.subscribe(t.nats.subject("inventory.adjusted.>")).await.unwrap();
    let mut sync_events =
        client.subscribe(t.nats.subject("sync.events.erp.outbound.>")).await.unwrap();
    client.flush().await.unwrap();

    t.adjust(&adjustment("pos", "TEE-6", "receipt", 5, "a")).await;
    t.adjust(&adjustment("pos", "TEE-6", "shipment", 9, "refused")).await;
    t.adjust(&adjustment("pos", "TEE-6", "shipment", 2, "b")).await;
    t.adjust(&adjustment("pos", "TEE-6", "shipment", 2, "b")).await; // a retry

    let mut events = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(3), adjusted.next()).await {
        events.push(serde_json::from_slice::<Value>(&msg.payload).unwrap());
    }
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["type"], "inventory.stock_adjusted");
    assert_eq!(events[0]["source"], "inventory-sync");
    assert_eq!(events[1]["data"]["reference"], "b");
    assert_eq!(events[1]["data"]["quantity_before"], 5);
    assert_eq!(events[1]["data"]["quantity_after"], 3);
    assert_eq!(events[1]["data"]["reason"], "test");
    let announced = tokio::time::timeout(WAIT, sync_events.next()).await.unwrap().unwrap();
    let announced: Value = serde_json::from_slice(&announced.payload).unwrap();
    assert_eq!(announced["data"]["system"], "erp");
    assert_eq!(announced["data"]["entity"], "stock_level");
    assert_eq!(announced["type"], "sync.batch_recorded");
    assert_eq!(announced["data"]["records"][0]["record_id"], "W1/TEE-6");
    assert_eq!(announced["data"]["records"][0]["status"], "synced");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_targets_own_change_does_not_hide_other_changes_it_has_not_seen() {
    let t = spawn().await;
    t.put_product("TEE-7", 0).await;
    // The POS misses the WMS receipt at first (503), then sells one itself: the latest change
    // is the POS's own, but the POS has still not been told about the receipt.
    t.sandbox.pos.fail_next(1, Fault::Status(503));
    t.adjust(&adjustment("wms", "TEE-7", "receipt", 10, "in")).await;
    assert!(t.sandbox.pos.wait_until(WAIT, |x| !x.requests().is_empty()).await);
    t.adjust(&adjustment("pos", "TEE-7", "shipment", 1, "sale")).await;

    assert!(
        t.sandbox.pos.wait_until(WAIT, |x| x.level("TEE-7", "W1") == Some(9)).await,
        "{:?}",
        t.sandbox.pos.requests()
    );
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_failed_shop_availability_call_is_retried_even_when_the_level_was_pushed() {
    let t = spawn().await;
    t.put_product("TEE-8", 0).await;
    t.sandbox.shop.fail_path("/products/", 1, Fault::Status(503));

    t.adjust(&adjustment("wms", "TEE-8", "receipt", 4, "in")).await;

    assert!(
        t.sandbox.shop.wait_until(WAIT, |x| x.product_available("TEE-8") == Some(true)).await,
        "{:?}",
        t.sandbox.shop.requests()
    );
    assert_eq!(t.sandbox.shop.level("TEE-8", "W1"), Some(4));
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_target_that_answers_410_is_stopped_until_resumed_then_caught_up() {
    let t = spawn().await;
    t.put_product("TEE-9", 0).await;
    let client = t.nats.client().await;
    let mut alerts = client.subscribe(t.nats.subject("alerts.critical")).await.unwrap();
    client.flush().await.unwrap();

    t.sandbox.erp.fail_next(1, Fault::Status(410));
    t.adjust(&adjustment("pos", "TEE-9", "receipt", 5, "r1")).await;
    let stopped = harness::eventually(WAIT, || async {
        t.target_status("erp").await.filter(|s| s["stopped_reason"].is_string())
    })
    .await
    .expect("the ERP is stopped after a 410");
    assert!(stopped["stopped_reason"].as_str().unwrap().contains("410"), "{stopped}");
    let alert = tokio::time::timeout(WAIT, alerts.next()).await.unwrap().unwrap();
    let alert: Value = serde_json::from_slice(&alert.payload).unwrap();
    assert_eq!(alert["data"]["kind"], "target_stopped");
    assert_eq!(alert["data"]["dedup_key"], "target_stopped/erp");

    // While stopped, other targets carry on and the ERP is not called again.
    t.adjust(&adjustment("pos", "TEE-9", "receipt", 2, "r2")).await;
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("TEE-9", "W1") == Some(7)).await);
    assert!(
        harness::eventually(WAIT, || async {
            let skipped = t
                .count(
                    "SELECT count(*) AS n FROM inventory.push_log \
                     WHERE target = 'erp' AND status = 'skipped' AND error LIKE 'target stopped%'",
                )
                .await;
            (skipped >= 1).then_some(())
        })
        .await
        .is_some(),
        "the push for the second receipt was skipped"
    );
    assert_eq!(t.sandbox.erp.requests().len(), 1, "only the request that got the 410");
    assert_eq!(t.target_status("erp").await.unwrap()["behind"], 1);
    let open = "SELECT count(*) AS n FROM inventory.record_errors \
                WHERE system = 'erp' AND direction = 'outbound' AND status = 'open'";
    assert_eq!(t.count(open).await, 1, "a push skipped for a stopped target delivers nothing");

    let resume = |target: &'static str, token: &'static str| {
        t.app
            .http
            .post(t.app.url(&format!("/admin/targets/{target}/resume")))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(resume("erp", "wrong-token").await.unwrap().status(), 401);
    assert_eq!(resume("fax", harness::ADMIN_TOKEN).await.unwrap().status(), 404);
    let resumed = resume("erp", harness::ADMIN_TOKEN).await.unwrap();
    assert_eq!(resumed.status(), 200);
    let resumed: Value = resumed.json().await.unwrap();
    assert_eq!(resumed, json!({"target": "erp", "was_stopped": true, "queued": 1}));

    // The ERP is caught up with the level it missed, and nothing is behind any more.
    assert!(t.sandbox.erp.wait_until(WAIT, |x| x.level("TEE-9", "W1") == Some(7)).await);
    assert!(
        harness::eventually(WAIT, || async {
            t.target_status("erp")
                .await
                .filter(|s| s["behind"] == 0 && s["stopped_reason"].is_null())
        })
        .await
        .is_some()
    );
    assert_eq!(t.count(open).await, 0, "the catch-up delivered it");
    t.assert_settled(1).await;
}

#[tokio::test]
async fn a_shop_answering_410_to_an_availability_call_is_settled_after_resume() {
    let t = spawn().await;
    t.put_product("TEE-10", 0).await;
    t.sandbox.shop.fail_path("/products/", 1, Fault::Status(410));

    t.adjust(&adjustment("wms", "TEE-10", "receipt", 4, "in")).await;
    let stopped = harness::eventually(WAIT, || async {
        t.target_status("ecommerce").await.filter(|s| s["stopped_reason"].is_string())
    })
    .await
    .expect("the shop is stopped after a 410");
    assert_eq!(stopped["behind"], 1, "the level was pushed, the availability was not");
    assert_eq!(t.sandbox.shop.level("TEE-10", "W1"), Some(4));
    assert_eq!(t.sandbox.shop.product_available("TEE-10"), None);

    let resumed = t
        .app
        .http
        .post(t.app.url("/admin/targets/ecommerce/resume"))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let resumed: Value = resumed.json().await.unwrap();
    assert_eq!(resumed["queued"], 1);
    assert!(
        t.sandbox.shop.wait_until(WAIT, |x| x.product_available("TEE-10") == Some(true)).await,
        "{:?}",
        t.sandbox.shop.requests()
    );
    assert!(
        harness::eventually(WAIT, || async {
            t.target_status("ecommerce").await.filter(|s| s["behind"] == 0)
        })
        .await
        .is_some()
    );
    t.assert_settled(1).await;
}
