use std::time::Duration;

use sandbox::Fault;
use serde_json::{Value, json};

use crate::helpers::{WAIT, spawn, standard};

/// The local id of the only row of `table`.
async fn only_id(t: &crate::helpers::TestCrm, table: &str) -> i64 {
    t.count(&format!("SELECT max(id) AS n FROM crm.{table}")).await
}

#[tokio::test]
async fn plain_sql_inserts_and_updates_reach_the_crm_and_deletes_archive() {
    let t = spawn().await;
    // Another application writes to the table directly.
    t.sql(
        "INSERT INTO crm.contacts (first_name, last_name, email, title, source) \
           VALUES ('Grace', 'Hopper', 'grace@example.com', 'Rear Admiral', 'event')",
    )
    .await;
    let id = only_id(&t, "contacts").await;
    let row = harness::eventually(WAIT, || async {
        let r = t.row_by_id("contacts", id).await;
        (!r["external_id"].is_null()).then_some(r)
    })
    .await
    .expect("the CRM's id is written back");
    let external_id = row["external_id"].as_str().unwrap().to_owned();
    assert_eq!(row["external_source"], "crm");
    let object = t.sandbox.crm.crm_object("contacts", &external_id).expect("created in the CRM");
    assert_eq!(object.properties["firstname"], "Grace");
    assert_eq!(object.properties["jobtitle"], "Rear Admiral");
    // HubSpot's names and string values only: `source` has no standard property.
    let create = t.sandbox.crm.accepted().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(
        create.body["inputs"][0]["properties"],
        json!({"firstname": "Grace", "lastname": "Hopper", "email": "grace@example.com",
               "jobtitle": "Rear Admiral", "phone": "", "company": "", "hs_lead_status": "",
               "datasync_id": format!("contact/{id}")})
    );
    let create = t.sandbox.crm.accepted().into_iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(create.headers["authorization"], format!("Bearer {}", t.sandbox.crm.credential()));

    // An update sends only what changed.
    t.sql(&format!("UPDATE crm.contacts SET email = 'grace@navy.mil' WHERE id = {id}")).await;
    let patched = harness::eventually(WAIT, || async {
        t.sandbox.crm.accepted().into_iter().find(|r| r.method == "PATCH")
    })
    .await
    .expect("a PATCH");
    assert_eq!(patched.path, format!("/crm/v3/objects/contacts/{external_id}"));
    assert_eq!(patched.body, json!({"properties": {"email": "grace@navy.mil"}}));
    assert_eq!(
        t.sandbox.crm.crm_object("contacts", &external_id).unwrap().properties["email"],
        "grace@navy.mil"
    );

    // The write-back of the id and synced_at queued nothing more: one create, one update.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let writes: Vec<String> = t
        .sandbox
        .crm
        .accepted()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(writes, ["POST", "PATCH"]);

    // A local delete archives the CRM's record.
    t.sql(&format!(
        "UPDATE crm.contacts SET deleted_at = now(), deleted_from = 'local' WHERE id = {id}"
    ))
    .await;
    let archived = t.sandbox.crm.wait_until(WAIT, |crm| {
        crm.crm_object("contacts", &external_id).is_some_and(|o| o.archived_ms.is_some())
    });
    assert!(archived.await, "archived in the CRM");
    // Create, update and archive, each logged once it committed.
    let logged = harness::eventually(WAIT, || async {
        let n = t
            .count(
                "SELECT count(*) AS n FROM crm.push_log WHERE target = 'crm' AND status = 'synced'",
            )
            .await;
        (n == 3).then_some(())
    });
    assert!(logged.await.is_some(), "three pushes logged");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn pushes_retry_429_and_5xx_then_dead_letter_into_the_ledger_and_requeue_delivers() {
    let t = spawn().await;
    t.set_push_max_attempts(2).await;
    t.sandbox.crm.fail_next(1, Fault::RateLimited { retry_after_secs: 1 });
    t.sandbox.crm.fail_next(1, Fault::Status(503));
    t.sql("INSERT INTO crm.accounts (company_name, employee_count) VALUES ('Retry Inc', 5)").await;
    let id = only_id(&t, "accounts").await;
    // 429 then 503: the budget of 2 is spent, the push is given up into the ledger.
    let ledger: Value = harness::eventually(WAIT, || async {
        let v: Value =
            t.app.admin_get("/admin/record-errors?system=crm").await.json().await.ok()?;
        (v["count"] == 1 && v["errors"][0].is_object()).then_some(v)
    })
    .await
    .expect("a ledger row");
    let row = &ledger["errors"][0];
    assert_eq!(
        (row["entity"].as_str(), row["direction"].as_str()),
        (Some("account"), Some("outbound")),
        "{ledger}"
    );
    assert_eq!(row["record_id"], format!("account/{id}"));
    assert!(row["error"].as_str().unwrap().contains("503"), "{row}");
    assert_eq!(row["last_payload"]["data"]["company_name"], "Retry Inc");
    assert!(t.row_by_id("accounts", id).await["external_id"].is_null());

    // Bulk requeue by filter: a preview counts, a stale count is refused, a confirmed one acts.
    let (status, preview) =
        t.admin_post("/admin/record-errors/requeue", &json!({"direction": "outbound"})).await;
    assert_eq!(
        (status, preview["count"].as_i64(), preview["confirmed"].as_bool()),
        (200, Some(1), Some(false))
    );
    let (status, _) = t
        .admin_post(
            "/admin/record-errors/requeue",
            &json!({"direction": "outbound", "confirm": true, "expected_count": 2}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, done) = t
        .admin_post(
            "/admin/record-errors/requeue",
            &json!({"direction": "outbound", "confirm": true, "expected_count": 1}),
        )
        .await;
    assert_eq!((status, done["count"].as_i64()), (200, Some(1)), "{done}");
    let row = harness::eventually(WAIT, || async {
        let r = t.row_by_id("accounts", id).await;
        (!r["external_id"].is_null()).then_some(r)
    })
    .await
    .expect("delivered after the requeue");
    let object =
        t.sandbox.crm.crm_object("companies", row["external_id"].as_str().unwrap()).unwrap();
    assert_eq!(object.properties["numberofemployees"], "5");
    let open = t.count("SELECT count(*) AS n FROM crm.record_errors WHERE status = 'open'").await;
    assert_eq!(open, 0);
    // The given-up push left its dead letter.
    t.assert_settled(1).await;
}

#[tokio::test]
async fn crossing_changes_end_in_agreement() {
    let t = spawn().await;
    // A record both sides know.
    let created = t.sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Ann", "phone": "1", "jobtitle": "A"}),
    );
    let cid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(t.deliver(&standard(), &created).await.0, 202);
    let row = t.row_eventually("contacts", &cid, |_| true).await;
    let id = row["id"].as_i64().unwrap();
    // Our push is slow; meanwhile a CRM user changes another field, and reports it later.
    t.sandbox.crm.set_latency(Some(Duration::from_millis(700)));
    t.sql(&format!("UPDATE crm.contacts SET title = 'Local title' WHERE id = {id}")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let theirs = t.sandbox.crm.crm_change("contacts", Some(&cid), json!({"phone": "2"}));
    t.sandbox.crm.set_latency(None);
    assert_eq!(t.deliver(&standard(), &theirs).await.0, 202);
    // Both sides end with both changes.
    let agreed = harness::eventually(WAIT, || async {
        let local = t.row_by_id("contacts", id).await;
        let remote = t.sandbox.crm.crm_object("contacts", &cid)?.properties;
        let same = local["title"] == "Local title"
            && local["phone"] == "2"
            && remote.get("jobtitle") == Some(&json!("Local title"))
            && remote.get("phone") == Some(&json!("2"));
        same.then_some(())
    });
    assert!(
        agreed.await.is_some(),
        "local {} remote {:?}",
        t.row_by_id("contacts", id).await,
        t.sandbox.crm.crm_object("contacts", &cid)
    );
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_not_made_twice() {
    let t = spawn().await;
    // The CRM creates the record, but its answer never arrives (503 on the way back).
    t.sandbox.crm.fail_path("/batch/upsert", 1, Fault::StatusAfterApply(503));
    t.sql("INSERT INTO crm.contacts (first_name, email) VALUES ('Once', 'once@example.com')").await;
    let id = only_id(&t, "contacts").await;
    let row = harness::eventually(WAIT, || async {
        let r = t.row_by_id("contacts", id).await;
        (!r["external_id"].is_null()).then_some(r)
    })
    .await
    .expect("the retry finds the record and writes its id back");
    let objects = t.sandbox.crm.crm_objects("contacts");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_eq!(objects[0].0, row["external_id"].as_str().unwrap());
    assert_eq!(objects[0].1["datasync_id"], format!("contact/{id}"));
    let creates: Vec<u16> = t
        .sandbox
        .crm
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/batch/upsert"))
        .map(|r| r.status)
        .collect();
    assert_eq!(creates, [503, 200]);
    t.assert_settled(0).await;
}
