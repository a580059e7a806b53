//! NATS settings: the server, the installation prefix, how streams are declared, and how a
//! service proves who it is (credentials, TLS).

use super::*;

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
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
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
    pub(crate) fn from_env(url: &str) -> Result<Self, ConfigError> {
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
