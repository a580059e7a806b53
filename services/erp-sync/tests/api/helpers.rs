use std::time::Duration;

use diesel::sql_types::{Jsonb, Text};
use diesel_async::RunQueryDsl;
use harness::{TestApp, TestDb, TestNats};
use serde_json::Value;

pub const WAIT: Duration = Duration::from_secs(20);
pub const API_KEY: &str = "erp-webhook-key-0123456789";
pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub struct TestErp {
    pub app: TestApp,
    pub smtp: sandbox::SmtpSink,
    /// The simulated ERP the service pushes to and loads from.
    pub erp: sandbox::SimServer,
    pub nats: TestNats,
    pub db: TestDb,
}

pub async fn spawn() -> TestErp {
    spawn_on(TestDb::new().await, TestNats::new()).await
}

/// erp-sync on a database and NATS prefix prepared by the test.
pub async fn spawn_on(db: TestDb, nats: TestNats) -> TestErp {
    spawn_with(db, nats, |_| {}).await
}

/// erp-sync with its configuration changed by `configure`.
pub async fn spawn_with(
    db: TestDb,
    nats: TestNats,
    configure: impl FnOnce(&mut erp_sync::Config),
) -> TestErp {
    harness::init_logs();
    let smtp = sandbox::SmtpSink::start().await.expect("SMTP sink");
    let erp = sandbox::SimServer::start(sandbox::System::Erp).expect("ERP simulator");
    let mut config = erp_sync::Config {
        common: harness::common_config(erp_sync::SERVICE, &db, &nats),
        api_keys: vec![API_KEY.into()],
        signing_secrets: vec![SIGNING_SECRET.into()],
        mail: erp_sync::mail::MailSettings {
            sales: Some("sales@example.com".into()),
            ..Default::default()
        },
        smtp: shared::notify::SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp.port,
            security: shared::notify::SmtpSecurity::None,
            credentials: None,
            from: "datasync <datasync@localhost>".parse().unwrap(),
        },
        erp: Some(shared::outbound::Endpoint {
            base_url: erp.base_url().to_owned(),
            auth: shared::outbound::TargetAuth::Bearer(erp.credential().into()),
        }),
        push: shared::push::PushConfig {
            anti_entropy_every: None,
            ..shared::push::PushConfig::default()
        },
        inbound_batch: 128,
        inbound_concurrency: 4,
        bulk_quota_share: 0.5,
    };
    configure(&mut config);
    let app = TestApp::spawn(erp_sync::build(config).await.expect("erp-sync starts"));
    TestErp { app, smtp, erp, nats, db }
}

impl TestErp {
    /// Posts an ERP webhook with the API key; status, body and whether it was a replay.
    pub async fn post(&self, body: &Value) -> (u16, Value, bool) {
        self.post_with(body, Some(API_KEY)).await
    }

    pub async fn post_with(&self, body: &Value, key: Option<&str>) -> (u16, Value, bool) {
        let mut request = self.app.http.post(self.app.url("/webhooks/erp")).json(body);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        let r = request.send().await.expect("POST webhook");
        let status = r.status().as_u16();
        let replayed = r.headers().contains_key("idempotent-replayed");
        (status, r.json().await.unwrap_or(Value::Null), replayed)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }

    /// A row as JSON (`to_jsonb(row)`) of `erp.<table>` whose `key` column is `id`.
    pub async fn row(&self, table: &str, key: &str, id: &str) -> Option<Value> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Jsonb)]
            row: Value,
        }
        let mut conn = self.db.connect().await;
        diesel::sql_query(format!("SELECT to_jsonb(t) AS row FROM erp.{table} t WHERE {key} = $1"))
            .bind::<Text, _>(id)
            .load::<Row>(&mut conn)
            .await
            .expect("row")
            .pop()
            .map(|r| r.row)
    }

    pub async fn event_eventually(&self, id: &str, status: &str) -> Value {
        harness::eventually(WAIT, || async {
            let e: Value = self.app.admin_get(&format!("/events/{id}")).await.json().await.ok()?;
            (e["status"] == status).then_some(e)
        })
        .await
        .unwrap_or_else(|| panic!("event {id} never became {status}"))
    }

    pub async fn assert_settled(&self) {
        self.assert_settled_with_dead_letters(0).await;
    }

    /// Nothing left pending, and exactly `dead_letters` dead letters written.
    pub async fn assert_settled_with_dead_letters(&self, dead_letters: i64) {
        harness::assert_settled(&self.db, &self.nats, "erp", dead_letters).await;
    }
}
