//! user-sync owns `directory`: users, groups, memberships and each pulled source's cursor.
//! Identity providers and HR systems push users over SCIM 2.0 ([`scim`]); every change is
//! published on `directory.user.<change>` / `directory.group.<change>` and `sync.events`.

pub mod bulk;
pub mod drift;
pub mod ldap;
pub mod routes;
pub mod scim;
pub mod store;

use secrecy::SecretString;
use shared::{
    app::Application,
    bus::streams,
    config::{CommonConfig, ConfigError, url_var, var},
    http::AuthConfig,
    platform::{Platform, ServiceSpec},
};

pub const SERVICE: &str = "user-sync";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8084;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "directory";

/// user-sync's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `SCIM_TOKENS`: `<source>=<bearer token>` pairs, comma separated (two tokens of one
    /// source during a rotation). Each source sees only its own users and groups.
    pub scim_tokens: Vec<(String, SecretString)>,
    /// `SCIM_BASE_URL` (`http://localhost:8084/scim/v2`): the SCIM endpoint as clients reach it
    /// (`meta.location`, `$ref`), configured rather than read from a request's headers.
    pub scim_base_url: String,
    /// `LDAP_URL` and the rest of `LDAP_*`: the directory to pull (unset: none).
    pub ldap: Option<ldap::LdapConfig>,
}

/// The smallest token accepted: a guessable one would open the directory.
const MIN_TOKEN: usize = 16;

fn parse_tokens(raw: &str) -> Result<Vec<(String, SecretString)>, ConfigError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let invalid =
                |reason: String| ConfigError::Invalid { name: "SCIM_TOKENS".into(), reason };
            let (source, token) = pair
                .split_once('=')
                .ok_or_else(|| invalid("each entry is <source>=<token>".into()))?;
            let source = source.trim();
            if !shared::schemas::is_subject_safe(source) {
                return Err(invalid(format!("source {source:?} must be letters, digits, - or _")));
            }
            if token.trim().len() < MIN_TOKEN {
                return Err(invalid(format!(
                    "the token of {source} is shorter than {MIN_TOKEN} characters"
                )));
            }
            Ok((source.to_owned(), SecretString::from(token.trim().to_owned())))
        })
        .collect()
}

impl Config {
    /// The platform with no SCIM source (every SCIM request is refused).
    pub fn defaults(common: CommonConfig) -> Self {
        Self {
            common,
            scim_tokens: Vec::new(),
            scim_base_url: format!("http://localhost:{PORT}/scim/v2"),
            ldap: None,
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::defaults(CommonConfig::from_env(SERVICE, PORT)?);
        if let Some(raw) = var("SCIM_TOKENS") {
            config.scim_tokens = parse_tokens(&raw)?;
        }
        if let Some(url) = url_var("SCIM_BASE_URL")? {
            config.scim_base_url = url;
        }
        config.ldap = ldap_from_env()?;
        Ok(config)
    }
}

/// `LDAP_URL` (`ldap://host:389`), `LDAP_BIND_DN`, `LDAP_BIND_PASSWORD`, `LDAP_BASE_DN`,
/// `LDAP_USER_FILTER` / `LDAP_GROUP_FILTER` (by flavour), `LDAP_FLAVOR` (`openldap` or `ad`),
/// `LDAP_SOURCE` (`ldap`), `LDAP_SYNC_SECS` (300; 0 = on demand), `LDAP_FULL_SYNC_SECS` (3600),
/// `LDAP_PAGE_SIZE` (500).
fn ldap_from_env() -> Result<Option<ldap::LdapConfig>, ConfigError> {
    let Some(url) = var("LDAP_URL") else { return Ok(None) };
    if !["ldap://", "ldaps://", "ldapi://"].iter().any(|scheme| url.starts_with(scheme)) {
        return Err(ConfigError::Invalid {
            name: "LDAP_URL".into(),
            reason: "must be ldaps://host:636, or ldap://host:389 (with LDAP_STARTTLS)".into(),
        });
    }
    let starttls = shared::config::var_parsed("LDAP_STARTTLS", false)?;
    if starttls && !url.starts_with("ldap://") {
        return Err(ConfigError::Invalid {
            name: "LDAP_STARTTLS".into(),
            reason: "StartTLS upgrades an ldap:// connection only".into(),
        });
    }
    let ca_file = var("LDAP_CA_FILE");
    if let Some(ca) = &ca_file {
        shared::tls::roots(Some(ca))
            .map_err(|reason| ConfigError::Invalid { name: "LDAP_CA_FILE".into(), reason })?;
    }
    let flavor = match var("LDAP_FLAVOR").as_deref().unwrap_or("openldap") {
        "openldap" => ldap::Flavor::OpenLdap,
        "ad" => ldap::Flavor::ActiveDirectory,
        other => {
            return Err(ConfigError::Invalid {
                name: "LDAP_FLAVOR".into(),
                reason: format!("{other:?} is not openldap or ad"),
            });
        }
    };
    let (users, groups) = match flavor {
        ldap::Flavor::OpenLdap => (
            "(objectClass=inetOrgPerson)",
            "(|(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))",
        ),
        ldap::Flavor::ActiveDirectory => {
            ("(&(objectCategory=person)(objectClass=user))", "(objectClass=group)")
        }
    };
    let every: u64 = shared::config::var_parsed("LDAP_SYNC_SECS", 300)?;
    Ok(Some(ldap::LdapConfig {
        url,
        bind_dn: shared::config::required_var("LDAP_BIND_DN")?,
        bind_password: shared::config::required_secret("LDAP_BIND_PASSWORD")?,
        base_dn: shared::config::required_var("LDAP_BASE_DN")?,
        user_filter: var("LDAP_USER_FILTER").unwrap_or_else(|| users.into()),
        group_filter: var("LDAP_GROUP_FILTER").unwrap_or_else(|| groups.into()),
        flavor,
        source: var("LDAP_SOURCE").unwrap_or_else(|| "ldap".into()),
        every: (every > 0).then(|| std::time::Duration::from_secs(every)),
        full_every: std::time::Duration::from_secs(shared::config::var_parsed(
            "LDAP_FULL_SYNC_SECS",
            3600,
        )?),
        page_size: shared::config::var_parsed("LDAP_PAGE_SIZE", 500)?,
        starttls,
        ca_file,
    }))
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub db: shared::db::PgPool,
    pub scim_tokens: Vec<(String, SecretString)>,
    pub scim_base_url: String,
    pub ldap: Option<ldap::LdapConfig>,
}

/// Connects everything and binds the HTTP server (port 0 in tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[&streams::DIRECTORY, &streams::SYNC_EVENTS, &streams::ALERTS],
        openapi: shared::app::described(
            "SCIM 2.0 service provider and LDAP/Active Directory pull into the local directory",
        ),
        settings: None,
    };
    let platform = Platform::start(&config.common, spec).await?;
    if config.scim_tokens.is_empty() {
        tracing::warn!("SCIM_TOKENS is not set: every SCIM request is refused");
    }
    let state = AppState {
        db: platform.db.clone(),
        scim_tokens: config.scim_tokens.clone(),
        scim_base_url: config.scim_base_url.clone(),
        ldap: config.ldap.clone(),
    };
    if let Some(ldap) = &config.ldap
        && !ldap.encrypted()
    {
        tracing::warn!(
            url = %ldap.url,
            "LDAP_URL is ldap:// without LDAP_STARTTLS: the bind password crosses the network in \
             the clear; use ldaps:// or LDAP_STARTTLS=true"
        );
    }
    if let Some(ldap_config) = config.ldap.clone()
        && let Some(every) = ldap_config.every
    {
        let (db, shutdown) = (platform.db.clone(), platform.shutdown.clone());
        platform.spawn("ldap-pull", async move {
            loop {
                if let Err(e) = ldap::pass(&db, &ldap_config, false).await {
                    tracing::warn!(error = %format!("{e:#}"), "LDAP pass failed; the next one retries");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(every) => {}
                }
            }
        });
    }
    // A full resync of the LDAP source, with its dry run (the shared job engine).
    platform.run_bulk(
        config
            .ldap
            .clone()
            .map(|config| bulk::LdapLoad { db: platform.db.clone(), config }.offered()),
    )?;
    Application::build(platform, state, AuthConfig::default(), routes::configure)
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    shared::app::serve(build(config)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_source_and_are_long_enough() {
        let tokens = parse_tokens("okta=0123456789abcdef0123, entra=fedcba9876543210fedc").unwrap();
        assert_eq!(tokens.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>(), ["okta", "entra"]);
        assert!(parse_tokens("okta=short").is_err());
        assert!(parse_tokens("0123456789abcdef0123").is_err());
        assert!(parse_tokens("ok ta=0123456789abcdef0123").is_err());
    }
}
