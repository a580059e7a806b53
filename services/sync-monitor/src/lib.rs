//! sync-monitor: the one place an operator sees the whole platform and acts on it. It owns the
//! `monitor` schema and learns everything from the bus ([`collect`]: `sync.events.>`,
//! `sync.conflicts.>`; [`alerts`]: `alerts.>`) and from the other services' admin APIs, never
//! from their schemas.
//!
//! - A health check ([`check`], rules in [`health`]) every `MONITOR_CHECK_SECS` and on demand;
//!   each is stored as a report, its figures are Prometheus gauges ([`metrics`]), and a change
//!   of the platform's state notifies Slack and PagerDuty once ([`notify`]).
//! - `/api/health` (JSON) and the dashboard ([`dashboard`]) for an administrator.

pub mod alerts;
pub mod check;
pub mod collect;
pub mod dashboard;
pub mod health;
pub mod metrics;
pub mod notify;
pub mod routes;

use std::{collections::BTreeMap, time::Duration};

use secrecy::SecretString;
use shared::{
    app::Application,
    bus::{Bus, ConsumerSpec, streams},
    config::{CommonConfig, ConfigError, url_var, var, var_parsed},
    db::PgPool,
    http::AuthConfig,
    notify::{Mailer, PagerDuty, Slack, SmtpConfig},
    platform::{Platform, ServiceSpec},
    settings::Settings,
};

pub const SERVICE: &str = "sync-monitor";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8086;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "monitor";

/// sync-monitor's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `MONITOR_CHECK_SECS` (300; 0 = only on demand): pause between scheduled checks.
    pub check_every: Option<Duration>,
    /// `MONITOR_ALERT_REPEAT_SECS` (3600): an alert is routed again after this long at most.
    pub alert_repeat: Duration,
    /// `MONITOR_INCIDENT_KEY` (`datasync/sync-health`): PagerDuty's `dedup_key` of the
    /// platform's health incident.
    pub incident_key: String,
    /// `MONITOR_DASHBOARD_URL`: the dashboard as people reach it (links in notifications).
    pub dashboard_url: String,
    /// `MONITOR_SERVICES`: `<service>=<base URL>` pairs, comma separated: the admin APIs the
    /// dashboard's actions call (dead-letter replays, error-ledger retries).
    pub services: BTreeMap<String, String>,
    /// `MONITOR_SERVICE_TOKEN` (default: this service's admin token): the admin token those
    /// APIs take.
    pub service_token: SecretString,
    /// `MONITOR_SERVICE_TOKEN_<SERVICE>` (`MONITOR_SERVICE_TOKEN_ERP_SYNC`, ...): the token of a
    /// service that has one of its own (`ADMIN_TOKEN_<SERVICE>` there).
    pub service_tokens: BTreeMap<String, SecretString>,
    /// `RESOLVER_REVIEW_URL` (`http://localhost:8085`): where conflicts are reviewed.
    pub review_url: String,
    /// `MONITOR_EVENT_DAYS` (7): how long stored sync events and reports are kept.
    pub keep_days: u32,
    /// `SLACK_WEBHOOK_URL`, `PAGERDUTY_ROUTING_KEY` + `PAGERDUTY_EVENTS_URL`
    /// (`https://events.pagerduty.com`), `SMTP_*`: the channels.
    pub slack: Option<Slack>,
    pub pagerduty: Option<PagerDuty>,
    pub smtp: SmtpConfig,
}

impl Config {
    /// The defaults around `common` (what `from_env` gives with nothing else set).
    pub fn defaults(common: CommonConfig) -> Self {
        Self {
            service_token: common.admin_token.current.clone(),
            service_tokens: BTreeMap::new(),
            common,
            check_every: Some(Duration::from_secs(300)),
            alert_repeat: Duration::from_secs(3600),
            incident_key: "datasync/sync-health".into(),
            dashboard_url: format!("http://localhost:{PORT}/dashboard"),
            services: BTreeMap::new(),
            review_url: "http://localhost:8085".into(),
            keep_days: 7,
            slack: None,
            pagerduty: None,
            smtp: SmtpConfig::default(),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(SERVICE, PORT)?;
        let mut config = Self::defaults(common);
        let every: u64 = var_parsed("MONITOR_CHECK_SECS", 300)?;
        config.check_every = (every > 0).then(|| Duration::from_secs(every));
        config.alert_repeat = Duration::from_secs(var_parsed("MONITOR_ALERT_REPEAT_SECS", 3600)?);
        if let Some(key) = var("MONITOR_INCIDENT_KEY") {
            config.incident_key = key;
        }
        if let Some(url) = url_var("MONITOR_DASHBOARD_URL")? {
            config.dashboard_url = url;
        }
        if let Some(url) = url_var("RESOLVER_REVIEW_URL")? {
            config.review_url = url;
        }
        if let Some(services) = var("MONITOR_SERVICES") {
            config.services = parse_services(&services)?;
        }
        if let Some(token) = var("MONITOR_SERVICE_TOKEN") {
            config.service_token = SecretString::from(token);
        }
        for service in config.services.keys() {
            let name =
                format!("MONITOR_SERVICE_TOKEN_{}", service.to_uppercase().replace('-', "_"));
            if let Some(token) = var(&name) {
                config.service_tokens.insert(service.clone(), SecretString::from(token));
            }
        }
        config.keep_days = var_parsed("MONITOR_EVENT_DAYS", 7)?;
        config.slack = url_var("SLACK_WEBHOOK_URL")?.map(|url| Slack { webhook_url: url.into() });
        config.pagerduty = match var("PAGERDUTY_ROUTING_KEY") {
            Some(key) => Some(PagerDuty {
                events_url: url_var("PAGERDUTY_EVENTS_URL")?
                    .unwrap_or_else(|| "https://events.pagerduty.com".into()),
                routing_key: key.into(),
            }),
            None => None,
        };
        config.smtp = SmtpConfig::from_env()?;
        Ok(config)
    }
}

/// `crm-sync=http://crm-sync:8081,erp-sync=http://erp-sync:8082`.
fn parse_services(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (name, url) = pair.split_once('=').ok_or_else(|| ConfigError::Invalid {
                name: "MONITOR_SERVICES".into(),
                reason: format!("{pair:?} is not <service>=<base URL>"),
            })?;
            Ok((name.trim().to_owned(), url.trim().trim_end_matches('/').to_owned()))
        })
        .collect()
}

/// What the handlers and consumers share.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub bus: Bus,
    pub settings: Settings,
    pub http: reqwest::Client,
    pub limits: health::Limits,
    pub incident_key: String,
    pub alert_repeat: Duration,
    pub services: BTreeMap<String, String>,
    pub service_token: SecretString,
    pub service_tokens: BTreeMap<String, SecretString>,
    pub review_url: String,
}

impl AppState {
    /// The admin token `service`'s API takes: its own, or the shared one.
    pub fn token_for(&self, service: &str) -> &str {
        use secrecy::ExposeSecret;
        self.service_tokens.get(service).unwrap_or(&self.service_token).expose_secret()
    }
}

/// Connects everything, starts the consumers and the scheduled checks, and binds the HTTP
/// server (port 0 in tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[
            &streams::SYNC_EVENTS,
            &streams::ALERTS,
            &streams::SYNC_CONFLICTS,
            &streams::OUTBOUND,
        ],
        openapi: <routes::ApiDoc as utoipa::OpenApi>::openapi(),
        settings: None,
    };
    let platform = Platform::start(&config.common, spec).await?;
    let state = AppState {
        db: platform.db.clone(),
        bus: platform.bus.clone(),
        settings: platform.settings.clone(),
        http: platform.http.clone(),
        limits: health::Limits::default(),
        incident_key: config.incident_key.clone(),
        alert_repeat: config.alert_repeat,
        services: config.services.clone(),
        service_token: config.service_token.clone(),
        service_tokens: config.service_tokens.clone(),
        review_url: config.review_url.clone(),
    };

    // Everything announced on sync.events, a batch per transaction.
    let db = platform.db.clone();
    let events = ConsumerSpec {
        batch: 256,
        concurrency: 2,
        ..ConsumerSpec::new(collect::EVENTS_CONSUMER, &streams::SYNC_EVENTS, "sync.events.>")
    };
    let (bus, dead_letters, shutdown) =
        (platform.bus.clone(), platform.dead_letters(), platform.shutdown.clone());
    platform.spawn(
        "monitor-events",
        shared::bus::run_batch_consumer(bus, events, dead_letters, shutdown, move |batch| {
            let db = db.clone();
            async move { collect::events(&db, batch).await }
        }),
    );
    let db = platform.db.clone();
    platform.spawn_consumer(
        ConsumerSpec::new(
            collect::CONFLICTS_CONSUMER,
            &streams::SYNC_CONFLICTS,
            "sync.conflicts.>",
        ),
        move |delivery| {
            let db = db.clone();
            async move { collect::conflict(&db, delivery).await }
        },
    );
    let alert_state = state.clone();
    platform.spawn_consumer(
        ConsumerSpec::new(alerts::CONSUMER, &streams::ALERTS, "alerts.>"),
        move |delivery| {
            let state = alert_state.clone();
            async move { alerts::route(&state, delivery).await }
        },
    );
    let channels = notify::Channels {
        slack: config.slack.clone(),
        pagerduty: config.pagerduty.clone(),
        mailer: Some(Mailer::new(&config.smtp)?),
        dashboard_url: config.dashboard_url.clone(),
    };
    let notify_state = state.clone();
    platform.spawn_consumer(
        ConsumerSpec::new(notify::CONSUMER, &streams::OUTBOUND, "outbound.monitor.>"),
        move |delivery| {
            let (state, channels) = (notify_state.clone(), channels.clone());
            async move {
                notify::deliver(&state.db, &state.http, &channels, &state.settings, delivery).await
            }
        },
    );
    if let Some(every) = config.check_every {
        let (check_state, shutdown) = (state.clone(), platform.shutdown.clone());
        let keep_days = config.keep_days;
        platform.spawn("monitor-check", async move {
            loop {
                match check::scheduled(&check_state, every).await {
                    Ok(ran) => tracing::debug!(ran, "scheduled health check"),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "health check failed; the next one retries"),
                }
                if let Err(e) = routes::prune(&check_state.db, keep_days).await {
                    tracing::warn!(error = %format!("{e:#}"), "pruning monitor history failed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    Application::build(platform, state, AuthConfig::default(), routes::configure)
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    shared::app::serve(build(config)).await
}
