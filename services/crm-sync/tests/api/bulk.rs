use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestCrm, WAIT, spawn};

async fn job_done(t: &TestCrm, id: &str) -> Value {
    harness::eventually(Duration::from_secs(60), || async {
        let job: Value =
            t.app.admin_get(&format!("/admin/bulk/jobs/{id}")).await.json().await.ok()?;
        matches!(job["status"].as_str(), Some("completed" | "failed")).then_some(job)
    })
    .await
    .expect("the job ends")
}

#[tokio::test]
async fn a_dry_run_then_a_bulk_load_pages_through_the_crm_and_emails_its_end() {
    let t = spawn().await;
    for i in 0..250 {
        t.sandbox.crm.crm_change(
            "contacts",
            None,
            json!({"firstname": format!("C{i:03}"), "email": format!("c{i}@example.com")}),
        );
    }
    // One the mapper refuses: HubSpot holds a NUL character, PostgreSQL text cannot.
    t.sandbox.crm.crm_change("contacts", None, json!({"firstname": "Bad\u{0}Name"}));

    let (status, dry) = t
        .admin_post(
            "/admin/bulk/dry-run",
            &json!({"source": "crm", "target": "crm", "entity": "contacts"}),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(
        (dry["read"].as_u64(), dry["create"].as_u64(), dry["error_count"].as_u64()),
        (Some(251), Some(250), Some(1))
    );
    assert_eq!(dry["differences"].as_array().unwrap().len(), 50);
    assert_eq!(dry["errors"][0]["error"], "data.firstname: must not contain NUL characters");
    assert_eq!(
        t.count("SELECT count(*) AS n FROM crm.contacts").await,
        0,
        "a dry run writes nothing"
    );

    let (status, job) = t
        .admin_post(
            "/admin/bulk/jobs",
            &json!({"source": "crm", "target": "crm", "entity": "contacts", "batch_size": 100}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job = job_done(&t, job["id"].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["pages"].as_i64(), job["error_count"].as_i64()),
        (Some("completed"), Some(3), Some(1)),
        "{job}"
    );
    assert_eq!(
        t.count(
            "SELECT count(*) AS n FROM crm.contacts WHERE origin = 'crm' AND local_version = 0"
        )
        .await,
        250
    );
    let cursors: Vec<String> = t
        .sandbox
        .crm
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.query.clone())
        .collect();
    assert!(cursors.iter().any(|q| q.contains("after=")), "{cursors:?}");
    // Nothing loaded from the CRM goes back to it.
    assert!(t.sandbox.crm.requests().iter().all(|r| r.method == "GET"));

    // A dry run now finds everything in place.
    let (_, again) = t
        .admin_post(
            "/admin/bulk/dry-run",
            &json!({"source": "crm", "target": "crm", "entity": "contacts"}),
        )
        .await;
    assert_eq!(
        (again["create"].as_u64(), again["update"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(0), Some(250))
    );

    // The end of the load is emailed (text and HTML).
    let mail = harness::eventually(WAIT, || async {
        t.sandbox.smtp.mails().into_iter().find(|m| m.data.contains("Bulk Sync Complete"))
    })
    .await
    .expect("a completion email");
    assert_eq!(mail.to, ["ops@example.com"]);
    assert!(
        mail.data
            .contains(&format!("Subject: Bulk Sync Complete: {}", job["id"].as_str().unwrap())),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("text/plain") && mail.data.contains("text/html"), "{}", mail.data);
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_bulk_load_keeps_to_its_share_of_the_quota_and_live_pushes_get_through() {
    let t = spawn().await;
    for i in 0..120 {
        t.sandbox.crm.crm_change("companies", None, json!({"name": format!("Co {i}")}));
    }
    // 20 requests per second; bulk work may spend half.
    t.sandbox.crm.set_quota(20, Duration::from_secs(1));
    let (status, job) = t
        .admin_post(
            "/admin/bulk/jobs",
            &json!({"source": "crm", "target": "crm", "entity": "accounts", "batch_size": 5}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    // Live pushes while the load runs.
    for i in 0..5 {
        t.sql(&format!("INSERT INTO crm.contacts (first_name) VALUES ('Live {i}')")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let job = job_done(&t, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.accounts").await, 120);
    let pushed = harness::eventually(WAIT, || async {
        (t.count("SELECT count(*) AS n FROM crm.contacts WHERE external_id IS NOT NULL").await == 5)
            .then_some(())
    });
    assert!(pushed.await.is_some(), "every live push delivered");
    let requests = t.sandbox.crm.requests();
    let refused_bulk = requests.iter().filter(|r| r.method == "GET" && r.status == 429).count();
    let refused_live = requests.iter().filter(|r| r.method == "POST" && r.status == 429).count();
    // 24 pages at 10 per second: the load paused by itself rather than run into the limit.
    assert_eq!(
        (refused_bulk, refused_live),
        (0, 0),
        "{:?}",
        requests.iter().map(|r| (&r.method, r.status)).collect::<Vec<_>>()
    );
    t.assert_settled(0).await;
}

#[tokio::test]
async fn a_bulk_page_the_database_refuses_is_applied_record_by_record() {
    let t = spawn().await;
    // A company's own rule on its contacts, which one CRM record breaks.
    t.sql("ALTER TABLE crm.contacts ADD CONSTRAINT no_test_addresses CHECK (email NOT LIKE '%@test.invalid')")
        .await;
    for i in 0..5 {
        t.sandbox.crm.crm_change(
            "contacts",
            None,
            json!({"firstname": format!("P{i}"), "email": format!("p{i}@example.com")}),
        );
    }
    let bad = t.sandbox.crm.crm_change(
        "contacts",
        None,
        json!({"firstname": "Bad", "email": "bad@test.invalid"}),
    );
    let (status, job) = t
        .admin_post(
            "/admin/bulk/jobs",
            &json!({"source": "crm", "target": "crm", "entity": "contacts", "batch_size": 100}),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job = job_done(&t, job["id"].as_str().unwrap()).await;
    assert_eq!(
        (job["status"].as_str(), job["processed_records"].as_i64(), job["error_count"].as_i64()),
        (Some("completed"), Some(5), Some(1)),
        "{job}"
    );
    assert_eq!(job["errors"][0]["record_id"], bad["id"]);
    assert!(
        job["errors"][0]["error"].as_str().unwrap().contains("no_test_addresses"),
        "{}",
        job["errors"][0]
    );
    assert_eq!(t.count("SELECT count(*) AS n FROM crm.contacts").await, 5);
}
