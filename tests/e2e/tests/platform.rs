//! All six services together, and readiness across dependency outages.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use harness::{TestApp, TestDb, TestNats};
use serde_json::json;

#[tokio::test]
async fn all_six_services_boot_together_report_ready_and_stop_gracefully() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let cfg = |s| harness::common_config(s, &db, &nats);
    let inventory = inventory_test_config(&db, &nats);

    // Started concurrently: migrations and stream declarations must not race.
    let (crm, erp, inv, user, resolver, monitor) = tokio::join!(
        crm_sync::build(crm_sync::Config::unconnected(cfg(crm_sync::SERVICE))),
        erp_sync::build(erp_sync::Config::unconnected(cfg(erp_sync::SERVICE)).unwrap()),
        inventory_sync::build(inventory),
        user_sync::build(user_sync::Config::defaults(cfg(user_sync::SERVICE))),
        conflict_resolver::build(conflict_resolver::Config::defaults(cfg(
            conflict_resolver::SERVICE
        ))),
        sync_monitor::build(sync_monitor::Config::defaults(cfg(sync_monitor::SERVICE))),
    );
    let apps: Vec<TestApp> = [crm, erp, inv, user, resolver, monitor]
        .into_iter()
        .map(|a| TestApp::spawn(a.unwrap()))
        .collect();

    for app in &apps {
        let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200, "{}", app.address);
        let openapi: serde_json::Value =
            app.http.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
        assert!(openapi["paths"]["/healthz"].is_object());
        let unauthenticated = app.http.get(app.url("/admin/settings")).send().await.unwrap();
        assert_eq!(unauthenticated.status(), 401);
    }
    for app in apps {
        app.stop().await;
    }
}

fn inventory_test_config(db: &TestDb, nats: &TestNats) -> inventory_sync::Config {
    inventory_sync::Config {
        common: harness::common_config(inventory_sync::SERVICE, db, nats),
        api_keys: vec![],
        hmac_secrets: vec![],
        targets: Default::default(),
        adjuster: shared::db::group_commit::GroupCommitConfig { workers: 2, max_batch: 64 },
        push: shared::push::PushConfig {
            concurrency: 2,
            anti_entropy_every: None,
            ..Default::default()
        },
    }
}

/// A private nats-server (this machine's binary), so the test can kill and restart it.
struct OwnNats {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl OwnNats {
    fn start(port: u16, dir: std::path::PathBuf) -> Self {
        // NATS_SERVER_BIN first (scripts/test.sh sets it, also in docker mode), then the usual
        // install locations.
        let bin = std::env::var("NATS_SERVER_BIN")
            .ok()
            .into_iter()
            .chain(
                ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
                    .map(String::from),
            )
            .find(|p| std::path::Path::new(p).exists())
            .expect(
                "this test needs a nats-server binary: install nats-server or set NATS_SERVER_BIN",
            );
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self { port, dir, child: Some(child) }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn ready(app: &TestApp) -> u16 {
    app.http.get(app.url("/readyz")).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

async fn wait_ready(app: &TestApp, want: u16) -> bool {
    harness::eventually(Duration::from_secs(30), || async {
        (ready(app).await == want).then_some(())
    })
    .await
    .is_some()
}

async fn wait_status(app: &TestApp, want: &str) -> bool {
    harness::eventually(Duration::from_secs(30), || async {
        let r = app.http.get(app.url("/readyz")).send().await.ok()?;
        let body: serde_json::Value = r.json().await.ok()?;
        (body["status"] == want).then_some(())
    })
    .await
    .is_some()
}

#[tokio::test]
async fn a_service_started_before_nats_waits_for_it_then_becomes_ready() {
    let db = TestDb::new().await;
    let port = harness::process::free_port();
    let nats = TestNats { url: format!("nats://127.0.0.1:{port}"), prefix: "WAIT".into() };
    let config =
        crm_sync::Config::unconnected(harness::common_config(crm_sync::SERVICE, &db, &nats));
    // Nothing listens on the port yet: the service waits instead of exiting.
    let starting = tokio::spawn(crm_sync::build(config));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!starting.is_finished(), "the service gave up on a NATS that is not there yet");
    let dir = std::env::temp_dir().join(format!("datasync-nats-{port}"));
    let own = OwnNats::start(port, dir);
    let app = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("the service starts once NATS is up")
        .unwrap()
        .unwrap();
    let app = TestApp::spawn(app);
    assert!(wait_status(&app, "ok").await);
    app.stop().await;
    drop(own);
}

#[tokio::test]
async fn with_migrate_on_start_off_a_service_waits_for_the_migration_job() {
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let mut common = harness::common_config(crm_sync::SERVICE, &db, &nats);
    common.migrate_on_start = false;
    let starting = tokio::spawn(crm_sync::build(crm_sync::Config::unconnected(common)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!starting.is_finished(), "the service must neither migrate nor give up");
    let mut probe = AsyncPgConnection::establish(&db.url).await.unwrap();
    let tables: i64 = {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        diesel::sql_query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'crm'",
        )
        .get_result::<N>(&mut probe)
        .await
        .unwrap()
        .n
    };
    assert_eq!(tables, 0, "the service applied nothing itself");
    // The migration job runs; the service goes on.
    shared::db::migrate(&db.url).await.unwrap();
    let app = tokio::time::timeout(Duration::from_secs(60), starting)
        .await
        .expect("the service starts once the migrations are there")
        .unwrap()
        .unwrap();
    let app = TestApp::spawn(app);
    assert!(wait_status(&app, "ok").await);
    app.stop().await;
}

/// The Kubernetes split: the migration job (the owner) migrates and grants the services' role;
/// a service connected as that role, not migrating, does its work and cannot change the schema.
#[tokio::test]
async fn a_service_role_without_ddl_rights_does_all_its_work() {
    #[derive(diesel::QueryableByName)]
    struct Adjusted {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        on_hand: i64,
    }
    let (db, nats) = (TestDb::new().await, TestNats::new());
    let role = format!("app_{}", db.url.rsplit('/').next().unwrap());
    let mut admin = AsyncPgConnection::establish(&db.url).await.unwrap();
    diesel::sql_query(format!("CREATE ROLE {role} LOGIN")).execute(&mut admin).await.unwrap();
    let bin = harness::process::workspace_bin("inventory-sync");
    let migrated = harness::process::command(&bin, &db, &nats, harness::process::free_port())
        .env("DATABASE_APP_ROLE", &role)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{}", String::from_utf8_lossy(&migrated.stderr));

    let app_url = db.url.replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
    assert_ne!(app_url, db.url);
    let key = "ddl-less-key-0123456789";
    let env = [
        ("DATABASE_URL", app_url.as_str()),
        ("MIGRATE_ON_START", "false"),
        ("INVENTORY_API_KEYS", &format!("test:{key}")),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let (mut child, base) = harness::process::spawn_ready(&bin, &db, &nats, &env).await;
    diesel::sql_query("INSERT INTO inventory.products (sku, name) VALUES ('MUG-1', 'Mug')")
        .execute(&mut admin)
        .await
        .unwrap();
    let r = harness::test_client()
        .post(format!("{base}/adjustments"))
        .header("X-API-Key", key)
        .json(&json!({"source": "test", "sku": "MUG-1", "warehouse": "W1", "type": "receipt",
            "quantity": 5, "reference": "r-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let relayed = harness::eventually(Duration::from_secs(20), || async {
        harness::pending(&db, &nats, "inventory").await.outbox.eq(&0).then_some(())
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert!(relayed.is_some(), "the relay publishes and deletes outbox rows as the app role");
    let stock: Adjusted = diesel::sql_query(
        "SELECT on_hand::bigint AS on_hand FROM inventory.stock WHERE sku = 'MUG-1'",
    )
    .get_result(&mut admin)
    .await
    .unwrap();
    assert_eq!(stock.on_hand, 5);

    let mut app = AsyncPgConnection::establish(&app_url).await.unwrap();
    let refused =
        diesel::sql_query("CREATE TABLE inventory.intruder (x int)").execute(&mut app).await;
    assert!(refused.unwrap_err().to_string().contains("permission denied"));
    let refused = diesel::sql_query("DROP TABLE inventory.ledger").execute(&mut app).await;
    assert!(refused.unwrap_err().to_string().contains("must be owner"));
    drop(app);
    diesel::sql_query(format!("DROP OWNED BY {role}")).execute(&mut admin).await.unwrap();
    drop(admin);
    let role_cleanup = role.clone();
    drop(db);
    let server =
        app_url.rsplit_once('/').unwrap().0.replacen(&format!("{role_cleanup}@"), "postgres@", 1);
    let mut postgres = AsyncPgConnection::establish(&format!("{server}/postgres")).await.unwrap();
    let _ = diesel::sql_query(format!("DROP ROLE IF EXISTS {role_cleanup}"))
        .execute(&mut postgres)
        .await;
}

#[tokio::test]
async fn readiness_follows_postgres_reports_nats_and_recovers_by_itself() {
    let db = TestDb::new().await;
    let port = harness::process::free_port();
    let dir = std::env::temp_dir().join(format!("datasync-nats-{port}"));
    let mut own = OwnNats::start(port, dir.clone());
    let nats = TestNats { url: format!("nats://127.0.0.1:{}", own.port), prefix: "RT".into() };
    let app = TestApp::spawn(
        crm_sync::build(crm_sync::Config::unconnected(harness::common_config(
            crm_sync::SERVICE,
            &db,
            &nats,
        )))
        .await
        .unwrap(),
    );
    assert_eq!(ready(&app).await, 200);

    // NATS down: writes still go to the outbox, so the service stays ready and says so.
    own.kill();
    assert!(wait_status(&app, "degraded").await, "NATS down makes /readyz degraded, not failed");
    assert_eq!(ready(&app).await, 200);
    let own_again = OwnNats::start(port, dir);
    assert!(wait_status(&app, "ok").await, "/readyz is ok again when NATS returns");
    // The live settings watch comes back too: a write is seen through it.
    let put = app
        .http
        .put(app.url("/admin/settings/push_max_attempts"))
        .bearer_auth(harness::ADMIN_TOKEN)
        .json(&4)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let watched = harness::eventually(Duration::from_secs(15), || async {
        let s: serde_json::Value = app.admin_get("/admin/settings").await.json().await.ok()?;
        (s["push_max_attempts"] == 4).then_some(())
    });
    assert!(watched.await.is_some(), "the settings watch resumes after a NATS restart");

    let admin = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = AsyncPgConnection::establish(&admin).await.unwrap();
    diesel::sql_query(format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .execute(&mut conn)
        .await
        .unwrap();
    assert!(wait_ready(&app, 503).await, "PostgreSQL gone must make /readyz fail");
    diesel::sql_query(format!("CREATE DATABASE {}", db.name)).execute(&mut conn).await.unwrap();
    assert!(wait_ready(&app, 200).await, "/readyz must recover when PostgreSQL returns");

    app.stop().await;
    drop(own_again);
}

#[tokio::test]
async fn adjustments_accepted_while_nats_is_down_reach_every_target_when_it_returns() {
    let db = TestDb::new().await;
    let port = harness::process::free_port();
    let dir = std::env::temp_dir().join(format!("datasync-nats-{port}"));
    let mut own = OwnNats::start(port, dir.clone());
    let nats = TestNats { url: format!("nats://127.0.0.1:{port}"), prefix: "OUT".into() };
    let sandbox = sandbox::Sandbox::start().await.unwrap();
    let mut config = inventory_test_config(&db, &nats);
    config.api_keys = vec![("manual".into(), secrecy::SecretString::from("outage-key-0123456789"))];
    config.targets.insert(
        shared::schemas::inventory::Target::Wms,
        shared::outbound::Endpoint {
            base_url: sandbox.wms.base_url().to_owned(),
            auth: inventory_sync::config::target_auth(
                shared::schemas::inventory::Target::Wms,
                secrecy::SecretString::from(sandbox.wms.credential()),
            ),
        },
    );
    let app = TestApp::spawn(inventory_sync::build(config).await.unwrap());
    let put = app
        .http
        .put(app.url("/products/OUT-1"))
        .bearer_auth(harness::ADMIN_TOKEN)
        .json(&serde_json::json!({"name": "Outage"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);

    own.kill();
    let adjust = app.http.post(app.url("/adjustments")).header("X-API-Key", "outage-key-0123456789")
        .json(&serde_json::json!({"source": "manual", "sku": "OUT-1", "warehouse": "W1", "type": "receipt",
                                  "quantity": 5, "reference": "during-outage"}))
        .send().await.unwrap();
    assert_eq!(adjust.status(), 201, "the ledger does not need NATS");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sandbox.wms.level("OUT-1", "W1"), None);

    let own_again = OwnNats::start(port, dir);
    assert!(
        sandbox
            .wms
            .wait_until(Duration::from_secs(60), |s| s.level("OUT-1", "W1") == Some(5))
            .await,
        "the outbox is published and the push consumer resumes after NATS returns"
    );
    harness::assert_settled(&db, &nats, "inventory", 0).await;
    app.stop().await;
    drop(own_again);
}
