//! Bulk loads of the ERP's customers, orders and products: dry run, offset pages within the
//! quota share, idempotent, nothing emailed or pushed back.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestErp, spawn};

async fn job_done(t: &TestErp, id: &str) -> Value {
    harness::eventually(Duration::from_secs(90), || async {
        let job: Value =
            t.app.admin_get(&format!("/admin/bulk/jobs/{id}")).await.json().await.ok()?;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await
    .expect("the job ends")
}

async fn load(t: &TestErp, entity: &str, batch_size: u64) -> Value {
    let (status, job) = t
        .app
        .admin_post(
            "/admin/bulk/jobs",
            &json!({"source": "erp", "target": "erp", "entity": entity, "batch_size": batch_size}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    job_done(t, job["id"].as_str().unwrap()).await
}

async fn dry_run(t: &TestErp, entity: &str) -> Value {
    let (status, dry) = t
        .app
        .admin_post(
            "/admin/bulk/dry-run",
            &json!({"source": "erp", "target": "erp", "entity": entity}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    dry
}

#[tokio::test]
async fn a_dry_run_then_loads_of_customers_orders_and_products_within_the_quota_share() {
    let t = spawn().await;
    for i in 0..60 {
        t.erp.erp_record(
            "customers",
            &format!("C-{i:03}"),
            json!({"name": format!("Customer {i}"), "email": format!("c{i}@example.com"),
                "updatedAt": "2026-11-30T10:00:00Z"}),
        );
    }
    for i in 0..3 {
        t.erp.erp_record(
            "orders",
            &format!("SO-{i}"),
            json!({"orderNumber": format!("{i}"), "customerId": "C-000", "status": "open",
                "total": 10, "currency": "EUR", "updatedAt": "2026-11-30T10:00:00Z",
                "lineItems": [{"sku": "A", "quantity": 1}, {"sku": "B", "quantity": 2}]}),
        );
    }
    // One order the mapper refuses.
    t.erp.erp_record(
        "orders",
        "SO-9",
        json!({"orderNumber": "9", "status": "open", "lineItems": [{"sku": "A", "quantity": "x"}]}),
    );
    for i in 0..5 {
        t.erp.erp_record(
            "products",
            &format!("P-{i}"),
            json!({"name": format!("Product {i}"), "unitPrice": "4.50", "currency": "EUR"}),
        );
    }
    // 20 requests per second; bulk work may spend half.
    t.erp.set_quota(20, Duration::from_secs(1));

    let dry = dry_run(&t, "orders").await;
    assert_eq!(
        (dry["read"].as_u64(), dry["create"].as_u64(), dry["error_count"].as_u64()),
        (Some(4), Some(3), Some(1)),
        "{dry}"
    );
    assert_eq!(dry["errors"][0]["record_id"], "SO-9");
    assert_eq!(
        dry["errors"][0]["error"], "payload.lineItems[0].quantity: must be a number",
        "{dry}"
    );
    assert_eq!(
        t.count("SELECT count(*) AS n FROM erp.orders").await,
        0,
        "a dry run writes nothing"
    );

    let job = load(&t, "customers", 4).await;
    assert_eq!(
        (job["status"].as_str(), job["pages"].as_i64(), job["error_count"].as_i64()),
        (Some("completed"), Some(15), Some(0)),
        "{job}"
    );
    let job = load(&t, "orders", 100).await;
    assert_eq!((job["status"].as_str(), job["error_count"].as_i64()), (Some("completed"), Some(1)));
    let job = load(&t, "products", 100).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        (
            t.count("SELECT count(*) AS n FROM erp.customers").await,
            t.count("SELECT count(*) AS n FROM erp.orders").await,
            t.count("SELECT count(*) AS n FROM erp.order_lines").await,
            t.count("SELECT count(*) AS n FROM erp.products WHERE unit_price = 4.5").await,
        ),
        (60, 3, 6, 5)
    );
    // The pages were offset pages, the load kept to its share of the quota, and nothing
    // loaded from the ERP went back to it or was emailed.
    let requests = t.erp.requests();
    assert!(requests.iter().any(|r| r.query.contains("offset=56&limit=4")), "offset pages");
    assert_eq!(requests.iter().filter(|r| r.status == 429).count(), 0, "no 429");
    assert!(requests.iter().all(|r| r.method == "GET"));
    assert!(t.smtp.mails().is_empty(), "no email for loaded records");

    // Loading again changes nothing; a dry run finds everything in place.
    let job = load(&t, "customers", 100).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(
        t.count("SELECT count(*) AS n FROM erp.customers").await,
        60,
        "the same records, once"
    );
    let dry = dry_run(&t, "customers").await;
    assert_eq!(
        (dry["create"].as_u64(), dry["update"].as_u64(), dry["unchanged"].as_u64()),
        (Some(0), Some(0), Some(60)),
        "{dry}"
    );
    // A customer the ERP changed since: the dry run shows the field, the load applies it.
    t.erp.erp_record(
        "customers",
        "C-007",
        json!({"name": "Customer 7", "email": "seven@example.com", "updatedAt": "2026-11-30T11:00:00Z"}),
    );
    let dry = dry_run(&t, "customers").await;
    assert_eq!(dry["update"], 1, "{dry}");
    assert_eq!(
        dry["differences"],
        json!([{"record_id": "C-007", "field": "email", "ours": "c7@example.com",
            "theirs": "seven@example.com"}])
    );
    load(&t, "customers", 100).await;
    assert_eq!(
        t.row("customers", "erp_customer_id", "C-007").await.unwrap()["email"],
        "seven@example.com"
    );
    // An order whose only change is its lines: the dry run shows them, the load replaces them.
    t.erp.erp_record(
        "orders",
        "SO-1",
        json!({"orderNumber": "1", "customerId": "C-000", "status": "open", "total": 10,
            "currency": "EUR", "updatedAt": "2026-11-30T11:00:00Z",
            "lineItems": [{"sku": "A", "quantity": 3}]}),
    );
    let dry = dry_run(&t, "orders").await;
    assert_eq!((dry["update"].as_u64(), dry["unchanged"].as_u64()), (Some(1), Some(2)), "{dry}");
    assert_eq!(dry["differences"][0]["field"], "lineItems", "{dry}");
    assert_eq!(dry["differences"][0]["theirs"][0]["quantity"], 3, "{dry}");
    load(&t, "orders", 100).await;
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM erp.order_lines l JOIN erp.orders o ON o.id = l.order_id \
             WHERE o.erp_order_id = 'SO-1'"
        )
        .await,
        1
    );
    t.assert_settled().await;
}
