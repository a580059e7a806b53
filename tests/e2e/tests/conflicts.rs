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
