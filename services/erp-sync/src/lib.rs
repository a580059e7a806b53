//! erp-sync owns the `erp` schema: what the ERP tells us about customers, sales orders (with
//! their lines), invoices, purchase orders and shipments.
//!
//! - `POST /webhooks/erp` (shared ingress): `{eventType, entity, entityId, payload}`,
//!   authenticated by API key (`X-API-Key`, `ERP_WEBHOOK_API_KEYS`) or a Standard Webhooks
//!   signature (`ERP_WEBHOOK_SECRETS`); an unknown entity or event type is a 400 naming it, an
//!   invalid payload field a 422 naming it. Each event goes to `webhooks.erp.<entity>`.
//! - One batch consumer per entity applies the events ([`apply`]); inventory messages become
//!   canonical counts on `inventory.count.erp`, which inventory-sync applies (erp-sync never
//!   writes stock).
//! - Emails (new order to `ERP_SALES_EMAIL`, status changes and shipments to the customer) are
//!   written to the outbox with the change and sent by a consumer over SMTP (lettre).
//! - Local changes of an order's status and a customer's contact fields are pushed ([`push`]);
//!   a crossing edit of the same field here and in the ERP is a conflict ([`conflicts`]).

pub mod apply;
pub mod bulk;
pub mod conflicts;
pub mod entity;
pub mod mail;
pub mod models;
pub mod push;

use shared::{
    app::Application,
    bus::{ConsumerSpec, streams},
    config::{CommonConfig, ConfigError, required_secret, secret_list, url_var, var_parsed},
    http::{
        ApiError, AuthConfig,
        verify::{Scheme, Verified},
    },
    ingress::{InboundEvent, WebhookSource},
    mappers::erp::webhook,
    outbound::{Endpoint, TargetAuth},
    platform::{Platform, ServiceSpec},
    push::PushConfig,
};

pub const SERVICE: &str = "erp-sync";
/// Default `HTTP_PORT`.
pub const PORT: u16 = 8082;
/// The PostgreSQL schema this service owns.
pub const SCHEMA: &str = "erp";

/// erp-sync's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `ERP_WEBHOOK_API_KEYS`: keys the ERP sends in `X-API-Key`, comma separated (old and new
    /// during a rotation).
    pub api_keys: Vec<secrecy::SecretString>,
    /// `ERP_WEBHOOK_SECRETS`: Standard Webhooks secrets (`whsec_...`) for signed webhooks.
    pub signing_secrets: Vec<secrecy::SecretString>,
    /// What the emails say and where they go.
    pub mail: mail::MailSettings,
    /// `SMTP_*`: the relay the emails go through.
    pub smtp: shared::notify::SmtpConfig,
    /// `ERP_BASE_URL` and `ERP_API_KEY` (bearer): the ERP's API, for pushes and bulk loads.
    /// Unset: local changes are not pushed and nothing is loaded.
    pub erp: Option<Endpoint>,
    /// `PUSH_CONCURRENCY`, `PUSH_BATCH`: the push engines' tuning.
    pub push: PushConfig,
    /// `ERP_INBOUND_BATCH` (default 128): most events one consumer transaction applies.
    pub inbound_batch: usize,
    /// `ERP_INBOUND_CONCURRENCY` (default 4): batches in flight per entity and replica.
    pub inbound_concurrency: usize,
    /// `ERP_BULK_QUOTA_SHARE` (default 0.5): the share of the ERP's request quota bulk loads
    /// may spend; the rest is kept for pushes.
    pub bulk_quota_share: f64,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_env(SERVICE, PORT)?,
            api_keys: secret_list("ERP_WEBHOOK_API_KEYS"),
            signing_secrets: secret_list("ERP_WEBHOOK_SECRETS"),
            mail: mail::MailSettings {
                sales: shared::config::var("ERP_SALES_EMAIL"),
                tracking_url: shared::config::var("ERP_TRACKING_URL")
                    .unwrap_or_else(|| mail::MailSettings::default().tracking_url),
            },
            smtp: shared::notify::SmtpConfig::from_env()?,
            erp: match url_var("ERP_BASE_URL")? {
                Some(base_url) => Some(Endpoint {
                    base_url,
                    auth: TargetAuth::Bearer(required_secret("ERP_API_KEY")?),
                }),
                None => None,
            },
            push: PushConfig {
                concurrency: var_parsed("PUSH_CONCURRENCY", 1)?,
                batch: var_parsed("PUSH_BATCH", 64)?,
                anti_entropy_every: None,
                ..PushConfig::default()
            },
            inbound_batch: var_parsed("ERP_INBOUND_BATCH", 128)?,
            inbound_concurrency: var_parsed("ERP_INBOUND_CONCURRENCY", 4)?,
            bulk_quota_share: shared::outbound::quota::QuotaBudget::share_from_env(
                "ERP_BULK_QUOTA_SHARE",
                0.5,
            )?,
        })
    }

    /// The platform alone: no webhook credentials (ERP webhooks are refused).
    pub fn unconnected(common: CommonConfig) -> anyhow::Result<Self> {
        Ok(Self {
            common,
            api_keys: Vec::new(),
            signing_secrets: Vec::new(),
            mail: mail::MailSettings::default(),
            smtp: shared::notify::SmtpConfig::from_env()?,
            erp: None,
            push: PushConfig { anti_entropy_every: None, ..PushConfig::default() },
            inbound_batch: 128,
            inbound_concurrency: 4,
            bulk_quota_share: 0.5,
        })
    }
}

/// Splits a verified body into its event: shape errors are 400s, invalid values 422s, each
/// naming the field.
fn parse(verified: &Verified, body: &[u8]) -> Result<Vec<InboundEvent>, ApiError> {
    let bad_request = |field: &str, detail: String| ApiError::Invalid {
        status: actix_web_status(400),
        field: Some(field.to_owned()),
        detail,
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| bad_request("body", format!("the body is not JSON: {e}")))?;
    let (id, event) =
        webhook::parse_webhook(&value, verified.delivery_id.as_deref()).map_err(|e| {
            if e.field.starts_with("payload") {
                ApiError::Invalid {
                    status: actix_web_status(422),
                    field: Some(e.field),
                    detail: e.detail,
                }
            } else {
                bad_request(&e.field, e.detail)
            }
        })?;
    Ok(vec![InboundEvent {
        id,
        entity: event.entity.clone(),
        data: serde_json::to_value(&event).map_err(anyhow::Error::from)?,
    }])
}

fn actix_web_status(code: u16) -> actix_web::http::StatusCode {
    actix_web::http::StatusCode::from_u16(code).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST)
}

/// Connects everything, starts the consumers and binds the HTTP server (port 0 in tests).
pub async fn build(config: Config) -> anyhow::Result<Application> {
    let spec = ServiceSpec {
        schema: SCHEMA,
        streams: &[
            &streams::WEBHOOKS,
            &streams::SYNC_EVENTS,
            &streams::OUTBOUND,
            &streams::INVENTORY_COUNTS,
            &streams::SYNC_CONFLICTS,
        ],
        openapi: shared::app::described(
            "ERP -> local customers, orders, lines, invoices, purchase orders and shipments",
        ),
        settings: None,
    };
    let platform = Platform::start(&config.common, spec).await?;
    match WebhookSource::new("erp", parse)
        .with(Scheme::ApiKey, &config.api_keys)
        .with(Scheme::StandardWebhooks, &config.signing_secrets)
        .configured()
    {
        Some(source) => platform.run_ingress(vec![source])?,
        None => tracing::warn!(
            "no ERP_WEBHOOK_API_KEYS or ERP_WEBHOOK_SECRETS: ERP webhooks are refused"
        ),
    }
    // erp-sync owns `webhooks.erp.>`: one consumer per entity, so a backlog of one kind never
    // delays another. inventory-sync read `webhooks.erp.inventory` itself before counts were
    // made canonical; its durable would overlap ours in the work-queue stream, so ours
    // replaces it.
    let consumers = apply::ENTITIES
        .iter()
        .map(|entity| ConsumerSpec {
            batch: config.inbound_batch.max(1),
            concurrency: config.inbound_concurrency.max(1),
            replaces: (*entity == "inventory").then_some("inventory-erp-counts"),
            ..ConsumerSpec::new(
                &format!("erp-{}", entity.to_lowercase()),
                &streams::WEBHOOKS,
                &format!("webhooks.erp.{entity}"),
            )
        })
        .collect();
    let inbound = apply::ErpInbound {
        mail: config.mail.clone(),
        http: platform.http.clone(),
        erp: config.erp.clone(),
    };
    platform.run_inbound(inbound.clone(), consumers)?;
    // conflict-resolver's decisions on crossing edits ([`conflicts`]).
    platform.run_resolutions(conflicts::ErpResolutions);
    // Local changes of order statuses and customers go back to the ERP; bulk loads read it.
    match &config.erp {
        Some(erp) => {
            for entity in entity::Entity::pushed() {
                let engine = platform.push_engine(
                    "erp",
                    erp.clone(),
                    push::ErpRecords { entity },
                    config.push,
                )?;
                platform.run_push(
                    engine,
                    &streams::OUTBOUND,
                    &format!("outbound.erp.{}", entity.name),
                );
            }
            let budget = std::sync::Arc::new(shared::outbound::quota::QuotaBudget::new(
                config.bulk_quota_share,
            ));
            platform.run_bulk(entity::Entity::loaded().filter_map(|entity| {
                bulk::ErpLoad::new(
                    entity,
                    inbound.clone(),
                    platform.http.clone(),
                    erp.clone(),
                    platform.db.clone(),
                    budget.clone(),
                    platform.shutdown.clone(),
                )
                .map(bulk::ErpLoad::offered)
            }))?;
        }
        None => {
            tracing::warn!(
                "ERP_BASE_URL is not set: local changes are not pushed to the ERP, nothing is loaded"
            );
            platform.run_bulk(Vec::new())?;
        }
    }
    // Emails leave from the outbox: retried, and recorded once sent.
    let mailer = shared::notify::Mailer::new(&config.smtp)?;
    let db = platform.db.clone();
    platform.spawn_consumer(
        ConsumerSpec::new(mail::MAIL_CONSUMER, &streams::OUTBOUND, "outbound.email.erp"),
        move |delivery| {
            let (db, mailer) = (db.clone(), mailer.clone());
            async move { mail::send(&db, &mailer, delivery).await }
        },
    );
    Application::build(platform, (), AuthConfig::default(), |_| {})
}

/// Serves until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    shared::app::serve(build(config)).await
}
