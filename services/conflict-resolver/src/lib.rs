//! conflict-resolver: the platform's conflict queue and its automatic rules.
//!
//! - Consumes `sync.conflicts.detected.<system>` (durable `resolver-detected`): each conflict is
//!   stored once (`resolver.conflicts`, keyed by the connector's conflict id) and tried at once.
//! - Rules, in order ([`shared::merge::decide`]): the newer side when the two times are more
//!   than `RESOLVER_NEWER_WINS_SECS` apart (and, across two clocks, more than
//!   `RESOLVER_CLOCK_SKEW_SECS`); a merge when the sides changed different fields; the runtime
//!   setting `sync_priority_source`. A decision is recorded with its rule and explanation and
//!   published on `sync.conflicts.resolved.<system>` (`{conflict_id, entity, record_id,
//!   values}`), which the owning service applies. Otherwise the conflict is `escalated` for a
//!   person.
//! - An escalation is announced once (`sync.conflicts.escalated.<system>`): one email to
//!   `RESOLVER_ADMIN_EMAIL` and one Slack message (`SLACK_WEBHOOK_URL`), each linking to the
//!   conflict under `RESOLVER_REVIEW_URL`, each sent once.
//! - Every `RESOLVER_RETRY_SECS` (900) one replica tries every unresolved conflict again (a
//!   changed priority setting may decide an escalated one).
//! - An automatic resolution can be undone within `RESOLVER_UNDO_SECS` (a day): the other
//!   side's values go out as a new resolution marked `undo`.
//! - `GET /conflicts`, `GET /conflicts/{id}` and `POST /conflicts/{id}/resolve` (admin token)
//!   list, show and decide conflicts by hand. Nothing is resolved twice: deciding locks the row
//!   and only an unresolved conflict is decided.

pub mod conflicts;
pub mod escalation;
pub mod review;
pub mod routes;

use std::time::Duration;

use shared::{
    app::Application,
    bus::{ConsumerSpec, Delivery, HandlerError, streams},
    config::{CommonConfig, ConfigError, url_var, var, var_parsed},
    db::PgPool,
    http::AuthConfig,
    merge::Rules,
    notify::{Mailer, Slack, SmtpConfig},
    platform::{Platform, ServiceSpec},
    schemas::conflict::ConflictDetected,
    settings::Settings,
};
use uuid::Uuid;

pub const SERVICE: &str = "conflict-resolver";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8085;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "resolver";
/// The durable consumer of detected conflicts.
pub const CONSUMER: &str = "resolver-detected";

/// conflict-resolver's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `RESOLVER_NEWER_WINS_SECS` (60): times further apart make the newer side win.
    pub newer_wins_after: Duration,
    /// `RESOLVER_CLOCK_SKEW_SECS` (5): how far two systems' clocks may disagree.
    pub clock_skew: Duration,
    /// `RESOLVER_RETRY_SECS` (900; 0 = off): pause between passes over unresolved conflicts.
    pub retry_every: Option<Duration>,
    /// `RESOLVER_UNDO_SECS` (86400): how long an automatic resolution can be undone.
    pub undo_window: Duration,
    /// `RESOLVER_REVIEW_URL`: this service as people reach it; links go to
    /// `<url>/review/conflicts/<id>`, the review page.
    pub review_url: String,
    /// `RESOLVER_ADMIN_EMAIL`: who is emailed an escalation (comma separated; none: no email).
    pub admin_email: Vec<String>,
    /// `SMTP_*`: the relay the emails go through.
    pub smtp: SmtpConfig,
    /// `SLACK_WEBHOOK_URL`: where escalations are posted (unset: no Slack message).
    pub slack: Option<Slack>,
}

impl Config {
    /// The defaults around `common` (what `from_env` gives with no `RESOLVER_*` set).
    pub fn defaults(common: CommonConfig) -> Self {
        Self {
            review_url: format!("http://localhost:{PORT}"),
            common,
            newer_wins_after: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            retry_every: Some(Duration::from_secs(900)),
            undo_window: Duration::from_secs(86_400),
            admin_email: Vec::new(),
            smtp: SmtpConfig::default(),
            slack: None,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let retry: u64 = var_parsed("RESOLVER_RETRY_SECS", 900)?;
        Ok(Self {
            common: CommonConfig::from_env(SERVICE, PORT)?,
            newer_wins_after: Duration::from_secs(var_parsed("RESOLVER_NEWER_WINS_SECS", 60)?),
            clock_skew: Duration::from_secs(var_parsed("RESOLVER_CLOCK_SKEW_SECS", 5)?),
            retry_every: (retry > 0).then(|| Duration::from_secs(retry)),
            undo_window: Duration::from_secs(var_parsed("RESOLVER_UNDO_SECS", 86_400)?),
            review_url: var("RESOLVER_REVIEW_URL")
                .unwrap_or_else(|| format!("http://localhost:{PORT}")),
            admin_email: var("RESOLVER_ADMIN_EMAIL")
                .map(|v| {
                    v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
                })
                .unwrap_or_default(),
            smtp: SmtpConfig::from_env()?,
            slack: url_var("SLACK_WEBHOOK_URL")?
                .map(|url| Slack { webhook_url: secrecy::SecretString::from(url) }),
        })
    }
}

/// What the handlers and consumers share.
#[derive(Clone)]
pub struct AppState {
    pub db: PgPool,
    pub settings: Settings,
    pub review_url: String,
    pub undo_window: Duration,
    pub newer_wins_after: Duration,
    pub clock_skew: Duration,
}

impl AppState {
    /// The rules as set now (the priority source is a runtime setting).
    pub fn rules(&self) -> Rules {
        let source = self.settings.current().sync_priority_source.trim().to_owned();
        let duration = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Rules {
            newer_wins_after: duration(self.newer_wins_after),
            clock_skew: duration(self.clock_skew),
            priority_source: (!source.is_empty()).then_some(source),
        }
    }
}

/// What trying a conflict did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tried {
    Resolved,
    /// No rule decides: it waits for a person (escalated now, or already).
    Escalated,
    /// Resolved before, or unknown.
    Nothing,
}

/// Tries the rules on conflict `id`, in one transaction that locks it.
pub async fn try_conflict(state: &AppState, id: Uuid) -> anyhow::Result<Tried> {
    use diesel_async::AsyncConnection;
    let rules = state.rules();
    let mut conn = state.db.get().await?;
    conn.transaction::<_, anyhow::Error, _>(async |conn| {
        let Some(conflict) = conflicts::get(conn, id, true).await? else {
            return Ok(Tried::Nothing);
        };
        if conflict.status == "resolved" {
            return Ok(Tried::Nothing);
        }
        match conflict.decide(&rules) {
            Some(decision) => {
                tracing::info!(conflict = %id, rule = decision.rule.as_str(), explanation = %decision.explanation, "conflict resolved by rule");
                conflicts::resolve(conn, &conflict, conflicts::Resolution::of(decision)).await?;
                Ok(Tried::Resolved)
            }
            None => {
                let why = conflict.unapplied.as_deref().unwrap_or(
                    "no rule decides: both sides changed the same fields within the newer-wins \
                     window and no priority source is set",
                );
                if conflicts::escalate(conn, &conflict, why, &state.review_url).await? {
                    tracing::warn!(conflict = %id, system = %conflict.system, entity = %conflict.entity, "conflict escalated for review");
                } else {
                    conflicts::tried(conn, &[id]).await?;
                }
                Ok(Tried::Escalated)
            }
        }
    })
    .await
}

/// Stores a detected conflict and tries it at once.
async fn detected(
    state: &AppState,
    delivery: Delivery<ConflictDetected>,
) -> Result<(), HandlerError> {
    let conflict = delivery.envelope.data;
    {
        let mut conn = state.db.get().await.map_err(|e| anyhow::anyhow!("database: {e}"))?;
        conflicts::store(&mut conn, &conflict).await.map_err(anyhow::Error::from)?;
    }
    try_conflict(state, conflict.conflict_id).await?;
    Ok(())
}

/// One pass over every unresolved conflict, by one replica at a time; how many it resolved.
pub async fn pass(state: &AppState) -> anyhow::Result<usize> {
    use diesel::sql_types::Bool;
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Locked {
        #[diesel(sql_type = Bool)]
        locked: bool,
    }
    // A session lock held on a connection of its own for the whole pass.
    let mut lock_conn = state.db.get().await?;
    let locked: Locked = diesel::sql_query(
        "SELECT pg_try_advisory_lock(hashtext('datasync.resolver.pass')) AS locked",
    )
    .get_result(&mut lock_conn)
    .await?;
    if !locked.locked {
        return Ok(0);
    }
    let result = async {
        let mut resolved = 0;
        let ids = {
            let mut conn = state.db.get().await?;
            conflicts::unresolved(&mut conn, 10_000).await?
        };
        for id in ids {
            if try_conflict(state, id).await? == Tried::Resolved {
                resolved += 1;
            }
        }
        anyhow::Ok(resolved)
    }
    .await;
    diesel::sql_query("SELECT pg_advisory_unlock(hashtext('datasync.resolver.pass'))")
        .execute(&mut lock_conn)
        .await?;
    result
}

/// Connects everything, starts the consumer and the scheduled passes, and binds the HTTP
/// server (port 0 in tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[&streams::SYNC_CONFLICTS, &streams::SYNC_EVENTS],
        openapi: <routes::ApiDoc as utoipa::OpenApi>::openapi(),
        settings: None,
    };
    let platform = Platform::start(&config.common, spec).await?;
    let state = AppState {
        db: platform.db.clone(),
        settings: platform.settings.clone(),
        review_url: config.review_url.clone(),
        undo_window: config.undo_window,
        newer_wins_after: config.newer_wins_after,
        clock_skew: config.clock_skew,
    };
    let consumer_state = state.clone();
    platform.spawn_consumer(
        ConsumerSpec::new(CONSUMER, &streams::SYNC_CONFLICTS, "sync.conflicts.detected.>"),
        move |delivery| {
            let state = consumer_state.clone();
            async move { detected(&state, delivery).await }
        },
    );
    // Escalations: one email and one Slack message each, sent once.
    let mailer = Mailer::new(&config.smtp)?;
    let (mail_db, to) = (platform.db.clone(), config.admin_email.clone());
    platform.spawn_consumer(
        ConsumerSpec::new(
            escalation::MAIL_CONSUMER,
            &streams::SYNC_CONFLICTS,
            "sync.conflicts.escalated.>",
        ),
        move |delivery| {
            let (db, mailer, to) = (mail_db.clone(), mailer.clone(), to.clone());
            async move { escalation::mail(&db, &mailer, &to, delivery).await }
        },
    );
    match config.slack.clone() {
        Some(slack) => {
            let (slack_db, http) = (platform.db.clone(), platform.http.clone());
            platform.spawn_consumer(
                ConsumerSpec::new(
                    escalation::SLACK_CONSUMER,
                    &streams::SYNC_CONFLICTS,
                    "sync.conflicts.escalated.>",
                ),
                move |delivery| {
                    let (db, http, slack) = (slack_db.clone(), http.clone(), slack.clone());
                    async move { escalation::slack(&db, &http, &slack, delivery).await }
                },
            );
        }
        None => tracing::warn!("SLACK_WEBHOOK_URL is not set: escalations are not posted to Slack"),
    }
    if let Some(every) = config.retry_every {
        let (pass_state, shutdown) = (state.clone(), platform.shutdown.clone());
        platform.spawn("resolver-pass", async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
                match pass(&pass_state).await {
                    Ok(resolved) => tracing::info!(resolved, "conflict pass"),
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "conflict pass failed; the next one retries"),
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
