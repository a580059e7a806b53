//! sync-monitor: health checks, alert routing (Slack, PagerDuty, email) and the dashboard.
//!
//! Today the service boots the platform (schema `monitor`, its streams, settings, outbox relay)
//! and serves the operator endpoints; its domain arrives with its own issue.

use shared::{
    app::{self, Application},
    bus::streams,
    config::{CommonConfig, ConfigError},
    platform::ServiceSpec,
};

pub const SERVICE: &str = "sync-monitor";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8086;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "monitor";

/// Reads the service's configuration from the environment.
pub fn config() -> Result<CommonConfig, ConfigError> {
    CommonConfig::from_env(SERVICE, PORT)
}

/// Connects everything and binds the HTTP server (port 0 in tests).
pub async fn build(config: CommonConfig) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[&streams::SYNC_EVENTS, &streams::ALERTS, &streams::SYNC_CONFLICTS],
        openapi: app::described(
            "health checks, alert routing (Slack, PagerDuty, email) and the dashboard",
        ),
        settings: None,
    };
    app::build_platform_only(&config, spec).await
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: CommonConfig) -> anyhow::Result<()> {
    app::serve(build(config)).await
}
