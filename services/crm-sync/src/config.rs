//! crm-sync configuration.

use std::{sync::Arc, time::Duration};

use secrecy::SecretString;
use shared::{
    config::{CommonConfig, ConfigError, required_secret, secret_list, url_var, var, var_parsed},
    mappers::crm::FieldMap,
    notify::SmtpConfig,
    outbound::{Endpoint, TargetAuth},
    push::PushConfig,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `CRM_BASE_URL` and `CRM_API_TOKEN` (bearer): the CRM's objects API. Unset: nothing is
    /// pushed, loaded or reconciled (webhooks are still applied).
    pub crm: Option<Endpoint>,
    /// `CRM_WEBHOOK_SECRETS`: Standard Webhooks secrets (`whsec_...`), comma-separated; several
    /// during a rotation.
    pub standard_secrets: Vec<SecretString>,
    /// `CRM_HUBSPOT_CLIENT_SECRETS`: HubSpot app client secrets for v3 signatures.
    pub hubspot_secrets: Vec<SecretString>,
    /// `CRM_FIELD_MAP`: which CRM property holds which local column, as JSON overrides of
    /// HubSpot's standard properties (see [`FieldMap::with_overrides`]); unset: the standard
    /// ones.
    pub field_map: Arc<FieldMap>,
    /// `CRM_INBOUND_BATCH` (default 128): most webhook events applied in one transaction.
    pub inbound_batch: usize,
    /// `CRM_INBOUND_CONCURRENCY` (default 8): batches applied at once per replica, each holding
    /// one connection of the pool while it runs. A batch mostly waits (on statements and the
    /// commit), so several in flight keep up with the ingress (the webhooks benchmark: p99
    /// 0.4 s saturated at 8, 4 s at 2).
    pub inbound_concurrency: usize,
    /// `PUSH_CONCURRENCY` (default 1) and `PUSH_BATCH` (default 64) per entity. The CRM has no
    /// read-back for anti-entropy (its own changes come back by webhook and by drift
    /// reconciliation), so the engine's anti-entropy is off.
    pub push: PushConfig,
    /// `CRM_RECONCILE_SECS` (default 300, 0 = off): pause between drift reconciliations.
    pub reconcile_every: Option<Duration>,
    /// `CRM_RECONCILE_GRACE_SECS` (default 60): changes younger than this are left to their
    /// webhooks (not drift yet).
    pub reconcile_grace: Duration,
    /// `CRM_BULK_QUOTA_SHARE` (default 0.5): the share of the CRM's API quota that bulk loads
    /// and reconciliation may spend; the rest stays for webhooks' pushes.
    pub bulk_quota_share: f64,
    /// `CRM_BULK_NOTIFY`: comma-separated addresses that get an email when a bulk load ends
    /// (unset: none), sent through `SMTP_*`.
    pub bulk_notify: Vec<String>,
    pub smtp: SmtpConfig,
}

impl Config {
    /// The defaults with no CRM connected and no webhook secrets (the platform alone).
    pub fn unconnected(common: CommonConfig) -> Self {
        Self {
            common,
            crm: None,
            standard_secrets: Vec::new(),
            hubspot_secrets: Vec::new(),
            field_map: Arc::new(FieldMap::hubspot()),
            inbound_batch: 128,
            inbound_concurrency: 8,
            push: PushConfig { anti_entropy_every: None, ..PushConfig::default() },
            reconcile_every: None,
            reconcile_grace: Duration::from_secs(60),
            bulk_quota_share: 0.5,
            bulk_notify: Vec::new(),
            smtp: SmtpConfig::default(),
        }
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        let crm = match url_var("CRM_BASE_URL")? {
            Some(base_url) => Some(Endpoint {
                base_url,
                auth: TargetAuth::Bearer(required_secret("CRM_API_TOKEN")?),
            }),
            None => None,
        };
        let reconcile_secs: u64 = var_parsed("CRM_RECONCILE_SECS", 300)?;
        let share =
            shared::outbound::quota::QuotaBudget::share_from_env("CRM_BULK_QUOTA_SHARE", 0.5)?;
        let push = PushConfig {
            concurrency: var_parsed("PUSH_CONCURRENCY", 1)?,
            batch: var_parsed("PUSH_BATCH", 64)?,
            anti_entropy_every: None,
            ..PushConfig::default()
        };
        let inbound_batch = var_parsed("CRM_INBOUND_BATCH", 128)?;
        let inbound_concurrency = var_parsed("CRM_INBOUND_CONCURRENCY", 8)?;
        for (name, value) in [
            ("PUSH_CONCURRENCY", push.concurrency),
            ("PUSH_BATCH", push.batch),
            ("CRM_INBOUND_BATCH", inbound_batch),
            ("CRM_INBOUND_CONCURRENCY", inbound_concurrency),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name: name.into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        let field_map = match var("CRM_FIELD_MAP") {
            Some(json) => FieldMap::with_overrides(&json)
                .map_err(|reason| ConfigError::Invalid { name: "CRM_FIELD_MAP".into(), reason })?,
            None => FieldMap::hubspot(),
        };
        Ok(Self {
            common: CommonConfig::from_env(crate::SERVICE, crate::PORT)?,
            field_map: Arc::new(field_map),
            crm,
            standard_secrets: secret_list("CRM_WEBHOOK_SECRETS"),
            hubspot_secrets: secret_list("CRM_HUBSPOT_CLIENT_SECRETS"),
            inbound_batch,
            inbound_concurrency,
            push,
            reconcile_every: (reconcile_secs > 0).then(|| Duration::from_secs(reconcile_secs)),
            reconcile_grace: Duration::from_secs(var_parsed("CRM_RECONCILE_GRACE_SECS", 60)?),
            bulk_quota_share: share,
            bulk_notify: var("CRM_BULK_NOTIFY")
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            smtp: SmtpConfig::from_env()?,
        })
    }
}
