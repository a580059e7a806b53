//! Service bootstrap: everything between "config is loaded" and "serving", identical for the
//! six services. A service describes itself with a [`ServiceSpec`], gets a connected
//! [`Platform`], spawns its consumers on it, and wraps its routes in an [`Application`].
//!
//! One shutdown path: [`Application::run_until_stopped`] waits for the stop signal, stops the
//! HTTP server (in-flight requests finish), cancels the token every background task watches,
//! waits for them (consumers ack or nak what they hold, the outbox relay flushes) within the
//! grace period, then returns so `main` can flush telemetry.

use std::{future::Future, sync::Arc, time::Instant};

use actix_web::{
    App, Error, HttpServer,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::{Next, from_fn},
    web,
};
use serde::de::DeserializeOwned;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    bulk::{Bulk, BulkKind, BulkSource},
    bus::{
        Bus, ConsumerSpec, Delivery, HandlerError, StreamSpec, dead_letter::DeadLetters,
        outbox::OutboxRelay, streams,
    },
    config::CommonConfig,
    db::{
        PgPool,
        group_commit::{Batch, GroupCommit, GroupCommitConfig},
    },
    http::AuthConfig,
    ingress::{Ingress, WebhookSource},
    outbound::Endpoint,
    push::{Connector, PushConfig, PushEngine, PushTarget},
    settings::{OwnSettings, Settings, split_defaults},
};

/// What distinguishes one service's bootstrap from another's.
pub struct ServiceSpec {
    /// The PostgreSQL schema the service owns (outbox, inbox, dead letters live there).
    pub schema: &'static str,
    /// Streams the service publishes to or consumes from; the first is checked by `/readyz`.
    pub streams: &'static [&'static StreamSpec],
    /// The service's own OpenAPI document (the platform endpoints are merged in).
    pub openapi: utoipa::openapi::OpenApi,
    /// The service's own runtime settings, if it has any (see [`crate::settings`]).
    pub settings: Option<OwnSettings>,
}

/// The connected plumbing of a running service. Cheap to clone.
#[derive(Clone)]
pub struct Platform {
    pub config: Arc<CommonConfig>,
    pub db: PgPool,
    pub bus: Bus,
    /// Outbound HTTP: connect and total timeouts, no redirects (see [`crate::outbound`]).
    pub http: reqwest::Client,
    pub settings: Settings,
    /// Cancelled when the service stops; every background task watches it.
    pub shutdown: CancellationToken,
    pub schema: &'static str,
    pub(crate) readiness_stream: &'static str,
    pub(crate) openapi: Arc<utoipa::openapi::OpenApi>,
    /// The bulk-sync jobs of this service ([`Platform::run_bulk`]).
    pub bulk: Bulk,
    /// The webhook ingress, once [`Platform::run_ingress`] started it.
    pub(crate) ingress: crate::ingress::IngressSlot,
    /// The push targets this service runs ([`Platform::run_push`]).
    pub(crate) push_targets: crate::push::Targets,
    /// How this service retries its failed records ([`Platform::handle_record_errors`]).
    pub record_errors: crate::record_errors::Ledger,
    /// What consumers add to their dead letters ([`Platform::run_inbound`]).
    pub(crate) dead_letter_hooks: crate::bus::dead_letter::DeadLetterHooks,
    tasks: TaskTracker,
    /// Group-commit executors stop after every other task (those may still submit work).
    commit_tasks: TaskTracker,
    commits_shutdown: CancellationToken,
}

impl Platform {
    /// Migrates the database, builds the pool, connects to NATS, declares the streams, opens the
    /// settings bucket and starts the outbox relay.
    pub async fn start(config: &CommonConfig, spec: ServiceSpec) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        let applied = crate::db::migrate(&config.db.url).await?;
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        let db = crate::db::pool(&config.db)?;
        let bus = Bus::connect(&config.nats, config.service).await?;
        // The service's streams, and those the platform itself publishes to (dead-letter and
        // bulk-job events, bulk-job alerts), so no service can forget them.
        let own: [&'static StreamSpec; 2] = [&streams::SYNC_EVENTS, &streams::ALERTS];
        let declared = |s: &&&StreamSpec| !spec.streams.iter().any(|d| d.name == s.name);
        for stream in spec.streams.iter().chain(own.iter().filter(declared)) {
            bus.ensure_stream(stream).await?;
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (defaults, own_defaults) =
            split_defaults(&config.settings_defaults, spec.settings.as_ref())
                .map_err(|e| anyhow::anyhow!("SETTINGS_DEFAULTS: {e}"))?;
        let own = spec.settings.map(|own| (own, own_defaults));
        let settings = Settings::open(&bus, defaults, own, &tasks, shutdown.clone()).await?;
        let bulk = Bulk::new(config.service, spec.schema, db.clone(), shutdown.clone());
        let mut openapi = spec.openapi;
        openapi.merge(<crate::admin::PlatformApi as utoipa::OpenApi>::openapi());
        openapi.info.title = config.service.to_owned();
        let push_targets: crate::push::Targets = Default::default();
        let record_errors =
            crate::record_errors::Ledger::new(db.clone(), spec.schema, push_targets.clone());
        let platform = Self {
            config: Arc::new(config.clone()),
            db,
            bus,
            http: crate::outbound::client()?,
            settings,
            shutdown,
            schema: spec.schema,
            readiness_stream: spec.streams.first().map_or("SYNC_EVENTS", |s| s.name),
            openapi: Arc::new(openapi),
            bulk,
            push_targets,
            ingress: Default::default(),
            record_errors,
            dead_letter_hooks: Default::default(),
            tasks,
            commit_tasks: TaskTracker::new(),
            commits_shutdown: CancellationToken::new(),
        };
        let relay = OutboxRelay {
            pool: platform.db.clone(),
            db_url: config.db.url.clone(),
            bus: platform.bus.clone(),
            schema: spec.schema,
        };
        platform.spawn("outbox-relay", relay.run(platform.shutdown.clone()));
        platform.spawn(
            "retention",
            crate::retention::run(
                platform.db.clone(),
                spec.schema,
                config.retention.clone(),
                platform.shutdown.clone(),
            ),
        );
        Ok(platform)
    }

    /// This service's dead letters.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            pool: self.db.clone(),
            schema: self.schema,
            service: self.config.service,
            hooks: self.dead_letter_hooks.clone(),
        }
    }

    /// Runs a background task until shutdown; shutdown waits for it.
    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task.instrument(tracing::info_span!("task", name)));
    }

    /// Starts a durable consumer (see [`crate::bus::consumer`] for its delivery semantics).
    pub fn spawn_consumer<T, F, Fut>(&self, spec: ConsumerSpec, handler: F)
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Delivery<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let task = crate::bus::run_consumer(
            self.bus.clone(),
            spec,
            self.dead_letters(),
            self.shutdown.clone(),
            handler,
        );
        self.tasks.spawn(task);
    }
}

impl Platform {
    /// An outbound push engine for one target, with its own connection pool (one connection per
    /// batch in flight: a slow target never starves the rest of the service).
    pub fn push_engine<C: Connector>(
        &self,
        target: &str,
        endpoint: Endpoint,
        connector: C,
        config: PushConfig,
    ) -> anyhow::Result<PushEngine<C>> {
        let pool = crate::db::pool(&crate::config::DbConfig {
            // One per batch in flight, plus the anti-entropy pass and the operator endpoints.
            pool_size: config.concurrency.max(1) + 2,
            ..self.config.db.clone()
        })?;
        Ok(PushEngine {
            target: target.to_owned(),
            endpoint,
            connector,
            config,
            pool,
            http: self.http.clone(),
            schema: self.schema,
            service: self.config.service,
            settings: self.settings.clone(),
            shutdown: self.shutdown.clone(),
        })
    }

    /// Runs a push engine: its batch consumer on `filter` of `stream`, its anti-entropy passes,
    /// and its operator endpoints (`GET /targets`, resume, anti-entropy on demand).
    pub fn run_push<C: Connector>(
        &self,
        engine: PushEngine<C>,
        stream: &'static StreamSpec,
        filter: &str,
    ) {
        let engine = Arc::new(engine);
        let spec = engine.consumer_spec(stream, filter);
        let consumer_engine = engine.clone();
        let task = crate::bus::run_batch_consumer(
            self.bus.clone(),
            spec,
            self.dead_letters(),
            self.shutdown.clone(),
            move |batch| {
                let engine = consumer_engine.clone();
                async move { engine.handle(batch).await }
            },
        );
        self.tasks.spawn(task);
        if let Some(every) = engine.config.anti_entropy_every {
            self.spawn(
                "anti-entropy",
                crate::push::anti_entropy::run(engine.clone(), every, self.shutdown.clone()),
            );
        }
        self.push_targets.write().unwrap_or_else(|p| p.into_inner()).push(engine);
    }

    /// A group commit ([`crate::db::group_commit`]) whose executors the shutdown path stops
    /// and waits for.
    pub fn group_commit<B: Batch>(
        &self,
        name: &'static str,
        pool: PgPool,
        config: GroupCommitConfig,
        batch: B,
    ) -> GroupCommit<B> {
        GroupCommit::start(
            name,
            pool,
            config,
            batch,
            &self.commit_tasks,
            self.commits_shutdown.clone(),
        )
    }

    /// Accepts webhooks from `sources` at `POST /webhooks/<system>` (see [`crate::ingress`]).
    pub fn run_ingress(&self, sources: Vec<WebhookSource>) -> anyhow::Result<()> {
        for source in &sources {
            for scheme in &source.schemes {
                scheme.validate().map_err(|e| {
                    anyhow::anyhow!("webhook source {} ({}): {e}", source.system, scheme.name())
                })?;
            }
        }
        let received = self.group_commit(
            "webhook_received",
            self.db.clone(),
            GroupCommitConfig { workers: 2, max_batch: 256 },
            crate::bus::events::Received { schema: self.schema },
        );
        let ingress = Ingress {
            sources,
            bus: self.bus.clone(),
            db: self.db.clone(),
            schema: self.schema,
            received,
        };
        self.ingress
            .set(Arc::new(ingress))
            .map_err(|_| anyhow::anyhow!("the webhook ingress is already running"))
    }

    /// Applies a connector's inbound events (see [`crate::ingress::inbound`]) with one batch
    /// consumer per spec (`webhooks.<system>.>`, or one per entity so a backlog of one kind
    /// never delays another), and retries its failed records from the error ledger.
    pub fn run_inbound<I: crate::ingress::Inbound>(
        &self,
        inbound: I,
        consumers: Vec<ConsumerSpec>,
    ) -> anyhow::Result<()> {
        let runner = Arc::new(crate::ingress::inbound::InboundRunner {
            inbound: Arc::new(inbound),
            db: self.db.clone(),
            schema: self.schema,
            service: self.config.service,
        });
        for spec in consumers {
            self.dead_letter_hooks
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(spec.durable.clone(), runner.clone());
            let handler = runner.clone();
            let task = crate::bus::run_batch_consumer(
                self.bus.clone(),
                spec,
                self.dead_letters(),
                self.shutdown.clone(),
                move |batch| {
                    let handler = handler.clone();
                    async move { handler.handle(batch).await }
                },
            );
            self.spawn("inbound", task);
        }
        self.handle_record_errors(runner)
    }

    /// Offers `sources` as bulk loads of this service and starts its job worker.
    pub fn run_bulk(
        &self,
        sources: impl IntoIterator<Item = (BulkKind, Arc<dyn BulkSource>)>,
    ) -> anyhow::Result<()> {
        if let Some(worker) = self.bulk.start(sources)? {
            self.spawn("bulk-worker", worker);
        }
        Ok(())
    }

    /// Lets operators retry and requeue this service's failed inbound records
    /// (`/admin/record-errors`, see [`crate::record_errors`]; failed pushes are requeued by
    /// their push engine without it).
    pub fn handle_record_errors(
        &self,
        actions: Arc<dyn crate::record_errors::ErrorActions>,
    ) -> anyhow::Result<()> {
        self.record_errors
            .actions
            .set(actions)
            .map_err(|_| anyhow::anyhow!("record error actions are already registered"))
    }

    /// The push targets this service runs.
    pub fn push_targets(&self) -> Vec<Arc<dyn PushTarget>> {
        self.push_targets.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A built, listening service.
pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
    platform: Platform,
}

impl Application {
    /// Binds the HTTP server with the operator and admin routes, `routes`, and `state`
    /// registered as the one `web::Data<S>`.
    pub fn build<S>(
        platform: Platform,
        state: S,
        auth: AuthConfig,
        routes: fn(&mut web::ServiceConfig),
    ) -> anyhow::Result<Self>
    where
        S: Send + Sync + 'static,
    {
        let cfg = platform.config.clone();
        let listener = std::net::TcpListener::bind((cfg.http_host.as_str(), cfg.http_port))
            .map_err(|e| {
                anyhow::anyhow!("cannot bind {}:{} (HTTP_PORT): {e}", cfg.http_host, cfg.http_port)
            })?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(state);
        let platform_data = web::Data::new(platform.clone());
        let bulk_data = web::Data::new(platform.bulk.clone());
        let ingress_data = web::Data::new(platform.ingress.clone());
        let ledger_data = web::Data::new(platform.record_errors.clone());
        let auth = web::Data::new(AuthConfig {
            admin_token: Some(cfg.admin_token.clone()),
            max_body: cfg.max_body,
            ..auth
        });
        // The body extractor's own limit is the same, so an oversized chunked body is refused
        // while it is read (and answered 413 by the extractors).
        let payload_limit = web::PayloadConfig::new(cfg.max_body);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(observe))
                .app_data(state.clone())
                .app_data(platform_data.clone())
                .app_data(bulk_data.clone())
                .app_data(ingress_data.clone())
                .app_data(ledger_data.clone())
                .app_data(auth.clone())
                .app_data(payload_limit.clone())
                .configure(crate::health::configure)
                .configure(crate::admin::configure)
                .configure(routes)
        })
        .disable_signals()
        .shutdown_timeout(cfg.shutdown_grace.as_secs())
        .listen(listener)?
        .run();
        tracing::info!(service = cfg.service, port, "listening");
        Ok(Self { port, server, platform })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Serves until `stop` completes (or the server fails), then shuts down gracefully.
    pub async fn run_until_stopped(self, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let result = tokio::select! {
            r = &mut server => r.map_err(anyhow::Error::from).and_then(|r| r.map_err(Into::into)),
            () = stop => Ok(()),
        };
        tracing::info!("shutting down");
        handle.stop(true).await;
        let platform = self.platform;
        platform.shutdown.cancel();
        platform.tasks.close();
        let deadline = tokio::time::Instant::now() + platform.config.shutdown_grace;
        if tokio::time::timeout_at(deadline, platform.tasks.wait()).await.is_err() {
            tracing::warn!("background tasks did not finish within the grace period");
        }
        // Group commits last: the tasks above (consumers, bulk pages) may still have submitted
        // work to them while finishing.
        platform.commits_shutdown.cancel();
        platform.commit_tasks.close();
        if tokio::time::timeout_at(deadline, platform.commit_tasks.wait()).await.is_err() {
            tracing::warn!("group commits did not finish within the grace period");
        }
        platform.db.close();
        tracing::info!("stopped");
        result
    }
}

/// An OpenAPI document with only a description (for services without routes of their own).
pub fn described(description: &str) -> utoipa::openapi::OpenApi {
    let mut openapi = utoipa::openapi::OpenApi::default();
    openapi.info.description = Some(description.to_owned());
    openapi
}

/// A service whose domain is not built yet: the platform (its schema, streams, settings and
/// outbox relay) and the operator and admin endpoints, with no routes that pretend to work.
pub async fn build_platform_only(
    config: &CommonConfig,
    spec: ServiceSpec,
) -> anyhow::Result<Application> {
    let platform = Platform::start(config, spec).await?;
    Application::build(platform, (), AuthConfig::default(), |_| {})
}

/// Builds the application, then serves until SIGTERM/SIGINT.
pub async fn serve(app: impl Future<Output = anyhow::Result<Application>>) -> anyhow::Result<()> {
    app.await?.run_until_stopped(shutdown_signal()).await
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Per-request span (child of the caller's `traceparent`) and HTTP metrics.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let span = tracing::info_span!(
        "http",
        %method,
        %route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    crate::telemetry::set_parent_from_http(&span, req.headers());
    crate::telemetry::record_trace_id(&span);
    let started = Instant::now();
    let response = next.call(req).instrument(span.clone()).await;
    let status = match &response {
        Ok(r) => r.status().as_u16(),
        Err(e) => e.as_response_error().status_code().as_u16(),
    };
    span.record("status", status);
    crate::metrics::HTTP_REQUESTS
        .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
        .inc();
    crate::metrics::HTTP_DURATION
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The command line every service binary accepts: `serve` (default) or `migrate`.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate,
}

impl Command {
    /// Parses `std::env::args()` (after the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let args: Vec<String> = args.into_iter().collect();
        match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            [] | ["serve"] => Ok(Self::Serve),
            ["migrate"] => Ok(Self::Migrate),
            other => Err(format!("usage: <service> [serve|migrate], got {other:?}")),
        }
    }
}

/// The whole of a service's `main`: parse the command, load config (exiting with one line
/// naming the bad variable), initialise telemetry, then migrate or serve until SIGTERM.
pub async fn main<C, Fut>(
    load: fn() -> Result<C, crate::config::ConfigError>,
    common: fn(&C) -> &CommonConfig,
    serve: fn(C) -> Fut,
) -> std::process::ExitCode
where
    Fut: Future<Output = anyhow::Result<()>>,
{
    crate::config::load_dotenv();
    let command = match Command::parse(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = match load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = split_defaults(&common(&config).settings_defaults, None) {
        eprintln!("configuration error: SETTINGS_DEFAULTS: {e}");
        return std::process::ExitCode::from(2);
    }
    let telemetry = match crate::telemetry::init(common(&config)) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("telemetry error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Migrate => crate::db::migrate(&common(&config).db.url)
            .await
            .map(|n| tracing::info!(applied = n, "migrations done")),
        Command::Serve => serve(config).await,
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn command_line_accepts_serve_migrate_and_nothing_else() {
        let parse = |a: &[&str]| Command::parse(a.iter().map(|s| s.to_string()));
        assert_eq!(parse(&[]), Ok(Command::Serve));
        assert_eq!(parse(&["serve"]), Ok(Command::Serve));
        assert_eq!(parse(&["migrate"]), Ok(Command::Migrate));
        assert!(parse(&["migrate", "now"]).is_err());
    }
}
