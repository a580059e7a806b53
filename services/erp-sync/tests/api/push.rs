//! Local changes of order statuses and customers reach the ERP through the push engine, and
//! what comes from the ERP is never pushed back.

use diesel_async::SimpleAsyncConnection;
use sandbox::WebhookSigner;
use serde_json::{Value, json};

use crate::helpers::{API_KEY, TestErp, WAIT, spawn};

/// The ERP reports a record of its own (as its users entered it) to erp-sync.
pub(crate) async fn report(t: &TestErp, collection: &str, id: &str, record: Value) {
    let event = t.erp.erp_record(collection, id, record);
    deliver(t, &event).await;
}

/// Delivers an ERP webhook; the event as applied.
pub(crate) async fn deliver(t: &TestErp, event: &Value) -> Value {
    deliver_as(t, event, "applied").await
}

/// Delivers an ERP webhook; the event once its status is `status`.
pub(crate) async fn deliver_as(t: &TestErp, event: &Value, status: &str) -> Value {
    let signer = WebhookSigner::ApiKey { key: API_KEY.into() };
    let (code, body) =
        sandbox::deliver(&t.app.http, &t.app.url("/webhooks/erp"), &signer, event).await.unwrap();
    assert_eq!(code, 202, "{body}");
    t.event_eventually(body["event_id"].as_str().unwrap(), status).await
}

/// The ERP's echo of its current record, as it reports its own changes.
pub(crate) fn echo(t: &TestErp, collection: &str, entity: &str, id: &str) -> Value {
    let record = t.erp.erp_get(collection, id).unwrap();
    json!({"eventType": "updated", "entity": entity, "entityId": id, "payload": record})
}

pub(crate) fn writes(t: &TestErp) -> Vec<(String, String, Value)> {
    t.erp
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET")
        .map(|r| (r.method, r.path, r.body))
        .collect()
}

pub(crate) async fn sql(t: &TestErp, statement: &str) {
    t.db.connect().await.batch_execute(statement).await.unwrap();
}

pub(crate) async fn seed(t: &TestErp) {
    report(
        t,
        "customers",
        "C-1",
        json!({"name": "Ada", "email": "ada@example.com",
        "updatedAt": "2020-01-01T09:00:00Z"}),
    )
    .await;
    report(
        t,
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-1", "status": "open",
        "total": 10, "currency": "EUR", "updatedAt": "2020-01-01T09:00:00Z",
        "lineItems": [{"sku": "A", "quantity": 1}]}),
    )
    .await;
}

#[tokio::test]
async fn local_changes_reach_the_erp_once_and_its_report_of_them_is_not_pushed_back() {
    let t = spawn().await;
    seed(&t).await;
    assert!(writes(&t).is_empty(), "nothing from the ERP is pushed back to it");

    // Another application changes the order's status and the customer's phone.
    sql(
        &t,
        "UPDATE erp.orders SET status = 'cancelled' WHERE erp_order_id = 'SO-1';
             UPDATE erp.customers SET phone = '+44 20 7946 0000' WHERE erp_customer_id = 'C-1';",
    )
    .await;
    assert!(
        t.erp
            .wait_until(WAIT, |erp| {
                erp.erp_get("orders", "SO-1").unwrap()["status"] == "cancelled"
                    && erp.erp_get("customers", "C-1").unwrap()["phone"] == "+44 20 7946 0000"
            })
            .await,
        "{:?}",
        writes(&t)
    );
    let mut sent = writes(&t);
    sent.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        sent,
        vec![
            (
                "PUT".into(),
                "/api/customers/C-1".into(),
                json!({"name": "Ada", "email": "ada@example.com", "phone": "+44 20 7946 0000"})
            ),
            ("PATCH".into(), "/api/orders/SO-1".into(), json!({"status": "cancelled"})),
        ]
    );
    // The ERP reports the changes back as its own: applied, and nothing is pushed again.
    deliver(&t, &echo(&t, "orders", "salesOrder", "SO-1")).await;
    deliver(&t, &echo(&t, "customers", "customer", "C-1")).await;
    t.assert_settled().await;
    assert_eq!(writes(&t).len(), 2);
    let order = t.row("orders", "erp_order_id", "SO-1").await.unwrap();
    assert_eq!(order["status"], "cancelled");
    assert_eq!(order["synced_version"], order["local_version"]);
}
