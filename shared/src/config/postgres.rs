//! PostgreSQL settings: `DATABASE_*`, and what `DATABASE_URL` says about TLS.

use super::*;

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

/// Names the service's connections in `pg_stat_activity` (unless the URL names them): the
/// connection budget is counted per service by it.
pub(crate) fn with_application_name(url: String, service: &str) -> String {
    if url.contains("application_name=") {
        return url;
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}application_name={service}")
}
