//! The error ledger: ERP events the database refuses and pushes the ERP refuses are open rows
//! that operators retry or requeue once the cause is fixed.

use diesel_async::SimpleAsyncConnection;
use sandbox::Fault;
use serde_json::{Value, json};

use crate::helpers::{TestErp, WAIT, spawn};

async fn sql(t: &TestErp, statement: &str) {
    t.db.connect().await.batch_execute(statement).await.unwrap();
}

async fn open_rows(t: &TestErp, direction: &str) -> Value {
    t.app
        .admin_get(&format!("/admin/record-errors?direction={direction}"))
        .await
        .json()
        .await
        .unwrap()
}

async fn resolved(t: &TestErp, n: i64) {
    let closed = harness::eventually(WAIT, || async {
        (t.count("SELECT count(*) AS n FROM erp.record_errors WHERE status = 'resolved'").await
            == n)
            .then_some(())
    });
    assert!(closed.await.is_some(), "{n} rows closed by the work that went through");
}

#[tokio::test]
async fn refused_events_and_pushes_are_ledger_rows_that_operators_retry_and_requeue() {
    let t = spawn().await;
    // The company's own rule on its table, which the ERP does not know.
    sql(
        &t,
        "ALTER TABLE erp.orders ADD CONSTRAINT orders_have_a_currency CHECK (currency IS NOT NULL)",
    )
    .await;
    let event = t.erp.erp_record(
        "orders",
        "SO-5",
        json!({"orderNumber": "5", "status": "open", "total": 3, "updatedAt": "2026-11-30T10:00:00Z"}),
    );
    let (status, accepted, _) = t.post(&event).await;
    assert_eq!(status, 202, "{accepted}");
    let failed = t.event_eventually(accepted["event_id"].as_str().unwrap(), "failed").await;
    assert!(failed["reason"].as_str().unwrap().contains("orders_have_a_currency"), "{failed}");
    let rows = open_rows(&t, "inbound").await;
    assert_eq!(rows["count"], 1, "{rows}");
    let row = &rows["errors"][0];
    assert_eq!(
        (row["entity"].as_str(), row["record_id"].as_str()),
        (Some("salesOrder"), Some("SO-5"))
    );

    // The ERP's record is fixed meanwhile; the rule stays. A requeue reads the record from the
    // ERP as it is now and applies it.
    let fixed = t.erp.erp_record(
        "orders",
        "SO-5",
        json!({"orderNumber": "5", "status": "open", "total": 3, "currency": "EUR",
            "updatedAt": "2026-11-30T10:05:00Z"}),
    );
    assert_eq!(fixed["eventType"], "updated");
    let (status, _) = t
        .app
        .admin_post(&format!("/admin/record-errors/{}/requeue", row["id"]), &Value::Null)
        .await;
    assert_eq!(status, 200);
    resolved(&t, 1).await;
    assert_eq!(t.row("orders", "erp_order_id", "SO-5").await.unwrap()["currency"], "EUR");

    // A push the ERP refuses (422) is given up at once: an outbound row. Requeued after the
    // ERP is fixed, it is delivered and the row closes.
    t.erp.fail_next(1, Fault::Status(422));
    sql(&t, "UPDATE erp.orders SET status = 'cancelled' WHERE erp_order_id = 'SO-5'").await;
    let row = harness::eventually(WAIT, || async {
        let rows = open_rows(&t, "outbound").await;
        (rows["count"] == 1).then(|| rows["errors"][0].clone())
    })
    .await
    .expect("an outbound ledger row");
    assert_eq!(row["record_id"], "order/SO-5");
    assert_ne!(t.erp.erp_get("orders", "SO-5").unwrap()["status"], "cancelled");
    let (status, _) = t
        .app
        .admin_post(&format!("/admin/record-errors/{}/requeue", row["id"]), &Value::Null)
        .await;
    assert_eq!(status, 200);
    assert!(
        t.erp
            .wait_until(WAIT, |erp| erp.erp_get("orders", "SO-5").unwrap()["status"] == "cancelled")
            .await
    );
    resolved(&t, 2).await;
    t.assert_settled_with_dead_letters(1).await;
}
