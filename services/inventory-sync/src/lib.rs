//! inventory-sync owns the `inventory` schema and is the only writer of stock.
//!
//! - `POST /adjustments` applies an adjustment synchronously (see [`domain::adjuster`]).
//! - Counts reported by other systems (`inventory.count.<source>`; erp-sync turns the ERP's
//!   inventory messages into them) arrive as `count` adjustments, applied only when newer than
//!   the last count applied from that source ([`consumers::counts`]).
//! - Every change leaves `inventory.adjusted.<sku>` and `inventory.level.<warehouse>.<sku>`;
//!   the shared push engine pushes the latest level to each target ([`push`]).
//! - Threshold crossings raise `alerts.*`; a periodic reconciliation checks ledger sums.
//! - A bulk load of `stock` from the ERP (`/admin/bulk/jobs`, see [`bulk`]).

pub mod bulk;
pub mod config;
pub mod consumers;
pub mod domain;
pub mod handlers;
pub mod metrics;
pub mod models;
pub mod push;
pub mod reconcile;
pub mod routes;

use std::{collections::BTreeMap, sync::Arc};

pub use config::Config;
use shared::{
    app::Application,
    bus::streams,
    http::AuthConfig,
    outbound::Endpoint,
    platform::{Platform, ServiceSpec},
    schemas::inventory::Target,
    settings::OwnSettings,
};

use crate::domain::adjuster::Adjuster;

pub const SERVICE: &str = "inventory-sync";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8083;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "inventory";

/// Shared state of handlers and consumers.
#[derive(Clone)]
pub struct AppState {
    pub platform: Platform,
    pub adjuster: Adjuster,
    pub targets: Arc<BTreeMap<Target, Endpoint>>,
}

/// Connects everything, starts the consumers and binds the HTTP server (port 0 in tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[
            &streams::INVENTORY,
            &streams::INVENTORY_LEVELS,
            &streams::SYNC_EVENTS,
            &streams::ALERTS,
            &streams::INVENTORY_COUNTS,
        ],
        openapi: <routes::ApiDoc as utoipa::OpenApi>::openapi(),
        settings: Some(OwnSettings::of::<config::InventorySettings>(SERVICE)),
    };
    let platform = Platform::start(&config.common, spec).await?;
    // Bulkheads: the adjustment executors and the push consumers get pools of their own, so
    // slow targets or busy readers can never starve the synchronous write path or the relay.
    let pool_of = |size: usize| {
        shared::db::pool(
            &shared::config::DbConfig { pool_size: size.max(1), ..config.common.db.clone() },
            "adjust",
        )
    };
    let adjuster_db = pool_of(config.adjuster.workers)?;
    let state = AppState {
        adjuster: Adjuster::start(
            &platform,
            adjuster_db,
            config.adjuster,
            config.targets.keys().copied().collect(),
        ),
        targets: Arc::new(config.targets.clone()),
        platform: platform.clone(),
    };
    consumers::spawn_all(&state);
    for (&target, endpoint) in &config.targets {
        let engine = platform.push_engine(
            target.as_str(),
            endpoint.clone(),
            push::StockLevels { target },
            config.push,
        )?;
        platform.run_push(engine, &streams::INVENTORY_LEVELS, "inventory.level.>");
    }
    let erp = state.targets.get(&Target::Erp).cloned();
    platform.run_bulk(erp.map(|erp| {
        bulk::ErpStock { http: platform.http.clone(), erp, adjuster: state.adjuster.clone() }
            .offered()
    }))?;
    platform.spawn("reconcile", reconcile::run_periodically(state.clone()));
    let auth = AuthConfig {
        api_keys: config.api_keys,
        hmac_secrets: config.hmac_secrets,
        ..Default::default()
    };
    Application::build(platform, state, auth, routes::configure)
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    shared::app::serve(build(config)).await
}
