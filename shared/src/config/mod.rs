//! Typed configuration read once from the environment (and a `.env` file in development).
//!
//! Every reader names the variable it failed on, so a bad deployment exits with one line that
//! says what to fix. Nothing here is stored in a global: services build their config struct at
//! start and pass it down explicitly, and tests change fields on that struct.

use std::{fmt::Display, str::FromStr, time::Duration};

use secrecy::SecretString;

mod access;
mod nats;
mod postgres;

use access::admin_tokens;
pub use access::{AdminToken, Cidr};
pub use nats::{NatsAuth, NatsConfig, NatsTls, StreamTopology};
use postgres::with_application_name;
pub use postgres::{DbConfig, PgUrl, SslMode};

/// A configuration error naming the offending variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(String),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: String, reason: String },
}

/// Loads `.env` from the working directory if there is one (development convenience only).
/// Only that file: parent directories are not searched, so a process started elsewhere (a
/// test, a container) never picks up a developer's secrets by accident. Variables already set
/// in the environment win.
pub fn load_dotenv() {
    let _ = dotenvy::from_path(".env");
}

/// The variable's value, if set and not empty.
pub fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// The variable's value, or an error naming it.
pub fn required_var(name: &str) -> Result<String, ConfigError> {
    var(name).ok_or_else(|| ConfigError::Missing(name.to_owned()))
}

/// The parsed variable, `default` when unset, or an error naming it when it does not parse.
pub fn var_parsed<T>(name: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match var(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
            name: name.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// A required secret, never printed by `Debug`.
pub fn required_secret(name: &str) -> Result<SecretString, ConfigError> {
    required_var(name).map(SecretString::from)
}

/// A comma-separated list of secrets (several are accepted at once during a rotation).
pub fn secret_list(name: &str) -> Vec<SecretString> {
    var(name)
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| SecretString::from(s.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// An `http(s)://` base URL without trailing slash, or `None` when unset.
pub fn url_var(name: &str) -> Result<Option<String>, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(None);
    };
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            name: name.to_owned(),
            reason: format!("expected an http:// or https:// URL, got {raw:?}"),
        });
    }
    Ok(Some(raw.trim_end_matches('/').to_owned()))
}

/// The shortest secret accepted (admin tokens, API keys, webhook secrets): a short one can be
/// guessed.
pub const MIN_SECRET_LEN: usize = 16;

/// A URL with its credentials hidden (`postgres://user:pass@host/db` becomes
/// `postgres://user:***@host/db`; `nats://token@host` becomes `nats://***@host`), for logs,
/// errors and `Debug`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme) = url.find("://") else { return url.to_owned() };
    let rest = &url[scheme + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{shown}{}", &url[..scheme + 3], &rest[at..])
}

/// Everything every service needs, read from the same variables in every service.
#[derive(Clone, Debug)]
pub struct CommonConfig {
    /// Service name, used in logs, traces, metrics and consumer names.
    pub service: &'static str,
    /// `HTTP_HOST`, default `0.0.0.0`.
    pub http_host: String,
    /// `HTTP_PORT`, default the service's own port (8081..8086); 0 picks a free port.
    pub http_port: u16,
    pub db: DbConfig,
    pub nats: NatsConfig,
    /// `ADMIN_TOKEN_<SERVICE>` (`ADMIN_TOKEN_CRM_SYNC`, ...) or else `ADMIN_TOKEN` (one of them
    /// required): the bearer token of the admin endpoints, and the tokens still accepted
    /// during a rotation (`new,old`: the first one signs sessions and is what this service
    /// presents to others).
    pub admin_token: AdminToken,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/HTTP collector; traces are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `LOG_FORMAT`: `json` (default) or `pretty`.
    pub log_format: LogFormat,
    /// `SHUTDOWN_GRACE_SECS`, default 30: time allowed for in-flight work at shutdown.
    pub shutdown_grace: Duration,
    /// `SETTINGS_DEFAULTS`: JSON object overriding built-in runtime-setting defaults; values
    /// stored in the `settings` KV bucket override these in turn.
    /// (Checked against the runtime settings' types when the service starts.)
    pub settings_defaults: serde_json::Map<String, serde_json::Value>,
    /// `MAX_BODY_BYTES`, default 1 MiB: larger request bodies are refused with 413.
    pub max_body: usize,
    /// `RETENTION_*`: how long history tables keep closed rows ([`crate::retention`]).
    pub retention: Retention,
    /// `PUBLIC_URL` (`https://sync.example.com`): this service as senders reach it. Signatures
    /// that cover the URL (HubSpot v3) are checked against it, never against a URL built from a
    /// client's `X-Forwarded-Host`; unset: `http://` and the request's own `Host`.
    pub public_url: Option<String>,
    /// `AUTH_FAILURES_PER_MINUTE` (30; 0 = no limit): a client (by its address) refused this many
    /// times within a minute gets 429 until the minute ends.
    pub auth_failures_per_minute: u32,
    /// `TRUSTED_PROXIES` (none): addresses or CIDR ranges of the reverse proxies in front of
    /// the service (an ingress controller's pod network). A request whose peer is one of them
    /// counts against the client `X-Forwarded-For` names (the nearest address that is not a
    /// trusted proxy); from anyone else the header is ignored, so it cannot be forged.
    pub trusted_proxies: Vec<Cidr>,
    /// `MIGRATE_ON_START` (true): the service applies pending migrations when it starts. False
    /// where a migration job runs them (Kubernetes): the service then only waits, not ready,
    /// until the database has them all, and its role needs no DDL rights.
    pub migrate_on_start: bool,
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected json or pretty, got {other:?}")),
        }
    }
}

impl CommonConfig {
    /// Reads the common variables; `default_port` is the service's own port.
    pub fn from_env(service: &'static str, default_port: u16) -> Result<Self, ConfigError> {
        Self {
            service,
            http_host: var("HTTP_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            http_port: var_parsed("HTTP_PORT", default_port)?,
            db: DbConfig {
                url: with_application_name(
                    var("DATABASE_URL")
                        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/datasync".into()),
                    service,
                ),
                pool_size: var_parsed("DATABASE_POOL_SIZE", 16)?,
                pool_timeout: Duration::from_millis(var_parsed("DATABASE_POOL_TIMEOUT_MS", 5000)?),
                app_role: var("DATABASE_APP_ROLE"),
            },
            nats: NatsConfig {
                auth: NatsAuth::from_env()?,
                tls: NatsTls::from_env(&var("NATS_URL").unwrap_or_default())?,
                url: var("NATS_URL").unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
                prefix: var("NATS_PREFIX").unwrap_or_default(),
                streams: StreamTopology {
                    replicas: var_parsed("NATS_STREAM_REPLICAS", 1)?,
                    max_bytes: var_parsed("NATS_STREAM_MAX_BYTES", 1_i64 << 30)?,
                    work_queue_max_age: Duration::from_secs(
                        var_parsed::<u64>("NATS_WORK_QUEUE_MAX_AGE_DAYS", 14)? * 24 * 3600,
                    ),
                },
            },
            admin_token: admin_tokens(service)?,
            otlp_endpoint: url_var("OTEL_EXPORTER_OTLP_ENDPOINT")?,
            log_format: var_parsed("LOG_FORMAT", LogFormat::Json)?,
            shutdown_grace: Duration::from_secs(var_parsed("SHUTDOWN_GRACE_SECS", 30)?),
            settings_defaults: match var("SETTINGS_DEFAULTS") {
                None => serde_json::Map::new(),
                Some(raw) => serde_json::from_str(&raw).map_err(|e| ConfigError::Invalid {
                    name: "SETTINGS_DEFAULTS".into(),
                    reason: format!("expected a JSON object: {e}"),
                })?,
            },
            max_body: var_parsed("MAX_BODY_BYTES", 1024 * 1024)?,
            public_url: url_var("PUBLIC_URL")?,
            auth_failures_per_minute: var_parsed("AUTH_FAILURES_PER_MINUTE", 30)?,
            trusted_proxies: var("TRUSTED_PROXIES")
                .map(|raw| {
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::parse)
                        .collect::<Result<Vec<Cidr>, String>>()
                })
                .transpose()
                .map_err(|reason| ConfigError::Invalid { name: "TRUSTED_PROXIES".into(), reason })?
                .unwrap_or_default(),
            migrate_on_start: var_parsed("MIGRATE_ON_START", true)?,
            retention: Retention::from_env()?,
        }
        .validated()
    }

    fn validated(self) -> Result<Self, ConfigError> {
        if !self.db.url.starts_with("postgres://") && !self.db.url.starts_with("postgresql://") {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL".into(),
                reason: "expected a postgres:// URL".into(),
            });
        }
        if let Err(reason) = PgUrl::parse(&self.db.url) {
            return Err(ConfigError::Invalid { name: "DATABASE_URL".into(), reason });
        }
        if let Some(role) = &self.db.app_role
            && (role.is_empty()
                || !role.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        {
            return Err(ConfigError::Invalid {
                name: "DATABASE_APP_ROLE".into(),
                reason: "a role name: letters, digits, _ and -".into(),
            });
        }
        if self.db.pool_size == 0 {
            return Err(ConfigError::Invalid {
                name: "DATABASE_POOL_SIZE".into(),
                reason: "must be at least 1".into(),
            });
        }
        if !self.nats.prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::Invalid {
                name: "NATS_PREFIX".into(),
                reason: "only letters, digits and _ are allowed".into(),
            });
        }
        Ok(self)
    }
}

/// A day.
pub const DAY: Duration = Duration::from_secs(86_400);

/// How long each history table keeps closed rows (`None`: forever); see [`crate::retention`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// `RETENTION_PUSH_LOG_DAYS`, default 30 (0: keep forever).
    pub push_log: Option<Duration>,
    /// `RETENTION_WEBHOOK_EVENTS_DAYS`, default 30 (0: keep forever; else at least 1).
    pub webhook_events: Option<Duration>,
    /// `RETENTION_DEAD_LETTERS_DAYS`, default 90, counted from the replay (0: keep forever).
    pub dead_letters: Option<Duration>,
    /// `RETENTION_EVERY_SECS`, default 3600: how often a replica runs a pass.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            push_log: Some(DAY * 30),
            webhook_events: Some(DAY * 30),
            dead_letters: Some(DAY * 90),
            every: Duration::from_secs(3600),
        }
    }
}

impl Retention {
    /// From the environment (see the fields).
    pub fn from_env() -> Result<Self, ConfigError> {
        let days = |name: &str, default: u64| -> Result<Option<Duration>, ConfigError> {
            let n: u64 = var_parsed(name, default)?;
            Ok((n > 0).then(|| DAY * n as u32))
        };
        let every: u64 = var_parsed("RETENTION_EVERY_SECS", 3600)?;
        if every == 0 {
            return Err(ConfigError::Invalid {
                name: "RETENTION_EVERY_SECS".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            push_log: days("RETENTION_PUSH_LOG_DAYS", 30)?,
            webhook_events: days("RETENTION_WEBHOOK_EVENTS_DAYS", 30)?,
            dead_letters: days("RETENTION_DEAD_LETTERS_DAYS", 90)?,
            every: Duration::from_secs(every),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_configs_never_show_their_credentials() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/datasync?sslmode=require"),
            "postgres://app:***@db:5432/datasync?sslmode=require"
        );
        assert_eq!(redact_url("nats://tok3n@nats:4222"), "nats://***@nats:4222");
        assert_eq!(redact_url("postgres://db/x?user=a@b"), "postgres://db/x?user=a@b");
        assert_eq!(redact_url("not a url"), "not a url");
        let db = DbConfig {
            url: "postgres://app:s3cret@db/datasync".into(),
            pool_size: 1,
            pool_timeout: Duration::from_secs(1),
            app_role: None,
        };
        let nats = NatsConfig {
            url: "nats://user:pw0rd@nats:4222".into(),
            prefix: String::new(),
            streams: StreamTopology::default(),
            auth: NatsAuth::UserPassword("svc".into(), "pw0rd".into()),
            tls: NatsTls::default(),
        };
        let shown = format!("{db:?} {nats:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pw0rd"), "{shown}");
    }

    #[test]
    fn var_parsed_names_the_variable_that_does_not_parse() {
        // SAFETY of the test: the variable name is unique to this test.
        unsafe_set("DATASYNC_TEST_PORT_XYZ", "eighty");
        let err = var_parsed::<u16>("DATASYNC_TEST_PORT_XYZ", 1).unwrap_err();
        assert!(err.to_string().contains("DATASYNC_TEST_PORT_XYZ"), "{err}");
    }

    #[test]
    fn url_var_rejects_a_url_without_scheme() {
        unsafe_set("DATASYNC_TEST_URL_XYZ", "erp.local");
        let err = url_var("DATASYNC_TEST_URL_XYZ").unwrap_err();
        assert!(err.to_string().contains("DATASYNC_TEST_URL_XYZ"));
    }

    #[test]
    fn a_service_takes_its_own_admin_token_and_accepts_every_listed_one_during_a_rotation() {
        use secrecy::ExposeSecret;
        unsafe_set("ADMIN_TOKEN_TOKENTEST_ONE", "new-token-0123456789, old-token-0123456789");
        let token = admin_tokens("tokentest-one").unwrap();
        assert_eq!(token.current.expose_secret(), "new-token-0123456789", "the first is presented");
        assert!(token.accepts("new-token-0123456789") && token.accepts("old-token-0123456789"));
        assert!(!token.accepts("new-token-012345678") && !token.accepts(""));
        unsafe_set("ADMIN_TOKEN_TOKENTEST_TWO", "long-enough-token-0123,short");
        let err = admin_tokens("tokentest-two").unwrap_err().to_string();
        assert!(err.contains("ADMIN_TOKEN_TOKENTEST_TWO") && !err.contains("short"), "{err}");
    }

    #[test]
    fn log_format_rejects_unknown_values() {
        assert!("xml".parse::<LogFormat>().is_err());
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
    }

    fn unsafe_set(name: &str, value: &str) {
        // Only ever called with variable names unique to one test, so parallel tests
        // cannot observe each other's writes.
        #[expect(
            unsafe_code,
            reason = "set_var is unsafe in edition 2024; names are unique per test"
        )]
        unsafe {
            std::env::set_var(name, value)
        };
    }
}
