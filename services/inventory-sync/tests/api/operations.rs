use serde_json::Value;

use crate::helpers::{adjustment, spawn};

#[tokio::test]
async fn operator_endpoints_answer() {
    let t = spawn().await;

    let ready = t.app.http.get(t.app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let health = t.app.http.get(t.app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let openapi: Value =
        t.app.http.get(t.app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    for path in ["/adjustments", "/stock/{sku}", "/ledger/{sku}", "/readyz", "/admin/settings"] {
        assert!(openapi["paths"].get(path).is_some(), "{path} missing from OpenAPI");
    }
    // What OpenAPI validators require: every response described, every path parameter declared.
    for (path, operations) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                assert!(
                    response.get("description").is_some(),
                    "{method} {path} {status}: no description"
                );
            }
            for name in path.split('{').skip(1).filter_map(|p| p.split('}').next()) {
                let declared = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name && p["in"] == "path");
                assert!(declared, "{method} {path}: path parameter {name} not declared");
            }
        }
    }
    t.put_product("OPS-1", 0).await;
    t.adjust(&adjustment("pos", "OPS-1", "receipt", 1, "r")).await;
    let metrics = t.app.http.get(t.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("group_commit_batch_size_count{name=\"inventory_adjustments\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("http_requests_total"));
    t.assert_settled(0).await;
}

#[tokio::test]
async fn adjustments_survive_a_restart_and_their_pushes_complete_after_it() {
    let t = spawn().await;
    t.put_product("OPS-2", 0).await;
    t.sandbox.erp.fail_next(1, sandbox::Fault::Status(503));
    t.adjust(&adjustment("pos", "OPS-2", "receipt", 6, "r")).await;

    // A graceful stop (as on SIGTERM) with a push still pending, then a new process.
    let crate::helpers::TestInventory { app, sandbox, config, nats, db } = t;
    app.stop().await;
    let restarted = harness::TestApp::spawn(inventory_sync::build(config).await.unwrap());

    assert!(
        sandbox
            .erp
            .wait_until(crate::helpers::WAIT * 2, |x| x.level("OPS-2", "W1") == Some(6))
            .await
    );
    let stock: Value = restarted.admin_get("/stock/OPS-2").await.json().await.unwrap();
    assert_eq!(stock["on_hand"], 6);
    harness::assert_settled(&db, &nats, "inventory", 0).await;
    restarted.stop().await;
    drop((nats, db));
}

#[tokio::test]
async fn the_service_declares_its_own_runtime_settings_beside_the_platforms() {
    let t = spawn().await;
    let put = |key: &'static str, value: serde_json::Value| {
        t.app
            .http
            .put(t.app.url(&format!("/admin/settings/{key}")))
            .bearer_auth(harness::ADMIN_TOKEN)
            .json(&value)
            .send()
    };

    let defaults: Value = t.app.admin_get("/admin/settings").await.json().await.unwrap();
    let set = put("inventory-sync.low_stock_alerts", serde_json::json!(false)).await.unwrap();
    let wrong = put("inventory-sync.low_stock_alerts", serde_json::json!("no")).await.unwrap();
    let unknown = put("inventory-sync.colour", serde_json::json!(1)).await.unwrap();
    let foreign = put("crm-sync.anything", serde_json::json!(1)).await.unwrap();

    assert_eq!(defaults["inventory-sync"]["low_stock_alerts"], true);
    assert!(defaults.get("low_stock_alerts").is_none(), "no longer a platform setting");
    assert_eq!(set.status(), 200);
    for (response, field) in [
        (wrong, "inventory-sync.low_stock_alerts"),
        (unknown, "inventory-sync.colour"),
        (foreign, "crm-sync.anything"),
    ] {
        assert_eq!(response.status(), 422);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["field"], field, "{problem}");
    }
    let applied = harness::eventually(crate::helpers::WAIT, || async {
        let s: Value = t.app.admin_get("/admin/settings").await.json().await.ok()?;
        (s["inventory-sync"]["low_stock_alerts"] == false).then_some(())
    });
    assert!(applied.await.is_some(), "the watch applies the stored value");
    t.assert_settled(0).await;
}
