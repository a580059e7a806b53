use diesel::sql_types::BigInt;
use diesel_async::RunQueryDsl;
use harness::TestDb;

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[tokio::test]
async fn services_starting_together_apply_migrations_once() {
    let db = TestDb::new().await;

    let results = futures::future::join_all((0..4).map(|_| shared::db::migrate(&db.url))).await;

    let applied: Vec<usize> = results.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
    let mut conn = db.connect().await;
    let schemas: N = diesel::sql_query(
        "SELECT count(*) AS n FROM information_schema.schemata \
         WHERE schema_name IN ('crm','erp','inventory','directory','resolver','monitor','bulk')",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(schemas.n, 7);
    assert_eq!(shared::db::migrate(&db.url).await.unwrap(), 0, "re-running is harmless");
}

#[tokio::test]
async fn a_bad_database_url_fails_with_a_message_naming_the_variable() {
    let err = shared::db::migrate("postgres://nobody@127.0.0.1:1/none").await.unwrap_err();
    assert!(err.to_string().contains("DATABASE_URL"), "{err}");
}

#[tokio::test]
async fn the_bulk_table_definitions_match_the_migrated_database() {
    use diesel::{QueryDsl, debug_query, pg::Pg};
    use shared::bulk::schema::{job_errors, jobs};
    let db = TestDb::new().await;
    shared::db::migrate(&db.url).await.unwrap();

    let defined = |sql: String| harness::defined_columns(&sql);
    for (name, columns) in [
        ("jobs", defined(debug_query::<Pg, _>(&jobs::table.select(jobs::all_columns)).to_string())),
        (
            "job_errors",
            defined(
                debug_query::<Pg, _>(&job_errors::table.select(job_errors::all_columns))
                    .to_string(),
            ),
        ),
    ] {
        assert_eq!(columns, harness::migrated_columns(&db, "bulk", name).await, "bulk.{name}");
    }
}
