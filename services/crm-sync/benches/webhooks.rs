//! CRM webhook throughput and latency, each figure beside a baseline measured in the same run.
//!
//! Run: `cargo bench -p crm-sync --bench webhooks` (needs PostgreSQL and NATS on 127.0.0.1 as
//! for the tests; `BENCH_SECS` sets each phase's length, default 10).
//!
//! - service: the real `crm-sync` binary (release build) as a child process. 64 concurrent
//!   clients post signed webhooks (Standard Webhooks, a fresh `webhook-id` each), one new
//!   contact per webhook, while the service's consumer applies them on the same two cores.
//! - ingress: webhooks answered `202` per second (the event is durably in JetStream then),
//!   against 64 concurrent publish-and-await-PubAck loops of the same payload size straight to
//!   JetStream with async-nats (a stream of the same kind, one message id each).
//! - end to end: contacts committed per second, from the first webhook of the phase to the
//!   commit of its last row, against 64 connections running single-row `INSERT` transactions
//!   into a copy of `crm.contacts` (same columns and indexes, no trigger) straight to
//!   PostgreSQL. A watcher sees each row commit (polling every 10 ms for new ids), which gives
//!   the webhook-to-row latency.
//! - paced: webhooks sent at 80% of the INSERT baseline's rate (open loop, 64 senders), and
//!   the webhook-to-row latency's p99 at that rate; then the same at half the service's own
//!   end-to-end rate (its latency when it is not overloaded).
//!
//! `CRM_INBOUND_BATCH` and `CRM_INBOUND_CONCURRENCY` are passed through to the service.
//!
//! Figures are printed; nothing is asserted (this is a benchmark, not a test).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark fails loudly")]

use harness::bench::{
    Bench, Watcher, header, insert_baseline, jetstream_baseline, line, paced, saturated,
};

const CLIENTS: usize = 64;
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "event": "created", "type": "contact", "id": id,
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "data": {"firstName": "Bench", "lastName": format!("Contact {id}"), "email": format!("{id}@example.com"),
                 "phone": "+33 1 23 45 67 89", "title": "Buyer", "leadSource": "webinar", "status": "new",
                 "account": {"name": "Benchmark Industries"}}
    }))
    .unwrap()
}

/// A trigger-less copy of `crm.contacts` (same columns and indexes), one row per transaction.
const INSERT_SETUP: &str = "CREATE TABLE public.bench_contacts (LIKE crm.contacts INCLUDING ALL)";
const INSERT: &str = "INSERT INTO public.bench_contacts (external_id, external_source, first_name, \
    last_name, email, phone, company, title, source, status, origin, synced_at) \
    VALUES ($1, 'crm', 'Bench', 'Contact ' || $1, $1 || '@example.com', '+33 1 23 45 67 89', \
    'Benchmark Industries', 'Buyer', 'webinar', 'new', 'crm', now())";

/// Posts one signed webhook for contact `id`; whether it was accepted (202).
async fn post(http: reqwest::Client, url: String, id: String) -> bool {
    let body = body(&id);
    let t = chrono::Utc::now().timestamp();
    let delivery = format!("msg_{id}");
    let signature = shared::http::verify::sign_standard(SECRET, &delivery, t, &body).unwrap();
    match http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &delivery)
        .header("webhook-timestamp", t.to_string())
        .header("webhook-signature", signature)
        .body(body)
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
            "crm-sync webhooks benchmark: {CLIENTS} concurrent clients, {secs} s per phase, 2 cores shared by \
             clients, service, PostgreSQL and NATS; one new contact per webhook ({} bytes)",
            body("c-0-0").len()
        );

        let nats_base = jetstream_baseline(&nats, CLIENTS, duration, body).await;
        let insert_base = insert_baseline(&db, CLIENTS, duration, INSERT_SETUP, INSERT).await;

        let svc = harness::process::Running::start(
            env!("CARGO_BIN_EXE_crm-sync"),
            &db,
            &nats,
            vec![
                ("DATABASE_POOL_SIZE".into(), "16".into()),
                ("CRM_WEBHOOK_SECRETS".into(), SECRET.into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
            &["CRM_INBOUND_BATCH", "CRM_INBOUND_CONCURRENCY"],
        )
        .await;
        let url = format!("{}/webhooks/crm", svc.base);
        let http = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build().unwrap();
        let send = move |id: String| post(http.clone(), url.clone(), id);
        let watcher = Watcher::start(&db, "crm.contacts", "external_id").await;

        // Saturated: as fast as 64 clients go.
        let (sent, first, ingress) = saturated(CLIENTS, duration, "s", send.clone()).await;
        let e2e = watcher.settle(&sent, first).await;

        // Paced at 80% of the INSERT baseline, then at half the service's own end-to-end rate.
        let target = insert_base.ops_per_sec * 0.8;
        let (sent, first, offered, refused) =
            paced(CLIENTS, target, duration, "p", send.clone()).await;
        let at_target = watcher.settle(&sent, first).await;
        let own_target = e2e.ops_per_sec * 0.5;
        let (sent, first, own_offered, own_refused) =
            paced(CLIENTS, own_target, duration, "q", send.clone()).await;
        let at_own = watcher.settle(&sent, first).await;
        watcher.stop.cancel();
        svc.stop();

        header();
        line("baseline: JetStream publish+ack", &nats_base);
        line("service: signed webhooks -> 202", &ingress);
        line("baseline: single-row INSERT tx", &insert_base);
        line("service: webhook -> committed row", &e2e);
        line(
            &format!("service paced at {target:.0}/s"),
            &harness::bench::Figures { errors: at_target.errors + refused, ..at_target },
        );
        line(
            &format!("service paced at {own_target:.0}/s"),
            &harness::bench::Figures { errors: at_own.errors + own_refused, ..at_own },
        );
        println!(
            "webhooks accepted: {:.2}x the JetStream publish baseline (target 0.8x)",
            ingress.ops_per_sec / nats_base.ops_per_sec
        );
        println!(
            "webhook -> committed row: {:.2}x the single-row INSERT baseline (target 1x)",
            e2e.ops_per_sec / insert_base.ops_per_sec
        );
        println!(
            "at 80% of the INSERT baseline ({target:.0}/s offered, {offered:.0}/s sent): webhook -> row p99 {:.1} ms (target < 100 ms)",
            at_target.p99_ms
        );
        println!(
            "at half the service's own webhook -> row rate ({own_target:.0}/s offered, {own_offered:.0}/s sent): webhook -> row p99 {:.1} ms",
            at_own.p99_ms
        );
    });
}
