//! conflict-resolver against the real PostgreSQL and NATS: conflicts arrive on
//! `sync.conflicts.detected.<system>` as a connector publishes them, resolutions leave on
//! `sync.conflicts.resolved.<system>`.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use futures::StreamExt;
use harness::{ADMIN_TOKEN, TestApp, TestDb, TestNats};
use serde_json::{Map, Value, json};
use shared::schemas::{Envelope, conflict::ConflictDetected};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

struct TestResolver {
    app: TestApp,
    smtp: sandbox::SmtpSink,
    slack: sandbox::SimServer,
    nats: TestNats,
    _db: TestDb,
}

async fn spawn(retry_every: Option<Duration>) -> TestResolver {
    harness::init_logs();
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let smtp = sandbox::SmtpSink::start().await.expect("SMTP sink");
    let slack = sandbox::SimServer::start(sandbox::System::Slack).expect("Slack");
    let config = conflict_resolver::Config {
        retry_every,
        review_url: "https://datasync.example.com/".into(),
        admin_email: vec!["data-admin@example.com".into()],
        smtp: shared::notify::SmtpConfig {
            port: smtp.port,
            ..shared::notify::SmtpConfig::default()
        },
        slack: Some(shared::notify::Slack { webhook_url: slack.url().into() }),
        ..conflict_resolver::Config::defaults(harness::common_config(
            conflict_resolver::SERVICE,
            &db,
            &nats,
        ))
    };
    let app = TestApp::spawn(conflict_resolver::build(config).await.expect("resolver starts"));
    TestResolver { app, smtp, slack, nats, _db: db }
}

fn record(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// A contact conflict as crm-sync detects it: both sides changed from `base`, the CRM's change
/// `remote_after` seconds after ours.
fn contact(local: Value, remote: Value, remote_after: i64) -> ConflictDetected {
    let at = chrono::Utc::now();
    ConflictDetected {
        conflict_id: Uuid::now_v7(),
        system: "crm".into(),
        entity: "contact".into(),
        record_id: 7,
        external_id: "501".into(),
        fields: vec!["email".into()],
        base: record(json!({"email": "ann@old.example", "phone": "1"})),
        local: record(local),
        remote: record(remote),
        local_updated_at: at,
        remote_updated_at: at + chrono::Duration::seconds(remote_after),
        local_clock: Some("local".into()),
        remote_clock: Some("crm".into()),
        unapplied: None,
    }
}

impl TestResolver {
    async fn publish(&self, conflict: &ConflictDetected) {
        let js = async_nats::jetstream::new(self.nats.client().await);
        let envelope = Envelope::new("crm-sync", conflict.clone());
        js.publish(
            self.nats.subject("sync.conflicts.detected.crm"),
            serde_json::to_vec(&envelope).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    async fn resolutions(&self) -> async_nats::Subscriber {
        let client = self.nats.client().await;
        let sub = client.subscribe(self.nats.subject("sync.conflicts.resolved.crm")).await.unwrap();
        client.flush().await.unwrap();
        sub
    }

    async fn conflict_when(&self, id: Uuid, status: &str) -> Value {
        harness::eventually(WAIT, || async {
            let c: Value =
                self.app.admin_get(&format!("/conflicts/{id}")).await.json().await.ok()?;
            (c["status"] == status).then_some(c)
        })
        .await
        .unwrap_or_else(|| panic!("conflict {id} never became {status}"))
    }

    async fn resolve(&self, id: Uuid, body: Value, token: Option<&str>) -> (u16, Value) {
        let mut request =
            self.app.http.post(self.app.url(&format!("/conflicts/{id}/resolve"))).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
    }
}

async fn next(sub: &mut async_nats::Subscriber) -> Value {
    let msg = tokio::time::timeout(WAIT, sub.next()).await.expect("a resolution").unwrap();
    serde_json::from_slice(&msg.payload).unwrap()
}

async fn nothing_more(sub: &mut async_nats::Subscriber) {
    let more = tokio::time::timeout(Duration::from_millis(1500), sub.next()).await;
    assert!(more.is_err(), "a second resolution: {more:?}");
}

#[tokio::test]
async fn changes_to_different_fields_merge_and_are_published_once() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    let conflict = contact(
        json!({"email": "ann@new.example", "phone": "1"}),
        json!({"email": "ann@old.example", "phone": "2"}),
        10,
    );
    t.publish(&conflict).await;
    let message = next(&mut resolved).await;
    assert_eq!(message["data"]["conflict_id"], conflict.conflict_id.to_string());
    assert_eq!(message["data"]["values"], json!({"email": "ann@new.example", "phone": "2"}));
    assert_eq!(message["data"]["resolved_by"], "rule:field_merge");
    assert_eq!(message["data"]["record_id"], 7);
    let stored = t.conflict_when(conflict.conflict_id, "resolved").await;
    assert_eq!(
        (stored["rule"].as_str(), stored["winner"].as_str()),
        (Some("field_merge"), Some("merged"))
    );
    assert!(stored["explanation"].as_str().unwrap().contains("field-level merge"), "{stored}");
    // The same conflict delivered again (a connector's retry) is not resolved twice.
    t.publish(&conflict).await;
    nothing_more(&mut resolved).await;
}

#[tokio::test]
async fn the_newer_side_wins_when_the_times_are_far_apart_naming_the_clocks() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    let conflict = contact(
        json!({"email": "ann@ours.example", "phone": "1"}),
        json!({"email": "ann@crm.example", "phone": "1"}),
        120,
    );
    t.publish(&conflict).await;
    let message = next(&mut resolved).await;
    assert_eq!(message["data"]["values"], json!({"email": "ann@crm.example"}));
    let stored = t.conflict_when(conflict.conflict_id, "resolved").await;
    let why = stored["explanation"].as_str().unwrap();
    assert!(
        why.contains("120 s newer") && why.contains("crm clock") && why.contains("local clock"),
        "{why}"
    );

    // An administrator undoes the automatic resolution: the other side goes out, marked undo.
    let undo = || {
        t.app
            .http
            .post(t.app.url(&format!("/conflicts/{}/undo", conflict.conflict_id)))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let undone = undo().await.unwrap();
    assert_eq!(undone.status(), 200);
    let undone: Value = undone.json().await.unwrap();
    assert_eq!((undone["winner"].as_str(), undone["undone_at"].is_string()), (Some("local"), true));
    let message = next(&mut resolved).await;
    assert_eq!(
        (&message["data"]["values"], &message["data"]["undo"]),
        (&json!({"email": "ann@ours.example"}), &json!(true))
    );
    assert_eq!(undo().await.unwrap().status(), 409, "undone once");
    nothing_more(&mut resolved).await;
}

#[tokio::test]
async fn only_automatic_one_side_resolutions_within_the_window_can_be_undone() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    // A merge has no other side.
    let merged = contact(
        json!({"email": "ann@new.example", "phone": "1"}),
        json!({"email": "ann@old.example", "phone": "2"}),
        10,
    );
    t.publish(&merged).await;
    t.conflict_when(merged.conflict_id, "resolved").await;
    next(&mut resolved).await;
    let undo = |id: Uuid| {
        t.app.http.post(t.app.url(&format!("/conflicts/{id}/undo"))).bearer_auth(ADMIN_TOKEN).send()
    };
    assert_eq!(undo(merged.conflict_id).await.unwrap().status(), 422);
    // A person's decision is not undone this way.
    let by_hand = contact(
        json!({"email": "ann@ours.example", "phone": "1"}),
        json!({"email": "ann@crm.example", "phone": "1"}),
        10,
    );
    t.publish(&by_hand).await;
    t.conflict_when(by_hand.conflict_id, "escalated").await;
    assert_eq!(undo(by_hand.conflict_id).await.unwrap().status(), 409, "nothing resolved yet");
    let (status, _) =
        t.resolve(by_hand.conflict_id, json!({"side": "remote"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 200);
    next(&mut resolved).await;
    assert_eq!(undo(by_hand.conflict_id).await.unwrap().status(), 422);
    nothing_more(&mut resolved).await;
}

#[tokio::test]
async fn a_conflict_no_rule_decides_is_escalated_then_decided_by_hand_once() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    let conflict = contact(
        json!({"email": "ann@ours.example", "phone": "3"}),
        json!({"email": "ann@crm.example", "phone": "1"}),
        10,
    );
    t.publish(&conflict).await;
    let escalated = t.conflict_when(conflict.conflict_id, "escalated").await;
    assert_eq!(escalated["changed"], json!({"local": ["email", "phone"], "remote": ["email"]}));
    // One email to the data admin and one Slack message, each linking to the conflict.
    let link = format!("https://datasync.example.com/review/conflicts/{}", conflict.conflict_id);
    let mails = harness::eventually(WAIT, || async {
        let mails = t.smtp.mails();
        (!mails.is_empty()).then_some(mails)
    })
    .await
    .expect("the escalation email");
    assert_eq!(mails[0].to, ["data-admin@example.com"]);
    let data = mails[0].data.replace("=\n", ""); // quoted-printable soft line breaks
    for part in [
        "Subject: Sync Conflict: contact #7",
        "Local changes: email: \"ann@ours.example\", phone: \"3\"",
        "Remote changes: email: \"ann@crm.example\"",
        &link,
    ] {
        assert!(data.contains(part), "{part} in {data}");
    }
    let posts = harness::eventually(WAIT, || async {
        let posts: Vec<_> = t.slack.requests().into_iter().filter(|r| r.method == "POST").collect();
        (!posts.is_empty()).then_some(posts)
    })
    .await
    .expect("the Slack message");
    let text = posts[0].body["text"].as_str().unwrap();
    assert!(
        text.contains("*Sync Conflict Requires Review*")
            && text.contains(&format!("<{link}|Review Now>")),
        "{text}"
    );
    let list: Value =
        t.app.admin_get("/conflicts?status=escalated&system=crm").await.json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (status, _) = t.resolve(conflict.conflict_id, json!({"side": "remote"}), None).await;
    assert_eq!(status, 401);
    let (status, problem) = t
        .resolve(conflict.conflict_id, json!({"fields": {"email": "remote"}}), Some(ADMIN_TOKEN))
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("fields.phone")), "{problem}");
    let (status, problem) = t
        .resolve(
            conflict.conflict_id,
            json!({"side": "local", "fields": {"title": "remote"}}),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("fields.title")), "{problem}");
    nothing_more(&mut resolved).await;

    let (status, done) = t
        .resolve(
            conflict.conflict_id,
            json!({"side": "local", "fields": {"email": "remote"}}),
            Some(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(
        (done["status"].as_str(), done["winner"].as_str(), done["resolved_by"].as_str()),
        (Some("resolved"), Some("fields"), Some("admin"))
    );
    let message = next(&mut resolved).await;
    assert_eq!(message["data"]["values"], json!({"email": "ann@crm.example", "phone": "3"}));
    // A double click: the second decision is refused, nothing is published again.
    let (status, _) =
        t.resolve(conflict.conflict_id, json!({"side": "remote"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 409);
    nothing_more(&mut resolved).await;
    let (status, _) = t.resolve(Uuid::now_v7(), json!({"side": "remote"}), Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 404);
    // Never repeated for the same conflict.
    t.publish(&conflict).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(t.smtp.mails().len(), 1);
    assert_eq!(t.slack.requests().iter().filter(|r| r.method == "POST").count(), 1);
}

#[tokio::test]
async fn a_priority_source_set_later_decides_escalated_conflicts_on_the_next_pass() {
    let t = spawn(Some(Duration::from_secs(1))).await;
    let mut resolved = t.resolutions().await;
    let conflict = contact(
        json!({"email": "ann@ours.example", "phone": "1"}),
        json!({"email": "ann@crm.example", "phone": "1"}),
        5,
    );
    t.publish(&conflict).await;
    t.conflict_when(conflict.conflict_id, "escalated").await;
    // Passes that decide nothing notify nobody again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(t.smtp.mails().len(), 1);
    let set = t
        .app
        .http
        .put(t.app.url("/admin/settings/sync_priority_source"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!("crm"))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let message = next(&mut resolved).await;
    assert_eq!(message["data"]["values"], json!({"email": "ann@crm.example"}));
    assert_eq!(message["data"]["resolved_by"], "rule:source_priority");
    t.conflict_when(conflict.conflict_id, "resolved").await;
    nothing_more(&mut resolved).await;
}

#[tokio::test]
async fn a_resolution_that_could_not_be_applied_goes_to_a_person_who_may_dismiss_it() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    // As crm-sync reports a resolution whose record is gone: disjoint changes, which a rule
    // would merge, but no rule decides such a conflict.
    let conflict = ConflictDetected {
        unapplied: Some(
            "the resolution of conflict X could not be applied: the record no longer exists here"
                .into(),
        ),
        ..contact(
            json!({"email": "ann@old.example", "phone": "9"}),
            json!({"email": "ann@crm.example", "phone": "1"}),
            0,
        )
    };
    t.publish(&conflict).await;
    let escalated = t.conflict_when(conflict.conflict_id, "escalated").await;
    assert!(escalated["explanation"].as_str().unwrap().contains("no longer exists"), "{escalated}");
    assert!(escalated["unapplied"].is_string());
    nothing_more(&mut resolved).await;
    let dismiss = |token: Option<&str>| {
        let mut request =
            t.app.http.post(t.app.url(&format!("/conflicts/{}/dismiss", conflict.conflict_id)));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(dismiss(None).await.unwrap().status(), 401);
    let done: Value = dismiss(Some(ADMIN_TOKEN)).await.unwrap().json().await.unwrap();
    assert_eq!(
        (done["status"].as_str(), done["winner"].as_str()),
        (Some("resolved"), Some("dismissed"))
    );
    assert_eq!(dismiss(Some(ADMIN_TOKEN)).await.unwrap().status(), 409);
    nothing_more(&mut resolved).await;
}

#[tokio::test]
async fn people_review_conflicts_in_a_real_browser_behind_a_login_and_csrf() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    let first = contact(
        json!({"email": "ann@ours.example", "phone": "3"}),
        json!({"email": "ann@crm.example", "phone": "1"}),
        10,
    );
    let second = ConflictDetected { conflict_id: Uuid::now_v7(), record_id: 8, ..first.clone() };
    t.publish(&first).await;
    t.publish(&second).await;
    t.conflict_when(first.conflict_id, "escalated").await;
    t.conflict_when(second.conflict_id, "escalated").await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");

    // No access without logging in.
    let anonymous =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = anonymous.get(t.app.url("/review")).send().await.unwrap();
    assert_eq!(
        (page.status().as_u16(), page.headers()["location"].to_str().unwrap()),
        (303, "/review/login")
    );

    let browser = harness::browser::Browser::start().await.expect("a headless chromium");
    browser.goto(&t.app.url("/review")).await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/review/login"));
    browser.type_into("#token", "wrong-token").await.unwrap();
    browser.click("#login").await.unwrap();
    browser.wait_for_text("body", "Wrong token").await.unwrap();
    browser.goto(&t.app.url("/review/login")).await.unwrap();
    browser.type_into("#token", ADMIN_TOKEN).await.unwrap();
    browser.click("#login").await.unwrap();
    browser.wait_for_url("/review").await.unwrap();
    assert_eq!(browser.count("#conflicts tbody tr").await.unwrap(), 2);

    // One conflict side by side, the changed cells highlighted; the reviewer keeps the CRM's
    // email and the local phone.
    browser.click(&format!("a[href=\"/review/conflicts/{}\"]", first.conflict_id)).await.unwrap();
    browser.wait_for_url(&format!("/review/conflicts/{}", first.conflict_id)).await.unwrap();
    assert_eq!(
        browser.count("#sides td.changed").await.unwrap(),
        3,
        "local email and phone, remote email"
    );
    browser.screenshot(&shots.join("conflict-review.png")).await.unwrap();
    browser.click("input[name=\"field.email\"][value=\"remote\"]").await.unwrap();
    browser.click("input[name=\"field.phone\"][value=\"local\"]").await.unwrap();
    browser.click("#resolve-fields").await.unwrap();
    browser.wait_for_text("#status", "resolved").await.unwrap();
    let message = next(&mut resolved).await;
    assert_eq!(message["data"]["values"], json!({"email": "ann@crm.example", "phone": "3"}));
    assert_eq!(message["data"]["conflict_id"], first.conflict_id.to_string());
    browser.screenshot(&shots.join("conflict-resolved.png")).await.unwrap();

    // A form posted without the session's CSRF token (another site's, say) changes nothing.
    let login = anonymous
        .post(t.app.url("/review/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    let cookie =
        login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    for csrf in [None, Some("forged")] {
        let mut form = "side=remote".to_owned();
        if let Some(csrf) = csrf {
            form.push_str(&format!("&csrf={csrf}"));
        }
        let forged = anonymous
            .post(t.app.url(&format!("/review/conflicts/{}/resolve", second.conflict_id)))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 422, "{csrf:?}");
    }
    nothing_more(&mut resolved).await;

    // Resolving many: the count first, then the resolutions.
    browser.goto(&t.app.url("/review?status=escalated")).await.unwrap();
    assert_eq!(browser.count("#conflicts tbody tr").await.unwrap(), 1);
    browser.click("#bulk input[value=\"remote\"]").await.unwrap();
    browser.click("#bulk-preview").await.unwrap();
    assert!(
        browser.text("#bulk-count").await.unwrap().starts_with("1 unresolved"),
        "{}",
        browser.text("body").await.unwrap()
    );
    browser.click("#bulk-confirm").await.unwrap();
    assert!(browser.text("#bulk-result").await.unwrap().starts_with("1 conflicts resolved"));
    let message = next(&mut resolved).await;
    assert_eq!(message["data"]["conflict_id"], second.conflict_id.to_string());
    assert_eq!(message["data"]["values"], json!({"email": "ann@crm.example", "phone": "1"}));
    assert!(shots.join("conflict-review.png").metadata().unwrap().len() > 1000);
}

#[tokio::test]
async fn the_json_bulk_resolve_counts_first_then_resolves_each_once() {
    let t = spawn(None).await;
    let mut resolved = t.resolutions().await;
    let conflicts: Vec<ConflictDetected> = (0..3)
        .map(|i| ConflictDetected {
            record_id: 100 + i,
            ..contact(
                json!({"email": "ann@ours.example", "phone": "1"}),
                json!({"email": "ann@crm.example", "phone": "1"}),
                10,
            )
        })
        .collect();
    for c in &conflicts {
        t.publish(c).await;
        t.conflict_when(c.conflict_id, "escalated").await;
    }
    let bulk = |body: Value| {
        t.app.http.post(t.app.url("/conflicts/resolve")).bearer_auth(ADMIN_TOKEN).json(&body).send()
    };
    let preview: Value = bulk(json!({"system": "crm", "status": "escalated", "side": "remote"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(preview, json!({"count": 3, "confirmed": false}));
    nothing_more(&mut resolved).await;
    let bad = bulk(json!({"side": "both"})).await.unwrap();
    assert_eq!(bad.status(), 422);
    let done: Value = bulk(json!({"system": "crm", "side": "remote", "confirm": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done, json!({"count": 3, "confirmed": true}));
    for _ in 0..3 {
        assert_eq!(
            next(&mut resolved).await["data"]["values"],
            json!({"email": "ann@crm.example"})
        );
    }
    let again: Value = bulk(json!({"system": "crm", "side": "local", "confirm": true}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["count"], 0, "nothing is resolved twice");
    nothing_more(&mut resolved).await;
}
