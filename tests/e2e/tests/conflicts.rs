//! A contact changed on both sides, through crm-sync and conflict-resolver together: crm-sync
//! detects the conflict and holds the field, conflict-resolver escalates it (no rule decides),
//! a person picks the CRM's side, and our database and the CRM end with the same values.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use harness::{ADMIN_TOKEN, TestApp, TestDb, TestNats};
use sandbox::{Fault, WebhookSigner};
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(30);

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    title: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    phone: Option<String>,
}

async fn contact(db: &TestDb, external_id: &str) -> Option<(Option<String>, Option<String>)> {
    let mut conn = db.connect().await;
    let rows: Vec<Row> =
        diesel::sql_query("SELECT title, phone FROM crm.contacts WHERE external_id = $1")
            .bind::<Text, _>(external_id)
            .load(&mut conn)
            .await
            .unwrap();
    rows.into_iter().next().map(|r| (r.title, r.phone))
}

#[tokio::test]
async fn a_contact_edited_on_both_sides_ends_in_one_agreed_state() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let sandbox = sandbox::Sandbox::start().await.unwrap();
    let crm_config = crm_sync::Config {
        crm: Some(shared::outbound::Endpoint {
            base_url: sandbox.crm.base_url().to_owned(),
            auth: shared::outbound::TargetAuth::Bearer(sandbox.crm.credential().into()),
        }),
        standard_secrets: vec![SECRET.into()],
        ..crm_sync::Config::unconnected(harness::common_config(crm_sync::SERVICE, &db, &nats))
    };
    let resolver_config = conflict_resolver::Config::defaults(harness::common_config(
        conflict_resolver::SERVICE,
        &db,
        &nats,
    ));
    let (crm, resolver) =
        tokio::join!(crm_sync::build(crm_config), conflict_resolver::build(resolver_config));
    let (crm, resolver) = (TestApp::spawn(crm.unwrap()), TestApp::spawn(resolver.unwrap()));
    let signer = WebhookSigner::Standard { secret: SECRET.into() };
    let deliver = |events: Value| {
        let (http, url, signer) = (crm.http.clone(), crm.url("/webhooks/crm"), signer.clone());
        async move { sandbox::deliver(&http, &url, &signer, &events).await.unwrap().0 }
    };

    // A contact both sides know.
    let created = sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Ann", "jobtitle": "Base", "phone": "1"}),
    );
    let cid = created["id"].as_str().unwrap().to_owned();
    assert_eq!(deliver(created).await, 202);
    harness::eventually(WAIT, || contact(&db, &cid)).await.expect("the contact arrives");

    // A CRM user changes title and phone; the CRM reports it late. Meanwhile the title changes
    // here too, and the CRM is briefly down for our push.
    let theirs = sandbox.crm.crm_change(
        "contacts",
        Some(&cid),
        json!({"jobtitle": "Remote title", "phone": "555"}),
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    sandbox.crm.fail_path(&format!("/crm/v3/objects/contacts/{cid}"), 2, Fault::Status(503));
    let mut conn = db.connect().await;
    diesel::sql_query("UPDATE crm.contacts SET title = 'Local title' WHERE external_id = $1")
        .bind::<Text, _>(&cid)
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(deliver(theirs).await, 202);

    // conflict-resolver receives it; the same field changed on both sides within a minute and no
    // priority is set, so it waits for a person.
    let conflict = harness::eventually(WAIT, || async {
        let list: Value =
            resolver.admin_get("/conflicts?status=escalated").await.json().await.ok()?;
        list.as_array()?.iter().next().cloned()
    })
    .await
    .expect("an escalated conflict");
    assert_eq!(conflict["remote"]["title"], "Remote title");
    assert_eq!(contact(&db, &cid).await.unwrap().0.as_deref(), Some("Local title"));

    let decided = resolver
        .http
        .post(resolver.url(&format!("/conflicts/{}/resolve", conflict["id"].as_str().unwrap())))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"side": "remote"}))
        .send()
        .await
        .unwrap();
    assert_eq!(decided.status(), 200);

    // One agreed state, here and in the CRM.
    let agreed = harness::eventually(WAIT, || async {
        let (title, phone) = contact(&db, &cid).await?;
        let remote = sandbox.crm.crm_object("contacts", &cid)?.properties;
        let same = title.as_deref() == Some("Remote title")
            && phone.as_deref() == Some("555")
            && remote.get("jobtitle") == Some(&json!("Remote title"))
            && remote.get("phone") == Some(&json!("555"));
        same.then_some(())
    })
    .await;
    assert!(
        agreed.is_some(),
        "local {:?}, CRM {:?}",
        contact(&db, &cid).await,
        sandbox.crm.crm_object("contacts", &cid)
    );
    // And it stays so: nothing is pushed over it afterwards.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sandbox.crm.crm_object("contacts", &cid).unwrap().properties.get("jobtitle"),
        Some(&json!("Remote title"))
    );
}

/// The status of order `SO-1` in our database.
async fn order_status(db: &TestDb) -> Option<String> {
    #[derive(diesel::QueryableByName)]
    struct Order {
        #[diesel(sql_type = Text)]
        status: String,
    }
    let mut conn = db.connect().await;
    let rows: Vec<Order> =
        diesel::sql_query("SELECT status FROM erp.orders WHERE erp_order_id = 'SO-1'")
            .load(&mut conn)
            .await
            .unwrap();
    rows.into_iter().next().map(|o| o.status)
}

/// erp-sync and conflict-resolver as the binaries an operator runs, the ERP simulated: an
/// order's status changed in the ERP (its webhook late) and here, while our push waits for the
/// ERP. erp-sync raises the conflict, conflict-resolver decides it by the clocks (ours is 10
/// minutes newer), and the ERP and our database end with the same status.
#[tokio::test]
async fn an_order_status_changed_in_the_erp_and_here_ends_in_one_agreed_state() {
    use harness::process::{spawn_ready, workspace_bin};
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let erp = sandbox::SimServer::start(sandbox::System::Erp).unwrap();
    const KEY: &str = "e2e-erp-webhook-key-0123456789";
    let erp_env = [
        ("ERP_WEBHOOK_API_KEYS", KEY),
        ("ERP_BASE_URL", erp.base_url()),
        ("ERP_API_KEY", erp.credential()),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let (erp_bin, resolver_bin) = (workspace_bin("erp-sync"), workspace_bin("conflict-resolver"));
    let ((mut erp_sync, erp_url), (mut resolver, resolver_url)) = tokio::join!(
        spawn_ready(&erp_bin, &db, &nats, &erp_env),
        spawn_ready(&resolver_bin, &db, &nats, &[])
    );
    let http = harness::test_client();
    let report = |event: Value| {
        let (http, url) = (http.clone(), format!("{erp_url}/webhooks/erp"));
        async move {
            let r = http.post(url).header("X-API-Key", KEY).json(&event).send().await.unwrap();
            assert_eq!(r.status(), 202);
        }
    };

    // An order both sides know.
    report(erp.erp_record(
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1", "status": "open", "total": 10,
            "updatedAt": "2026-01-01T09:00:00Z"}),
    ))
    .await;
    harness::eventually(WAIT, || order_status(&db)).await.expect("the order arrives");

    // The ERP's user confirms it; its webhook is late. Here the order is put on hold ten minutes
    // later (by the clocks), while the ERP is briefly down for our push.
    let theirs = erp.erp_record(
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1", "status": "confirmed", "total": 10,
            "updatedAt": (chrono::Utc::now() - chrono::Duration::minutes(10)).to_rfc3339()}),
    );
    erp.fail_next(2, Fault::Status(503));
    let mut conn = db.connect().await;
    diesel::sql_query("UPDATE erp.orders SET status = 'on_hold' WHERE erp_order_id = 'SO-1'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(erp.wait_until(WAIT, |erp| erp.requests().iter().any(|r| r.status == 503)).await);
    report(theirs).await;

    // One agreed state: ours, here and in the ERP, decided by a rule and recorded.
    let agreed = harness::eventually(WAIT, || async {
        let here = order_status(&db).await?;
        let there = erp.erp_get("orders", "SO-1")?["status"].as_str()?.to_owned();
        (here == "on_hold" && there == "on_hold").then_some(())
    })
    .await;
    assert!(
        agreed.is_some(),
        "here {:?}, ERP {:?}",
        order_status(&db).await,
        erp.erp_get("orders", "SO-1")
    );
    let conflicts: Value = http
        .get(format!("{resolver_url}/conflicts?system=erp"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conflict = &conflicts.as_array().unwrap()[0];
    assert_eq!(
        (conflict["status"].as_str(), conflict["winner"].as_str()),
        (Some("resolved"), Some("local"))
    );
    assert!(conflict["explanation"].as_str().unwrap().contains("newer"), "{conflict}");
    // And it stays so.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(erp.erp_get("orders", "SO-1").unwrap()["status"], "on_hold");
    assert_eq!(order_status(&db).await.as_deref(), Some("on_hold"));
    for child in [&mut erp_sync, &mut resolver] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
