//! inventory-sync configuration.

use std::collections::BTreeMap;

use secrecy::SecretString;
use shared::{
    config::{CommonConfig, ConfigError, required_secret, url_var, var_parsed},
    db::group_commit::GroupCommitConfig,
    http::AuthConfig,
    outbound::{Endpoint, TargetAuth},
    push::PushConfig,
    schemas::inventory::Target,
};

#[derive(Clone, Debug)]
pub struct Config {
    pub common: CommonConfig,
    /// `INVENTORY_API_KEYS`: `name:key` pairs; the name is the only `source` the key may claim.
    pub api_keys: Vec<(String, SecretString)>,
    /// `INVENTORY_HMAC_SECRETS`: `name:secret` pairs for signed requests (several per name
    /// during a rotation); a signature may only submit its secret's name as `source`.
    pub hmac_secrets: Vec<(String, SecretString)>,
    /// Configured targets (`<TARGET>_BASE_URL` plus its credential); unset = not pushed to.
    pub targets: BTreeMap<Target, Endpoint>,
    /// `ADJUST_WORKERS` (default 2, about the database's cores) and `ADJUST_MAX_BATCH` (default 256).
    pub adjuster: GroupCommitConfig,
    /// The push engine per target: `PUSH_CONCURRENCY` (default 1) batches in flight per target
    /// and replica, each one transaction of up to `PUSH_BATCH` (default 64) levels with up to 16
    /// HTTP calls at once. Pushes are asynchronous and coalesce per record, so a low value keeps
    /// CPU and connections for the synchronous adjustments under load, at the price of more
    /// push lag (measured by the adjustments benchmark: under a second at 2,000 adjustments/s).
    /// `ANTI_ENTROPY_SECS` (default 300, 0 = off): pause between read-back passes.
    pub push: PushConfig,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut targets = BTreeMap::new();
        for (target, url_name, secret_name) in [
            (Target::Erp, "ERP_BASE_URL", "ERP_API_KEY"),
            (Target::Ecommerce, "SHOP_BASE_URL", "SHOP_ACCESS_TOKEN"),
            (Target::Pos, "POS_BASE_URL", "POS_API_KEY"),
            (Target::Wms, "WMS_BASE_URL", "WMS_API_KEY"),
        ] {
            if let Some(base_url) = url_var(url_name)? {
                let secret = required_secret(secret_name)?;
                targets.insert(target, Endpoint { base_url, auth: target_auth(target, secret) });
            }
        }
        let adjuster = GroupCommitConfig {
            workers: var_parsed("ADJUST_WORKERS", 2)?,
            max_batch: var_parsed("ADJUST_MAX_BATCH", 256)?,
        };
        let anti_entropy_secs: u64 = var_parsed("ANTI_ENTROPY_SECS", 300)?;
        let push = PushConfig {
            concurrency: var_parsed("PUSH_CONCURRENCY", 1)?,
            batch: var_parsed("PUSH_BATCH", 64)?,
            anti_entropy_every: (anti_entropy_secs > 0)
                .then(|| std::time::Duration::from_secs(anti_entropy_secs)),
            ..PushConfig::default()
        };
        for (name, value) in [
            ("ADJUST_WORKERS", adjuster.workers),
            ("ADJUST_MAX_BATCH", adjuster.max_batch),
            ("PUSH_CONCURRENCY", push.concurrency),
            ("PUSH_BATCH", push.batch),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name: name.into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(Self {
            common: CommonConfig::from_env(crate::SERVICE, crate::PORT)?,
            api_keys: AuthConfig::parse_api_keys("INVENTORY_API_KEYS")?,
            hmac_secrets: AuthConfig::parse_api_keys("INVENTORY_HMAC_SECRETS")?,
            targets,
            adjuster,
            push,
        })
    }
}

/// How each target authenticates us.
pub fn target_auth(target: Target, secret: SecretString) -> TargetAuth {
    match target {
        Target::Erp | Target::Wms => TargetAuth::Bearer(secret),
        Target::Ecommerce => TargetAuth::Header("X-Shopify-Access-Token", secret),
        Target::Pos => TargetAuth::Header("X-API-Key", secret),
    }
}

/// inventory-sync's own runtime settings (keys `inventory-sync.<field>` in the settings bucket;
/// `PUT /admin/settings/inventory-sync.low_stock_alerts` on this service).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InventorySettings {
    /// Whether low-stock alerts are raised (out-of-stock alerts always are).
    pub low_stock_alerts: bool,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self { low_stock_alerts: true }
    }
}
