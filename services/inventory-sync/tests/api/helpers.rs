use std::{collections::BTreeMap, time::Duration};

use harness::{TestApp, TestDb, TestNats};
use inventory_sync::{Config, config::target_auth};
use sandbox::{Sandbox, SimServer};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::db::group_commit::GroupCommitConfig;
use shared::{
    outbound::Endpoint,
    schemas::{
        Envelope,
        inventory::{CountReported, Target},
    },
};

/// The ERP's signing secret (a signature speaks for the sender whose secret made it).
pub const HMAC_SECRET: &str = "test-hmac-secret-0123456789";
pub const POS_HMAC_SECRET: &str = "test-pos-hmac-secret-0123456789";
pub const SOURCES: [&str; 5] = ["erp", "ecommerce", "pos", "wms", "manual"];

pub fn api_key(source: &str) -> String {
    format!("test-api-key-{source}-0123456789")
}

pub struct TestInventory {
    pub app: TestApp,
    pub sandbox: Sandbox,
    pub config: Config,
    // Dropped last: the app must stop before its database and streams go.
    pub nats: TestNats,
    pub db: TestDb,
}

pub fn config_for(db: &TestDb, nats: &TestNats, sandbox: &Sandbox) -> Config {
    let endpoint = |target: Target, sim: &SimServer| Endpoint {
        base_url: sim.base_url().to_owned(),
        auth: target_auth(target, SecretString::from(sim.credential())),
    };
    Config {
        common: harness::common_config(inventory_sync::SERVICE, db, nats),
        api_keys: SOURCES.iter().map(|s| (s.to_string(), SecretString::from(api_key(s)))).collect(),
        hmac_secrets: vec![
            ("erp".into(), SecretString::from(HMAC_SECRET)),
            ("pos".into(), SecretString::from(POS_HMAC_SECRET)),
        ],
        targets: BTreeMap::from([
            (Target::Erp, endpoint(Target::Erp, &sandbox.erp)),
            (Target::Ecommerce, endpoint(Target::Ecommerce, &sandbox.shop)),
            (Target::Pos, endpoint(Target::Pos, &sandbox.pos)),
            (Target::Wms, endpoint(Target::Wms, &sandbox.wms)),
        ]),
        adjuster: GroupCommitConfig { workers: 4, max_batch: 256 },
        push: shared::push::PushConfig {
            concurrency: 4,
            anti_entropy_every: None,
            ..Default::default()
        },
    }
}

pub async fn spawn() -> TestInventory {
    harness::init_logs();
    let db = TestDb::new().await;
    let nats = TestNats::new();
    let sandbox = Sandbox::start().await.expect("sandbox");
    let config = config_for(&db, &nats, &sandbox);
    let app =
        TestApp::spawn(inventory_sync::build(config.clone()).await.expect("inventory-sync starts"));
    TestInventory { app, sandbox, config, nats, db }
}

impl TestInventory {
    /// Sets the `push_max_attempts` runtime setting and waits until the service applies it.
    /// Publishes the ERP's count of `sku` in W1 as erp-sync does (`inventory.count.erp`),
    /// counted at `counted_at` by the ERP; `message` is the NATS message id (a redelivery
    /// through another path has another one).
    pub async fn publish_count(
        &self,
        sku: &str,
        reference: &str,
        on_hand: i64,
        counted_at: chrono::DateTime<chrono::Utc>,
        message: &str,
    ) {
        let js = async_nats::jetstream::new(self.nats.client().await);
        let count = Envelope::new(
            "erp-sync",
            CountReported {
                source: "erp".into(),
                reference: reference.into(),
                sku: sku.into(),
                warehouse: "W1".into(),
                on_hand,
                counted_at,
                version: None,
                reason: Some("ERP inventory updated".into()),
            },
        );
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", message);
        js.publish_with_headers(
            self.nats.subject("inventory.count.erp"),
            headers,
            serde_json::to_vec(&count).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }

    pub async fn set_push_max_attempts(&self, attempts: u32) {
        self.app.set_setting("push_max_attempts", json!(attempts)).await;
    }

    /// Ends a test: nothing left pending (outbox, consumers), exactly `dead_letters` dead letters.
    pub async fn assert_settled(&self, dead_letters: i64) {
        harness::assert_settled(&self.db, &self.nats, "inventory", dead_letters).await;
    }

    /// The entry of `GET /targets` for one target.
    pub async fn target_status(&self, target: &str) -> Option<Value> {
        let all: Vec<Value> = self.app.admin_get("/targets").await.json().await.ok()?;
        all.into_iter().find(|x| x["target"] == target)
    }

    pub async fn put_product(&self, sku: &str, reorder_point: i64) {
        let response = self
            .app
            .http
            .put(self.app.url(&format!("/products/{sku}")))
            .bearer_auth(harness::ADMIN_TOKEN)
            .json(&json!({"name": format!("Product {sku}"), "reorder_point": reorder_point, "reorder_quantity": 50}))
            .send()
            .await
            .expect("PUT product");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    /// POSTs an adjustment with the API key of its `source`.
    pub async fn adjust(&self, body: &Value) -> (u16, Value) {
        adjust_on(&self.app, body).await
    }

    pub async fn on_hand(&self, sku: &str, warehouse: &str) -> i64 {
        let stock: Value =
            self.app.admin_get(&format!("/stock/{sku}")).await.json().await.expect("stock json");
        stock["warehouses"]
            .as_array()
            .and_then(|ws| ws.iter().find(|w| w["warehouse"] == warehouse))
            .and_then(|w| w["on_hand"].as_i64())
            .unwrap_or(0)
    }

    pub async fn count(&self, sql: &str) -> i64 {
        self.db.count(sql).await
    }
}

pub async fn adjust_on(app: &TestApp, body: &Value) -> (u16, Value) {
    let source = body["source"].as_str().unwrap_or("pos");
    let response = app
        .http
        .post(app.url("/adjustments"))
        .header("X-API-Key", api_key(source))
        .json(body)
        .send()
        .await
        .expect("POST /adjustments");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn adjustment(source: &str, sku: &str, kind: &str, quantity: i64, reference: &str) -> Value {
    json!({"source": source, "sku": sku, "warehouse": "W1", "type": kind, "quantity": quantity,
           "reason": "test", "reference": reference})
}

/// Ten seconds: long enough for NATS redelivery on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(20);
