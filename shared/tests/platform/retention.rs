use std::time::Duration;

use diesel::sql_types::Text;
use diesel_async::RunQueryDsl;
use harness::{TestDb, TestNats};
use shared::retention::{Pruned, Retention};

#[derive(diesel::QueryableByName)]
struct Left {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The names of the rows left in `table` (`name` is an expression of its columns).
async fn left(conn: &mut diesel_async::AsyncPgConnection, table: &str, name: &str) -> Vec<String> {
    let mut rows: Vec<String> =
        diesel::sql_query(format!("SELECT {name} AS name FROM crm.{table}"))
            .load::<Left>(conn)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.name)
            .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn retention_prunes_old_closed_history_and_never_what_is_open() {
    let db = TestDb::new().await;
    let nats = TestNats::new();
    shared::db::migrate(&db.url).await.unwrap();
    let pool = shared::db::pool(&harness::common_config("test", &db, &nats).db, "main").unwrap();
    let mut conn = db.connect().await;
    // 40 days old unless said otherwise; the retention is 30 days.
    for statement in [
        // contact/1: three old attempts, the last one (version 3) is kept with its version.
        "INSERT INTO crm.push_log (target, entity, record_key, version, value, status, attempt, created_at) VALUES \
           ('crm', 'contact', 'contact/1', 1, '{}', 'synced', 1, now() - interval '40 days'), \
           ('crm', 'contact', 'contact/1', 2, '{}', 'synced', 1, now() - interval '40 days'), \
           ('crm', 'contact', 'contact/1', 3, '{}', 'retrying', 1, now() - interval '40 days'), \
           ('crm', 'contact', 'contact/1', 3, '{}', 'dead_lettered', 2, now() - interval '40 days'), \
           ('crm', 'contact', 'contact/2', 1, '{}', 'synced', 1, now() - interval '40 days'), \
           ('crm', 'contact', 'contact/2', 2, '{}', 'synced', 1, now() - interval '1 day')",
        "INSERT INTO crm.webhook_events (id, system, entity, delivery_id, status, received_at, updated_at) VALUES \
           (gen_random_uuid(), 'crm', 'contact', 'old-applied', 'applied', now() - interval '40 days', now() - interval '40 days'), \
           (gen_random_uuid(), 'crm', 'contact', 'old-conflict', 'conflict', now() - interval '40 days', now() - interval '40 days'), \
           (gen_random_uuid(), 'crm', 'contact', 'old-received', 'received', now() - interval '40 days', now() - interval '40 days'), \
           (gen_random_uuid(), 'crm', 'contact', 'old-failed', 'failed', now() - interval '40 days', now() - interval '40 days'), \
           (gen_random_uuid(), 'crm', 'contact', 'new-applied', 'applied', now() - interval '12 hours', now() - interval '12 hours')",
        "INSERT INTO crm.dead_letters (id, consumer, subject, payload, error, deliveries, created_at, replayed_at) VALUES \
           (gen_random_uuid(), 'c', 'old-replayed', '{}', 'e', 1, now() - interval '200 days', now() - interval '100 days'), \
           (gen_random_uuid(), 'c', 'old-open', '{}', 'e', 1, now() - interval '200 days', NULL), \
           (gen_random_uuid(), 'c', 'recently-replayed', '{}', 'e', 1, now() - interval '200 days', now() - interval '1 day')",
    ] {
        diesel::sql_query(statement).execute(&mut conn).await.unwrap();
    }

    let pruned = shared::retention::prune(&pool, "crm", &Retention::default()).await.unwrap();

    assert_eq!(pruned, Pruned { push_log: 3, webhook_events: 2, dead_letters: 1 });
    assert_eq!(
        left(&mut conn, "push_log", "record_key || '@' || version || ':' || status").await,
        ["contact/1@3:dead_lettered", "contact/1@3:retrying", "contact/2@2:synced"]
    );
    assert_eq!(
        left(&mut conn, "webhook_events", "delivery_id").await,
        ["new-applied", "old-failed", "old-received"]
    );
    assert_eq!(left(&mut conn, "dead_letters", "subject").await, ["old-open", "recently-replayed"]);
    let again = shared::retention::prune(&pool, "crm", &Retention::default()).await.unwrap();
    assert_eq!(again, Pruned::default(), "a second pass finds nothing");

    // Zero days keeps a table forever; the webhook events' retention is at least a day.
    let keep = Retention {
        push_log: None,
        webhook_events: Some(Duration::from_secs(1)),
        dead_letters: None,
        ..Retention::default()
    };
    assert_eq!(
        shared::retention::prune(&pool, "crm", &keep).await.unwrap(),
        Pruned::default(),
        "an applied event of 12 hours ago stays with a retention below a day"
    );
}
