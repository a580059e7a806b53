//! sync-monitor with a connector: an order the ERP refuses is found on the dashboard's API by
//! its id, with its whole trail across erp-sync (the webhook applied, the refused push, the
//! error-ledger row) and the verdict "stuck, and why"; retrying it from the monitor reaches
//! erp-sync's admin API.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use diesel_async::RunQueryDsl;
use harness::{ADMIN_TOKEN, TestApp, TestDb, TestNats};
use sandbox::{Fault, SimServer, System};
use serde_json::{Value, json};

const KEY: &str = "e2e-erp-webhook-key-0123456789";
const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_stuck_order_is_found_by_its_id_with_its_whole_trail_across_services() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let erp = SimServer::start(System::Erp).unwrap();
    // erp-sync has an admin token of its own (ADMIN_TOKEN_ERP_SYNC); the monitor holds it.
    const ERP_ADMIN: &str = "erp-sync-own-admin-token-0123";
    let mut erp_common = harness::common_config(erp_sync::SERVICE, &db, &nats);
    erp_common.admin_token = ERP_ADMIN.into();
    let mut erp_config = erp_sync::Config::unconnected(erp_common).unwrap();
    erp_config.api_keys = vec![KEY.into()];
    erp_config.erp = Some(shared::outbound::Endpoint {
        base_url: erp.base_url().to_owned(),
        auth: shared::outbound::TargetAuth::Bearer(erp.credential().into()),
    });
    let erp_sync = TestApp::spawn(erp_sync::build(erp_config).await.unwrap());
    let mut monitor_config =
        sync_monitor::Config::defaults(harness::common_config(sync_monitor::SERVICE, &db, &nats));
    monitor_config.check_every = None;
    monitor_config.services = [("erp-sync".to_owned(), erp_sync.url(""))].into_iter().collect();
    monitor_config.service_tokens = [("erp-sync".to_owned(), ERP_ADMIN.into())].into();
    let monitor = TestApp::spawn(sync_monitor::build(monitor_config).await.unwrap());

    // The ERP reports an order; then a local change of its status is refused by the ERP.
    let event = erp.erp_record(
        "orders",
        "SO-77",
        json!({"orderNumber": "77", "customerId": "C-1", "status": "open", "total": 10,
            "updatedAt": "2026-01-01T09:00:00Z"}),
    );
    let r = erp_sync
        .http
        .post(erp_sync.url("/webhooks/erp"))
        .header("X-API-Key", KEY)
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let stored = harness::eventually(WAIT, || async {
        (db.count("SELECT count(*) AS n FROM erp.orders WHERE erp_order_id = 'SO-77'").await == 1)
            .then_some(())
    });
    assert!(stored.await.is_some());
    erp.fail_next(1, Fault::Status(422));
    let mut conn = db.connect().await;
    diesel::sql_query("UPDATE erp.orders SET status = 'cancelled' WHERE erp_order_id = 'SO-77'")
        .execute(&mut conn)
        .await
        .unwrap();

    // The monitor finds it, stuck, with why and every step.
    let trail = harness::eventually(WAIT, || async {
        let t: Value = monitor.admin_get("/api/records/SO-77").await.json().await.ok()?;
        let kinds: Vec<&str> =
            t["trail"].as_array()?.iter().filter_map(|e| e["kind"].as_str()).collect();
        (t["stuck"] == true
            && kinds.contains(&"error ledger")
            && kinds.iter().filter(|k| **k == "sync").count() >= 2)
            .then_some(t)
    })
    .await;
    let trail = trail.expect("a stuck trail with the ledger row and both sync steps");
    assert!(trail["why"][0].as_str().unwrap().starts_with("error ledger:"), "{trail}");
    let steps: Vec<(String, String)> = trail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["what"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(steps.iter().any(|(k, w)| k == "sync" && w.starts_with("inbound")), "{steps:?}");
    assert!(steps.iter().any(|(k, w)| k == "sync" && w.starts_with("outbound")), "{steps:?}");
    assert_eq!(trail["unreachable"], json!([]));
    // The health check counts the open ledger row for the ERP.
    let report: Value = monitor
        .http
        .post(monitor.url("/api/health/check"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let erp_figures =
        report["integrations"].as_array().unwrap().iter().find(|i| i["name"] == "erp").unwrap();
    assert_eq!(
        (erp_figures["ledger_open"].as_i64(), erp_figures["status"].as_str()),
        (Some(1), Some("warning"))
    );
    assert!(
        report["issues"].as_array().unwrap().iter().any(|i| i["type"] == "record_errors"),
        "{report}"
    );
    // A record nobody knows is not stuck and has no trail.
    let unknown: Value = monitor.admin_get("/api/records/NOPE-1").await.json().await.unwrap();
    assert_eq!(
        (unknown["stuck"].as_bool(), unknown["trail"].as_array().map(Vec::len)),
        (Some(false), Some(0))
    );

    // Retried from the monitor: erp-sync pushes it again and the ERP takes it.
    let row = trail["trail"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "error ledger")
        .unwrap()
        .clone();
    let retried = monitor
        .http
        .post(monitor.url(&format!("/api/record-errors/erp-sync/{}/retry", row["link"])))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200, "{:?}", retried.text().await);
    let pushed = erp
        .wait_until(WAIT, |erp| erp.erp_get("orders", "SO-77").unwrap()["status"] == "cancelled");
    assert!(pushed.await);
    let settled = harness::eventually(WAIT, || async {
        let t: Value = monitor.admin_get("/api/records/SO-77").await.json().await.ok()?;
        (t["stuck"] == false).then_some(())
    });
    assert!(settled.await.is_some(), "still stuck after the retry");
}
