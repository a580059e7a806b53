//! sync-monitor against the real PostgreSQL, NATS and HTTP: what the other services announce
//! becomes health figures, a change of the platform's state notifies the sandbox's Slack and
//! PagerDuty once, alerts are routed, settings changes are audited, and the dashboard works in a
//! real browser.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use harness::{ADMIN_TOKEN, TestApp, TestDb, TestNats};
use sandbox::{SimServer, System};
use serde_json::{Value, json};
use shared::schemas::{
    Envelope, Event,
    conflict::{ConflictDetected, ConflictEscalated},
    sync::{AlertRaised, Direction, RecordSynced, Severity, SyncBatchRecorded, SyncStatus},
};

const WAIT: Duration = Duration::from_secs(20);

struct TestMonitor {
    app: TestApp,
    db: TestDb,
    nats: TestNats,
    slack: SimServer,
    pagerduty: SimServer,
}

async fn spawn() -> TestMonitor {
    harness::init_logs();
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let slack = SimServer::start(System::Slack).unwrap();
    let pagerduty = SimServer::start(System::PagerDuty).unwrap();
    let mut config =
        sync_monitor::Config::defaults(harness::common_config(sync_monitor::SERVICE, &db, &nats));
    config.check_every = None;
    config.slack = Some(shared::notify::Slack { webhook_url: slack.url().into() });
    config.pagerduty = Some(shared::notify::PagerDuty {
        events_url: pagerduty.base_url().to_owned(),
        routing_key: System::PagerDuty.credential().into(),
    });
    let app = TestApp::spawn(sync_monitor::build(config).await.unwrap());
    TestMonitor { app, db, nats, slack, pagerduty }
}

impl TestMonitor {
    async fn publish<T: Event>(&self, data: T) -> Envelope<T> {
        let envelope = Envelope::new("test", data);
        self.publish_envelope(&envelope).await;
        envelope
    }

    async fn publish_envelope<T: Event>(&self, envelope: &Envelope<T>) {
        let js = async_nats::jetstream::new(self.nats.client().await);
        js.publish(
            self.nats.subject(&envelope.subject()),
            serde_json::to_vec(envelope).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    /// `n` sync attempts with `system` in one announcement.
    async fn attempts(&self, system: &str, status: SyncStatus, n: usize) {
        self.publish(SyncBatchRecorded {
            system: system.into(),
            direction: Direction::Outbound,
            entity: "level".into(),
            records: (0..n)
                .map(|i| RecordSynced {
                    record_id: format!("SKU-{i}"),
                    status,
                    http_status: Some(if status == SyncStatus::Synced { 200 } else { 503 }),
                    detail: None,
                })
                .collect(),
        })
        .await;
    }

    async fn stored_events(&self) -> i64 {
        self.db.count("SELECT count(*) AS n FROM monitor.sync_events").await
    }

    async fn until_stored(&self, n: i64) {
        let stored =
            harness::eventually(WAIT, || async { (self.stored_events().await >= n).then_some(()) });
        assert!(stored.await.is_some(), "{} of {n} events stored", self.stored_events().await);
    }

    async fn check(&self) -> Value {
        let r = self
            .app
            .http
            .post(self.app.url("/api/health/check"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn health(&self) -> Value {
        self.app.admin_get("/api/health").await.json().await.unwrap()
    }

    fn slack_texts(&self) -> Vec<String> {
        self.slack
            .requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .filter_map(|r| r.body["text"].as_str().map(str::to_owned))
            .collect()
    }
}

fn integration<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["integrations"].as_array().unwrap().iter().find(|i| i["name"] == name).unwrap()
}

#[tokio::test]
async fn each_change_of_the_platforms_state_notifies_slack_and_pagerduty_once() {
    let t = spawn().await;
    t.attempts("crm", SyncStatus::Synced, 3).await;
    t.until_stored(3).await;
    let healthy = t.check().await;
    assert_eq!(healthy["status"], "healthy");
    assert_eq!(
        (
            integration(&healthy, "crm")["status"].as_str(),
            integration(&healthy, "pos")["status"].as_str()
        ),
        (Some("ok"), Some("idle"))
    );
    assert_eq!(integration(&healthy, "crm")["synced_1h"], 3);

    // The shop refuses six pushes within the hour.
    t.attempts("ecommerce", SyncStatus::Failed, 6).await;
    t.until_stored(9).await;
    let unhealthy = t.check().await;
    assert_eq!(unhealthy["status"], "unhealthy");
    assert_eq!(integration(&unhealthy, "ecommerce")["status"], "error");
    assert!(t.slack.wait_until(WAIT, |s| !s.requests().is_empty()).await);
    let paged = t.pagerduty.wait_until(WAIT, |pd| !pd.incidents().is_empty()).await;
    assert!(paged);
    let incident = &t.pagerduty.incidents()[0];
    assert_eq!(
        (
            incident.dedup_key.as_str(),
            incident.status.as_str(),
            incident.summary.as_str(),
            incident.severity.as_str()
        ),
        ("datasync/sync-health", "triggered", "Data sync system unhealthy", "critical")
    );
    let texts = t.slack_texts();
    assert!(
        texts[0]
            .starts_with("🚨 *Data Sync Unhealthy*\n\n• ecommerce has 6 errors in the last hour"),
        "{texts:?}"
    );

    // Checked again, still unhealthy: nothing new is sent.
    t.check().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(t.slack_texts().len(), 1);
    assert_eq!(t.pagerduty.incidents()[0].triggers, 1);

    // An hour later the errors are history: healthy again, the page is resolved.
    let mut conn = t.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE monitor.sync_events SET at = at - interval '2 hours' WHERE system = 'ecommerce'"),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(t.check().await["status"], "healthy");
    let resolved = t.pagerduty.wait_until(WAIT, |pd| pd.incidents()[0].status == "resolved").await;
    assert!(resolved, "{:?}", t.pagerduty.incidents());
    assert!(t.slack.wait_until(WAIT, |s| s.requests().len() == 2).await);
    assert!(t.slack_texts()[1].starts_with("✅ *Data Sync Healthy again*"));
    // Every request the channels got was valid.
    assert!(t.slack.requests().iter().chain(t.pagerduty.requests().iter()).all(|r| r.status < 300));
    let reports = t.db.count("SELECT count(*) AS n FROM monitor.health_reports").await;
    assert_eq!(reports, 4, "each check is a stored report");
}

#[tokio::test]
async fn a_redelivered_announcement_is_stored_once_and_queues_are_read_from_jetstream() {
    let t = spawn().await;
    let envelope = t
        .publish(SyncBatchRecorded {
            system: "wms".into(),
            direction: Direction::Outbound,
            entity: "level".into(),
            records: vec![RecordSynced {
                record_id: "A".into(),
                status: SyncStatus::Synced,
                http_status: Some(200),
                detail: None,
            }],
        })
        .await;
    t.until_stored(1).await;
    // The same message again (a redelivery after a crash, say), under another JetStream msg id.
    let js = async_nats::jetstream::new(t.nats.client().await);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
    js.publish_with_headers(
        t.nats.subject(&envelope.subject()),
        headers,
        serde_json::to_vec(&envelope).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    t.attempts("wms", SyncStatus::Synced, 1).await;
    t.until_stored(2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(t.stored_events().await, 2);
    assert_eq!(
        t.db.count("SELECT sum(synced)::bigint AS n FROM monitor.hourly WHERE system = 'wms'")
            .await,
        2
    );

    // A WMS push consumer with 1,001 messages waiting: a backlog.
    let stream = js.get_stream(format!("{}_OUTBOUND", t.nats.prefix)).await.unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(format!("{}_push-wms-level", t.nats.prefix)),
            filter_subject: t.nats.subject("outbound.wms.level"),
            ..Default::default()
        })
        .await
        .unwrap();
    let acks: Vec<_> =
        futures::future::join_all((0..1001).map(|i| {
            let js = js.clone();
            let subject = t.nats.subject("outbound.wms.level");
            async move {
                js.publish(subject, format!("{{\"n\":{i}}}").into()).await.unwrap().await.unwrap()
            }
        }))
        .await;
    assert_eq!(acks.len(), 1001);
    let report = t.check().await;
    assert_eq!(integration(&report, "wms")["queue_depth"], 1001);
    assert_eq!(report["status"], "degraded");
    assert_eq!(report["issues"][0]["type"], "queue_backlog");
    let metrics = t.app.http.get(t.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("monitor_queue_depth{integration=\"wms\"} 1001"), "{metrics}");
    assert!(metrics.contains("monitor_overall_status 1"));
}

#[tokio::test]
async fn alerts_are_routed_by_severity_once_and_conflicts_link_to_their_review() {
    let t = spawn().await;
    let alert = AlertRaised {
        severity: Severity::Critical,
        kind: "out_of_stock".into(),
        title: "Out of Stock: MUG-1".into(),
        text: "MUG-1 has no stock left in W1".into(),
        dedup_key: "out_of_stock:MUG-1:W1".into(),
        fields: Default::default(),
    };
    t.publish(alert.clone()).await;
    t.publish(alert.clone()).await;
    t.publish(AlertRaised {
        severity: Severity::Info,
        kind: "bulk_completed".into(),
        dedup_key: "bulk:1".into(),
        ..alert.clone()
    })
    .await;
    // Critical: PagerDuty and Slack (email has no recipients set); info: nowhere.
    assert!(t.pagerduty.wait_until(WAIT, |pd| !pd.incidents().is_empty()).await);
    assert!(t.slack.wait_until(WAIT, |s| !s.requests().is_empty()).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        t.slack_texts(),
        [
            "*Out of Stock: MUG-1*\nMUG-1 has no stock left in W1\n<http://localhost:8086/dashboard|Open the dashboard>"
        ]
    );
    let incidents = t.pagerduty.incidents();
    assert_eq!(
        (incidents.len(), incidents[0].dedup_key.as_str(), incidents[0].triggers),
        (1, "out_of_stock:MUG-1:W1", 1)
    );
    assert_eq!(
        t.db.count(
            "SELECT count AS n FROM monitor.alerts WHERE dedup_key = 'out_of_stock:MUG-1:W1'"
        )
        .await,
        2
    );

    // A conflict detected, then escalated.
    let detected = ConflictDetected {
        conflict_id: uuid::Uuid::now_v7(),
        system: "crm".into(),
        entity: "contact".into(),
        record_id: 7,
        external_id: "501".into(),
        fields: vec!["email".into()],
        base: Default::default(),
        local: Default::default(),
        remote: Default::default(),
        local_updated_at: chrono::Utc::now(),
        remote_updated_at: chrono::Utc::now(),
        local_clock: None,
        remote_clock: None,
        unapplied: None,
    };
    t.publish(detected.clone()).await;
    t.publish(ConflictEscalated {
        conflict_id: detected.conflict_id,
        system: "crm".into(),
        entity: "contact".into(),
        record_id: 7,
        external_id: "501".into(),
        local_changes: Default::default(),
        remote_changes: Default::default(),
        review_url: "http://resolver.example/review/conflicts/x".into(),
    })
    .await;
    let escalated = harness::eventually(WAIT, || async {
        (t.db.count("SELECT count(*) AS n FROM monitor.conflicts WHERE status = 'escalated'").await
            == 1)
            .then_some(())
    });
    assert!(escalated.await.is_some());
    let health = t.health().await;
    assert_eq!(
        health["conflicts"][0]["review_url"],
        format!("http://localhost:8085/review/conflicts/{}", detected.conflict_id)
    );
    t.check().await;
    assert_eq!(integration(&t.health().await, "crm")["escalated_conflicts"], 1);
}

#[tokio::test]
async fn settings_changes_are_audited_and_take_effect_on_the_next_check() {
    let t = spawn().await;
    t.attempts("erp", SyncStatus::Synced, 1).await;
    t.until_stored(1).await;
    let mut conn = t.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE monitor.last_success SET at = now() - interval '10 minutes'"),
        &mut conn,
    )
    .await
    .unwrap();
    assert_eq!(t.check().await["status"], "healthy");
    let set = |body: Value| {
        let (http, url) = (t.app.http.clone(), t.app.url("/api/settings/max_sync_lag_secs"));
        async move { http.put(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.unwrap() }
    };
    let refused = set(json!({"erp": "soon"})).await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["field"], "max_sync_lag_secs", "{body}");
    assert_eq!(set(json!({"erp": 300})).await.status(), 200);
    let applied = harness::eventually(WAIT, || async {
        let report = t.check().await;
        (report["status"] == "degraded").then_some(report)
    })
    .await
    .expect("the new maximum applies");
    assert_eq!(applied["issues"][0]["message"], "erp sync lag: 10 minutes (max: 5)");
    // A change through a service's own admin API (every service has /admin/settings) is
    // audited as well: every change is announced on sync.events.<service>.settings.
    let direct = t
        .app
        .http
        .put(t.app.url("/admin/settings/max_sync_lag_secs"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"erp": 400}))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    let audit = harness::eventually(WAIT, || async {
        let audit: Value = t.app.admin_get("/api/settings/audit").await.json().await.ok()?;
        (audit.as_array()?.len() == 2).then_some(audit)
    })
    .await
    .expect("both changes are audited, the refused one is not");
    let entry = |a: &Value| {
        (
            a["service"].clone(),
            a["who"].clone(),
            a["key"].clone(),
            a["old_value"].clone(),
            a["new_value"].clone(),
        )
    };
    assert_eq!(
        entry(&audit[1]),
        entry(&json!({"service": "sync-monitor", "who": "admin token", "key": "max_sync_lag_secs",
            "old_value": {}, "new_value": {"erp": 300}}))
    );
    assert_eq!(
        entry(&audit[0]),
        entry(&json!({"service": "sync-monitor", "who": "admin token", "key": "max_sync_lag_secs",
            "old_value": {"erp": 300}, "new_value": {"erp": 400}}))
    );
    // Without the admin token, nothing.
    let anonymous = t.app.http.get(t.app.url("/api/health")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn the_dashboard_shows_healthy_degraded_and_unhealthy_in_a_real_browser() {
    let t = spawn().await;
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    for system in ["crm", "erp", "wms"] {
        t.attempts(system, SyncStatus::Synced, 40).await;
    }
    t.until_stored(120).await;
    t.check().await;

    let anonymous =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = anonymous.get(t.app.url("/dashboard")).send().await.unwrap();
    assert_eq!(
        (page.status().as_u16(), page.headers()["location"].to_str().unwrap()),
        (303, "/dashboard/login")
    );

    let browser = harness::browser::Browser::start().await.expect("a headless chromium");
    browser.goto(&t.app.url("/dashboard/login")).await.unwrap();
    browser.type_into("#token", ADMIN_TOKEN).await.unwrap();
    browser.click("#login").await.unwrap();
    browser.wait_for_url("/dashboard").await.unwrap();
    browser.wait_for_text("#overall", "healthy").await.unwrap();
    assert_eq!(browser.count("#integrations tbody tr").await.unwrap(), 6);
    assert_eq!(browser.count("#integrations svg.chart").await.unwrap(), 6);
    browser.screenshot(&shots.join("dashboard-healthy.png")).await.unwrap();

    // A lagging ERP: degraded, shown after "Check now" without a reload.
    let mut conn = t.db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("UPDATE monitor.last_success SET at = now() - interval '45 minutes' WHERE system = 'erp'"),
        &mut conn,
    )
    .await
    .unwrap();
    browser.click("#check-now").await.unwrap();
    browser.wait_for_text("#overall", "degraded").await.unwrap();
    browser.wait_for_text("#issues", "erp sync lag: 45 minutes (max: 30)").await.unwrap();
    browser.screenshot(&shots.join("dashboard-degraded.png")).await.unwrap();

    // The shop target failing: unhealthy, with its dead letter.
    t.attempts("ecommerce", SyncStatus::Failed, 8).await;
    t.publish(shared::schemas::sync::MessageDeadLettered {
        service: "inventory-sync".into(),
        consumer: "push-ecommerce-level".into(),
        dead_letter_id: uuid::Uuid::now_v7(),
        subject: "inventory.level.W1.MUG-1".into(),
        error: "ecommerce answered 503 eight times".into(),
        deliveries: 8,
    })
    .await;
    t.until_stored(128).await;
    let dead_letter = harness::eventually(WAIT, || async {
        (t.db.count("SELECT count(*) AS n FROM monitor.service_dead_letters").await == 1)
            .then_some(())
    });
    assert!(dead_letter.await.is_some());
    browser.click("#check-now").await.unwrap();
    browser.wait_for_text("#overall", "unhealthy").await.unwrap();
    browser
        .wait_for_text("#integrations tr[data-integration=\"ecommerce\"]", "error")
        .await
        .unwrap();
    browser.wait_for_text("#dead-letters", "ecommerce answered 503").await.unwrap();
    browser.screenshot(&shots.join("dashboard-unhealthy.png")).await.unwrap();

    // "Is this record stuck, and why": its last attempt failed.
    browser.type_into("#record-id", "SKU-3").await.unwrap();
    browser.click("#record-find").await.unwrap();
    browser.wait_for_text("#record-verdict", "stuck").await.unwrap();
    browser.wait_for_text("#record-result", "last sync attempt retrying").await.unwrap();
    assert_eq!(
        browser.count("#record-trail tbody tr").await.unwrap(),
        4,
        "three synced, one failed"
    );
    browser.screenshot(&shots.join("dashboard-record-trail.png")).await.unwrap();
}
