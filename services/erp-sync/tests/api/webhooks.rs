use serde_json::{Value, json};

use crate::helpers::{API_KEY, SIGNING_SECRET, spawn, spawn_with};

fn order(event: &str, status: &str, lines: Value) -> Value {
    json!({"eventType": event, "entity": "salesOrder", "entityId": "SO-1001",
        "payload": {"orderNumber": "1001", "customerId": "C-1", "orderDate": "2026-12-01",
            "status": status, "subtotal": 30.0, "taxAmount": 6.0, "shippingAmount": 4.5,
            "total": 40.5, "currency": "EUR", "lineItems": lines}})
}

#[tokio::test]
async fn an_order_is_stored_with_its_lines_once_and_an_update_replaces_them() {
    let t = spawn().await;
    let mut created = order(
        "created",
        "open",
        json!([
        {"sku": "MUG-1", "description": "Mug", "quantity": 2, "unitPrice": 10.0, "lineTotal": 20.0},
        {"sku": "TEA-1", "quantity": 1, "unitPrice": 10.0, "discount": 0, "lineTotal": 10.0}]),
    );
    created["payload"]["updatedAt"] = json!("2026-12-01T10:00:00Z");
    let (status, first, _) = t.post(&created).await;
    assert_eq!(status, 202, "{first}");
    t.event_eventually(first["event_id"].as_str().unwrap(), "applied").await;
    let row = t.row("orders", "erp_order_id", "SO-1001").await.unwrap();
    assert_eq!(
        (row["order_number"].as_str(), row["status"].as_str(), row["total"].as_f64()),
        (Some("1001"), Some("open"), Some(40.5))
    );
    assert_eq!(t.count("SELECT count(*) AS n FROM erp.order_lines").await, 2);

    // A redelivery is recognised (same content with the ERP's time, same id) and stored once.
    let (status, again, replayed) = t.post(&created).await;
    assert_eq!((status, replayed), (202, true));
    assert_eq!(again["event_id"], first["event_id"]);

    // An update: the status change is detected against the stored status; lines replaced.
    let updated =
        order("updated", "shipped", json!([{"sku": "MUG-1", "quantity": 3, "lineTotal": 30.0}]));
    let (_, body, _) = t.post(&updated).await;
    let event = t.event_eventually(body["event_id"].as_str().unwrap(), "applied").await;
    assert!(
        event["reason"].as_str().unwrap().starts_with("status changed from open to shipped"),
        "{event}"
    );
    assert_eq!(t.count("SELECT count(*) AS n FROM erp.order_lines").await, 1);
    assert_eq!(t.count("SELECT count(*) AS n FROM erp.orders").await, 1);
    t.assert_settled().await;
}

#[tokio::test]
async fn webhooks_need_a_key_or_a_signature_and_name_what_is_wrong() {
    let t = spawn().await;
    let body = order("created", "open", json!([]));
    assert_eq!(t.post_with(&body, None).await.0, 401);
    assert_eq!(t.post_with(&body, Some("wrong-key")).await.0, 401);
    let mut lead = body.clone();
    lead["entity"] = json!("lead");
    let (status, problem, _) = t.post(&lead).await;
    assert_eq!((status, problem["field"].as_str()), (400, Some("entity")), "{problem}");
    let mut exploded = body.clone();
    exploded["eventType"] = json!("exploded");
    assert_eq!(t.post(&exploded).await.1["field"], "eventType");
    let mut bad = body.clone();
    bad["payload"]["total"] = json!("lots");
    let (status, problem, _) = t.post(&bad).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("payload.total")));
    assert_eq!(t.count("SELECT count(*) AS n FROM erp.webhook_events").await, 0, "nothing stored");

    // Signed instead of keyed (Standard Webhooks).
    let bytes = serde_json::to_vec(&body).unwrap();
    let ts = chrono::Utc::now().timestamp();
    let signature =
        shared::http::verify::sign_standard(SIGNING_SECRET, "msg_1", ts, &bytes).unwrap();
    let r = t
        .app
        .http
        .post(t.app.url("/webhooks/erp"))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_1")
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let _ = API_KEY;
    t.assert_settled().await;
}

#[tokio::test]
async fn a_delivered_shipment_delivers_its_order_and_older_events_change_nothing() {
    let t = spawn().await;
    let (_, o, _) = t.post(&order("created", "open", json!([{"sku": "A", "quantity": 1}]))).await;
    t.event_eventually(o["event_id"].as_str().unwrap(), "applied").await;
    let shipment = |status: &str, at: &str| {
        json!({"eventType": "updated", "entity": "shipment", "entityId": "SH-1",
        "payload": {"orderId": "SO-1001", "carrier": "DHL", "trackingNumber": "JD0001", "shipDate": "2026-12-01",
            "estimatedDelivery": "2026-12-03", "status": status, "updatedAt": at}})
    };
    let (_, s, _) = t.post(&shipment("in_transit", "2026-12-01T10:00:00Z")).await;
    t.event_eventually(s["event_id"].as_str().unwrap(), "applied").await;
    let (_, d, _) = t.post(&shipment("delivered", "2026-12-03T09:00:00Z")).await;
    let event = t.event_eventually(d["event_id"].as_str().unwrap(), "applied").await;
    assert_eq!(event["reason"], "order SO-1001 delivered");
    let order_row = t.row("orders", "erp_order_id", "SO-1001").await.unwrap();
    assert_eq!(order_row["status"], "delivered");
    assert!(!order_row["delivered_at"].is_null());
    // The in-transit event arriving late is older: nothing moves back.
    let (_, late, _) = t.post(&shipment("in_transit", "2026-12-02T10:00:00Z")).await;
    let event = t.event_eventually(late["event_id"].as_str().unwrap(), "applied").await;
    assert!(event["reason"].as_str().unwrap().starts_with("stale"), "{event}");
    assert_eq!(t.row("shipments", "erp_shipment_id", "SH-1").await.unwrap()["status"], "delivered");
    t.assert_settled().await;
}

#[tokio::test]
async fn customers_invoices_and_purchase_orders_are_stored_and_inventory_becomes_counts() {
    let t = spawn().await;
    for (entity, id, payload) in [
        ("customer", "C-1", json!({"name": "Ada", "email": "ada@example.com"})),
        (
            "invoice",
            "INV-1",
            json!({"invoiceNumber": "I-1", "orderId": "SO-1001", "status": "open", "total": 40.5, "dueDate": "2026-12-31"}),
        ),
        (
            "purchaseOrder",
            "PO-1",
            json!({"poNumber": "P-1", "supplier": "Tea Co", "status": "ordered", "expectedDate": "2026-12-10"}),
        ),
    ] {
        let (status, body, _) = t.post(&json!({"eventType": "created", "entity": entity, "entityId": id, "payload": payload})).await;
        assert_eq!(status, 202, "{body}");
        t.event_eventually(body["event_id"].as_str().unwrap(), "applied").await;
    }
    assert_eq!(
        t.row("customers", "erp_customer_id", "C-1").await.unwrap()["email"],
        "ada@example.com"
    );
    assert_eq!(
        t.row("invoices", "erp_invoice_id", "INV-1").await.unwrap()["due_date"],
        "2026-12-31"
    );
    assert_eq!(t.row("purchase_orders", "erp_po_id", "PO-1").await.unwrap()["supplier"], "Tea Co");

    // An inventory message becomes a canonical count for inventory-sync, stamped with the
    // ERP's time and version; without either it is refused, naming the field.
    let mut count = json!({"eventType": "updated", "entity": "inventory", "entityId": "MUG-1",
        "payload": {"qtyOnHand": 7, "warehouse": "W1"}});
    let (status, problem, _) = t.post(&count).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("payload.updatedAt")), "{problem}");
    count["payload"]["updatedAt"] = json!("2026-12-01T09:30:00Z");
    count["payload"]["version"] = json!(12);
    let (status, accepted, _) = t.post(&count).await;
    assert_eq!(status, 202, "{accepted}");
    let event_id = accepted["event_id"].as_str().unwrap();
    t.event_eventually(event_id, "applied").await;
    let js = async_nats::jetstream::new(t.nats.client().await);
    let mut stream = js.get_stream(format!("{}_INVENTORY_COUNTS", t.nats.prefix)).await.unwrap();
    let message = stream
        .get_last_raw_message_by_subject(&t.nats.subject("inventory.count.erp"))
        .await
        .unwrap();
    let envelope: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(
        envelope["data"],
        json!({"source": "erp", "reference": event_id, "sku": "MUG-1", "warehouse": "W1",
            "on_hand": 7, "counted_at": "2026-12-01T09:30:00Z", "version": 12,
            "reason": "ERP inventory updated"})
    );
    // A redelivery is the same event: no second count.
    assert!(t.post(&count).await.2, "replayed");
    t.assert_settled().await;
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn orders_status_changes_and_shipments_are_emailed_once_with_both_parts() {
    let t = spawn().await;
    let (_, c, _) = t
        .post(&json!({"eventType": "created", "entity": "customer", "entityId": "C-1",
        "payload": {"name": "Ada", "email": "ada@example.com"}}))
        .await;
    t.event_eventually(c["event_id"].as_str().unwrap(), "applied").await;
    let (_, o, _) = t.post(&order("created", "open", json!([{"sku": "A", "quantity": 1}]))).await;
    t.event_eventually(o["event_id"].as_str().unwrap(), "applied").await;
    let (_, u, _) =
        t.post(&order("updated", "shipped", json!([{"sku": "A", "quantity": 1}]))).await;
    t.event_eventually(u["event_id"].as_str().unwrap(), "applied").await;
    let shipment = json!({"eventType": "created", "entity": "shipment", "entityId": "SH-9",
        "payload": {"orderId": "SO-1001", "carrier": "DHL", "trackingNumber": "JD 42",
            "estimatedDelivery": "2026-12-03", "status": "in_transit",
            "updatedAt": "2026-12-02T08:00:00Z"}});
    let (_, s, _) = t.post(&shipment).await;
    t.event_eventually(s["event_id"].as_str().unwrap(), "applied").await;
    // A redelivered shipment causes no second email: recognised by its content and time, and
    // applied again harmlessly without its time.
    assert!(t.post(&shipment).await.2);
    let mut unstamped = shipment.clone();
    unstamped["payload"].as_object_mut().unwrap().remove("updatedAt");
    let (_, again, replayed) = t.post(&unstamped).await;
    assert!(!replayed);
    t.event_eventually(again["event_id"].as_str().unwrap(), "applied").await;

    let mails = harness::eventually(crate::helpers::WAIT, || async {
        let mails = t.smtp.mails();
        (mails.len() >= 3).then_some(mails)
    })
    .await
    .expect("three emails");
    let find = |subject: &str| {
        mails.iter().find(|m| m.data.contains(subject)).unwrap_or_else(|| panic!("no {subject}"))
    };
    let new_order = find("Subject: New Order: 1001");
    assert_eq!(new_order.to, ["sales@example.com"]);
    assert!(new_order.data.contains("Order total: 40.5 EUR"), "{}", new_order.data);
    let update = find("Subject: Order Update: 1001");
    assert_eq!(update.to, ["ada@example.com"]);
    assert!(update.data.contains("Your order status is now: shipped"));
    let shipped = find("Subject: Your Order Has Shipped!");
    assert_eq!(shipped.to, ["ada@example.com"]);
    for part in [
        "Carrier: DHL",
        "Tracking: JD 42",
        "Estimated Delivery: 2026-12-03",
        "https://track.carrier.com/JD%2042",
    ] {
        assert!(shipped.data.contains(part), "{part} in {}", shipped.data);
    }
    for mail in [new_order, update, shipped] {
        assert!(
            mail.data.contains("text/plain") && mail.data.contains("text/html"),
            "{}",
            mail.data
        );
        assert!(
            mail.data.contains("Message-ID: <") && mail.data.contains("@erp-sync.datasync>"),
            "{}",
            mail.data
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(t.smtp.mails().len(), 3, "each email once");
    t.assert_settled().await;
}

#[tokio::test]
async fn a_slow_mail_relay_holds_no_database_connection_and_sends_each_email_once() {
    let t = spawn_with(harness::TestDb::new().await, harness::TestNats::new(), |c| {
        c.common.db.pool_size = 2;
    })
    .await;
    let relay = std::time::Duration::from_secs(8);
    t.smtp.set_delay(relay);
    let started = std::time::Instant::now();
    for n in 1..=4 {
        let mut created = order("created", "open", json!([{"sku": "A", "quantity": 1}]));
        created["entityId"] = json!(format!("SO-{n}"));
        created["payload"]["orderNumber"] = json!(n.to_string());
        let (status, body, _) = t.post(&created).await;
        assert_eq!(status, 202, "{body}");
        t.event_eventually(body["event_id"].as_str().unwrap(), "applied").await;
    }
    // Four sends are at the relay now, more than the pool's two connections; the service stays
    // ready and keeps applying webhooks meanwhile.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let ready = t
        .app
        .http
        .get(t.app.url("/readyz"))
        .timeout(std::time::Duration::from_secs(3))
        .send()
        .await
        .expect("/readyz answers while the relay is slow");
    assert_eq!(ready.status(), 200);
    let (_, c, _) = t
        .post(&json!({"eventType": "created", "entity": "customer", "entityId": "C-1",
        "payload": {"name": "Ada", "email": "ada@example.com"}}))
        .await;
    t.event_eventually(c["event_id"].as_str().unwrap(), "applied").await;
    assert!(started.elapsed() < relay, "applied while the relay was still busy");
    assert!(t.smtp.mails().is_empty(), "the relay has not answered yet");

    let mails = harness::eventually(crate::helpers::WAIT, || async {
        let mails = t.smtp.mails();
        (mails.len() >= 4).then_some(mails)
    })
    .await
    .expect("four emails");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(t.smtp.mails().len(), 4, "each email once: {mails:?}");
    t.assert_settled().await;
}

#[tokio::test]
async fn the_simulated_erp_reports_its_own_changes_with_its_api_key() {
    let t = spawn().await;
    let erp = sandbox::SimServer::start(sandbox::System::Erp).unwrap();
    // The ERP's users enter an order first; the ERP then reports it.
    let event = erp.erp_record(
        "orders",
        "SO-7",
        json!({"orderNumber": "7", "status": "open",
        "total": 9.5, "currency": "EUR", "lineItems": [{"sku": "A", "quantity": 1}]}),
    );
    let signer = sandbox::WebhookSigner::ApiKey { key: API_KEY.into() };
    let (status, body) =
        sandbox::deliver(&t.app.http, &t.app.url("/webhooks/erp"), &signer, &event).await.unwrap();
    assert_eq!(status, 202, "{body}");
    t.event_eventually(body["event_id"].as_str().unwrap(), "applied").await;
    assert_eq!(t.row("orders", "erp_order_id", "SO-7").await.unwrap()["order_number"], "7");
    let wrong = sandbox::WebhookSigner::ApiKey { key: "not-the-key".into() };
    let (status, _) =
        sandbox::deliver(&t.app.http, &t.app.url("/webhooks/erp"), &wrong, &event).await.unwrap();
    assert_eq!(status, 401);
    t.assert_settled().await;
}

#[tokio::test]
async fn events_of_one_order_in_one_batch_apply_in_the_erps_order() {
    use diesel_async::AsyncConnection;
    let t = spawn().await;
    let line = |n: usize| -> Value {
        (0..n).map(|i| json!({"sku": format!("S{i}"), "quantity": 1})).collect()
    };
    // One batch holding four events of the same order; the 10:01 one is older than the 10:05
    // one before it.
    let events: Vec<shared::schemas::erp::ErpWebhook> = [
        ("created", "open", "10:00", 2),
        ("updated", "packed", "10:05", 3),
        ("updated", "open", "10:01", 1),
        ("updated", "shipped", "10:10", 4),
    ]
    .into_iter()
    .map(|(event, status, at, lines)| {
        let mut body = order(event, status, line(lines));
        body["payload"]["updatedAt"] = json!(format!("2026-11-30T{at}:00Z"));
        shared::mappers::erp::webhook::parse_webhook(&body, None).unwrap().1
    })
    .collect();
    let applying: Vec<erp_sync::apply::Applying> = events
        .iter()
        .map(|event| erp_sync::apply::Applying {
            id: uuid::Uuid::new_v4(),
            accepted: chrono::Utc::now(),
            event,
            loaded: false,
        })
        .collect();
    let mut conn = t.db.connect().await;
    let reasons: Vec<Option<String>> = conn
        .transaction::<_, anyhow::Error, _>(async |conn| {
            shared::db::set_origin(conn, "erp").await?;
            let applied = erp_sync::apply::apply_all(conn, None, &applying).await?;
            Ok(applied.into_iter().map(|a| a.reason).collect())
        })
        .await
        .unwrap();
    assert_eq!(
        reasons,
        [
            Some("2 lines".to_owned()),
            Some("status changed from open to packed; customer C-1 has no known email".to_owned()),
            Some("stale: a newer ERP state is stored".to_owned()),
            Some(
                "status changed from packed to shipped; customer C-1 has no known email".to_owned()
            ),
        ]
    );
    let row = t.row("orders", "erp_order_id", "SO-1001").await.unwrap();
    assert_eq!(row["status"], "shipped");
    assert_eq!(t.count("SELECT count(*) AS n FROM erp.order_lines").await, 4);
    assert_eq!(t.count("SELECT count(*) AS n FROM erp.orders").await, 1);
    t.assert_settled().await;
}

#[tokio::test]
async fn the_inventory_durable_of_earlier_releases_is_retired_and_its_waiting_counts_applied() {
    use async_nats::jetstream::{consumer::pull, stream};
    let (db, nats) = (harness::TestDb::new().await, harness::TestNats::new());
    // An earlier release: inventory-sync's own durable on `webhooks.erp.inventory` in the
    // work-queue stream, with an ERP count still waiting in it.
    let js = async_nats::jetstream::new(nats.client().await);
    let webhooks = js
        .create_stream(stream::Config {
            name: format!("{}_WEBHOOKS", nats.prefix),
            subjects: vec![nats.subject("webhooks.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    webhooks
        .create_consumer(pull::Config {
            durable_name: Some(format!("{}_inventory-erp-counts", nats.prefix)),
            filter_subject: nats.subject("webhooks.erp.inventory"),
            ..Default::default()
        })
        .await
        .unwrap();
    let waiting = shared::schemas::Envelope::new(
        "erp-sync",
        shared::schemas::erp::ErpWebhook {
            event_type: "updated".into(),
            entity: "inventory".into(),
            entity_id: "MUG-1".into(),
            payload: json!({"qtyOnHand": 5, "warehouse": "W1", "updatedAt": "2026-11-30T10:00:00Z"}),
            retry_of: None,
        },
    );
    js.publish(
        nats.subject("webhooks.erp.inventory"),
        serde_json::to_vec(&waiting).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let t = crate::helpers::spawn_on(db, nats).await;
    let forwarded = harness::eventually(crate::helpers::WAIT, || async {
        let mut counts = js.get_stream(format!("{}_INVENTORY_COUNTS", t.nats.prefix)).await.ok()?;
        (counts.info().await.ok()?.state.messages == 1).then_some(())
    });
    assert!(forwarded.await.is_some(), "the waiting count reached inventory-sync's stream");
    let mut webhooks = js.get_stream(format!("{}_WEBHOOKS", t.nats.prefix)).await.unwrap();
    assert!(
        webhooks.consumer_info(format!("{}_inventory-erp-counts", t.nats.prefix)).await.is_err(),
        "the old durable is gone"
    );
    assert_eq!(webhooks.info().await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn a_status_that_returns_to_an_earlier_value_is_applied_each_time() {
    let t = spawn().await;
    // The ERP sends neither a delivery id nor its own time: open -> shipped -> open.
    let lines = json!([{"sku": "MUG-1", "quantity": 1, "lineTotal": 10.0}]);
    for status in ["open", "shipped", "open"] {
        let (code, body, replayed) = t.post(&order("updated", status, lines.clone())).await;
        assert_eq!((code, replayed), (202, false), "{status}: {body}");
        t.event_eventually(body["event_id"].as_str().unwrap(), "applied").await;
    }
    let row = t.row("orders", "erp_order_id", "SO-1001").await.unwrap();
    assert_eq!(row["status"], "open", "the return to open was applied: {row}");
    t.assert_settled().await;
}
