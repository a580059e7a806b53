//! Two inventory-sync replicas against the same PostgreSQL and NATS under concurrent load give
//! exactly the result one would: no lost or doubled adjustment, every target ends with the
//! final level, and pushes are coalesced rather than storming the targets.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::join_all;
use harness::{TestApp, TestDb, TestNats};
use rand::Rng;
use sandbox::Sandbox;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::{outbound::Endpoint, schemas::inventory::Target};

const KEY: &str = "e2e-manual-key-0123456789";
const CLIENTS: usize = 64;
const PER_CLIENT: usize = 30;
const SKUS: usize = 12;

fn config(db: &TestDb, nats: &TestNats, sandbox: &Sandbox) -> inventory_sync::Config {
    let endpoint = |target, sim: &sandbox::SimServer| Endpoint {
        base_url: sim.base_url().to_owned(),
        auth: inventory_sync::config::target_auth(target, SecretString::from(sim.credential())),
    };
    inventory_sync::Config {
        common: harness::common_config(inventory_sync::SERVICE, db, nats),
        api_keys: vec![("manual".into(), SecretString::from(KEY))],
        hmac_secrets: vec![],
        targets: BTreeMap::from([
            (Target::Erp, endpoint(Target::Erp, &sandbox.erp)),
            (Target::Ecommerce, endpoint(Target::Ecommerce, &sandbox.shop)),
            (Target::Pos, endpoint(Target::Pos, &sandbox.pos)),
            (Target::Wms, endpoint(Target::Wms, &sandbox.wms)),
        ]),
        adjuster: shared::db::group_commit::GroupCommitConfig { workers: 4, max_batch: 256 },
        push: shared::push::PushConfig {
            concurrency: 4,
            anti_entropy_every: None,
            ..Default::default()
        },
    }
}

fn sku(i: usize) -> String {
    format!("LOAD-{i}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_under_concurrent_load_lose_and_double_nothing_and_every_target_converges() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let sandbox = Sandbox::start().await.unwrap();
    let cfg = config(&db, &nats, &sandbox);
    let replicas = [
        TestApp::spawn(inventory_sync::build(cfg.clone()).await.unwrap()),
        TestApp::spawn(inventory_sync::build(cfg.clone()).await.unwrap()),
    ];
    let http = harness::test_client();
    for i in 0..SKUS {
        let r = http
            .put(replicas[0].url(&format!("/products/{}", sku(i))))
            .bearer_auth(harness::ADMIN_TOKEN)
            .json(&json!({"name": format!("Load {i}"), "reorder_point": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // Each client sends adjustments alternately to both replicas; sku 0 is hot (half the
    // traffic). Every fifth request is retried against the other replica.
    let applied: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
    let created = Arc::new(Mutex::new(0usize));
    join_all((0..CLIENTS).map(|client| {
        let (http, applied, created) = (http.clone(), applied.clone(), created.clone());
        let urls = [replicas[0].url("/adjustments"), replicas[1].url("/adjustments")];
        async move {
            for n in 0..PER_CLIENT {
                let (sku_index, kind, qty) = {
                    let mut rng = rand::rng();
                    let sku_index = if rng.random_bool(0.5) { 0 } else { rng.random_range(1..SKUS) };
                    let kind = if rng.random_bool(0.55) { "receipt" } else { "shipment" };
                    (sku_index, kind, rng.random_range(1..=5i64))
                };
                let body = json!({"source": "manual", "sku": sku(sku_index), "warehouse": "W1", "type": kind,
                    "quantity": qty, "reference": format!("c{client}-n{n}")});
                // Like any client, retry when the connection drops before the answer arrives;
                // the reference makes that safe (a second attempt gets the first answer).
                let send = |url: String| {
                    let (http, body) = (http.clone(), body.clone());
                    async move {
                        let mut attempt = 0;
                        loop {
                            attempt += 1;
                            match http.post(&url).header("X-API-Key", KEY).json(&body).send().await {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    break (status, r.json::<Value>().await.unwrap());
                                }
                                Err(e) if attempt < 5 => eprintln!("retrying after transport error: {e}"),
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                };
                let (status, answer) = send(urls[n % 2].clone()).await;
                // A retry after a dropped connection answers as the first time (see `send`).
                assert!(matches!(status, 201 | 422), "{status}: {answer}");
                if status != 422 {
                    let delta = answer["new_quantity"].as_i64().unwrap() - answer["quantity_before"].as_i64().unwrap();
                    *applied.lock().unwrap().entry(sku(sku_index)).or_default() += delta;
                    *created.lock().unwrap() += 1;
                    if n % 5 == 0 {
                        let (retry_status, retry) = send(urls[(n + 1) % 2].clone()).await;
                        assert_eq!(retry_status, 201, "{retry}");
                        assert_eq!(retry["ledger_id"], answer["ledger_id"]);
                    }
                }
            }
        }
    }))
    .await;

    let applied = applied.lock().unwrap().clone();
    let created = *created.lock().unwrap();
    let mut expected_levels = BTreeMap::new();
    for i in 0..SKUS {
        let stock: Value =
            replicas[1].admin_get(&format!("/stock/{}", sku(i))).await.json().await.unwrap();
        let on_hand = stock["on_hand"].as_i64().unwrap();
        assert_eq!(
            on_hand,
            applied.get(&sku(i)).copied().unwrap_or(0),
            "{}: lost or doubled adjustment",
            sku(i)
        );
        expected_levels.insert(sku(i), on_hand);
    }
    let ledger_rows: usize = {
        let mut total = 0;
        for i in 0..SKUS {
            // Paged: the hot sku alone has about a thousand rows.
            let mut before = i64::MAX;
            loop {
                let rows: Vec<Value> = replicas[0]
                    .admin_get(&format!("/ledger/{}?limit=1000&before={before}", sku(i)))
                    .await
                    .json()
                    .await
                    .unwrap();
                total += rows.len();
                match rows.last().and_then(|r| r["id"].as_i64()) {
                    Some(id) if rows.len() == 1000 => before = id,
                    _ => break,
                }
            }
        }
        total
    };
    assert_eq!(ledger_rows, created, "one ledger row per applied adjustment");
    assert_eq!(replicas[0].admin_get("/reconciliation").await.status(), 200);

    for sim in [&sandbox.erp, &sandbox.shop, &sandbox.pos, &sandbox.wms] {
        let converged = sim
            .wait_until(Duration::from_secs(60), |s| {
                expected_levels
                    .iter()
                    .filter(|(k, _)| applied.contains_key(*k))
                    .all(|(k, v)| s.level(k, "W1") == Some(*v))
            })
            .await;
        assert!(converged, "{:?} did not converge", sim.system());
        let level_pushes =
            sim.accepted().into_iter().filter(|r| !r.path.contains("/products/")).count();
        assert!(
            level_pushes <= created,
            "{:?}: {level_pushes} pushes for {created} adjustments",
            sim.system()
        );
    }
    harness::assert_settled(&db, &nats, "inventory", 0).await;
    for app in replicas {
        app.stop().await;
    }
}
