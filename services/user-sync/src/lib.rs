//! user-sync: SCIM 2.0 server and LDAP/Active Directory pull into the local directory.
//!
//! Today the service boots the platform (schema `directory`, its streams, settings, outbox relay)
//! and serves the operator endpoints; its domain arrives with its own issue.

use shared::{
    app::{self, Application},
    bus::streams,
    config::{CommonConfig, ConfigError},
    platform::ServiceSpec,
};

pub const SERVICE: &str = "user-sync";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8084;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "directory";

/// Reads the service's configuration from the environment.
pub fn config() -> Result<CommonConfig, ConfigError> {
    CommonConfig::from_env(SERVICE, PORT)
}

/// Connects everything and binds the HTTP server (port 0 in tests).
pub async fn build(config: CommonConfig) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[&streams::WEBHOOKS, &streams::SYNC_EVENTS, &streams::SYNC_CONFLICTS],
        openapi: app::described(
            "SCIM 2.0 server and LDAP/Active Directory pull into the local directory",
        ),
        settings: None,
    };
    app::build_platform_only(&config, spec).await
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: CommonConfig) -> anyhow::Result<()> {
    app::serve(build(config)).await
}
