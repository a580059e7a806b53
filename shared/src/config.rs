//! Typed configuration read once from the environment (and a `.env` file in development).
//!
//! Every reader names the variable it failed on, so a bad deployment exits with one line that
//! says what to fix. Nothing here is stored in a global: services build their config struct at
//! start and pass it down explicitly, and tests change fields on that struct.

use std::{fmt::Display, str::FromStr, time::Duration};

use secrecy::SecretString;

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

/// PostgreSQL settings.
#[derive(Clone)]
pub struct DbConfig {
    /// `DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/datasync`.
    pub url: String,
    /// `DATABASE_POOL_SIZE`, default 16 connections per replica.
    pub pool_size: usize,
    /// `DATABASE_POOL_TIMEOUT_MS`, default 5000: how long a request waits for a connection
    /// before failing with 503 instead of queueing forever.
    pub pool_timeout: Duration,
    /// `DATABASE_APP_ROLE`, unset by default: the role the services connect as, when it is not
    /// the one that runs the migrations. `migrate` then grants it what the services need (use
    /// of the schemas, reading and writing rows, no DDL).
    pub app_role: Option<String>,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field("pool_size", &self.pool_size)
            .field("pool_timeout", &self.pool_timeout)
            .field("app_role", &self.app_role)
            .finish()
    }
}

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr =
            addr.parse().map_err(|_| format!("{s:?} is not an address or a CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            max
        } else {
            prefix
                .parse()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: bad prefix length"))?
        };
        Ok(Self { addr, prefix })
    }
}

/// The admin token, and those still accepted while callers switch (see [`CommonConfig`]).
#[derive(Clone, Debug)]
pub struct AdminToken {
    pub current: SecretString,
    pub previous: Vec<SecretString>,
}

impl AdminToken {
    /// Whether `given` is the current or a previous token (each compared in constant time).
    pub fn accepts(&self, given: &str) -> bool {
        use secrecy::ExposeSecret;
        use subtle::ConstantTimeEq;
        std::iter::once(&self.current).chain(&self.previous).fold(false, |ok, t| {
            ok | bool::from(given.as_bytes().ct_eq(t.expose_secret().as_bytes()))
        })
    }
}

impl From<&str> for AdminToken {
    fn from(token: &str) -> Self {
        Self { current: SecretString::from(token), previous: Vec::new() }
    }
}

/// Reads the service's own `ADMIN_TOKEN_<SERVICE>`, else `ADMIN_TOKEN`: a comma-separated list,
/// each at least [`MIN_SECRET_LEN`] characters.
fn admin_tokens(service: &str) -> Result<AdminToken, ConfigError> {
    let own = format!("ADMIN_TOKEN_{}", service.to_uppercase().replace('-', "_"));
    let (name, raw) = match var(&own) {
        Some(raw) => (own, raw),
        None => ("ADMIN_TOKEN".to_owned(), required_var("ADMIN_TOKEN")?),
    };
    let mut tokens = raw.split(',').map(str::trim).map(|t| {
        if t.len() < MIN_SECRET_LEN {
            return Err(ConfigError::Invalid {
                name: name.clone(),
                reason: format!("each token must be at least {MIN_SECRET_LEN} characters"),
            });
        }
        Ok(SecretString::from(t))
    });
    let current = tokens.next().ok_or_else(|| ConfigError::Missing(name.clone()))??;
    Ok(AdminToken { current, previous: tokens.collect::<Result<_, _>>()? })
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => Self::Disable,
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode: expected disable, allow, prefer, require, verify-ca or verify-full, \
                     got {other:?}"
                ));
            }
        })
    }
}

/// What `DATABASE_URL` says about TLS (libpq's `sslmode` and `sslrootcert`), taken out of the
/// URL, and the rest of it (which tokio-postgres reads). Connections are made by
/// [`crate::db::tls`].
pub struct PgUrl {
    pub rest: String,
    pub mode: SslMode,
    pub root_cert: Option<String>,
}

impl PgUrl {
    /// Errors name the parameter and never repeat the URL (it carries the password).
    pub fn parse(url: &str) -> Result<Self, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = SslMode::Prefer;
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
            match key {
                "sslmode" => mode = decoded.parse()?,
                "sslrootcert" => root_cert = Some(decoded.into_owned()),
                "sslcert" | "sslkey" => {
                    return Err(format!(
                        "{key}: client certificates are not supported; authenticate with a \
                         password (TLS still protects it)"
                    ));
                }
                _ => rest.push(pair),
            }
        }
        let rest =
            if rest.is_empty() { base.to_owned() } else { format!("{base}?{}", rest.join("&")) };
        Ok(Self { rest, mode, root_cert })
    }
}

/// NATS settings.
#[derive(Clone)]
pub struct NatsConfig {
    /// `NATS_URL`, default `nats://127.0.0.1:4222`.
    pub url: String,
    /// `NATS_PREFIX`, default empty. Prepended to every stream name, subject, consumer and KV
    /// bucket so that several installations (or parallel tests) share one NATS server.
    pub prefix: String,
    /// How the streams are declared ([`StreamTopology`]).
    pub streams: StreamTopology,
    /// How this service proves who it is ([`NatsAuth`]) and which CA it trusts.
    pub auth: NatsAuth,
    pub tls: NatsTls,
}

/// `NATS_CREDS_FILE` (a `.creds` file: JWT and nkey seed), `NATS_NKEY_SEED`, `NATS_USER` +
/// `NATS_PASSWORD`, or `NATS_TOKEN`; the first one set wins. In Kubernetes these come from a
/// Secret, never a ConfigMap.
#[derive(Clone, Default)]
pub enum NatsAuth {
    #[default]
    None,
    CredsFile(std::path::PathBuf),
    Nkey(SecretString),
    UserPassword(String, SecretString),
    Token(SecretString),
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => write!(f, "None"),
            NatsAuth::CredsFile(path) => write!(f, "CredsFile({})", path.display()),
            NatsAuth::Nkey(_) => write!(f, "Nkey(***)"),
            NatsAuth::UserPassword(user, _) => write!(f, "UserPassword({user}, ***)"),
            NatsAuth::Token(_) => write!(f, "Token(***)"),
        }
    }
}

/// `NATS_CA_FILE` (the CA that signed the server's certificate), `NATS_TLS_CERT_FILE` +
/// `NATS_TLS_KEY_FILE` (a client certificate, where the server asks for one), and
/// `NATS_TLS_REQUIRED` (also implied by a `tls://` URL or a CA): connections are encrypted.
#[derive(Clone, Debug, Default)]
pub struct NatsTls {
    pub required: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsAuth {
    fn from_env() -> Result<Self, ConfigError> {
        if let Some(path) = var("NATS_CREDS_FILE") {
            return Ok(NatsAuth::CredsFile(path.into()));
        }
        if let Some(seed) = var("NATS_NKEY_SEED") {
            return Ok(NatsAuth::Nkey(seed.into()));
        }
        match (var("NATS_USER"), var("NATS_PASSWORD")) {
            (Some(user), Some(password)) => {
                return Ok(NatsAuth::UserPassword(user, password.into()));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "NATS_PASSWORD".into(),
                    reason: "set NATS_USER and NATS_PASSWORD together".into(),
                });
            }
            (None, None) => {}
        }
        Ok(var("NATS_TOKEN").map_or(NatsAuth::None, |t| NatsAuth::Token(t.into())))
    }
}

impl NatsTls {
    fn from_env(url: &str) -> Result<Self, ConfigError> {
        let client_cert = match (var("NATS_TLS_CERT_FILE"), var("NATS_TLS_KEY_FILE")) {
            (Some(cert), Some(key)) => Some((cert.into(), key.into())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid {
                    name: "NATS_TLS_KEY_FILE".into(),
                    reason: "set NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE together".into(),
                });
            }
        };
        let ca_file: Option<std::path::PathBuf> = var("NATS_CA_FILE").map(Into::into);
        Ok(Self {
            required: var_parsed("NATS_TLS_REQUIRED", false)?
                || url.starts_with("tls://")
                || ca_file.is_some(),
            ca_file,
            client_cert,
        })
    }
}

/// How streams are declared: `NATS_STREAM_REPLICAS` (1; 3 on a 3-node cluster),
/// `NATS_STREAM_MAX_BYTES` (1 GiB per stream; 0 = unlimited) and
/// `NATS_WORK_QUEUE_MAX_AGE_DAYS` (14; a work item nobody takes for this long is dropped, so a
/// subject nothing consumes cannot fill the store). A running stream's replicas and limits are
/// never lowered at start: an operator's larger values stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTopology {
    pub replicas: usize,
    pub max_bytes: i64,
    pub work_queue_max_age: Duration,
}

impl Default for StreamTopology {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_bytes: 1 << 30,
            work_queue_max_age: Duration::from_secs(14 * 24 * 3600),
        }
    }
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .finish()
    }
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

/// Names the service's connections in `pg_stat_activity` (unless the URL names them): the
/// connection budget is counted per service by it.
fn with_application_name(url: String, service: &str) -> String {
    if url.contains("application_name=") {
        return url;
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={service}")
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
    fn cidr_ranges_match_their_addresses_only() {
        let net: Cidr = "10.42.0.0/16".parse().unwrap();
        assert!(net.contains("10.42.7.9".parse().unwrap()));
        assert!(!net.contains("10.43.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.42.0.1".parse().unwrap()), "IPv4-mapped IPv6");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(
            v6.contains("fd12::1".parse().unwrap()) && !v6.contains("fe80::1".parse().unwrap())
        );
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "proxy".parse::<Cidr>().is_err());
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
