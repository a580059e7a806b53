//! HubSpot as it really is: native webhook events, property names, string values, 207
//! Multi-Status and 429 without `Retry-After`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{WAIT, hubspot, spawn, spawn_with};

fn object_id(events: &Value) -> String {
    events[0]["objectId"].as_u64().unwrap().to_string()
}

#[tokio::test]
async fn hubspot_native_webhook_events_are_applied_end_to_end() {
    let t = spawn().await;
    // creation: no properties in the event, read with one batch read after the answer.
    let created = t.sandbox.crm.hubspot_change(
        "contacts",
        None,
        json!({"firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com"}),
    );
    let other = t.sandbox.crm.hubspot_change("contacts", None, json!({"firstname": "Augusta"}));
    let (a, b) = (object_id(&created), object_id(&other));
    let batch = json!([created[0], other[0]]);
    let (status, body) = t.deliver(&hubspot(), &batch).await;
    assert_eq!(status, 202, "{body}");
    let row = t.row_eventually("contacts", &a, |_| true).await;
    assert_eq!(
        (row["first_name"].as_str(), row["email"].as_str()),
        (Some("Ada"), Some("ada@example.com"))
    );
    t.row_eventually("contacts", &b, |r| r["first_name"] == "Augusta").await;
    let reads: Vec<_> =
        t.sandbox.crm.requests().into_iter().filter(|r| r.path.ends_with("/batch/read")).collect();
    assert_eq!(reads.len(), 1, "one batch read for the batch");
    assert_eq!(reads[0].body["inputs"].as_array().unwrap().len(), 2);
    t.event_eventually(body["event_ids"][0].as_str().unwrap(), "applied").await;

    // propertyChange, stamped with occurredAt: an older change of the field is stale.
    let changed =
        t.sandbox.crm.hubspot_change("contacts", Some(&a), json!({"jobtitle": "Countess"}));
    let mut older = changed[0].clone();
    older["eventId"] = json!(9_000_001);
    older["occurredAt"] = json!(changed[0]["occurredAt"].as_i64().unwrap() - 60_000);
    older["propertyValue"] = json!("Older title");
    assert_eq!(t.deliver(&hubspot(), &changed).await.0, 202);
    t.row_eventually("contacts", &a, |r| r["title"] == "Countess").await;
    let (status, late) = t.deliver(&hubspot(), &json!([older])).await;
    assert_eq!(status, 202, "{late}");
    let outcome = t.event_eventually(late["event_ids"][0].as_str().unwrap(), "applied").await;
    assert!(outcome["reason"].as_str().is_some_and(|r| r.contains("stale")), "{outcome}");
    assert_eq!(t.row("contacts", &a).await.unwrap()["title"], "Countess");

    // deletion, then restore.
    let deleted = t.sandbox.crm.hubspot_delete("contacts", &a);
    assert_eq!(t.deliver(&hubspot(), &deleted).await.0, 202);
    t.row_eventually("contacts", &a, |r| r["deleted_from"] == "crm").await;
    let restored = t.sandbox.crm.crm_restore("contacts", &a);
    assert_eq!(t.deliver(&hubspot(), &restored).await.0, 202);
    t.row_eventually("contacts", &a, |r| r["deleted_at"].is_null() && r["title"] == "Countess")
        .await;

    // merge: b merged into a; b becomes deleted, a takes what the CRM holds now.
    let merged = t.sandbox.crm.crm_merge("contacts", &a, &b);
    assert_eq!(t.deliver(&hubspot(), &merged).await.0, 202);
    t.row_eventually("contacts", &b, |r| !r["deleted_at"].is_null()).await;
    t.row_eventually("contacts", &a, |r| r["deleted_at"].is_null() && r["first_name"] == "Ada")
        .await;

    // Nothing went back to the CRM.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.push_log").await, 0);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_207_multi_status_fails_only_the_refused_record() {
    let t = spawn().await;
    t.set_push_max_attempts(1).await;
    // HubSpot refuses an email without `@` for that input alone.
    t.sql(
        "INSERT INTO crm.contacts (first_name, email) VALUES ('Good', 'good@example.com'), \
         ('Bad', 'not-an-email')",
    )
    .await;
    let good = harness::eventually(WAIT, || async {
        t.row_by_id("contacts", 1).await["external_id"].as_str().map(str::to_owned)
    })
    .await
    .expect("the good record is delivered");
    assert!(t.sandbox.crm.crm_object("contacts", &good).is_some());
    let refused = harness::eventually(WAIT, || async {
        t.sandbox.crm.requests().into_iter().find(|r| r.status == 207)
    })
    .await
    .expect("a 207");
    assert_eq!(refused.body["inputs"][0]["properties"]["email"], "not-an-email");
    let dead = harness::eventually(WAIT, || async {
        let n = t
            .count("SELECT count(*) AS n FROM crm.push_log WHERE status <> 'synced' AND record_key = 'contact/2'")
            .await;
        (n > 0).then_some(n)
    })
    .await;
    assert!(dead.is_some(), "the refused record is a failed push");
    assert!(t.row_by_id("contacts", 2).await["external_id"].is_null());
    let open = t.count("SELECT count(*) AS n FROM crm.record_errors WHERE status = 'open'").await;
    assert_eq!(open, 1);
}

#[tokio::test]
async fn a_429_without_retry_after_is_retried() {
    let t = spawn().await;
    t.sandbox.crm.set_quota(1, Duration::from_secs(2));
    t.sql("INSERT INTO crm.contacts (first_name) VALUES ('One'), ('Two'), ('Three')").await;
    for id in 1..=3 {
        harness::eventually(Duration::from_secs(30), || async {
            (!t.row_by_id("contacts", id).await["external_id"].is_null()).then_some(())
        })
        .await
        .expect("delivered after the 429s");
    }
    let limited: Vec<_> =
        t.sandbox.crm.requests().into_iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "the quota refused some pushes");
    assert_eq!(t.sandbox.crm.crm_objects("contacts").len(), 3);
}

#[tokio::test]
async fn a_slow_crm_read_holds_no_database_connection() {
    let t = spawn_with(|c| {
        c.common.db.pool_size = 2;
        c.inbound_batch = 1;
        c.inbound_concurrency = 4;
    })
    .await;
    let created: Vec<Value> = (0..4)
        .map(|i| {
            t.sandbox.crm.hubspot_change("contacts", None, json!({"firstname": format!("N{i}")}))
        })
        .collect();
    // Each creation is read from the CRM, which now answers in 4 s: four reads at once, more
    // than the pool's two connections.
    t.sandbox.crm.set_latency(Some(Duration::from_secs(4)));
    for events in &created {
        assert_eq!(t.deliver(&hubspot(), events).await.0, 202);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready = t
        .app
        .http
        .get(t.app.url("/readyz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .expect("/readyz answers while the CRM is slow");
    assert_eq!(ready.status(), 200);
    for events in &created {
        t.row_eventually("contacts", &object_id(events), |r| !r["first_name"].is_null()).await;
    }
    t.sandbox.crm.set_latency(None);
    t.assert_settled(0).await;
}
