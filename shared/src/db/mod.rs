//! PostgreSQL: the diesel-async connection pool and the one embedded migration set.

pub mod group_commit;
pub mod tls;

use std::time::Duration;

use diesel::{connection::SimpleConnection, sql_types::BigInt};
use diesel_async::{
    AsyncPgConnection, RunQueryDsl,
    async_connection_wrapper::AsyncConnectionWrapper,
    pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, deadpool},
};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures::FutureExt;

use crate::config::DbConfig;

/// The pool every service uses.
pub type PgPool = deadpool::Pool<AsyncPgConnection>;
/// Why a connection could not be checked out.
pub type PoolError = deadpool::PoolError;
/// A connection checked out of the pool.
pub type PooledConn = deadpool::Object<AsyncPgConnection>;

/// All schemas' migrations, embedded in every binary (each service only touches its own
/// schema, but one ordered set keeps `migrate` a single step for compose and Kubernetes).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Arbitrary but fixed key of the advisory lock that serialises migration runs.
const MIGRATION_LOCK_KEY: i64 = 0x6461_7461_7379_6e63; // "datasync"

/// Builds a pool: `max_size` from config, and a wait timeout so that an exhausted pool answers
/// 503 quickly instead of queueing requests forever. `name` labels it in
/// `db_pool_max_connections` / `db_pool_connections`, which sum to the replica's connection
/// budget (with the [`dedicated`] connections).
pub fn pool(cfg: &DbConfig, name: &str) -> anyhow::Result<PgPool> {
    let mut setup = ManagerConfig::default();
    setup.custom_setup = Box::new(|url| connect(url).boxed());
    let manager =
        AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(&cfg.url, setup);
    Ok(deadpool::Pool::builder(manager)
        .max_size(cfg.pool_size)
        .wait_timeout(Some(cfg.pool_timeout))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .runtime(::deadpool::Runtime::Tokio1)
        .build()
        .inspect(|pool| {
            crate::metrics::DB_POOL_MAX.with_label_values(&[name]).add(cfg.pool_size as i64);
            POOLS.lock().unwrap_or_else(|p| p.into_inner()).push((name.to_owned(), pool.weak()));
        })?)
}

/// Every pool this process made, for [`observe_pools`].
static POOLS: std::sync::Mutex<
    Vec<(String, ::deadpool::managed::WeakPool<AsyncDieselConnectionManager<AsyncPgConnection>>)>,
> = std::sync::Mutex::new(Vec::new());

/// Sets `db_pool_connections` to the connections each pool holds now (at every scrape).
pub fn observe_pools() {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    let mut open = std::collections::BTreeMap::<String, i64>::new();
    pools.retain(|(name, weak)| {
        let Some(pool) = weak.upgrade() else { return false };
        *open.entry(name.clone()).or_default() += pool.status().size as i64;
        true
    });
    for (name, size) in open {
        crate::metrics::DB_POOL_OPEN.with_label_values(&[&name]).set(size);
    }
}

/// A connection kept outside every pool (`listen`, `readiness`): one per process each, counted
/// in `db_pool_max_connections` so that the budget there is whole.
pub fn dedicated(name: &str) {
    crate::metrics::DB_POOL_MAX.with_label_values(&[name]).set(1);
}

/// One connection, with `DATABASE_URL`'s `sslmode` honoured ([`tls`]). The pool makes its
/// connections with it; LISTEN and readiness use it for one of their own outside the pool.
pub async fn connect(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    tls::Target::parse(url).map_err(diesel::ConnectionError::BadConnection)?.connect().await
}

/// A connection for diesel's synchronous migration harness, made here on the runtime (whose
/// task then drives it) and used from a blocking thread.
async fn migration_connection(
    url: &str,
) -> anyhow::Result<AsyncConnectionWrapper<AsyncPgConnection>> {
    let conn = connect(url).await.map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    Ok(conn.into())
}

/// How many embedded migrations the database has not applied yet. Reads diesel's table
/// directly (diesel's harness would first try to create it, which a role without DDL rights
/// may not do).
pub async fn pending(url: &str) -> anyhow::Result<usize> {
    use diesel::migration::MigrationSource;
    #[derive(diesel::QueryableByName)]
    struct Applied {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        versions: Option<String>,
    }
    let mut conn = connect(url).await.map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    let table: Applied = diesel::sql_query(
        "SELECT to_regclass('public.__diesel_schema_migrations')::text AS versions",
    )
    .get_result(&mut conn)
    .await?;
    let applied = match table.versions {
        None => String::new(),
        Some(_) => diesel::sql_query(
            "SELECT string_agg(version, ',') AS versions FROM public.__diesel_schema_migrations",
        )
        .get_result::<Applied>(&mut conn)
        .await
        .map_err(|e| anyhow::anyhow!("reading the applied migrations: {e}"))?
        .versions
        .unwrap_or_default(),
    };
    let applied: std::collections::HashSet<&str> = applied.split(',').collect();
    let known = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("reading the embedded migrations: {e}"))?;
    Ok(known.iter().filter(|m| !applied.contains(m.name().version().to_string().as_str())).count())
}

/// Runs pending migrations under a PostgreSQL advisory lock, so that several services or
/// replicas starting together apply them once, one after the other. Runs on a blocking thread
/// because diesel's migration harness is synchronous.
pub async fn migrate(url: &str) -> anyhow::Result<usize> {
    let mut conn = migration_connection(url).await?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        conn.batch_execute("SET lock_timeout = '60s'")?;
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_lock($1)").bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        )?;
        let result = conn
            .run_pending_migrations(MIGRATIONS)
            .map(|applied| applied.len())
            .map_err(|e| anyhow::anyhow!("migration failed: {e}"));
        diesel::RunQueryDsl::execute(
            diesel::sql_query("SELECT pg_advisory_unlock($1)")
                .bind::<BigInt, _>(MIGRATION_LOCK_KEY),
            &mut conn,
        )?;
        result
    })
    .await?
}

/// Grants `role` (the services' own, `DATABASE_APP_ROLE`) what the services do: use of every
/// schema the migrating role owns, reading and writing their rows and sequences, calling their
/// functions, and reading which migrations are applied. No DDL: tables, schemas and triggers
/// stay the migrating role's. Run after every migration, so new tables are covered.
pub async fn grant_app_role(url: &str, role: &str) -> anyhow::Result<()> {
    let mut conn = connect(url).await.map_err(|e| anyhow::anyhow!("DATABASE_URL: {e}"))?;
    diesel::sql_query("SELECT set_config('datasync.app_role', $1, false)")
        .bind::<diesel::sql_types::Text, _>(role)
        .execute(&mut conn)
        .await?;
    diesel::sql_query(
        "DO $$ \
         DECLARE s text; r text := current_setting('datasync.app_role'); \
         BEGIN \
           FOR s IN SELECT nspname FROM pg_namespace \
                    WHERE nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) \
                      AND nspname NOT LIKE 'pg\\_%' AND nspname NOT IN ('information_schema', 'public') \
           LOOP \
             EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, r); \
             EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', s, r); \
             EXECUTE format('GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA %I TO %I', s, r); \
             EXECUTE format('GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA %I TO %I', s, r); \
           END LOOP; \
           EXECUTE format('GRANT SELECT ON public.__diesel_schema_migrations TO %I', r); \
         END $$",
    )
    .execute(&mut conn)
    .await
    .map_err(|e| anyhow::anyhow!("granting DATABASE_APP_ROLE {role}: {e}"))?;
    Ok(())
}

/// `SELECT 1` within two seconds: used by `/readyz`.
pub async fn check(pool: &PgPool) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = pool.get().await?;
        diesel::sql_query("SELECT 1").execute(&mut conn).await?;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("PostgreSQL did not answer within 2s"))?
}

/// Readiness's own connection, outside the pool: a pool that traffic exhausted must not make
/// the service look down (nor the check wait behind traffic). Reconnected after a failure.
pub struct ReadinessProbe {
    url: String,
    conn: tokio::sync::Mutex<Option<AsyncPgConnection>>,
}

impl ReadinessProbe {
    pub fn new(url: &str) -> Self {
        dedicated("readiness");
        Self { url: url.to_owned(), conn: tokio::sync::Mutex::new(None) }
    }

    /// `SELECT 1` on the probe's connection within 2 s.
    pub async fn check(&self) -> anyhow::Result<()> {
        let mut slot = self.conn.lock().await;
        let result = tokio::time::timeout(Duration::from_secs(2), async {
            if slot.is_none() {
                *slot = Some(connect(&self.url).await?);
            }
            let conn = slot.as_mut().ok_or_else(|| anyhow::anyhow!("no connection"))?;
            diesel::sql_query("SELECT 1").execute(conn).await?;
            anyhow::Ok(())
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("PostgreSQL did not answer within 2s")));
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

/// Stamps the origin of this transaction's changes (`datasync.origin`, transaction-local): the
/// capture triggers of the connector schemas read it, so a change applied from a system is
/// never queued to be pushed back to it. Unset means `local`.
pub async fn set_origin(conn: &mut AsyncPgConnection, origin: &str) -> diesel::QueryResult<()> {
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query("SELECT set_config('datasync.origin', $1, true)")
            .bind::<diesel::sql_types::Text, _>(origin),
        conn,
    )
    .await
    .map(|_| ())
}
