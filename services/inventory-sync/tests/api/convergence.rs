//! Everything ends in agreement: simulated systems that keep their own stock figures and change
//! them first (sales, receipts, counts), then report the change, while our pushes reach them
//! after random delays and cross their changes in the network. Once traffic stops, every
//! system must hold our figure.

use std::time::{Duration, Instant};

use sandbox::{Fault, SimServer};
use serde_json::{Value, json};

use crate::helpers::{TestInventory, WAIT, adjustment, spawn};

const SKUS: [&str; 4] = ["CV-1", "CV-2", "CV-3", "CV-4"];
const START: i64 = 10_000;

fn systems(t: &TestInventory) -> [(&'static str, &SimServer); 4] {
    let s = &t.sandbox;
    [("erp", &s.erp), ("ecommerce", &s.shop), ("pos", &s.pos), ("wms", &s.wms)]
}

/// One system's own traffic: it changes its figure, then reports the change.
async fn play(t: &TestInventory, source: &'static str, sim: &SimServer, seed: u64, until: Instant) {
    let mut n = 0u64;
    let mut rng = seed;
    let mut next = move |bound: u64| {
        // xorshift: reproducible per system, no shared state between tasks.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    while Instant::now() < until && n < 400 {
        n += 1;
        let sku = SKUS[next(SKUS.len() as u64) as usize];
        let reference = format!("{source}-{n}");
        let body = match next(3) {
            0 => {
                let sold = 1 + next(3) as i64;
                sim.change_level(sku, "W1", |q| q - sold);
                adjustment(source, sku, "shipment", sold, &reference)
            }
            1 => {
                let received = 1 + next(5) as i64;
                sim.change_level(sku, "W1", |q| q + received);
                adjustment(source, sku, "receipt", received, &reference)
            }
            _ => {
                let counted = sim.change_level(sku, "W1", |q| q + next(7) as i64 - 3);
                adjustment(source, sku, "count", counted, &reference)
            }
        };
        let (status, answer) = t.adjust(&body).await;
        assert!(status == 201 || status == 200, "{status} {answer}");
        tokio::time::sleep(Duration::from_millis(next(40))).await;
    }
}

async fn figures(t: &TestInventory) -> Vec<(String, i64, Vec<Option<i64>>)> {
    let mut out = Vec::new();
    for sku in SKUS {
        let ours = t.on_hand(sku, "W1").await;
        let theirs = systems(t).iter().map(|(_, sim)| sim.level(sku, "W1")).collect();
        out.push((sku.to_owned(), ours, theirs));
    }
    out
}

fn agree(figures: &[(String, i64, Vec<Option<i64>>)]) -> bool {
    figures.iter().all(|(_, ours, theirs)| theirs.iter().all(|x| *x == Some(*ours)))
}

#[tokio::test]
async fn systems_that_change_their_own_figures_end_in_agreement_with_crossing_pushes() {
    let t = spawn().await;
    for sku in SKUS {
        t.put_product(sku, 0).await;
        // Every system starts with the same figure as we do.
        for (_, sim) in systems(&t) {
            sim.set_level(sku, "W1", START);
        }
        t.adjust(&adjustment("manual", sku, "count", START, &format!("start-{sku}"))).await;
    }
    for (_, sim) in systems(&t) {
        sim.set_jitter(Some(Duration::from_millis(80)));
    }

    let until = Instant::now() + Duration::from_secs(8);
    let [a, b, c, d] = systems(&t);
    tokio::join!(
        play(&t, a.0, a.1, 0x9e37_79b9, until),
        play(&t, b.0, b.1, 0x85eb_ca6b, until),
        play(&t, c.0, c.1, 0xc2b2_ae35, until),
        play(&t, d.0, d.1, 0x27d4_eb2f, until),
    );

    let settled = harness::eventually(WAIT * 2, || async {
        let now = figures(&t).await;
        agree(&now).then_some(now)
    })
    .await;
    assert!(settled.is_some(), "not in agreement after traffic stopped: {:?}", figures(&t).await);
    // Agreement is reached through read-backs: systems' own changes were not blindly echoed.
    let confirmed = t
        .count(
            "SELECT count(*) AS n FROM inventory.push_log \
             WHERE status = 'skipped' AND error LIKE '%read back%'",
        )
        .await;
    assert!(confirmed > 0, "no own change was confirmed by a read-back");
    assert_eq!(t.count("SELECT count(*) AS n FROM inventory.dead_letters").await, 0);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_crossing_push_that_overwrote_a_count_is_corrected() {
    let t = spawn().await;
    t.put_product("CROSS-1", 0).await;
    t.sandbox.erp.set_level("CROSS-1", "W1", 0);
    // Our push of 30 reaches the ERP only after the ERP counted 17 and reported it.
    t.sandbox.erp.set_latency(Some(Duration::from_millis(600)));
    t.adjust(&adjustment("wms", "CROSS-1", "receipt", 30, "in")).await;
    assert!(t.sandbox.erp.wait_until(WAIT, |x| x.in_flight() == 1).await, "the push is on its way");
    t.sandbox.erp.change_level("CROSS-1", "W1", |_| 17);
    let (status, _) = t.adjust(&adjustment("erp", "CROSS-1", "count", 17, "count-1")).await;
    assert_eq!(status, 201);
    t.sandbox.erp.set_latency(None);
    assert!(t.sandbox.erp.wait_until(WAIT, |x| !x.requests().is_empty()).await);

    // Settled: nothing in flight, the ERP told of our latest version, and it holds 17.
    let settled = harness::eventually(WAIT, || async {
        let quiet = t.sandbox.erp.in_flight() == 0
            && t.target_status("erp").await.is_some_and(|s| s["behind"] == 0);
        (quiet && t.sandbox.erp.level("CROSS-1", "W1") == Some(17)).then_some(())
    });
    assert!(
        settled.await.is_some(),
        "the ERP kept the crossing push's value: {:?}",
        t.sandbox.erp.requests()
    );
    assert_eq!(t.on_hand("CROSS-1", "W1").await, 17);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn an_own_change_is_pushed_back_when_the_target_cannot_be_read() {
    let t = spawn().await;
    t.put_product("CROSS-2", 0).await;
    t.sandbox.erp.set_level("CROSS-2", "W1", 5);
    // The ERP's read-back (`GET /api/inventory?sku=...`) fails.
    t.sandbox.erp.fail_path("sku=", 1, Fault::Status(503));

    t.adjust(&adjustment("erp", "CROSS-2", "count", 5, "count-1")).await;

    assert!(
        t.sandbox.erp.wait_until(WAIT, |x| x.accepted().iter().any(|r| r.method == "PUT")).await,
        "a failed read-back is not taken as agreement: {:?}",
        t.sandbox.erp.requests()
    );
    assert_eq!(t.sandbox.erp.level("CROSS-2", "W1"), Some(5));
    t.assert_settled(0).await;
}

#[tokio::test]
async fn anti_entropy_reads_every_target_back_and_corrects_drift() {
    let t = spawn().await;
    for sku in ["AE-1", "AE-2"] {
        t.put_product(sku, 0).await;
        t.adjust(&adjustment("manual", sku, "receipt", 8, &format!("in-{sku}"))).await;
    }
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("AE-2", "W1") == Some(8)).await);
    assert!(
        harness::eventually(WAIT, || async {
            t.target_status("wms").await.filter(|s| s["behind"] == 0)
        })
        .await
        .is_some()
    );
    // Someone edits the WMS directly; no webhook tells us.
    t.sandbox.wms.set_level("AE-2", "W1", 3);

    let pass = |target: &'static str| {
        t.app
            .http
            .post(t.app.url(&format!("/admin/targets/{target}/anti-entropy")))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
    };
    let report: Value = pass("wms").await.unwrap().json().await.unwrap();
    assert_eq!(
        report,
        json!({"target": "wms", "checked": 2, "drifted": 1, "unreadable": 0, "refused": 0, "readable": true})
    );
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("AE-2", "W1") == Some(8)).await);
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM inventory.push_log \
             WHERE target = 'wms' AND status = 'drifted' AND record_key = 'W1/AE-2'"
        )
        .await,
        1
    );
    let metrics = t.app.http.get(t.app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("push_drift_total{target=\"wms\"}"), "{metrics}");

    // Once corrected, a second pass finds nothing.
    assert!(
        harness::eventually(WAIT, || async {
            let again: Value = pass("wms").await.ok()?.json().await.ok()?;
            (again["drifted"] == 0 && again["checked"] == 2).then_some(())
        })
        .await
        .is_some()
    );
    assert_eq!(pass("fax").await.unwrap().status(), 404);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn anti_entropy_repairs_a_push_that_was_given_up() {
    let t = spawn().await;
    t.put_product("AE-3", 0).await;
    t.set_push_max_attempts(1).await;
    t.sandbox.wms.fail_next(1, Fault::Status(503));
    t.adjust(&adjustment("manual", "AE-3", "receipt", 4, "in")).await;
    let dead = harness::eventually(WAIT, || async {
        let rows: Vec<Value> = t.app.admin_get("/admin/dead-letters").await.json().await.ok()?;
        (!rows.is_empty()).then_some(rows)
    });
    assert!(dead.await.is_some(), "the push to the WMS was given up");
    assert_eq!(t.sandbox.wms.level("AE-3", "W1"), None);

    let report: Value = t
        .app
        .http
        .post(t.app.url("/admin/targets/wms/anti-entropy"))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(report["drifted"], 1, "{report}");
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("AE-3", "W1") == Some(4)).await);
    t.assert_settled(1).await;
}

#[tokio::test]
async fn anti_entropy_counts_a_permanent_refusal_once_and_stops_until_the_record_changes() {
    let t = spawn().await;
    t.put_product("AE-4", 0).await;
    // The ERP refuses this sku's level for good (and can still be read).
    t.sandbox.erp.fail_path("/api/inventory/AE-4", 100, Fault::Status(422));
    t.adjust(&adjustment("manual", "AE-4", "receipt", 4, "in")).await;
    let ledger = "SELECT count(*) AS n FROM inventory.record_errors \
                  WHERE system = 'erp' AND record_id LIKE '%AE-4%' AND status = 'open' AND attempts = 1";
    let refused =
        harness::eventually(WAIT, || async { (t.count(ledger).await == 1).then_some(()) });
    assert!(refused.await.is_some(), "the refused push is in the error ledger");
    let pushes = || t.sandbox.erp.requests().into_iter().filter(|r| r.method == "PUT").count();
    assert_eq!(pushes(), 1);

    let pass = || async {
        let report: Value = t
            .app
            .http
            .post(t.app.url("/admin/targets/erp/anti-entropy"))
            .bearer_auth(harness::ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        report
    };
    for _ in 0..3 {
        let report = pass().await;
        assert_eq!(
            (report["drifted"].as_u64(), report["refused"].as_u64()),
            (Some(0), Some(1)),
            "{report}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pushes(), 1, "a refused record is not pushed again on every pass");
    assert_eq!(t.count(ledger).await, 1, "and counted once");
    let dead = t.count("SELECT count(*) AS n FROM inventory.dead_letters").await;
    assert_eq!(dead, 1);

    // Once the record changes, it is pushed again.
    t.adjust(&adjustment("manual", "AE-4", "receipt", 1, "in-2")).await;
    assert!(
        harness::eventually(WAIT, || async { (pushes() == 2).then_some(()) }).await.is_some(),
        "a new version is pushed"
    );
    t.assert_settled(2).await;
}
