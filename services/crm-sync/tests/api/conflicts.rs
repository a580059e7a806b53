use std::time::Duration;

use sandbox::Fault;
use serde_json::{Value, json};

use crate::helpers::{TestCrm, WAIT, spawn, standard};

/// The newest message on `subject` of a stream, decoded.
async fn last_message(t: &TestCrm, stream: &str, subject: &str) -> Option<Value> {
    let js = async_nats::jetstream::new(t.nats.client().await);
    let stream = js.get_stream(format!("{}_{stream}", t.nats.prefix)).await.ok()?;
    let message = stream.get_last_raw_message_by_subject(&t.nats.subject(subject)).await.ok()?;
    serde_json::from_slice(&message.payload).ok()
}

#[tokio::test]
async fn an_older_crm_change_to_a_locally_changed_field_is_a_conflict_until_resolved() {
    let t = spawn().await;
    let created = t.sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Ann", "jobtitle": "Base", "phone": "1"}),
    );
    let cid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(t.deliver(&standard(), &created).await.0, 202);
    let id = t.row_eventually("contacts", &cid, |_| true).await["id"].as_i64().unwrap();

    // A CRM user changes title and phone; the CRM reports it late.
    let theirs = t.sandbox.crm.crm_change(
        "contacts",
        Some(&cid),
        json!({"jobtitle": "Remote title", "phone": "555"}),
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Meanwhile the title changes here too, and the CRM is briefly down for our push.
    t.sandbox.crm.fail_path(&format!("/crm/v3/objects/contacts/{cid}"), 2, Fault::Status(503));
    t.sql(&format!("UPDATE crm.contacts SET title = 'Local title' WHERE id = {id}")).await;
    let (status, accepted) = t.deliver(&standard(), &theirs).await;
    assert_eq!(status, 202);

    // Nothing local is overwritten; the field the local side did not touch is applied.
    let event = t.event_eventually(accepted["event_id"].as_str().unwrap(), "conflict").await;
    assert!(event["reason"].as_str().unwrap().contains("title"), "{event}");
    let row = t.row_by_id("contacts", id).await;
    assert_eq!((row["title"].as_str(), row["phone"].as_str()), (Some("Local title"), Some("555")));
    let conflict = harness::eventually(WAIT, || {
        last_message(&t, "SYNC_CONFLICTS", "sync.conflicts.detected.crm")
    })
    .await
    .expect("a conflict on sync.conflicts.detected.crm");
    let data = &conflict["data"];
    assert_eq!(data["fields"], json!(["title"]));
    assert_eq!(
        (
            data["base"]["title"].as_str(),
            data["local"]["title"].as_str(),
            data["remote"]["title"].as_str()
        ),
        (Some("Base"), Some("Local title"), Some("Remote title"))
    );
    assert_eq!(data["record_id"], id);

    // Our pending push goes out once the CRM is back, without the held field.
    let pushed =
        t.sandbox.crm.wait_until(WAIT, |crm| crm.accepted().iter().any(|r| r.method == "PATCH"));
    assert!(pushed.await);
    assert_eq!(
        t.sandbox.crm.crm_object("contacts", &cid).unwrap().properties["jobtitle"],
        "Remote title"
    );

    // The resolution keeps the local title: it is pushed.
    let resolution = json!({
        "id": uuid::Uuid::now_v7(), "type": "sync.conflict_resolved", "source": "conflict-resolver",
        "occurred_at": chrono::Utc::now(), "data": {
            "conflict_id": data["conflict_id"], "system": "crm", "entity": "contact", "record_id": id,
            "values": {"title": "Local title"}, "resolved_by": "operator"}});
    let js = async_nats::jetstream::new(t.nats.client().await);
    js.publish(
        t.nats.subject("sync.conflicts.resolved.crm"),
        serde_json::to_vec(&resolution).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let resolved = t.sandbox.crm.wait_until(WAIT, |crm| {
        crm.crm_object("contacts", &cid).is_some_and(|o| o.properties["jobtitle"] == "Local title")
    });
    assert!(resolved.await, "the winner reaches the CRM");
    let remote = t.sandbox.crm.crm_object("contacts", &cid).unwrap().properties;
    let local = t.row_by_id("contacts", id).await;
    assert_eq!((remote["phone"].as_str(), local["phone"].as_str()), (Some("555"), Some("555")));
    assert_eq!(t.count(&format!("SELECT count(*) AS n FROM crm.sync_state WHERE record_id = {id} AND held = '{{}}' AND conflict_id IS NULL")).await, 1);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_resolution_for_a_record_that_is_gone_comes_back_as_a_conflict() {
    let t = spawn().await;
    let client = t.nats.client().await;
    let mut detected =
        client.subscribe(t.nats.subject("sync.conflicts.detected.crm")).await.unwrap();
    client.flush().await.unwrap();
    let conflict_id = uuid::Uuid::now_v7();
    let resolution = json!({
        "id": uuid::Uuid::now_v7(), "type": "sync.conflict_resolved", "source": "conflict-resolver",
        "occurred_at": chrono::Utc::now(), "data": {
            "conflict_id": conflict_id, "system": "crm", "entity": "contact", "record_id": 424242,
            "values": {"title": "Local title"}, "resolved_by": "rule:newer_wins"}});
    let js = async_nats::jetstream::new(client.clone());
    js.publish(
        t.nats.subject("sync.conflicts.resolved.crm"),
        serde_json::to_vec(&resolution).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let msg = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut detected))
        .await
        .expect("a new conflict")
        .unwrap();
    let again: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    let data = &again["data"];
    assert_eq!(
        (data["entity"].as_str(), data["record_id"].as_i64()),
        (Some("contact"), Some(424242))
    );
    assert_eq!(data["remote"], json!({"title": "Local title"}));
    let why = data["unapplied"].as_str().unwrap();
    assert!(why.contains(&conflict_id.to_string()) && why.contains("no longer exists"), "{why}");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn an_undo_applies_its_values_whatever_is_held_and_reaches_the_crm() {
    let t = spawn().await;
    let created = t.sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Ann", "jobtitle": "Remote title", "phone": "1"}),
    );
    let cid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(t.deliver(&standard(), &created).await.0, 202);
    let id = t.row_eventually("contacts", &cid, |_| true).await["id"].as_i64().unwrap();
    // conflict-resolver undoes an automatic resolution that had kept the CRM's title: the local
    // title goes back, although no conflict is held here any more.
    let undo = json!({
        "id": uuid::Uuid::now_v7(), "type": "sync.conflict_resolved", "source": "conflict-resolver",
        "occurred_at": chrono::Utc::now(), "data": {
            "conflict_id": uuid::Uuid::now_v7(), "system": "crm", "entity": "contact", "record_id": id,
            "values": {"title": "Local title"}, "resolved_by": "admin (undo)", "undo": true}});
    let js = async_nats::jetstream::new(t.nats.client().await);
    js.publish(
        t.nats.subject("sync.conflicts.resolved.crm"),
        serde_json::to_vec(&undo).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let reached = t.sandbox.crm.wait_until(WAIT, |crm| {
        crm.crm_object("contacts", &cid).is_some_and(|o| o.properties["jobtitle"] == "Local title")
    });
    assert!(reached.await, "the undone side reaches the CRM");
    assert_eq!(t.row_by_id("contacts", id).await["title"], "Local title");
    t.assert_settled(0).await;
}
