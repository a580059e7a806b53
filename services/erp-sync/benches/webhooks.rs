//! ERP webhook throughput, each figure beside the same-run baselines the crm-sync benchmark
//! uses.
//!
//! Run: `cargo bench -p erp-sync --bench webhooks` (needs PostgreSQL and NATS on 127.0.0.1 as
//! for the tests; `BENCH_SECS` sets each phase's length, default 10).
//!
//! - service: the real `erp-sync` binary (release build) as a child process. 64 concurrent
//!   clients post ERP webhooks with `X-API-Key`, each a new sales order with 5 lines, while the
//!   service's `salesOrder` consumer applies them on the same two cores (no sales email:
//!   `ERP_SALES_EMAIL` is unset).
//! - ingress: webhooks answered `202` per second (the event is durably in JetStream then),
//!   against 64 concurrent publish-and-await-PubAck loops of the same body straight to
//!   JetStream (a work-queue stream like `WEBHOOKS`, one message id each).
//! - end to end: orders committed per second (each with its 5 lines, in one transaction), from
//!   the first webhook of the phase to the commit of the last order, against 64 connections
//!   running single-row `INSERT` transactions into a trigger-less copy of `erp.orders`. A
//!   watcher sees each order commit (polling every 10 ms), which gives webhook-to-order latency.
//! - paced: webhooks at half the service's own end-to-end rate, and their latency.
//!
//! `ERP_INBOUND_BATCH` and `ERP_INBOUND_CONCURRENCY` are passed through to the service.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use harness::bench::{
    Bench, Watcher, header, insert_baseline, jetstream_baseline, line, paced, saturated,
};

const CLIENTS: usize = 64;
const KEY: &str = "bench-erp-webhook-key-0123456789";

/// A new sales order `id` with 5 lines, as the ERP reports it.
fn body(id: &str) -> Vec<u8> {
    let lines: Vec<serde_json::Value> = (1..=5)
        .map(|i| {
            serde_json::json!({"sku": format!("SKU-{i}"), "description": format!("Item {i}"),
                "quantity": i, "unitPrice": 9.5, "discount": 0, "lineTotal": 9.5 * f64::from(i)})
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "eventType": "created", "entity": "salesOrder", "entityId": id,
        "payload": {"orderNumber": id, "customerId": "C-1", "orderDate": "2026-12-01",
            "requestedShipDate": "2026-12-03", "status": "open", "subtotal": 142.5, "taxAmount": 28.5,
            "shippingAmount": 4.95, "total": 175.95, "currency": "EUR",
            "updatedAt": chrono::Utc::now().to_rfc3339(), "lineItems": lines}
    }))
    .unwrap()
}

/// A trigger-less copy of `erp.orders` (same columns and indexes), one order row per
/// transaction.
const INSERT_SETUP: &str = "CREATE TABLE public.bench_orders (LIKE erp.orders INCLUDING ALL)";
const INSERT: &str = "INSERT INTO public.bench_orders (erp_order_id, order_number, customer_id, \
    order_date, ship_date, status, subtotal, tax, shipping, total, currency, erp_updated_at) \
    VALUES ($1, $1, 'C-1', '2026-12-01', '2026-12-03', 'open', 142.5, 28.5, 4.95, 175.95, 'EUR', now())";

/// Posts one ERP webhook for order `id`; whether it was accepted (202).
async fn post(http: reqwest::Client, url: String, id: String) -> bool {
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("X-API-Key", KEY)
        .body(body(&id))
        .send()
        .await
    {
        Ok(r) => r.status() == 202,
        Err(_) => false,
    }
}

fn main() {
    harness::bench::run(|Bench { db, nats, secs, duration }| async move {
        println!(
            "erp-sync webhooks benchmark: {CLIENTS} concurrent clients, {secs} s per phase, 2 cores shared by \
             clients, service, PostgreSQL and NATS; one new order with 5 lines per webhook ({} bytes)",
            body("SO-0-0").len()
        );

        let nats_base = jetstream_baseline(&nats, CLIENTS, duration, body).await;
        let insert_base = insert_baseline(&db, CLIENTS, duration, INSERT_SETUP, INSERT).await;

        let svc = harness::process::Running::start(
            env!("CARGO_BIN_EXE_erp-sync"),
            &db,
            &nats,
            vec![
                ("DATABASE_POOL_SIZE".into(), "16".into()),
                ("ERP_WEBHOOK_API_KEYS".into(), KEY.into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
            &["ERP_INBOUND_BATCH", "ERP_INBOUND_CONCURRENCY"],
        )
        .await;
        let url = format!("{}/webhooks/erp", svc.base);
        let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
        let send = move |id: String| post(http.clone(), url.clone(), id);
        let watcher = Watcher::start(&db, "erp.orders", "erp_order_id").await;

        let (sent, first, ingress) = saturated(CLIENTS, duration, "s", send.clone()).await;
        let e2e = watcher.settle(&sent, first).await;
        let own_target = e2e.ops_per_sec * 0.5;
        let (sent, first, own_offered, refused) =
            paced(CLIENTS, own_target, duration, "q", send.clone()).await;
        let at_own = watcher.settle(&sent, first).await;
        watcher.stop.cancel();
        svc.stop();

        header();
        line("baseline: JetStream publish+ack", &nats_base);
        line("service: ERP webhooks -> 202", &ingress);
        line("baseline: single-row INSERT tx", &insert_base);
        line("service: webhook -> committed order", &e2e);
        line(
            &format!("service paced at {own_target:.0}/s"),
            &harness::bench::Figures { errors: at_own.errors + refused, ..at_own },
        );
        println!(
            "webhooks accepted: {:.2}x the JetStream publish baseline",
            ingress.ops_per_sec / nats_base.ops_per_sec
        );
        println!(
            "webhook -> committed order (5 lines): {:.2}x the single-row INSERT baseline",
            e2e.ops_per_sec / insert_base.ops_per_sec
        );
        println!(
            "at half the service's own rate ({own_target:.0}/s offered, {own_offered:.0}/s sent): webhook -> order p50 {:.1} ms, p99 {:.1} ms",
            at_own.p50_ms, at_own.p99_ms
        );
    });
}
