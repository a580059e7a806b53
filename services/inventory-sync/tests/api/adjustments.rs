use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{HMAC_SECRET, POS_HMAC_SECRET, adjust_on, adjustment, spawn};

#[tokio::test]
async fn a_receipt_adds_stock_and_answers_with_the_new_quantity() {
    let t = spawn().await;
    t.put_product("MUG-1", 5).await;

    let (status, body) = t.adjust(&adjustment("pos", "MUG-1", "receipt", 12, "r-1")).await;

    assert_eq!(status, 201, "{body}");
    assert_eq!(body["new_quantity"], 12);
    assert_eq!(body["quantity_before"], 0);
    assert_eq!(t.on_hand("MUG-1", "W1").await, 12);
    let ledger: serde_json::Value = t.app.admin_get("/ledger/MUG-1").await.json().await.unwrap();
    assert_eq!(ledger.as_array().unwrap().len(), 1);
    assert_eq!(ledger[0]["delta"], 12);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn each_adjustment_type_moves_stock_the_right_way() {
    let t = spawn().await;
    t.put_product("MUG-2", 0).await;
    let steps = [
        ("receipt", 10, 10),
        ("transfer_in", 5, 15),
        ("shipment", 3, 12),
        ("transfer_out", 2, 10),
        ("count", 7, 7),
        ("adjustment", 9, 9),
    ];
    for (i, (kind, qty, expected)) in steps.into_iter().enumerate() {
        let (status, body) =
            t.adjust(&adjustment("wms", "MUG-2", kind, qty, &format!("s-{i}"))).await;
        assert_eq!(status, 201, "{kind}: {body}");
        assert_eq!(body["new_quantity"], expected, "{kind}");
    }
    assert_eq!(
        t.count("SELECT sum(delta)::bigint AS n FROM inventory.ledger WHERE sku = 'MUG-2'").await,
        9
    );
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_shipment_below_zero_is_refused_with_both_quantities_and_writes_nothing() {
    let t = spawn().await;
    t.put_product("MUG-3", 0).await;
    t.adjust(&adjustment("pos", "MUG-3", "receipt", 2, "in")).await;

    let (status, body) = t.adjust(&adjustment("pos", "MUG-3", "shipment", 5, "out")).await;

    assert_eq!(status, 422, "{body}");
    assert_eq!(body["current_qty"], 2);
    assert_eq!(body["attempted_qty"], -3);
    assert_eq!(body["detail"], "Inventory cannot be negative");
    assert_eq!(t.on_hand("MUG-3", "W1").await, 2);
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.ledger").await, 1);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_retry_returns_the_first_answer_and_changes_nothing() {
    let t = spawn().await;
    t.put_product("MUG-4", 0).await;
    let request = adjustment("pos", "MUG-4", "receipt", 4, "once");

    let send = || {
        t.app
            .http
            .post(t.app.url("/adjustments"))
            .header("X-API-Key", crate::helpers::api_key("pos"))
            .json(&request)
            .send()
    };

    let first = send().await.unwrap();
    let second = send().await.unwrap();

    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (201, 201),
        "a replay answers as the first time"
    );
    assert_eq!(first.headers().get("Idempotent-Replayed"), None);
    assert_eq!(second.headers().get("Idempotent-Replayed").unwrap(), "true");
    let (first, second): (Value, Value) =
        (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(first, second, "same body");
    assert_eq!(second["new_quantity"], 4);
    assert_eq!(t.on_hand("MUG-4", "W1").await, 4);
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.ledger").await, 1);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn reusing_a_reference_for_a_different_adjustment_is_a_conflict() {
    let t = spawn().await;
    t.put_product("MUG-5", 0).await;
    t.adjust(&adjustment("pos", "MUG-5", "receipt", 4, "dup")).await;

    let (status, body) = t.adjust(&adjustment("pos", "MUG-5", "receipt", 5, "dup")).await;

    assert_eq!(status, 409, "{body}");
    assert_eq!(t.on_hand("MUG-5", "W1").await, 4);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn compare_and_set_refuses_when_on_hand_moved() {
    let t = spawn().await;
    t.put_product("MUG-6", 0).await;
    t.adjust(&adjustment("pos", "MUG-6", "receipt", 4, "a")).await;
    let mut request = adjustment("pos", "MUG-6", "count", 10, "b");
    request["expected_on_hand"] = json!(3);

    let (status, body) = t.adjust(&request).await;
    request["expected_on_hand"] = json!(4);
    request["reference"] = json!("c");
    let (ok_status, ok) = t.adjust(&request).await;

    assert_eq!(status, 409, "{body}");
    assert_eq!(
        (body["current_qty"].clone(), body["expected_on_hand"].clone()),
        (json!(4), json!(3))
    );
    assert_eq!(ok_status, 201, "{ok}");
    assert_eq!(ok["new_quantity"], 10);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn bad_input_is_a_client_error_naming_the_field() {
    let t = spawn().await;
    t.put_product("MUG-7", 0).await;
    let cases = [
        (
            json!({"source": "pos", "sku": "MUG-7", "warehouse": "W1", "type": "teleport", "quantity": 1, "reference": "x"}),
            422,
            "type",
        ),
        (
            json!({"source": "pos", "sku": "MUG-7", "warehouse": "W1", "type": "receipt", "quantity": -1, "reference": "x"}),
            422,
            "quantity",
        ),
        (
            json!({"source": "pos", "warehouse": "W1", "type": "receipt", "quantity": 1, "reference": "x"}),
            422,
            "sku",
        ),
        (
            json!({"source": "pos", "sku": "NOPE", "warehouse": "W1", "type": "receipt", "quantity": 1, "reference": "x"}),
            422,
            "sku",
        ),
        (
            json!({"source": "pos", "sku": "MUG 7", "warehouse": "W1", "type": "receipt", "quantity": 1, "reference": "x"}),
            422,
            "sku",
        ),
        (
            json!({"source": "pos", "sku": "MUG-7", "warehouse": "W1", "type": "receipt", "quantity": 1}),
            422,
            "reference",
        ),
        (
            json!({"source": "pos", "sku": "MUG-7", "warehouse": "W1", "type": "receipt", "quantity": 1, "reference": "x", "qty": 3}),
            422,
            "qty",
        ),
    ];
    for (body, expected_status, field) in cases {
        let (status, problem) = t.adjust(&body).await;
        assert_eq!(status, expected_status, "{body} -> {problem}");
        assert_eq!(problem["field"], field, "{body} -> {problem}");
    }
    let not_json = t
        .app
        .http
        .post(t.app.url("/adjustments"))
        .header("X-API-Key", crate::helpers::api_key("pos"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.ledger").await, 0);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn only_authenticated_callers_may_adjust_and_only_for_their_own_source() {
    let t = spawn().await;
    t.put_product("MUG-8", 0).await;
    let body = adjustment("erp", "MUG-8", "receipt", 1, "auth-1");
    let raw = serde_json::to_vec(&body).unwrap();
    let post = |headers: Vec<(&'static str, String)>| {
        let mut request = t
            .app
            .http
            .post(t.app.url("/adjustments"))
            .header("Content-Type", "application/json")
            .body(raw.clone());
        for (k, v) in headers {
            request = request.header(k, v);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let now = chrono::Utc::now().timestamp();

    assert_eq!(post(vec![]).await, 401);
    assert_eq!(post(vec![("X-API-Key", "wrong".into())]).await, 401);
    assert_eq!(
        post(vec![("X-API-Key", crate::helpers::api_key("pos"))]).await,
        403,
        "pos key cannot claim source erp"
    );
    assert_eq!(
        post(vec![("X-Datasync-Signature", shared::http::sign(HMAC_SECRET, now - 600, &raw))])
            .await,
        401,
        "stale"
    );
    assert_eq!(
        post(vec![("X-Datasync-Signature", shared::http::sign("other-secret", now, &raw))]).await,
        401
    );
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.ledger").await, 0);
    assert_eq!(
        post(vec![("X-Datasync-Signature", shared::http::sign(POS_HMAC_SECRET, now, &raw))]).await,
        403,
        "a signature made with the POS's secret cannot claim source erp"
    );
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.ledger").await, 0);
    assert_eq!(
        post(vec![("X-Datasync-Signature", shared::http::sign(HMAC_SECRET, now, &raw))]).await,
        201
    );
    assert_eq!(
        post(vec![("X-API-Key", crate::helpers::api_key("erp"))]).await,
        201,
        "same reference replays the first answer"
    );
    let unauthenticated_read = t.app.http.get(t.app.url("/stock/MUG-8")).send().await.unwrap();
    assert_eq!(unauthenticated_read.status(), 401);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn concurrent_shipments_never_oversell_and_each_is_applied_once() {
    let t = spawn().await;
    t.put_product("HOT-1", 0).await;
    t.adjust(&adjustment("wms", "HOT-1", "receipt", 100, "stock-in")).await;

    let answers = join_all((0..150).map(|i| {
        let body = adjustment("pos", "HOT-1", "shipment", 1, &format!("sale-{i}"));
        let app = &t.app;
        async move { adjust_on(app, &body).await.0 }
    }))
    .await;

    assert_eq!(answers.iter().filter(|s| **s == 201).count(), 100);
    assert_eq!(answers.iter().filter(|s| **s == 422).count(), 50);
    assert_eq!(t.on_hand("HOT-1", "W1").await, 0);
    assert_eq!(
        t.count("SELECT count(*) AS n FROM inventory.ledger WHERE sku = 'HOT-1'").await,
        101
    );
    let reconciliation = t.app.admin_get("/reconciliation").await;
    assert_eq!(reconciliation.status(), 200);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn one_reference_sent_concurrently_with_different_quantities_is_applied_once() {
    let t = spawn().await;
    t.put_product("MUG-9", 0).await;

    let answers = join_all((1..=20).map(|q| {
        let body = adjustment("pos", "MUG-9", "receipt", q, "same-ref");
        let app = &t.app;
        async move { adjust_on(app, &body).await }
    }))
    .await;

    let applied: Vec<_> = answers.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(applied.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| matches!(s, 201 | 409)), "{answers:?}");
    let quantity = applied[0].1["quantity"].as_i64().unwrap();
    assert_eq!(t.on_hand("MUG-9", "W1").await, quantity);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_request_the_database_cannot_store_fails_alone() {
    let t = spawn().await;
    t.put_product("MUG-10", 0).await;
    let mut nul = adjustment("pos", "MUG-10", "receipt", 1, "nul");
    nul["reason"] = json!("bad\u{0}reason");

    let (good, bad) = tokio::join!(
        join_all((0..20).map(|i| {
            let body = adjustment("pos", "MUG-10", "receipt", 1, &format!("ok-{i}"));
            let app = &t.app;
            async move { adjust_on(app, &body).await.0 }
        })),
        adjust_on(&t.app, &nul)
    );

    assert_eq!(bad.0, 422, "{}", bad.1);
    assert_eq!(bad.1["field"], "reason");
    assert!(good.iter().all(|s| *s == 201), "{good:?}");
    assert_eq!(t.on_hand("MUG-10", "W1").await, 20);
    t.assert_settled(0).await;
}
