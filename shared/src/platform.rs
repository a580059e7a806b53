//! The connected plumbing of a running service: a service describes itself with a
//! [`ServiceSpec`], gets a [`Platform`] (database, bus, settings, outbox relay, retention) and
//! runs its consumers, push engines, ingress, inbound path and bulk loads on it; the
//! application around it is [`crate::app`].

use std::{future::Future, sync::Arc};

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
    /// Readiness's own PostgreSQL connection.
    pub(crate) readiness_db: Arc<crate::db::ReadinessProbe>,
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
    pub(crate) tasks: TaskTracker,
    /// Group-commit executors stop after every other task (those may still submit work).
    pub(crate) commit_tasks: TaskTracker,
    pub(crate) commits_shutdown: CancellationToken,
}

/// Runs `attempt` until it succeeds, waiting (1 s, growing to 10 s) after every failure
/// `transient` calls passing; any other failure is returned.
async fn wait_for<T, F, Fut>(
    what: &str,
    mut attempt: F,
    transient: impl Fn(&anyhow::Error) -> bool,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut pause = std::time::Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?pause, "waiting for {what}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(10));
            }
            Err(e) => return Err(e),
        }
    }
}

impl Platform {
    /// Migrates the database, builds the pool, connects to NATS, declares the streams, opens the
    /// settings bucket and starts the outbox relay.
    pub async fn start(config: &CommonConfig, spec: ServiceSpec) -> anyhow::Result<Self> {
        crate::tls::install_crypto_provider();
        // Started before PostgreSQL or NATS is reachable (compose, Kubernetes), a service waits
        // for them, not ready, instead of exiting; what waiting cannot fix (a failed migration,
        // refused credentials) still stops it.
        let applied = if config.migrate_on_start {
            wait_for(
                "PostgreSQL",
                || crate::db::migrate(&config.db.url),
                |e| format!("{e:#}").starts_with("cannot connect to PostgreSQL"),
            )
            .await?
        } else {
            // The migration job applies them; this service waits until they are all there.
            wait_for(
                "the migration job",
                || async {
                    match crate::db::pending(&config.db.url).await? {
                        0 => Ok(0),
                        n => anyhow::bail!(
                            "{n} migrations are still pending (MIGRATE_ON_START=false)"
                        ),
                    }
                },
                |e| {
                    let text = format!("{e:#}");
                    text.contains("still pending")
                        || text.starts_with("cannot connect to PostgreSQL")
                },
            )
            .await?
        };
        if applied > 0 {
            tracing::info!(applied, "database migrations applied");
        }
        let db = crate::db::pool(&config.db, "main")?;
        let bus = Bus::connect(&config.nats, config.service).await?;
        // The service's streams, and those the platform itself publishes to (dead-letter and
        // bulk-job events, bulk-job alerts), so no service can forget them.
        let own: [&'static StreamSpec; 2] = [&streams::SYNC_EVENTS, &streams::ALERTS];
        let declared = |s: &&&StreamSpec| !spec.streams.iter().any(|d| d.name == s.name);
        let mut streams_used: Vec<&'static StreamSpec> = Vec::new();
        for stream in spec.streams.iter().chain(own.iter().filter(declared)) {
            wait_for(
                "NATS JetStream",
                || bus.ensure_stream(stream),
                |e| {
                    let text = format!("{e:#}");
                    text.contains("timed out")
                        || text.contains("no responders")
                        || text.contains("unavailable")
                },
            )
            .await?;
            streams_used.push(stream);
        }
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        // How close each stream is to its limit, for the metrics.
        let (usage_bus, usage_stop) = (bus.clone(), shutdown.clone());
        tasks.spawn(async move {
            loop {
                for (name, bytes, messages, max) in usage_bus.stream_usage(&streams_used).await {
                    crate::metrics::stream_usage(name, bytes, messages, max);
                }
                tokio::select! {
                    () = usage_stop.cancelled() => return,
                    () = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
                }
            }
        });
        let (defaults, own_defaults) =
            split_defaults(&config.settings_defaults, spec.settings.as_ref())
                .map_err(|e| anyhow::anyhow!("SETTINGS_DEFAULTS: {e}"))?;
        let own = spec.settings.map(|own| (own, own_defaults));
        let settings = Settings::open(&bus, defaults, own, &tasks, shutdown.clone()).await?;
        let bulk = Bulk::new(config.service, spec.schema, db.clone(), shutdown.clone());
        let mut openapi = spec.openapi;
        openapi.info.title = config.service.to_owned();
        let push_targets: crate::push::Targets = Default::default();
        let record_errors = crate::record_errors::Ledger::new(db.clone(), spec.schema);
        let platform = Self {
            config: Arc::new(config.clone()),
            db,
            bus,
            http: crate::outbound::client()?,
            settings,
            shutdown,
            schema: spec.schema,
            readiness_stream: spec.streams.first().map_or("SYNC_EVENTS", |s| s.name),
            readiness_db: Arc::new(crate::db::ReadinessProbe::new(&config.db.url)),
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
    /// Applies conflict-resolver's decisions for `R::SYSTEM` (`sync.conflicts.resolved.<system>`)
    /// with `resolver` (see [`crate::resolutions`]).
    pub fn run_resolutions<R: crate::resolutions::Resolve + Clone + 'static>(&self, resolver: R) {
        let db = self.db.clone();
        self.spawn_consumer(
            ConsumerSpec::new(
                R::CONSUMER,
                &streams::SYNC_CONFLICTS,
                &format!("sync.conflicts.resolved.{}", R::SYSTEM),
            ),
            move |delivery| {
                let (db, resolver) = (db.clone(), resolver.clone());
                async move { crate::resolutions::handle(&resolver, &db, delivery).await }
            },
        );
    }

    /// An outbound push engine for one target, with its own connection pool (one connection per
    /// batch in flight: a slow target never starves the rest of the service).
    pub fn push_engine<C: Connector>(
        &self,
        target: &str,
        endpoint: Endpoint,
        connector: C,
        config: PushConfig,
    ) -> anyhow::Result<PushEngine<C>> {
        let pool = crate::db::pool(
            &crate::config::DbConfig {
                // One per batch in flight, plus the anti-entropy pass and the operator endpoints.
                pool_size: config.concurrency.max(1) + 2,
                ..self.config.db.clone()
            },
            &format!("push-{target}"),
        )?;
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
        self.record_errors.requeues_with(engine.clone());
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
