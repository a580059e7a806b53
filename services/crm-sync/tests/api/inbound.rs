use serde_json::{Value, json};

use crate::helpers::{WAIT, hubspot, spawn, standard};

#[tokio::test]
async fn signed_webhooks_in_both_schemes_create_update_and_soft_delete_without_echo() {
    let t = spawn().await;
    // A CRM user creates a contact; the CRM reports it, signed with Standard Webhooks.
    let created = t.sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Ada", "lastname": "Lovelace", "email": "ada@example.com",
               "company": "Analytical Engines", "hs_lead_status": "NEW"}),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, accepted) = t.deliver(&standard(), &created).await;
    assert_eq!(status, 202, "{accepted}");
    let row = t.row_eventually("contacts", &id, |_| true).await;
    assert_eq!(
        (row["first_name"].as_str(), row["company"].as_str(), row["status"].as_str()),
        (Some("Ada"), Some("Analytical Engines"), Some("NEW"))
    );
    assert_eq!((row["origin"].as_str(), row["local_version"].as_i64()), (Some("crm"), Some(0)));
    assert_eq!(row["external_source"], "crm");
    let event_id = accepted["event_id"].as_str().unwrap();
    t.event_eventually(event_id, "applied").await;

    // An update, signed with HubSpot v3: only the fields it carries change.
    let updated = t.sandbox.crm.crm_change("contacts", Some(&id), json!({"jobtitle": "Countess"}));
    let (status, _) = t
        .deliver(
            &hubspot(),
            &json!({
        "eventId": updated["eventId"], "event": "updated", "type": "contact", "id": id,
        "timestamp": updated["timestamp"], "data": {"jobtitle": "Countess"}}),
        )
        .await;
    assert_eq!(status, 202);
    let row = t.row_eventually("contacts", &id, |r| r["title"] == "Countess").await;
    assert_eq!(row["email"], "ada@example.com");

    // A delete is soft.
    let deleted = t.sandbox.crm.crm_delete("contacts", &id);
    assert_eq!(t.deliver(&standard(), &deleted).await.0, 202);
    let row = t.row_eventually("contacts", &id, |r| !r["deleted_at"].is_null()).await;
    assert_eq!(row["deleted_from"], "crm");

    // Nothing that came from the CRM went back to it.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let ours: Vec<_> = t.sandbox.crm.requests().into_iter().filter(|r| r.method != "GET").collect();
    assert!(
        ours.is_empty(),
        "echoed to the CRM: {:?}",
        ours.iter().map(|r| (&r.method, &r.path)).collect::<Vec<_>>()
    );
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.push_log").await, 0);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_batch_of_events_for_all_three_types_is_applied_together() {
    let t = spawn().await;
    let account = t.sandbox.crm.crm_change(
        "companies",
        None,
        json!({"name": "Acme", "industry": "Tools",
        "annualrevenue": "1250000.5", "numberofemployees": "42", "city": "Lyon"}),
    );
    let deal = t.sandbox.crm.crm_change(
        "deals",
        None,
        json!({"dealname": "Anvils",
        "amount": "9900", "dealstage": "Proposal", "hs_deal_stage_probability": "40", "closedate": "2026-12-31T00:00:00Z"}),
    );
    let contact =
        t.sandbox.crm.crm_change("contacts", None, json!({"firstname": "Wile", "company": "Acme"}));
    let (status, accepted) = t.deliver(&hubspot(), &json!([account, deal, contact])).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["event_ids"].as_array().unwrap().len(), 3);
    let a = t.row_eventually("accounts", account["id"].as_str().unwrap(), |_| true).await;
    assert_eq!(
        (a["employee_count"].as_i64(), a["annual_revenue"].as_f64()),
        (Some(42), Some(1250000.5))
    );
    assert_eq!(a["billing_address"], json!({"city": "Lyon"}));
    let d = t.row_eventually("opportunities", deal["id"].as_str().unwrap(), |_| true).await;
    assert_eq!(
        (d["stage"].as_str(), d["close_date"].as_str(), d["probability"].as_i64()),
        (Some("Proposal"), Some("2026-12-31"), Some(40))
    );
    t.row_eventually("contacts", contact["id"].as_str().unwrap(), |r| r["company"] == "Acme").await;
    for id in accepted["event_ids"].as_array().unwrap() {
        t.event_eventually(id.as_str().unwrap(), "applied").await;
    }
    t.assert_settled(0).await;
}

#[tokio::test]
async fn bad_signatures_unknown_types_and_bad_values_are_refused_with_nothing_stored() {
    let t = spawn().await;
    let event = json!({"eventId": "e-1", "event": "created", "type": "contact", "id": "1",
        "timestamp": chrono::Utc::now().to_rfc3339(), "data": {"firstname": "Eve"}});
    let wrong = sandbox::WebhookSigner::Standard {
        secret: "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==".into(),
    };
    let (status, body) = t.deliver(&wrong, &event).await;
    assert_eq!(status, 401, "{body}");
    let wrong_hubspot = sandbox::WebhookSigner::HubSpot { secret: "not-the-secret".into() };
    assert_eq!(t.deliver(&wrong_hubspot, &event).await.0, 401);
    let unsigned = t.app.http.post(t.app.url("/webhooks/crm")).json(&event).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);

    let mut lead = event.clone();
    lead["type"] = json!("lead");
    let (status, body) = t.deliver(&standard(), &lead).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "type");
    assert!(body["detail"].as_str().unwrap().contains("Unknown record type: lead"), "{body}");

    let mut bad = event.clone();
    bad["type"] = json!("account");
    bad["data"] = json!({"numberofemployees": "many"});
    let (status, body) = t.deliver(&standard(), &bad).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["field"], "data.numberofemployees");

    // The rotated-out secret still verifies.
    let old =
        sandbox::WebhookSigner::Standard { secret: crate::helpers::OLD_STANDARD_SECRET.into() };
    assert_eq!(t.deliver(&old, &event).await.0, 202);
    t.row_eventually("contacts", "1", |_| true).await;
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.webhook_events").await, 1);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_duplicate_delivery_is_a_no_op() {
    let t = spawn().await;
    let created = t.sandbox.crm.crm_change("contacts", None, json!({"firstname": "Dup"}));
    let (first, a) = t.deliver(&standard(), &created).await;
    let (second, b) = t.deliver(&standard(), &created).await;
    assert_eq!((first, second), (202, 202));
    assert_eq!(a["event_id"], b["event_id"], "a redelivery answers the same id");
    t.row_eventually("contacts", created["id"].as_str().unwrap(), |_| true).await;
    t.event_eventually(a["event_id"].as_str().unwrap(), "applied").await;
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.contacts").await, 1);
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.webhook_events").await, 1);
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.sync_state").await, 1);
    // An older event arriving late changes nothing.
    let newer =
        t.sandbox.crm.crm_change("contacts", created["id"].as_str(), json!({"firstname": "Newer"}));
    assert_eq!(t.deliver(&standard(), &newer).await.0, 202);
    t.row_eventually("contacts", created["id"].as_str().unwrap(), |r| r["first_name"] == "Newer")
        .await;
    let mut late = created.clone();
    late["eventId"] = json!("late-redelivery");
    let (_, accepted) = t.deliver(&standard(), &late).await;
    let status: Value = t.event_eventually(accepted["event_id"].as_str().unwrap(), "applied").await;
    assert!(status["reason"].as_str().unwrap_or_default().contains("stale"), "{status}");
    let row = t.row("contacts", created["id"].as_str().unwrap()).await.unwrap();
    assert_eq!(row["first_name"], "Newer");
    let _ = WAIT;
    t.assert_settled(0).await;
}

#[tokio::test]
async fn reordered_partial_events_each_apply_their_own_fields() {
    let t = spawn().await;
    let created = t.sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Ann", "email": "a@old", "phone": "1"}),
    );
    let cid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(t.deliver(&standard(), &created).await.0, 202);
    t.row_eventually("contacts", &cid, |_| true).await;
    // Two CRM changes, each reported with only its field; the older one arrives last.
    let first = t.sandbox.crm.crm_change("contacts", Some(&cid), json!({"email": "a@new"}));
    let second = t.sandbox.crm.crm_change("contacts", Some(&cid), json!({"phone": "2"}));
    let partial = |e: &Value, field: &str, value: &str| {
        json!({"eventId": e["eventId"], "event": "updated", "type": "contact", "id": cid,
               "timestamp": e["timestamp"], "data": {field: value}})
    };
    assert_eq!(t.deliver(&standard(), &partial(&second, "phone", "2")).await.0, 202);
    t.row_eventually("contacts", &cid, |r| r["phone"] == "2").await;
    assert_eq!(t.deliver(&standard(), &partial(&first, "email", "a@new")).await.0, 202);
    let row = t.row_eventually("contacts", &cid, |r| r["email"] == "a@new").await;
    assert_eq!(row["phone"], "2");
    // The same field, older, is stale.
    assert_eq!(
        t.deliver(
            &standard(),
            &json!({"eventId": "old-phone", "event": "updated", "type": "contact",
        "id": cid, "timestamp": created["timestamp"], "data": {"phone": "0"}})
        )
        .await
        .0,
        202
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.row("contacts", &cid).await.unwrap()["phone"], "2");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn the_crm_announcing_our_create_before_its_answer_arrives_makes_no_second_record() {
    let t = spawn().await;
    // The CRM creates the record, but our push gets a 503 back (it will retry).
    t.sandbox.crm.fail_path("/batch/upsert", 1, sandbox::Fault::StatusAfterApply(503));
    t.sql("INSERT INTO crm.contacts (first_name) VALUES ('Early')").await;
    let created =
        t.sandbox.crm.wait_until(WAIT, |crm| !crm.crm_objects("contacts").is_empty()).await;
    assert!(created);
    let (cid, properties) = t.sandbox.crm.crm_objects("contacts").remove(0);
    // Its webhook (carrying our key) arrives before the push's retry.
    let event = json!({"eventId": "created-early", "event": "created", "type": "contact", "id": cid,
        "timestamp": chrono::Utc::now().to_rfc3339(), "data": properties});
    let (_, accepted) = t.deliver(&standard(), &event).await;
    t.event_eventually(accepted["event_id"].as_str().unwrap(), "applied").await;
    let row = t.row_eventually("contacts", &cid, |_| true).await;
    assert_eq!(row["first_name"], "Early");
    // The push's retry goes to that record (it has the CRM's id now).
    let retried = t.sandbox.crm.wait_until(WAIT, |crm| {
        crm.requests().iter().any(|r| r.method != "GET" && r.status == 200)
    });
    assert!(retried.await);
    t.assert_settled(0).await;
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.contacts").await, 1);
    assert_eq!(t.sandbox.crm.crm_objects("contacts").len(), 1);
}

#[tokio::test]
async fn events_accepted_before_a_restart_are_applied_after_it_and_local_changes_pushed() {
    let mut t = spawn().await;
    // Accepted (202) while the CRM is down for pushes; then the service stops.
    t.sandbox.crm.fail_path("/batch/upsert", 3, sandbox::Fault::Status(503));
    t.sql("INSERT INTO crm.accounts (company_name) VALUES ('Before restart')").await;
    let mut accepted = Vec::new();
    for i in 0..20 {
        let e = t.sandbox.crm.crm_change("contacts", None, json!({"firstname": format!("R{i}")}));
        let (status, body) = t.deliver(&standard(), &e).await;
        assert_eq!(status, 202);
        accepted.push(body["event_id"].as_str().unwrap().to_owned());
    }
    let config = crate::helpers::config_for(&t.db, &t.nats, &t.sandbox);
    let old = std::mem::replace(
        &mut t.app,
        harness::TestApp::spawn(crm_sync::build(config).await.expect("a second instance starts")),
    );
    old.stop().await;
    // Everything arrives, through whichever instance: every event applied, the account pushed.
    for id in &accepted {
        t.event_eventually(id, "applied").await;
    }
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.contacts").await, 20);
    // Three refused pushes back off 1 + 2 + 4 s, and a push the stopped instance held comes
    // back after its ack_wait (30 s): more than WAIT on a loaded machine.
    let pushed = harness::eventually(std::time::Duration::from_secs(60), || async {
        (t.count("SELECT count(*) AS n FROM crm.accounts WHERE external_id IS NOT NULL").await == 1)
            .then_some(())
    });
    assert!(pushed.await.is_some(), "the account reached the CRM after the restart");
    assert_eq!(t.sandbox.crm.crm_objects("companies").len(), 1);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_delete_that_overtakes_its_create_keeps_the_record_deleted() {
    let t = spawn().await;
    // The CRM creates a contact and deletes it a moment later; its webhooks arrive in the
    // other order.
    let created = t.sandbox.crm.crm_change("contacts", None, json!({"firstname": "Late"}));
    let id = created["id"].as_str().unwrap().to_owned();
    let deleted = t.sandbox.crm.crm_delete("contacts", &id);

    let (status, first) = t.deliver(&standard(), &deleted).await;
    assert_eq!(status, 202);
    t.event_eventually(first["event_id"].as_str().unwrap(), "applied").await;
    let (status, second) = t.deliver(&standard(), &created).await;
    assert_eq!(status, 202);
    t.event_eventually(second["event_id"].as_str().unwrap(), "applied").await;

    let row = t.row("contacts", &id).await.expect("the delete is kept as a tombstone");
    assert!(!row["deleted_at"].is_null(), "the late create brought the record back: {row}");
    assert_eq!(row["deleted_from"], "crm");
    // A later change of the CRM (a restore) still brings it back.
    let restored = json!({"eventId": "restore-1", "event": "updated", "type": "contact", "id": id,
        "timestamp": "2099-01-01T00:00:00Z", "data": {"firstname": "Back"}});
    assert_eq!(t.deliver(&standard(), &restored).await.0, 202);
    let row = t.row_eventually("contacts", &id, |r| r["deleted_at"].is_null()).await;
    assert_eq!(row["first_name"], "Back");
    t.assert_settled(0).await;
}
