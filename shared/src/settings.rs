//! Runtime-tunable settings (thresholds, priority source, alert routes) in the NATS KV bucket
//! `settings`: one key per field, JSON values, watched live by every service. Defaults come from
//! config (`SETTINGS_DEFAULTS`); a value in the bucket overrides its default. Writes are
//! validated against the typed struct first, so the bucket never holds a value services reject.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::jetstream::{
    kv,
    stream::{self, DiscardPolicy, StorageType},
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{bus::Bus, http::ApiError, schemas::sync::Severity};

/// Bucket name (before installation prefix).
pub const BUCKET: &str = "settings";
/// Values kept per key (history for audit).
const HISTORY: i64 = 5;

/// The typed runtime settings shared by all services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSettings {
    /// System whose value wins a conflict no rule decides (`crm`, `erp`, `local`, ...).
    pub sync_priority_source: String,
    /// Largest acceptable sync lag per integration, in seconds.
    pub max_sync_lag_secs: BTreeMap<String, u64>,
    /// Notification channels (`slack`, `pagerduty`, `email`) per alert severity.
    pub alert_routes: BTreeMap<Severity, Vec<String>>,
    /// Recipients of alert emails.
    pub alert_email_to: Vec<String>,
    /// Deliveries of an outbound push before it becomes a dead letter.
    pub push_max_attempts: u32,
    /// Whether low-stock alerts are raised (out-of-stock alerts always are).
    pub low_stock_alerts: bool,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            sync_priority_source: "local".into(),
            max_sync_lag_secs: BTreeMap::new(),
            alert_routes: BTreeMap::from([
                (Severity::Critical, vec!["pagerduty".into(), "slack".into(), "email".into()]),
                (Severity::Warning, vec!["slack".into()]),
                (Severity::Info, vec![]),
            ]),
            alert_email_to: vec![],
            push_max_attempts: 8,
            low_stock_alerts: true,
        }
    }
}

impl RuntimeSettings {
    /// The built-in defaults with `overrides` (`SETTINGS_DEFAULTS`) applied; the error names
    /// the field.
    pub fn with_overrides(
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, String> {
        merge(&Self::default(), overrides).map_err(|e| e.to_string())
    }
}

fn merge(
    base: &RuntimeSettings,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> Result<RuntimeSettings, ApiError> {
    let mut map = match serde_json::to_value(base) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => {
            return Err(ApiError::Unexpected(anyhow::anyhow!("settings are not an object")));
        }
    };
    map.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    let body = serde_json::to_vec(&map).map_err(anyhow::Error::from)?;
    crate::http::parse_json(&body)
}

/// Live view of the settings bucket. Cheap to clone.
#[derive(Clone)]
pub struct Settings {
    kv: kv::Store,
    defaults: Arc<RuntimeSettings>,
    current: watch::Receiver<Arc<RuntimeSettings>>,
}

impl Settings {
    /// Opens (declaring if needed) the bucket, loads the current values, and keeps them up to
    /// date until `shutdown` (the watch is a task of `tasks`, so shutdown waits for it).
    ///
    /// The bucket's stream is declared directly rather than with `create_key_value`, which needs
    /// account-info fields that NATS servers before 2.10 do not send; the layout is the standard
    /// KV one, so any NATS tool sees a normal bucket.
    pub async fn open(
        bus: &Bus,
        defaults: RuntimeSettings,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let bucket = bus.name(BUCKET);
        bus.js
            .create_or_update_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: HISTORY,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: DiscardPolicy::New,
                storage: StorageType::File,
                num_replicas: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("declaring settings bucket: {e}"))?;
        let kv = bus.js.get_key_value(&bucket).await?;
        let defaults = Arc::new(defaults);
        let (tx, current) = watch::channel(defaults.clone());
        let settings = Self { kv, defaults, current };
        let mut entries = settings.kv.watch_with_history(">").await?;
        // Apply what is stored now before the service starts serving.
        let mut overrides = serde_json::Map::new();
        let initial_pending = settings.kv.status().await.map(|s| s.values()).unwrap_or(0);
        if initial_pending > 0 {
            while let Ok(Some(entry)) =
                tokio::time::timeout(Duration::from_secs(2), entries.next()).await
            {
                let Ok(entry) = entry else { break };
                settings.apply(&tx, &mut overrides, &entry);
                if entry.delta == 0 {
                    break;
                }
            }
        }
        tasks.spawn(settings.clone().watch(bus.clone(), tx, overrides, entries, shutdown));
        Ok(settings)
    }

    fn apply(
        &self,
        tx: &watch::Sender<Arc<RuntimeSettings>>,
        overrides: &mut serde_json::Map<String, serde_json::Value>,
        entry: &kv::Entry,
    ) {
        if entry.operation != kv::Operation::Put {
            overrides.remove(&entry.key);
        } else {
            match serde_json::from_slice(&entry.value) {
                Ok(value) => {
                    overrides.insert(entry.key.clone(), value);
                }
                Err(e) => tracing::warn!(key = %entry.key, error = %e, "ignoring non-JSON setting"),
            }
        }
        match merge(&self.defaults, overrides) {
            Ok(settings) => {
                tracing::info!(key = %entry.key, "runtime setting applied");
                tx.send_replace(Arc::new(settings));
            }
            Err(e) => {
                tracing::warn!(key = %entry.key, error = %e, "ignoring invalid setting");
                overrides.remove(&entry.key);
            }
        }
    }

    async fn watch(
        self,
        bus: Bus,
        tx: watch::Sender<Arc<RuntimeSettings>>,
        mut overrides: serde_json::Map<String, serde_json::Value>,
        mut entries: kv::Watch,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                next = entries.next() => match next {
                    Some(Ok(entry)) => self.apply(&tx, &mut overrides, &entry),
                    _ => {
                        // NATS went away: re-open the watch (it replays the latest values).
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        match bus.js.get_key_value(bus.name(BUCKET)).await {
                            Ok(kv) => match kv.watch_with_history(">").await {
                                Ok(w) => entries = w,
                                Err(e) => tracing::debug!(error = %e, "settings watch not yet back"),
                            },
                            Err(e) => tracing::debug!(error = %e, "settings bucket not yet back"),
                        }
                    }
                },
            }
        }
    }

    /// The settings in force now.
    pub fn current(&self) -> Arc<RuntimeSettings> {
        self.current.borrow().clone()
    }

    /// A receiver that changes whenever a setting does.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuntimeSettings>> {
        self.current.clone()
    }

    /// Validates and stores one field; every service picks it up through its watch.
    pub async fn set(
        &self,
        key: &str,
        value: serde_json::Value,
    ) -> Result<RuntimeSettings, ApiError> {
        let fields = serde_json::to_value(&*self.defaults).map_err(anyhow::Error::from)?;
        if fields.get(key).is_none() {
            return Err(ApiError::field(key, format!("unknown setting {key:?}")));
        }
        let current = self.current();
        let candidate =
            merge(&current, &serde_json::Map::from_iter([(key.to_owned(), value.clone())]))
                .map_err(|e| match e {
                    ApiError::Invalid { status, detail, .. } => {
                        ApiError::Invalid { status, field: Some(key.to_owned()), detail }
                    }
                    other => other,
                })?;
        let bytes = serde_json::to_vec(&value).map_err(anyhow::Error::from)?;
        self.kv
            .put(key, bytes.into())
            .await
            .map_err(|e| ApiError::Unavailable(format!("settings store: {e}")))?;
        Ok(candidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_rejects_a_wrongly_typed_field_and_names_it() {
        let overrides = serde_json::json!({"push_max_attempts": "many"});
        let err = merge(&RuntimeSettings::default(), overrides.as_object().unwrap()).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { field: Some(ref f), .. } if f == "push_max_attempts"),
            "{err:?}"
        );
    }

    #[test]
    fn merge_applies_overrides_over_defaults() {
        let overrides = serde_json::json!({"sync_priority_source": "crm"});
        let merged = merge(&RuntimeSettings::default(), overrides.as_object().unwrap()).unwrap();
        assert_eq!(merged.sync_priority_source, "crm");
        assert_eq!(merged.push_max_attempts, RuntimeSettings::default().push_max_attempts);
    }
}
