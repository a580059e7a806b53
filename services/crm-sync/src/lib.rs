//! crm-sync: CRM (Salesforce, HubSpot) <-> local contacts, accounts and opportunities.
//!
//! Today the service boots the platform (schema `crm`, its streams, settings,
//! outbox relay) and serves the operator endpoints; its domain arrives with its own issue.

use shared::{
    app::{Application, Platform, ServiceSpec},
    bus::streams,
    config::{CommonConfig, ConfigError},
    http::AuthConfig,
};

pub const SERVICE: &str = "crm-sync";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8081;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "crm";

/// Reads the service's configuration from the environment.
pub fn config() -> Result<CommonConfig, ConfigError> {
    CommonConfig::from_env(SERVICE, PORT)
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
}

#[derive(utoipa::OpenApi)]
#[openapi(info(
    description = "CRM (Salesforce, HubSpot) <-> local contacts, accounts and opportunities"
))]
struct ApiDoc;

/// Connects everything and binds the HTTP server (port 0 in tests).
pub async fn build(config: CommonConfig) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[
            &streams::WEBHOOKS,
            &streams::SYNC_EVENTS,
            &streams::SYNC_CONFLICTS,
            &streams::OUTBOUND,
        ],
        openapi: <ApiDoc as utoipa::OpenApi>::openapi(),
    };
    let platform = Platform::start(&config, spec).await?;
    let state = AppState { platform: platform.clone() };
    Application::build(platform, state, AuthConfig::default(), |_| {})
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: CommonConfig) -> anyhow::Result<()> {
    build(config).await?.run_until_stopped(shared::app::shutdown_signal()).await
}
