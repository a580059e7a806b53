use std::time::Duration;

use diesel::sql_types::{BigInt, Jsonb, Nullable, Text};
use diesel_async::RunQueryDsl;
use harness::{TestApp, TestDb, TestNats};
use sandbox::{Sandbox, WebhookSigner};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::{
    notify::{SmtpConfig, SmtpSecurity},
    outbound::{Endpoint, TargetAuth},
};

pub const WAIT: Duration = Duration::from_secs(20);
/// Standard Webhooks secrets: the current one and the one being rotated out.
pub const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const OLD_STANDARD_SECRET: &str = "whsec_c2VjcmV0LWJlaW5nLXJvdGF0ZWQtb3V0";
pub const HUBSPOT_SECRET: &str = "hubspot-client-secret-0123456789";

pub struct TestCrm {
    pub app: TestApp,
    pub sandbox: Sandbox,
    // Dropped last: the app must stop before its database and streams go.
    pub nats: TestNats,
    pub db: TestDb,
}

pub fn config_for(db: &TestDb, nats: &TestNats, sandbox: &Sandbox) -> crm_sync::Config {
    crm_sync::Config {
        common: harness::common_config(crm_sync::SERVICE, db, nats),
        crm: Some(Endpoint {
            base_url: sandbox.crm.base_url().to_owned(),
            auth: TargetAuth::Bearer(SecretString::from(sandbox.crm.credential())),
        }),
        standard_secrets: vec![STANDARD_SECRET.into(), OLD_STANDARD_SECRET.into()],
        hubspot_secrets: vec![HUBSPOT_SECRET.into()],
        field_map: Default::default(),
        inbound_batch: 128,
        inbound_concurrency: 2,
        push: shared::push::PushConfig { anti_entropy_every: None, ..Default::default() },
        reconcile_every: None,
        reconcile_grace: Duration::ZERO,
        bulk_quota_share: 0.5,
        bulk_notify: vec!["ops@example.com".into()],
        smtp: SmtpConfig {
            host: "127.0.0.1".into(),
            port: sandbox.smtp.port,
            security: SmtpSecurity::None,
            credentials: None,
            from: "datasync <datasync@localhost>".parse().unwrap(),
        },
    }
}

pub async fn spawn() -> TestCrm {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(adjust: impl FnOnce(&mut crm_sync::Config)) -> TestCrm {
    harness::init_logs();
    let db = TestDb::new().await;
    let nats = TestNats::new();
    let sandbox = Sandbox::start().await.expect("sandbox");
    let mut config = config_for(&db, &nats, &sandbox);
    adjust(&mut config);
    let app = TestApp::spawn(crm_sync::build(config).await.expect("crm-sync starts"));
    TestCrm { app, sandbox, nats, db }
}

pub fn standard() -> WebhookSigner {
    WebhookSigner::Standard { secret: STANDARD_SECRET.into() }
}

pub fn hubspot() -> WebhookSigner {
    WebhookSigner::HubSpot { secret: HUBSPOT_SECRET.into() }
}

impl TestCrm {
    /// Delivers `events` as the CRM's webhook sender does.
    pub async fn deliver(&self, signer: &WebhookSigner, events: &Value) -> (u16, Value) {
        sandbox::deliver(&self.app.http, &self.app.url("/webhooks/crm"), signer, events)
            .await
            .expect("deliver")
    }

    /// Runs SQL as another application would.
    pub async fn sql(&self, sql: &str) {
        let mut conn = self.db.connect().await;
        diesel::sql_query(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }

    /// A local record as JSON (`to_jsonb(row)`), by CRM id.
    pub async fn row(&self, table: &str, external_id: &str) -> Option<Value> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Nullable<Jsonb>)]
            row: Option<Value>,
        }
        let mut conn = self.db.connect().await;
        let found: Vec<Row> = diesel::sql_query(format!(
            "SELECT to_jsonb(t) AS row FROM crm.{table} t WHERE external_id = $1"
        ))
        .bind::<Text, _>(external_id)
        .load(&mut conn)
        .await
        .expect("row");
        found.into_iter().next().and_then(|r| r.row)
    }

    /// A local record as JSON, by local id.
    pub async fn row_by_id(&self, table: &str, id: i64) -> Value {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = Jsonb)]
            row: Value,
        }
        let mut conn = self.db.connect().await;
        diesel::sql_query(format!("SELECT to_jsonb(t) AS row FROM crm.{table} t WHERE id = $1"))
            .bind::<BigInt, _>(id)
            .get_result::<Row>(&mut conn)
            .await
            .expect("row by id")
            .row
    }

    /// Waits until `check` holds for the local row with this CRM id.
    pub async fn row_eventually(
        &self,
        table: &str,
        external_id: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        harness::eventually(WAIT, || async {
            self.row(table, external_id).await.filter(|r| check(r))
        })
        .await
        .unwrap_or_else(|| panic!("{table} {external_id} never reached the expected state"))
    }

    /// The status of an accepted event.
    pub async fn event_status(&self, id: &str) -> Value {
        self.app.admin_get(&format!("/events/{id}")).await.json().await.expect("event json")
    }

    pub async fn event_eventually(&self, id: &str, status: &str) -> Value {
        harness::eventually(WAIT, || async {
            let e = self.event_status(id).await;
            (e["status"] == status).then_some(e)
        })
        .await
        .unwrap_or_else(|| panic!("event {id} never became {status}"))
    }

    pub async fn admin_post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.app.admin_post(path, body).await
    }

    /// Sets the `push_max_attempts` runtime setting and waits until the service applies it.
    pub async fn set_push_max_attempts(&self, attempts: u32) {
        self.app.set_setting("push_max_attempts", json!(attempts)).await;
    }

    pub async fn assert_settled(&self, dead_letters: i64) {
        harness::assert_settled(&self.db, &self.nats, "crm", dead_letters).await;
    }
}
