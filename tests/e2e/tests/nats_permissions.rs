//! The per-service NATS users of deploy/nats/auth.conf, on a nats-server of the test's own:
//! all six binaries start and do their work, each with its own user, without one permission
//! violation; and a service's user cannot publish another's subjects, open a consumer on
//! another's messages, read another's replies or delete a stream.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::time::Duration;

use harness::{
    TestDb, TestNats,
    private::{PrivateNats, temp_dir},
    process::spawn_ready,
};
use serde_json::json;

const SERVICES: [&str; 6] =
    ["crm-sync", "erp-sync", "inventory-sync", "user-sync", "conflict-resolver", "sync-monitor"];
const API_KEY: &str = "perm-inventory-key-0123456789";
const ERP_KEY: &str = "perm-erp-webhook-key-0123456789";
const SCIM_TOKEN: &str = "perm-scim-token-0123456789";

fn password(service: &str) -> String {
    format!("nats-password-of-{service}")
}

fn password_var(service: &str) -> String {
    format!("NATS_PASSWORD_{}", service.to_uppercase().replace('-', "_"))
}

#[tokio::test]
async fn each_service_works_with_its_own_nats_user_and_can_do_nothing_else() {
    let auth = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/nats/auth.conf");
    let mut server_env: Vec<(String, String)> =
        SERVICES.iter().map(|s| (password_var(s), password(s))).collect();
    server_env.push(("NATS_PASSWORD_ADMIN".into(), "nats-admin-password-0123".into()));
    // nats-server resolves an include relative to the including file.
    let dir = temp_dir("natsperm");
    std::fs::copy(auth, dir.join("auth.conf")).unwrap();
    let server = PrivateNats::start(dir, "include \"auth.conf\"", &server_env);

    let (db, nats) = (TestDb::new().await, TestNats::new());
    let sandbox = sandbox::Sandbox::start().await.unwrap();
    let mut common: Vec<(String, String)> = [
        ("NATS_URL", server.url().as_str()),
        ("NATS_PREFIX", ""),
        ("INVENTORY_API_KEYS", &format!("perm:{API_KEY}")),
        ("ERP_WEBHOOK_API_KEYS", ERP_KEY),
        ("SCIM_TOKENS", &format!("okta={SCIM_TOKEN}")),
        ("MONITOR_CHECK_SECS", "0"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    common.extend(sandbox.connector_env());
    let mut children = Vec::new();
    let mut bases = std::collections::HashMap::new();
    // One after another: the first applies the migrations.
    for service in SERVICES {
        let mut env = common.clone();
        env.push(("NATS_USER".into(), service.into()));
        env.push(("NATS_PASSWORD".into(), password(service)));
        let (child, base) =
            spawn_ready(&harness::process::workspace_bin(service), &db, &nats, &env).await;
        children.push(child);
        bases.insert(service, base);
    }
    let http = harness::test_client();

    // inventory-sync: adjustments fan out to four targets and report sync events.
    let mut conn_db = db.connect().await;
    {
        use diesel_async::RunQueryDsl;
        diesel::sql_query("INSERT INTO inventory.products (sku, name) VALUES ('MUG-1', 'Mug')")
            .execute(&mut conn_db)
            .await
            .unwrap();
    }
    for n in 0..5 {
        let r = http
            .post(format!("{}/adjustments", bases["inventory-sync"]))
            .header("X-API-Key", API_KEY)
            .json(&json!({"source": "perm", "sku": "MUG-1", "warehouse": "W1", "type": "receipt",
                "quantity": 1, "reference": format!("perm-{n}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    // erp-sync: a webhook, and an inventory count that goes on to inventory-sync.
    for event in [
        sandbox.erp.erp_record(
            "orders",
            "SO-1",
            json!({"orderNumber": "1", "customerId": "C-1", "status": "open", "total": 10,
                "updatedAt": "2026-01-01T09:00:00Z"}),
        ),
        json!({"eventType": "updated", "entity": "inventory", "entityId": "MUG-1",
            "payload": {"qtyOnHand": 40, "warehouse": "W1", "updatedAt": "2026-12-01T09:30:00Z",
                "version": 12}}),
    ] {
        let r = http
            .post(format!("{}/webhooks/erp", bases["erp-sync"]))
            .header("X-API-Key", ERP_KEY)
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    // user-sync: a SCIM user becomes a directory event.
    let r = http
        .post(format!("{}/scim/v2/Users", bases["user-sync"]))
        .bearer_auth(SCIM_TOKEN)
        .header("Content-Type", "application/scim+json")
        .json(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@example.com", "active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // The count reaches inventory-sync, and sync-monitor records sync events.
    let counted = harness::eventually(Duration::from_secs(30), || async {
        (harness::count(&db, "SELECT count(*) AS n FROM inventory.count_marks").await > 0)
            .then_some(())
    })
    .await;
    assert!(counted.is_some(), "the ERP's count reached inventory-sync: {}", server.log());
    let recorded = harness::eventually(Duration::from_secs(30), || async {
        (harness::count(&db, "SELECT count(*) AS n FROM monitor.sync_events").await > 0)
            .then_some(())
    })
    .await;
    assert!(recorded.is_some(), "sync-monitor records sync events: {}", server.log());
    // sync-monitor reads every consumer's state for its health check.
    let r = http
        .post(format!("{}/api/health/check", bases["sync-monitor"]))
        .bearer_auth(harness::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let drained = harness::eventually(Duration::from_secs(30), || async {
        (harness::count(&db, "SELECT count(*) AS n FROM inventory.outbox").await == 0).then_some(())
    })
    .await;
    assert!(drained.is_some());

    let log = server.log();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(violations.is_empty(), "permission violations:\n{}", violations.join("\n"));
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }

    // crm-sync's user, as an intruder holding its password would use it.
    let intruder =
        async_nats::ConnectOptions::with_user_and_password("crm-sync".into(), password("crm-sync"))
            .custom_inbox_prefix("_INBOX_crm-sync")
            .connect(server.url())
            .await
            .unwrap();
    for subject in [
        "inventory.count.erp",
        "sync.conflicts.resolved.erp",
        "webhooks.erp.orders",
        "$JS.API.STREAM.DELETE.WEBHOOKS",
        "$JS.API.STREAM.PURGE.WEBHOOKS",
        "$JS.API.CONSUMER.MSG.NEXT.WEBHOOKS.erp-salesorder",
    ] {
        intruder.publish(subject, "{}".into()).await.unwrap();
    }
    let _ = intruder.subscribe("_INBOX_erp-sync.>").await;
    let js = async_nats::jetstream::new(intruder.clone());
    let stolen = js
        .create_consumer_on_stream(
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("steal".into()),
                filter_subject: "webhooks.erp.>".into(),
                ..Default::default()
            },
            "WEBHOOKS",
        )
        .await;
    assert!(stolen.is_err(), "a consumer on another service's webhooks is refused");
    intruder.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = server.log();
    for refused in [
        "\"inventory.count.erp\"",
        "\"sync.conflicts.resolved.erp\"",
        "\"webhooks.erp.orders\"",
        "\"$JS.API.STREAM.DELETE.WEBHOOKS\"",
        "\"$JS.API.STREAM.PURGE.WEBHOOKS\"",
        "\"$JS.API.CONSUMER.MSG.NEXT.WEBHOOKS.erp-salesorder\"",
        "\"_INBOX_erp-sync.>\"",
        "\"$JS.API.CONSUMER.CREATE.WEBHOOKS.steal.webhooks.erp.>\"",
    ] {
        assert!(
            log.lines().any(|l| l.contains("Violation") && l.contains(refused)),
            "{refused} was not refused:\n{log}"
        );
    }
    let admin = async_nats::ConnectOptions::with_user_and_password(
        "admin".into(),
        "nats-admin-password-0123".into(),
    )
    .connect(server.url())
    .await
    .unwrap();
    let webhooks = async_nats::jetstream::new(admin).get_stream("WEBHOOKS").await;
    assert!(webhooks.is_ok(), "the stream is still there");
}
