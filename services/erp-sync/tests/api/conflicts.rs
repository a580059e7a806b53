//! Crossing edits of an order's status or a customer's fields, made in the ERP and here, are
//! conflicts: nothing is overwritten on either side until a resolution arrives, and the
//! resolution ends with the same values here and in the ERP.

use std::time::Duration;

use sandbox::Fault;
use serde_json::{Value, json};

use crate::{
    helpers::{TestErp, WAIT, spawn},
    push::{deliver, deliver_as, echo, seed, sql, writes},
};

/// The newest conflict erp-sync raised.
async fn detected(t: &TestErp) -> Value {
    harness::eventually(WAIT, || async {
        let js = async_nats::jetstream::new(t.nats.client().await);
        let stream = js.get_stream(format!("{}_SYNC_CONFLICTS", t.nats.prefix)).await.ok()?;
        let message = stream
            .get_last_raw_message_by_subject(&t.nats.subject("sync.conflicts.detected.erp"))
            .await
            .ok()?;
        serde_json::from_slice::<Value>(&message.payload).ok().map(|m| m["data"].clone())
    })
    .await
    .expect("a conflict on sync.conflicts.detected.erp")
}

/// conflict-resolver's decision, as it publishes it.
async fn resolve(t: &TestErp, conflict: &Value, values: Value) {
    let resolution = json!({
        "id": uuid::Uuid::now_v7(), "type": "sync.conflict_resolved", "source": "conflict-resolver",
        "occurred_at": chrono::Utc::now(), "data": {
            "conflict_id": conflict["conflict_id"], "system": "erp", "entity": conflict["entity"],
            "record_id": conflict["record_id"], "values": values, "resolved_by": "operator"}});
    let js = async_nats::jetstream::new(t.nats.client().await);
    js.publish(
        t.nats.subject("sync.conflicts.resolved.erp"),
        serde_json::to_vec(&resolution).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

async fn order(t: &TestErp) -> Value {
    t.row("orders", "erp_order_id", "SO-1").await.unwrap()
}

fn pushed_ok(t: &TestErp) -> Vec<Value> {
    t.erp
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.status < 300)
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn a_status_changed_here_and_in_the_erp_is_a_conflict_the_erp_keeps_until_resolved() {
    let t = spawn().await;
    seed(&t).await;
    // The ERP is down for a while: the local change waits to be pushed.
    t.erp.fail_next(2, Fault::Status(503));
    sql(&t, "UPDATE erp.orders SET status = 'on_hold' WHERE erp_order_id = 'SO-1'").await;
    assert!(t.erp.wait_until(WAIT, |erp| erp.requests().iter().any(|r| r.status == 503)).await);
    // Meanwhile the ERP's user confirms the order (and changes its total).
    let theirs = t.erp.erp_record(
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1", "status": "confirmed", "total": 12,
            "updatedAt": "2020-01-01T09:30:00Z"}),
    );
    let event = deliver_as(&t, &theirs, "conflict").await;
    assert!(event["reason"].as_str().unwrap().ends_with("on status"), "{event}");

    // Neither side is overwritten: ours stays here, the ERP keeps its own.
    let row = order(&t).await;
    assert_eq!((row["status"].as_str(), row["total"].as_f64()), (Some("on_hold"), Some(12.0)));
    assert_eq!(row["held"], json!({"status": "confirmed"}));
    let conflict = detected(&t).await;
    assert_eq!(conflict["fields"], json!(["status"]));
    assert_eq!(
        (&conflict["base"], &conflict["local"], &conflict["remote"]),
        (
            &json!({"status": "open"}),
            &json!({"status": "on_hold"}),
            &json!({"status": "confirmed"})
        )
    );
    assert_eq!(
        (conflict["entity"].as_str(), conflict["external_id"].as_str()),
        (Some("order"), Some("SO-1"))
    );
    assert_eq!(conflict["record_id"], row["id"]);
    assert_eq!(
        (conflict["local_clock"].as_str(), conflict["remote_clock"].as_str()),
        (Some("local"), Some("erp"))
    );
    assert_eq!(conflict["remote_updated_at"], "2020-01-01T09:30:00Z");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pushed_ok(&t).is_empty(), "nothing pushed over the ERP's change: {:?}", writes(&t));

    // The ERP's side wins: taken here, nothing to push.
    resolve(&t, &conflict, json!({"status": "confirmed"})).await;
    let settled = harness::eventually(WAIT, || async {
        let row = order(&t).await;
        (row["status"] == "confirmed" && row["held"] == json!({})).then_some(row)
    })
    .await
    .expect("the resolution applies");
    assert_eq!(settled["conflict_id"], Value::Null);
    assert_eq!(settled["synced_version"], settled["local_version"], "in agreement");
    t.assert_settled().await;
    assert!(pushed_ok(&t).is_empty(), "{:?}", writes(&t));
    assert_eq!(t.erp.erp_get("orders", "SO-1").unwrap()["status"], "confirmed");
}

#[tokio::test]
async fn our_side_of_a_customer_conflict_reaches_the_erp_with_its_other_change() {
    let t = spawn().await;
    seed(&t).await;
    t.erp.fail_next(2, Fault::Status(503));
    sql(&t, "UPDATE erp.customers SET phone = '+1 555 0100' WHERE erp_customer_id = 'C-1'").await;
    assert!(t.erp.wait_until(WAIT, |erp| erp.requests().iter().any(|r| r.status == 503)).await);
    // The ERP's user changes the name and the phone, later than our change.
    let theirs = t.erp.erp_record(
        "customers",
        "C-1",
        json!({"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 555 0199",
            "updatedAt": "2099-01-01T00:00:00Z"}),
    );
    deliver_as(&t, &theirs, "conflict").await;
    let conflict = detected(&t).await;
    assert_eq!(conflict["fields"], json!(["phone"]), "only the phone changed on both sides");
    let row = t.row("customers", "erp_customer_id", "C-1").await.unwrap();
    assert_eq!(
        (row["name"].as_str(), row["phone"].as_str()),
        (Some("Ada Lovelace"), Some("+1 555 0100")),
        "the ERP's own change of the name applies"
    );

    // Ours wins: pushed, with the ERP's name.
    resolve(&t, &conflict, json!({"phone": "+1 555 0100"})).await;
    let landed = t
        .erp
        .wait_until(WAIT, |erp| erp.erp_get("customers", "C-1").unwrap()["phone"] == "+1 555 0100");
    assert!(landed.await, "{:?}", writes(&t));
    let erp = t.erp.erp_get("customers", "C-1").unwrap();
    assert_eq!(
        (erp["name"].as_str(), erp["email"].as_str()),
        (Some("Ada Lovelace"), Some("ada@example.com"))
    );
    // The ERP reports it back: applied, and nothing more is pushed.
    deliver(&t, &echo(&t, "customers", "customer", "C-1")).await;
    t.assert_settled().await;
    let sent = pushed_ok(&t).len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(pushed_ok(&t).len(), sent);
    let row = t.row("customers", "erp_customer_id", "C-1").await.unwrap();
    assert_eq!((row["held"].clone(), row["phone"].as_str()), (json!({}), Some("+1 555 0100")));
    assert_eq!(row["synced_version"], row["local_version"]);
}

#[tokio::test]
async fn an_erp_change_our_push_overwrote_is_a_conflict_and_restored_when_it_wins() {
    let t = spawn().await;
    seed(&t).await;
    // The ERP's user ships the order; its webhook is still on its way...
    let shipped = t.erp.erp_record(
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1", "status": "shipped",
            "updatedAt": chrono::Utc::now().to_rfc3339()}),
    );
    // ...when the order is cancelled here, and the push lands over the shipment.
    sql(&t, "UPDATE erp.orders SET status = 'cancelled' WHERE erp_order_id = 'SO-1'").await;
    let pushed = harness::eventually(WAIT, || async {
        let row = order(&t).await;
        (row["synced_version"] == row["local_version"]).then_some(())
    });
    assert!(pushed.await.is_some());
    assert_eq!(t.erp.erp_get("orders", "SO-1").unwrap()["status"], "cancelled");

    // The shipment's webhook arrives: the push overwrote it.
    deliver_as(&t, &shipped, "conflict").await;
    let conflict = detected(&t).await;
    assert_eq!(
        (&conflict["base"], &conflict["local"], &conflict["remote"]),
        (
            &json!({"status": "open"}),
            &json!({"status": "cancelled"}),
            &json!({"status": "shipped"})
        )
    );
    assert_eq!(order(&t).await["status"], "cancelled");

    // The shipment wins: back in the ERP, and here.
    resolve(&t, &conflict, json!({"status": "shipped"})).await;
    let restored =
        t.erp.wait_until(WAIT, |erp| erp.erp_get("orders", "SO-1").unwrap()["status"] == "shipped");
    assert!(restored.await, "{:?}", writes(&t));
    assert_eq!(order(&t).await["status"], "shipped");
    t.assert_settled().await;
}
