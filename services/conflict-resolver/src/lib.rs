//! conflict-resolver: conflict queue, automatic rules and manual review.
//!
//! Today the service boots the platform (schema `resolver`, its streams, settings, outbox relay)
//! and serves the operator endpoints; its domain arrives with its own issue.

use shared::{
    app::{self, Application},
    bus::streams,
    config::{CommonConfig, ConfigError},
    platform::ServiceSpec,
};

pub const SERVICE: &str = "conflict-resolver";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8085;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "resolver";

/// Reads the service's configuration from the environment.
pub fn config() -> Result<CommonConfig, ConfigError> {
    CommonConfig::from_env(SERVICE, PORT)
}

/// Connects everything and binds the HTTP server (port 0 in tests).
pub async fn build(config: CommonConfig) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[&streams::SYNC_CONFLICTS, &streams::SYNC_EVENTS],
        openapi: app::described("conflict queue, automatic rules and manual review"),
        settings: None,
    };
    app::build_platform_only(&config, spec).await
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: CommonConfig) -> anyhow::Result<()> {
    app::serve(build(config)).await
}
