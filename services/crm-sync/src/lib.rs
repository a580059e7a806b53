//! crm-sync owns the `crm` schema: contacts, accounts and opportunities, and the last synced
//! copy of each record (`sync_state`). Built on the shared platform:
//!
//! - Inbound: `POST /webhooks/crm` (Standard Webhooks or HubSpot v3 signatures) through the
//!   shared ingress; [`inbound`] applies the events in batches with a three-way merge
//!   ([`domain::merge`]); conflicts go out on `sync.conflicts.detected.crm` and resolutions
//!   come back on `sync.conflicts.resolved.crm` ([`resolutions`]).
//! - Outbound: a trigger captures every local insert or update into the outbox, and the shared
//!   push engine sends it to the CRM ([`push`]); changes that came from the CRM are never sent
//!   back.
//! - Bulk loads from the CRM's list API with dry runs and a quota budget ([`bulk`]), drift
//!   reconciliation ([`reconcile`]).

pub mod bulk;
pub mod config;
pub mod domain;
pub mod inbound;
pub mod models;
pub mod push;
pub mod reconcile;
pub mod resolutions;
pub mod routes;
pub mod working;

use std::{sync::Arc, time::Duration};

pub use config::Config;
use shared::{
    app::Application,
    bus::{ConsumerSpec, streams},
    http::{AuthConfig, verify::Scheme},
    ingress::WebhookSource,
    mappers::crm::FieldMap,
    notify::Mailer,
    outbound::{Endpoint, quota::QuotaBudget},
    platform::{Platform, ServiceSpec},
    schemas::crm::Entity,
};

pub const SERVICE: &str = "crm-sync";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8081;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "crm";

/// Shared state of handlers and background work.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub crm: Option<Endpoint>,
    /// Which CRM property holds which local column.
    pub field_map: Arc<FieldMap>,
    /// The share of the CRM's quota for bulk loads and reconciliation.
    pub budget: Arc<QuotaBudget>,
    pub reconcile_grace: Duration,
}

/// The CRM's webhook source: the schemes with configured secrets, all named `crm`.
fn webhook_source(config: &Config) -> Option<WebhookSource> {
    WebhookSource::new("crm", inbound::parse)
        .with(Scheme::StandardWebhooks, &config.standard_secrets)
        .with(Scheme::HubSpotV3, &config.hubspot_secrets)
        .configured()
}

/// Connects everything, starts the consumers and binds the HTTP server (port 0 in tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[
            &streams::WEBHOOKS,
            &streams::SYNC_EVENTS,
            &streams::SYNC_CONFLICTS,
            &streams::OUTBOUND,
            &streams::ALERTS,
        ],
        openapi: <routes::ApiDoc as utoipa::OpenApi>::openapi(),
        settings: None,
    };
    let platform = Platform::start(&config.common, spec).await?;
    let state = AppState {
        platform: platform.clone(),
        crm: config.crm.clone(),
        field_map: config.field_map.clone(),
        budget: Arc::new(QuotaBudget::new(config.bulk_quota_share)),
        reconcile_grace: config.reconcile_grace,
    };

    // Inbound: webhooks, then batches of events.
    match webhook_source(&config) {
        Some(source) => platform.run_ingress(vec![source])?,
        None => tracing::warn!(
            "no CRM_WEBHOOK_SECRETS or CRM_HUBSPOT_CLIENT_SECRETS: CRM webhooks are refused"
        ),
    }
    let crm_inbound = inbound::CrmInbound {
        http: platform.http.clone(),
        crm: config.crm.clone(),
        map: config.field_map.clone(),
    };
    platform.run_inbound(
        crm_inbound.clone(),
        vec![ConsumerSpec {
            batch: config.inbound_batch,
            concurrency: config.inbound_concurrency,
            ..ConsumerSpec::new(inbound::CONSUMER, &streams::WEBHOOKS, "webhooks.crm.>")
        }],
    )?;
    platform.run_resolutions(resolutions::CrmResolutions);

    // Outbound, bulk and reconciliation need the CRM's API.
    if let Some(crm) = &config.crm {
        for entity in Entity::ALL {
            let engine = platform.push_engine(
                "crm",
                crm.clone(),
                push::CrmRecords { entity, map: config.field_map.clone() },
                config.push,
            )?;
            platform.run_push(engine, &streams::OUTBOUND, &format!("outbound.crm.{entity}"));
        }
        platform.run_bulk(Entity::ALL.map(|entity| {
            bulk::CrmLoad {
                entity,
                inbound: crm_inbound.clone(),
                http: platform.http.clone(),
                crm: crm.clone(),
                db: platform.db.clone(),
                budget: state.budget.clone(),
                shutdown: platform.shutdown.clone(),
            }
            .offered()
        }))?;
        if let Some(every) = config.reconcile_every {
            platform.spawn("crm-reconcile", reconcile::run_periodically(state.clone(), every));
        }
    } else {
        tracing::warn!(
            "CRM_BASE_URL is not set: local changes are not pushed, no bulk loads or reconciliation"
        );
        platform.run_bulk(Vec::new())?;
    }
    if !config.bulk_notify.is_empty() {
        let mailer = Mailer::new(&config.smtp)?;
        let to = Arc::new(config.bulk_notify.clone());
        let db = platform.db.clone();
        platform.spawn_consumer(
            ConsumerSpec::new(bulk::MAIL_CONSUMER, &streams::SYNC_EVENTS, "sync.events.crm.bulk.>"),
            move |delivery| {
                let (db, mailer, to) = (db.clone(), mailer.clone(), to.clone());
                async move { bulk::mail(&db, &mailer, &to, delivery).await }
            },
        );
    }
    Application::build(platform, state, AuthConfig::default(), routes::configure)
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    shared::app::serve(build(config)).await
}
