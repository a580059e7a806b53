//! Test harness. Every test gets its own PostgreSQL database (created from scratch, dropped
//! when the test ends) and its own NATS prefix (streams, subjects, consumers and the settings
//! bucket are all prefixed; they are deleted when the test ends), so tests run in parallel
//! against the real servers on 127.0.0.1 without seeing each other.
//!
//! `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) must be able to
//! `CREATE DATABASE`; `TEST_NATS_URL` defaults to `nats://127.0.0.1:4222`.

pub mod bench;
pub mod browser;
pub mod private;

use std::{future::Future, time::Duration};

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::StreamExt;
use shared::{
    app::Application,
    config::{CommonConfig, DbConfig, LogFormat, NatsConfig},
};
use tokio_util::sync::CancellationToken;

/// The admin token every test service is configured with.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

fn admin_db_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Runs `f` to completion on a fresh runtime in another thread (for cleanup in `Drop`, which
/// may run inside or outside a runtime).
fn block_on_thread<F: Future<Output = ()> + Send + 'static>(f: F) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(f);
        }
    })
    .join();
}

/// A fresh database, dropped (with its connections) when this value drops.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let admin = admin_db_url();
        let name = unique("datasync_test_");
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} (TEST_DATABASE_URL): {e}"));
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Self { url: format!("{base}/{name}"), name }
    }

    /// A direct connection to the test database.
    pub async fn connect(&self) -> AsyncPgConnection {
        AsyncPgConnection::establish(&self.url)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }

    /// The `n` that `sql` (`SELECT ... AS n`) counts.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut conn = self.connect().await;
        diesel::sql_query(sql)
            .get_result::<N>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        block_on_thread(async move {
            if let Ok(mut conn) = AsyncPgConnection::establish(&admin_db_url()).await {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        });
    }
}

/// A NATS prefix of its own; everything under it is deleted when this value drops.
pub struct TestNats {
    pub url: String,
    pub prefix: String,
}

impl TestNats {
    pub fn new() -> Self {
        Self { url: nats_url(), prefix: unique("T") }
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("NATS at {} (TEST_NATS_URL): {e}", self.url))
    }

    /// Prefixed subject.
    pub fn subject(&self, s: &str) -> String {
        format!("{}.{s}", self.prefix)
    }
}

impl Default for TestNats {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let (url, prefix) = (self.url.clone(), self.prefix.clone());
        block_on_thread(async move {
            let Ok(client) = async_nats::connect(&url).await else {
                return;
            };
            let js = async_nats::jetstream::new(client);
            let names: Vec<String> =
                js.stream_names().filter_map(|n| async move { n.ok() }).collect().await;
            for name in names {
                if name.starts_with(&format!("{prefix}_"))
                    || name == format!("KV_{prefix}_settings")
                {
                    let _ = js.delete_stream(&name).await;
                }
            }
        });
    }
}

/// Column names of a diesel table definition, read from the SQL diesel generates for all its
/// columns: pass `debug_query::<Pg, _>(&t::table.select(t::all_columns)).to_string()`.
pub fn defined_columns(sql: &str) -> std::collections::BTreeSet<String> {
    let columns = sql.split(" FROM ").next().unwrap_or_default().trim_start_matches("SELECT ");
    columns
        .split(", ")
        .map(|c| c.rsplit('.').next().unwrap_or(c).trim_matches('"').to_owned())
        .collect()
}

/// Column names of `schema.table` in the migrated test database.
pub async fn migrated_columns(
    db: &TestDb,
    schema: &str,
    table: &str,
) -> std::collections::BTreeSet<String> {
    #[derive(diesel::QueryableByName)]
    struct Column {
        #[diesel(sql_type = diesel::sql_types::Text)]
        column_name: String,
    }
    let mut conn = db.connect().await;
    diesel::sql_query(
        "SELECT column_name::text AS column_name FROM information_schema.columns \
         WHERE table_schema = $1 AND table_name = $2",
    )
    .bind::<diesel::sql_types::Text, _>(schema)
    .bind::<diesel::sql_types::Text, _>(table)
    .load::<Column>(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("columns of {schema}.{table}: {e}"))
    .into_iter()
    .map(|c| c.column_name)
    .collect()
}

/// What is still pending in a test's installation (empty when settled).
#[derive(Debug, Default, PartialEq)]
pub struct Pending {
    /// Rows in the service schema's outbox, not yet published.
    pub outbox: i64,
    /// `(consumer, messages not yet delivered, delivered and not yet acknowledged)` of every
    /// durable consumer with work left.
    pub consumers: Vec<(String, u64, usize)>,
    /// Dead letters in the service schema.
    pub dead_letters: i64,
}

/// The one number `sql` selects as `n` (a `bigint`), on a new connection to `db`.
pub async fn count(db: &TestDb, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = db.connect().await;
    diesel_async::RunQueryDsl::get_result::<Count>(diesel::sql_query(sql), &mut conn)
        .await
        .map(|c| c.n)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// What is pending in `schema` and on the installation's streams.
pub async fn pending(db: &TestDb, nats: &TestNats, schema: &str) -> Pending {
    #[derive(diesel::QueryableByName)]
    struct Counts {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        outbox: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        dead_letters: i64,
    }
    let mut conn = db.connect().await;
    let counts: Counts = diesel::sql_query(format!(
        "SELECT (SELECT count(*) FROM {schema}.outbox) AS outbox, \
                (SELECT count(*) FROM {schema}.dead_letters) AS dead_letters"
    ))
    .get_result(&mut conn)
    .await
    .unwrap_or_else(|e| panic!("counting {schema}'s outbox: {e}"));
    let js = async_nats::jetstream::new(nats.client().await);
    let streams: Vec<String> = js
        .stream_names()
        .filter_map(|n| async move { n.ok() })
        .filter(|n| futures::future::ready(n.starts_with(&format!("{}_", nats.prefix))))
        .collect()
        .await;
    let mut consumers = Vec::new();
    for name in streams {
        let Ok(stream) = js.get_stream(&name).await else { continue };
        let names: Vec<String> =
            stream.consumer_names().filter_map(|n| async move { n.ok() }).collect().await;
        for consumer in names {
            let Ok(info) = stream.consumer_info(&consumer).await else { continue };
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                consumers.push((consumer, info.num_pending, info.num_ack_pending));
            }
        }
    }
    Pending { outbox: counts.outbox, consumers, dead_letters: counts.dead_letters }
}

/// Ends an integration test: waits (up to 30 s) until the outbox is empty and every durable
/// consumer has delivered and had acknowledged all its messages, then asserts that, and that
/// exactly `dead_letters` dead letters were written.
pub async fn assert_settled(db: &TestDb, nats: &TestNats, schema: &str, dead_letters: i64) {
    let expected = Pending { dead_letters, ..Default::default() };
    let mut last = Pending::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        last = pending(db, nats, schema).await;
        if last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, expected, "work left pending at the end of the test");
}

/// The configuration a service gets in tests: port 0 on loopback, the test database and prefix.
pub fn common_config(service: &'static str, db: &TestDb, nats: &TestNats) -> CommonConfig {
    CommonConfig {
        service,
        http_host: "127.0.0.1".into(),
        http_port: 0,
        db: DbConfig {
            url: db.url.clone(),
            pool_size: 8,
            pool_timeout: Duration::from_secs(5),
            app_role: None,
        },
        nats: NatsConfig {
            url: nats.url.clone(),
            prefix: nats.prefix.clone(),
            // No size limits in tests: every test's streams live on one shared server, and
            // JetStream reserves each stream's max_bytes against the server's store.
            streams: shared::config::StreamTopology { max_bytes: 0, ..Default::default() },
            auth: Default::default(),
            tls: Default::default(),
        },
        admin_token: ADMIN_TOKEN.into(),
        otlp_endpoint: None,
        log_format: LogFormat::Json,
        shutdown_grace: Duration::from_secs(10),
        settings_defaults: Default::default(),
        max_body: 1024 * 1024,
        retention: Default::default(),
        public_url: None,
        auth_failures_per_minute: 30,
        trusted_proxies: Vec::new(),
        migrate_on_start: true,
    }
}

/// Installs the log subscriber once when `TEST_LOG` is set (filter with `RUST_LOG`).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let cfg = CommonConfig {
                service: "test",
                http_host: String::new(),
                http_port: 0,
                db: DbConfig {
                    url: String::new(),
                    pool_size: 1,
                    pool_timeout: Duration::ZERO,
                    app_role: None,
                },
                nats: NatsConfig {
                    url: String::new(),
                    prefix: String::new(),
                    streams: Default::default(),
                    auth: Default::default(),
                    tls: Default::default(),
                },
                admin_token: "".into(),
                otlp_endpoint: None,
                log_format: LogFormat::Pretty,
                shutdown_grace: Duration::ZERO,
                settings_defaults: Default::default(),
                max_body: 0,
                retention: Default::default(),
                public_url: None,
                auth_failures_per_minute: 30,
                trusted_proxies: Vec::new(),
                migrate_on_start: true,
            };
            // The guard lives for the whole test process.
            std::mem::forget(shared::telemetry::init(&cfg));
        }
    });
}

/// An HTTP client for tests (the platform's crypto provider installed).
pub fn test_client() -> reqwest::Client {
    shared::tls::install_crypto_provider();
    // Idle connections are dropped before the server's 5 s keep-alive closes them, so a
    // request is not sent on a connection the server is closing.
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_else(|e| panic!("HTTP client: {e}"))
}

/// A service running in-process on a free port.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub http: reqwest::Client,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts `app` in the background.
    pub fn spawn(app: Application) -> Self {
        let port = app.port();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(app.run_until_stopped(async move { token.cancelled().await }));
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            http: test_client(),
            stop,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET path` as admin.
    pub async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `POST path` with a JSON body as admin: the status and the JSON answer (`null` if none).
    pub async fn admin_post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Sets a runtime setting through the admin API and waits until the service applies it.
    pub async fn set_setting(&self, key: &str, value: serde_json::Value) {
        let set = self
            .http
            .put(self.url(&format!("/admin/settings/{key}")))
            .bearer_auth(ADMIN_TOKEN)
            .json(&value)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT setting {key}: {e}"));
        assert_eq!(set.status(), 200, "PUT setting {key}");
        let applied = eventually(Duration::from_secs(20), || async {
            let s: serde_json::Value = self.admin_get("/admin/settings").await.json().await.ok()?;
            (s[key] == value).then_some(())
        });
        assert!(applied.await.is_some(), "the setting {key} is applied");
    }

    /// Stops the service gracefully (as SIGTERM would) and waits until it has.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                other => panic!("service did not stop cleanly: {other:?}"),
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Running the real service binaries (as an operator or Kubernetes would).
pub mod process {
    use std::{
        process::{Command, Stdio},
        time::Duration,
    };

    use super::{ADMIN_TOKEN, TestDb, TestNats};

    /// The path of another workspace package's service binary (`erp-sync`), built beside the
    /// running test (cargo builds a package's binaries with its integration tests, so a
    /// workspace test run has them).
    pub fn workspace_bin(name: &str) -> String {
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no test binary path: {e}"));
        let Some(dir) = exe.parent().and_then(|deps| deps.parent()) else {
            panic!("{} is not in target/<profile>/deps", exe.display())
        };
        let bin = dir.join(name);
        assert!(
            bin.exists(),
            "{} is not built: run the workspace's tests, or `cargo build --bins` first",
            bin.display()
        );
        bin.display().to_string()
    }

    /// A free loopback port (bound then released).
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"))
    }

    /// `bin` with the platform variables for `db`, `nats` and `port` (and nothing else from
    /// the environment but `PATH`).
    pub fn command(bin: &str, db: &TestDb, nats: &TestNats, port: u16) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("NATS_URL", &nats.url)
            .env("NATS_PREFIX", &nats.prefix)
            // No size limits on the shared test server (JetStream reserves them).
            .env("NATS_STREAM_MAX_BYTES", "0")
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", port.to_string())
            .env("SHUTDOWN_GRACE_SECS", "10")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts `bin serve` with the platform variables plus `env` (stderr discarded) and waits
    /// until `/readyz` answers 200; returns the child and its base URL.
    pub async fn spawn_ready(
        bin: &str,
        db: &TestDb,
        nats: &TestNats,
        env: &[(String, String)],
    ) -> (std::process::Child, String) {
        let port = free_port();
        let mut child = command(bin, db, nats, port)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stderr(Stdio::null())
            .arg("serve")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let base = format!("http://127.0.0.1:{port}");
        let client = super::test_client();
        let ready = super::eventually(Duration::from_secs(60), || async {
            let r = client.get(format!("{base}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        if ready.is_none() {
            let _ = child.kill();
            panic!("{bin} never became ready");
        }
        (child, base)
    }

    /// A service binary serving as a child process (the benchmarks' service under test).
    pub struct Running {
        pub child: std::process::Child,
        /// `http://127.0.0.1:<port>`.
        pub base: String,
    }

    impl Running {
        /// [`spawn_ready`] with `env`, plus the variables named in `passthrough` that are set in
        /// this process's environment (a benchmark's tuning knobs).
        pub async fn start(
            bin: &str,
            db: &TestDb,
            nats: &TestNats,
            mut env: Vec<(String, String)>,
            passthrough: &[&str],
        ) -> Self {
            env.extend(
                passthrough.iter().filter_map(|k| Some(((*k).to_owned(), std::env::var(k).ok()?))),
            );
            let (child, base) = spawn_ready(bin, db, nats, &env).await;
            Self { child, base }
        }

        /// SIGTERM, then waits for the exit.
        pub fn stop(mut self) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let _ = self.child.wait();
        }
    }

    /// Runs `bin` with one variable broken; returns (exit code, stderr).
    pub fn run_with_bad_env(
        bin: &str,
        db: &TestDb,
        nats: &TestNats,
        name: &str,
        value: &str,
    ) -> (Option<i32>, String) {
        let output = command(bin, db, nats, free_port())
            .env(name, value)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Starts `bin serve` exporting traces to an OTLP sink, waits for `/readyz` 200, sends
    /// SIGTERM; returns the exit code and how many trace exports the sink received.
    pub async fn serve_until_sigterm(
        bin: &str,
        db: &TestDb,
        nats: &TestNats,
    ) -> (Option<i32>, usize) {
        let port = free_port();
        let otlp = sandbox::OtlpSink::start().unwrap_or_else(|e| panic!("OTLP sink: {e}"));
        let mut child = command(bin, db, nats, port)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
            .arg("serve")
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let client = super::test_client();
        let url = format!("http://127.0.0.1:{port}/readyz");
        let ready = super::eventually(Duration::from_secs(60), || async {
            let r = client.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        if ready.is_none() {
            let _ = child.kill();
            let output = child.wait_with_output().ok();
            panic!(
                "{bin} never became ready: {:?}",
                output.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            );
        }
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.code(), otlp.exports().len());
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{bin} did not exit within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The tests every service binary must pass: bad configuration exits with status 2 and one
/// line naming the variable; `serve` becomes ready and exits 0 on SIGTERM; `healthcheck`
/// answers whether the running service is ready. Use in a service's
/// `tests/binary/main.rs` as `harness::binary_tests!("crm-sync");`.
#[macro_export]
macro_rules! binary_tests {
    ($bin:literal) => {
        const BIN: &str = env!(concat!("CARGO_BIN_EXE_", $bin));

        #[tokio::test]
        async fn bad_configuration_exits_non_zero_with_one_line_naming_the_variable() {
            let (db, nats) = ($crate::TestDb::new().await, $crate::TestNats::new());
            let (code, stderr) =
                $crate::process::run_with_bad_env(BIN, &db, &nats, "HTTP_PORT", "eighty");
            assert_eq!(code, Some(2), "{stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
            assert!(stderr.contains("HTTP_PORT"), "{stderr}");
        }

        #[tokio::test]
        async fn serves_until_sigterm_then_exits_cleanly_flushing_traces() {
            let (db, nats) = ($crate::TestDb::new().await, $crate::TestNats::new());
            let (code, trace_exports) = $crate::process::serve_until_sigterm(BIN, &db, &nats).await;
            assert_eq!(code, Some(0));
            assert!(trace_exports > 0, "spans are flushed to the OTLP endpoint at shutdown");
        }

        #[tokio::test]
        async fn healthcheck_answers_whether_the_running_service_is_ready() {
            let (db, nats) = ($crate::TestDb::new().await, $crate::TestNats::new());
            let port = $crate::process::free_port();
            let check = || {
                $crate::process::command(BIN, &db, &nats, port)
                    .arg("healthcheck")
                    .status()
                    .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
            };
            assert!(!check().success(), "nothing serves on the port yet");
            let mut child = $crate::process::command(BIN, &db, &nats, port)
                .arg("serve")
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let ready = $crate::eventually(std::time::Duration::from_secs(60), || async {
                check().success().then_some(())
            })
            .await;
            let _ = child.kill();
            let _ = child.wait();
            assert!(ready.is_some(), "`healthcheck` never saw the service ready");
        }
    };
}
