use std::time::Duration;

use futures::StreamExt;
use sandbox::Fault;
use serde_json::{Value, json};

use crate::helpers::{TestInventory, WAIT, spawn};

const LOAD: &str = "/admin/bulk/jobs";

async fn create(t: &TestInventory, body: Value) -> (u16, Value) {
    let response =
        t.app.http.post(t.app.url(LOAD)).bearer_auth(harness::ADMIN_TOKEN).json(&body).send();
    let response = response.await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn post(t: &TestInventory, path: &str) -> (u16, Value) {
    let response = t.app.http.post(t.app.url(path)).bearer_auth(harness::ADMIN_TOKEN).send();
    let response = response.await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn job_when(t: &TestInventory, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let path = format!("{LOAD}/{id}");
    harness::eventually(WAIT * 3, || async {
        let job: Value = t.app.admin_get(&path).await.json().await.ok()?;
        done(&job).then_some(job)
    })
    .await
    .unwrap_or_else(|| panic!("job {id} never reached the expected state"))
}

fn stock_load(batch_size: i64) -> Value {
    json!({"source": "erp", "target": "inventory", "entity": "stock", "batch_size": batch_size})
}

/// The offsets of the ERP inventory pages requested so far, in order.
fn offsets(erp: &sandbox::SimServer) -> Vec<String> {
    erp.requests()
        .iter()
        .filter(|r| r.method == "GET")
        .filter_map(|r| {
            r.query.split('&').find_map(|kv| kv.strip_prefix("offset=")).map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn a_bulk_load_from_the_erp_sets_stock_page_by_page_and_reports_bad_records() {
    let t = spawn().await;
    for i in 0..110 {
        t.put_product(&format!("BULK-{i:03}"), 0).await;
        t.sandbox.erp.set_level(&format!("BULK-{i:03}"), "W1", i);
    }
    for i in 0..10 {
        t.sandbox.erp.set_level(&format!("UNKNOWN-{i}"), "W1", 5);
    }
    let client = t.nats.client().await;
    let mut alerts = client.subscribe(t.nats.subject("alerts.info")).await.unwrap();
    let mut events = client.subscribe(t.nats.subject("sync.events.erp.bulk.stock")).await.unwrap();
    let mut ledger = client.subscribe(t.nats.subject("inventory.>")).await.unwrap();
    client.flush().await.unwrap(); // the subscriptions are in place before anything is published

    let (status, job) = create(&t, stock_load(50)).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "queued");
    let id = job["id"].as_str().unwrap();
    assert!(id.starts_with("SYNC-"), "{id}");

    let job = job_when(&t, id, |j| j["status"] == "completed").await;
    assert_eq!(
        (&job["pages"], &job["total_records"], &job["processed_records"], &job["error_count"]),
        (&json!(3), &json!(120), &json!(110), &json!(10)),
        "{job}"
    );
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 10);
    assert_eq!(errors[0]["record_id"], "W1/UNKNOWN-0");
    assert!(errors[0]["error"].as_str().unwrap().contains("unknown product"), "{}", errors[0]);
    assert_eq!(offsets(&t.sandbox.erp), ["0", "50", "100"]);

    assert_eq!(t.on_hand("BULK-007", "W1").await, 7);
    assert_eq!(t.on_hand("BULK-109", "W1").await, 109);
    assert_eq!(
        t.count("SELECT count(*) AS n FROM inventory.ledger WHERE source = 'erp'").await,
        110
    );
    // The other systems receive the levels (the ERP, their origin, is not a target).
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("BULK-109", "W1") == Some(109)).await);
    assert!(t.sandbox.shop.wait_until(WAIT, |x| x.level("BULK-050", "W1") == Some(50)).await);

    let alert = tokio::time::timeout(WAIT, alerts.next()).await.unwrap().unwrap();
    let alert: Value = serde_json::from_slice(&alert.payload).unwrap();
    assert_eq!(alert["data"]["kind"], "bulk_sync_completed");
    assert_eq!(alert["data"]["title"], format!("Bulk Sync Complete: {id}"));
    assert!(alert["data"]["text"].as_str().unwrap().contains("Processed: 110\nErrors: 10"));
    let mut statuses = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        let event: Value = serde_json::from_slice(&msg.payload).unwrap();
        statuses.push(event["data"]["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(statuses, ["running", "completed"]);

    // One ledger event per page, carrying its records; none per record.
    let mut pages = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(2), ledger.next()).await {
        let subject = msg.subject.as_str().trim_start_matches(&t.nats.subject(""));
        if subject.starts_with("inventory.level.") {
            continue;
        }
        assert_eq!(subject, "inventory.loaded.erp", "no per-record ledger event");
        let event: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(event["data"]["job_id"], id);
        pages.push(event["data"]["records"].as_array().unwrap().len());
    }
    assert_eq!(pages, [49, 50, 10], "BULK-000 counted 0 is unchanged, so not listed");
    // A page is the ERP's read-back: nothing it delivered is read back or pushed to the ERP.
    t.assert_settled(0).await;
    assert!(
        t.sandbox.erp.requests().iter().all(|r| r.method == "GET" && r.query.contains("offset=")),
        "{:?}",
        t.sandbox.erp.requests()
    );
    let list: Vec<Value> = t.app.admin_get(LOAD).await.json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
}

#[tokio::test]
async fn a_snapshot_read_before_a_newer_erp_count_never_undoes_it() {
    let t = spawn().await;
    t.put_product("SNAP-1", 0).await;
    t.put_product("SNAP-2", 0).await;
    t.sandbox.erp.set_level("SNAP-1", "W1", 10);
    t.sandbox.erp.set_level("SNAP-2", "W1", 20);
    // The ERP answers the page slowly: meanwhile its user counts SNAP-1 again (7) and the ERP
    // reports it. The page read before that count still says 10.
    t.sandbox.erp.set_latency(Some(Duration::from_millis(1500)));
    let (_, job) = create(&t, stock_load(10)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    harness::eventually(WAIT, || async {
        (!t.sandbox.erp.requests().is_empty()
            || t.count("SELECT count(*) AS n FROM bulk.jobs WHERE status = 'running'").await > 0)
            .then_some(())
    })
    .await
    .expect("the load runs");
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.publish_count("SNAP-1", "count-live", 7, chrono::Utc::now(), "live-1").await;
    assert!(
        harness::eventually(WAIT, || async {
            (t.on_hand("SNAP-1", "W1").await == 7).then_some(())
        })
        .await
        .is_some(),
        "the live count is applied while the page is read"
    );
    let done = job_when(&t, &id, |j| j["status"] == "completed").await;
    t.sandbox.erp.set_latency(None);
    t.sandbox.erp.set_level("SNAP-1", "W1", 7);
    assert_eq!(done["error_count"], 0, "a stale record is no error: {done}");
    assert_eq!(t.on_hand("SNAP-1", "W1").await, 7, "the older snapshot did not undo the count");
    assert_eq!(t.on_hand("SNAP-2", "W1").await, 20);
    // Every system ends with the ERP's figure; 10 was never pushed anywhere.
    assert!(t.sandbox.wms.wait_until(WAIT, |x| x.level("SNAP-1", "W1") == Some(7)).await);
    assert!(t.sandbox.shop.wait_until(WAIT, |x| x.level("SNAP-2", "W1") == Some(20)).await);
    t.assert_settled(0).await;
    assert_eq!(t.sandbox.erp.level("SNAP-1", "W1"), Some(7));
    assert_eq!(
        t.count("SELECT count(*) AS n FROM inventory.ledger WHERE sku = 'SNAP-1' AND quantity_after = 10")
            .await,
        0
    );
}

#[tokio::test]
async fn bulk_jobs_are_validated_and_one_load_runs_at_a_time_until_cancelled() {
    let t = spawn().await;

    let (status, problem) =
        create(&t, json!({"source": "erp", "target": "inventory", "entity": "orders"})).await;
    assert_eq!(status, 422);
    assert_eq!(problem["field"], "entity");
    assert!(
        problem["detail"].as_str().unwrap().contains("stock from erp to inventory"),
        "{problem}"
    );
    let (status, problem) =
        create(&t, json!({"source": "crm", "target": "inventory", "entity": "stock"})).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("source")));
    let (status, problem) = create(&t, stock_load(0)).await;
    assert_eq!((status, problem["field"].as_str()), (422, Some("batch_size")));
    let (status, _) =
        create(&t, json!({"source": "erp", "target": "inventory", "entity": "stock", "x": 1}))
            .await;
    assert!((400..500).contains(&status));
    let unauthenticated =
        t.app.http.post(t.app.url(LOAD)).json(&stock_load(10)).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(t.count("SELECT count(*) AS n FROM bulk.jobs").await, 0, "nothing written");

    // A slow ERP (1.5 s a page, one record a page): the job runs for a long time.
    for i in 0..30 {
        t.sandbox.erp.set_level(&format!("SLOW-{i:02}"), "W1", i);
    }
    t.sandbox.erp.set_latency(Some(Duration::from_millis(1500)));
    let (_, job) = create(&t, stock_load(1)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    job_when(&t, &id, |j| j["status"] == "running").await;
    let (status, conflict) = create(&t, stock_load(10)).await;
    assert_eq!(status, 409);
    assert_eq!(conflict["job_id"], id.as_str());

    let (status, cancelled) = post(&t, &format!("{LOAD}/{id}/cancel")).await;
    assert_eq!((status, cancelled["status"].as_str()), (200, Some("cancelled")));
    // The worker notices within its heartbeat and stops asking the ERP (a worker that went on
    // would read two more pages in the next 3 s).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after_cancel = t.sandbox.erp.requests().len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(t.sandbox.erp.requests().len(), after_cancel, "the cancelled job stopped");
    let cancelled: Value = t.app.admin_get(&format!("{LOAD}/{id}")).await.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let (status, _) = post(&t, &format!("{LOAD}/{id}/cancel")).await;
    assert_eq!(status, 409, "an ended job cannot be cancelled again");
    let (status, _) = post(&t, &format!("{LOAD}/SYNC-none/cancel")).await;
    assert_eq!(status, 404);
    let (status, _) = create(&t, stock_load(10)).await;
    assert_eq!(status, 202, "a new load may start once the old one is cancelled");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_failed_bulk_load_resumes_from_its_checkpoint() {
    let t = spawn().await;
    for i in 0..30 {
        t.put_product(&format!("RES-{i:02}"), 0).await;
        t.sandbox.erp.set_level(&format!("RES-{i:02}"), "W1", 100 + i);
    }
    let client = t.nats.client().await;
    let mut warnings = client.subscribe(t.nats.subject("alerts.warning")).await.unwrap();
    client.flush().await.unwrap();
    // The second page is refused: the job fails after applying the first.
    t.sandbox.erp.fail_path("offset=10", 1, Fault::Status(400));

    let (_, job) = create(&t, stock_load(10)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let failed = job_when(&t, &id, |j| j["status"] == "failed").await;
    assert_eq!(failed["processed_records"], 10);
    assert_eq!(failed["checkpoint"], json!({"offset": 10}));
    assert!(failed["error"].as_str().unwrap().contains("400"), "{failed}");
    let alert = tokio::time::timeout(WAIT, warnings.next()).await.unwrap().unwrap();
    let alert: Value = serde_json::from_slice(&alert.payload).unwrap();
    assert_eq!(alert["data"]["kind"], "bulk_sync_failed");

    let (status, resumed) = post(&t, &format!("{LOAD}/{id}/resume")).await;
    assert_eq!((status, resumed["status"].as_str()), (200, Some("queued")));
    let done = job_when(&t, &id, |j| j["status"] == "completed").await;
    assert_eq!(done["processed_records"], 30);
    assert_eq!(done["error"], Value::Null);
    assert_eq!(
        offsets(&t.sandbox.erp),
        ["0", "10", "10", "20"],
        "the first page is not read again"
    );
    assert_eq!(t.on_hand("RES-29", "W1").await, 129);
    let (status, _) = post(&t, &format!("{LOAD}/{id}/resume")).await;
    assert_eq!(status, 409, "a completed job cannot be resumed");
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_bulk_load_interrupted_by_a_restart_goes_on_from_its_checkpoint() {
    let t = spawn().await;
    for i in 0..60 {
        t.put_product(&format!("RST-{i:02}"), 0).await;
        t.sandbox.erp.set_level(&format!("RST-{i:02}"), "W1", 1000 + i);
    }
    // 1 s a page: the load cannot finish while the first process stops.
    t.sandbox.erp.set_latency(Some(Duration::from_secs(1)));
    let (_, job) = create(&t, stock_load(5)).await;
    let id = job["id"].as_str().unwrap().to_owned();
    job_when(&t, &id, |j| j["pages"].as_i64().unwrap_or(0) >= 2).await;

    // A graceful stop (as on SIGTERM) in the middle of the load, then a new process.
    let TestInventory { app, sandbox, config, nats, db } = t;
    app.stop().await;
    sandbox.erp.set_latency(None);
    let restarted = harness::TestApp::spawn(inventory_sync::build(config).await.unwrap());
    let path = format!("{LOAD}/{id}");
    let done = harness::eventually(WAIT * 3, || async {
        let job: Value = restarted.admin_get(&path).await.json().await.ok()?;
        (job["status"] == "completed").then_some(job)
    })
    .await
    .expect("the load completes after the restart");
    assert_eq!(done["processed_records"], 60);
    assert_eq!(done["attempts"], 2, "claimed once by each process");
    // Every page read, in order; the page read ahead when the first process stopped is read once
    // more by the second, and no other.
    let read = offsets(&sandbox.erp);
    let mut distinct = read.clone();
    distinct.dedup();
    let expected: Vec<String> = (0..12).map(|p| (p * 5).to_string()).collect();
    assert_eq!(distinct, expected, "every page read, none skipped: {read:?}");
    assert!(
        read.len() <= expected.len() + 1,
        "at most the page read ahead is read again: {read:?}"
    );
    let stock: Value = restarted.admin_get("/stock/RST-59").await.json().await.unwrap();
    assert_eq!(stock["on_hand"], 1059);
    harness::assert_settled(&db, &nats, "inventory", 0).await;
    restarted.stop().await;
    drop((sandbox, nats, db));
}
