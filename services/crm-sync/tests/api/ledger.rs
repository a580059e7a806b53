use serde_json::{Value, json};

use crate::helpers::{WAIT, spawn, standard};

#[tokio::test]
async fn an_event_the_database_refuses_is_failed_with_a_ledger_row_retried_and_ignored() {
    let t = spawn().await;
    // The company's own rule on its table, which the CRM does not know.
    t.sql(
        "ALTER TABLE crm.contacts ADD CONSTRAINT email_has_at CHECK (email LIKE '%@%') NOT VALID",
    )
    .await;
    let event = json!({"eventId": "bad-1", "event": "created", "type": "contact", "id": "77",
        "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"firstname": "Bad", "email": "nope"}});
    let good = json!({"eventId": "ok-1", "event": "created", "type": "contact", "id": "78",
        "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"firstname": "Fine", "email": "f@x"}});
    let (status, accepted) = t.deliver(&standard(), &json!([event, good])).await;
    assert_eq!(status, 202);
    let ids = accepted["event_ids"].as_array().unwrap();
    let failed = t.event_eventually(ids[0].as_str().unwrap(), "failed").await;
    assert!(failed["reason"].as_str().unwrap().contains("email_has_at"), "{failed}");
    t.event_eventually(ids[1].as_str().unwrap(), "applied").await;
    t.row_eventually("contacts", "78", |_| true).await;

    let rows: Value =
        t.app.admin_get("/admin/record-errors?direction=inbound").await.json().await.unwrap();
    assert_eq!(rows["count"], 1, "{rows}");
    let row = &rows["errors"][0];
    assert_eq!((row["entity"].as_str(), row["record_id"].as_str()), (Some("contact"), Some("77")));
    assert_eq!(row["last_payload"]["data"]["email"], "nope");

    // A retry fails the same way: the row stays open with one more attempt.
    let (status, _) =
        t.admin_post(&format!("/admin/record-errors/{}/retry", row["id"]), &Value::Null).await;
    assert_eq!(status, 200);
    let retried = harness::eventually(WAIT, || async {
        let v: Value =
            t.app.admin_get("/admin/record-errors?direction=inbound").await.json().await.ok()?;
        (v["count"] == 1 && v["errors"][0]["attempts"] == 2).then_some(v)
    });
    assert!(retried.await.is_some(), "the retry ran and failed again");

    // Once the rule is fixed, a retry applies it and closes the row.
    t.sql("ALTER TABLE crm.contacts DROP CONSTRAINT email_has_at").await;
    let open: Value = t.app.admin_get("/admin/record-errors").await.json().await.unwrap();
    let (status, _) = t
        .admin_post(
            &format!("/admin/record-errors/{}/retry", open["errors"][0]["id"]),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    t.row_eventually("contacts", "77", |r| r["email"] == "nope").await;
    let resolved = harness::eventually(WAIT, || async {
        (t.count("SELECT count(*) AS n FROM crm.record_errors WHERE status = 'resolved'").await
            == 1)
            .then_some(())
    });
    assert!(resolved.await.is_some(), "the row is closed by the applied retry");
    assert_eq!(
        t.count("SELECT count(*) AS n FROM crm.record_errors WHERE status = 'open'").await,
        0
    );

    // Ignoring: a bad record is closed without being applied, and kept.
    t.sql(
        "ALTER TABLE crm.contacts ADD CONSTRAINT email_has_at CHECK (email LIKE '%@%') NOT VALID",
    )
    .await;
    let again = json!({"eventId": "bad-2", "event": "updated", "type": "contact", "id": "78",
        "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"email": "nope"}});
    let (_, accepted) = t.deliver(&standard(), &again).await;
    t.event_eventually(accepted["event_id"].as_str().unwrap(), "failed").await;
    let (status, preview) =
        t.admin_post("/admin/record-errors/ignore", &json!({"entity": "contact"})).await;
    assert_eq!((status, preview["count"].as_i64()), (200, Some(1)));
    let (_, done) = t
        .admin_post("/admin/record-errors/ignore", &json!({"entity": "contact", "confirm": true}))
        .await;
    assert_eq!(done["count"], 1);
    let ignored: Value =
        t.app.admin_get("/admin/record-errors?status=ignored").await.json().await.unwrap();
    assert_eq!(ignored["count"], 1);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn reconciliation_catches_a_missed_webhook_and_a_missed_delete() {
    let t = spawn().await;
    let a = t.sandbox.crm.crm_change("deals", None, json!({"dealname": "Kept", "amount": "10"}));
    let b = t.sandbox.crm.crm_change("deals", None, json!({"dealname": "Gone", "amount": "20"}));
    assert_eq!(t.deliver(&standard(), &json!([a, b])).await.0, 202);
    let (aid, bid) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    t.row_eventually("opportunities", bid, |_| true).await;
    t.row_eventually("opportunities", aid, |_| true).await;
    // The CRM changes one and deletes the other; neither webhook ever arrives.
    t.sandbox.crm.crm_change("deals", Some(aid), json!({"amount": "11", "dealstage": "Won"}));
    t.sandbox.crm.crm_delete("deals", bid);
    // Unknown here too: created in the CRM without a webhook.
    let c = t.sandbox.crm.crm_change("deals", None, json!({"dealname": "Unannounced"}));

    let (status, reports) = t.admin_post("/admin/crm/reconcile", &Value::Null).await;
    assert_eq!(status, 200, "{reports}");
    let deals =
        reports.as_array().unwrap().iter().find(|r| r["entity"] == "opportunity").unwrap().clone();
    assert_eq!(
        (deals["drifted"].as_u64(), deals["deleted"].as_u64()),
        (Some(2), Some(1)),
        "{deals}"
    );
    let row = t.row("opportunities", aid).await.unwrap();
    assert_eq!((row["amount"].as_f64(), row["stage"].as_str()), (Some(11.0), Some("Won")));
    assert_eq!(t.row("opportunities", bid).await.unwrap()["deleted_from"], "crm");
    assert!(t.row("opportunities", c["id"].as_str().unwrap()).await.is_some());
    // A second pass finds nothing new.
    let (_, again) = t.admin_post("/admin/crm/reconcile", &Value::Null).await;
    let deals =
        again.as_array().unwrap().iter().find(|r| r["entity"] == "opportunity").unwrap().clone();
    assert_eq!(
        (deals["drifted"].as_u64(), deals["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{deals}"
    );
    t.assert_settled(0).await;
}
