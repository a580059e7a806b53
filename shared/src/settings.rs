//! Runtime-tunable settings (thresholds, priority source, alert routes) in the NATS KV bucket
//! `settings`: one key per field, JSON values, watched live by every service. Defaults come from
//! config (`SETTINGS_DEFAULTS`); a value in the bucket overrides its default. Writes are
//! validated against the typed struct first, so the bucket never holds a value services reject.
//!
//! Two kinds: the platform's [`RuntimeSettings`] (keys without a dot, read by every service),
//! and a service's own settings ([`OwnSettings`], a struct the service declares; keys
//! `<service>.<field>`, read and written only through that service).

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
    /// System whose value wins a conflict no earlier rule decides (`crm`, `erp`, `local`, ...);
    /// empty: none, such conflicts go to a person.
    pub sync_priority_source: String,
    /// Largest acceptable sync lag per integration, in seconds.
    pub max_sync_lag_secs: BTreeMap<String, u64>,
    /// Notification channels (`slack`, `pagerduty`, `email`) per alert severity.
    pub alert_routes: BTreeMap<Severity, Vec<String>>,
    /// Recipients of alert emails.
    pub alert_email_to: Vec<String>,
    /// Deliveries of an outbound push before it becomes a dead letter.
    pub push_max_attempts: u32,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            sync_priority_source: String::new(),
            max_sync_lag_secs: BTreeMap::new(),
            alert_routes: BTreeMap::from([
                (Severity::Critical, vec!["pagerduty".into(), "slack".into(), "email".into()]),
                (Severity::Warning, vec!["slack".into()]),
                (Severity::Info, vec![]),
            ]),
            alert_email_to: vec![],
            push_max_attempts: 8,
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

/// A service's own runtime settings: its name (the key prefix) and its typed struct's
/// defaults and check.
#[derive(Clone)]
pub struct OwnSettings {
    pub service: &'static str,
    defaults: serde_json::Map<String, serde_json::Value>,
    check: fn(&[u8]) -> Result<serde_json::Value, ApiError>,
}

impl OwnSettings {
    /// The settings struct `T` of `service` (`T::default()` are its defaults; it should refuse
    /// unknown fields, so a typo is an error naming the field).
    pub fn of<T>(service: &'static str) -> Self
    where
        T: Serialize + serde::de::DeserializeOwned + Default,
    {
        let defaults = match serde_json::to_value(T::default()) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Self {
            service,
            defaults,
            check: |bytes| {
                let typed: T = crate::http::parse_json(bytes)?;
                Ok(serde_json::to_value(typed).map_err(anyhow::Error::from)?)
            },
        }
    }

    fn prefix(&self) -> String {
        format!("{}.", self.service)
    }

    /// The defaults with `overrides` on top, checked.
    fn merged(
        &self,
        overrides: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let mut map = self.defaults.clone();
        map.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        let bytes = serde_json::to_vec(&map).map_err(anyhow::Error::from)?;
        (self.check)(&bytes)
    }
}

/// Splits `SETTINGS_DEFAULTS` into the platform's fields and `own`'s (keys `<service>.<field>`);
/// keys of other services are left out. Both are checked; the error names the field.
pub fn split_defaults(
    defaults: &serde_json::Map<String, serde_json::Value>,
    own: Option<&OwnSettings>,
) -> Result<(RuntimeSettings, serde_json::Map<String, serde_json::Value>), String> {
    let platform: serde_json::Map<_, _> = defaults
        .iter()
        .filter(|(k, _)| !k.contains('.'))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut own_defaults = serde_json::Map::new();
    if let Some(own) = own {
        let prefix = own.prefix();
        own_defaults = defaults
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|f| (f.to_owned(), v.clone())))
            .collect();
        own.merged(&own_defaults).map_err(|e| e.to_string())?;
    }
    Ok((RuntimeSettings::with_overrides(&platform)?, own_defaults))
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
    /// The service's own settings, with their defaults from `SETTINGS_DEFAULTS` applied.
    own: Option<Arc<(OwnSettings, serde_json::Map<String, serde_json::Value>)>>,
    current: watch::Receiver<Arc<RuntimeSettings>>,
    current_own: watch::Receiver<Arc<serde_json::Value>>,
}

/// The values stored in the bucket, per kind.
#[derive(Default)]
struct Overrides {
    platform: serde_json::Map<String, serde_json::Value>,
    own: serde_json::Map<String, serde_json::Value>,
}

/// Where the watch sends what it applied.
struct Senders {
    platform: watch::Sender<Arc<RuntimeSettings>>,
    own: watch::Sender<Arc<serde_json::Value>>,
}

impl Settings {
    /// Opens (declaring if needed) the bucket, loads the current values, and keeps them up to
    /// date until `shutdown` (the watch is a task of `tasks`, so shutdown waits for it).
    /// `own` are the service's own settings (with their configured defaults), if it has any.
    ///
    /// The bucket's stream is declared directly rather than with `create_key_value`, which needs
    /// account-info fields that NATS servers before 2.10 do not send; the layout is the standard
    /// KV one, so any NATS tool sees a normal bucket.
    pub async fn open(
        bus: &Bus,
        defaults: RuntimeSettings,
        own: Option<(OwnSettings, serde_json::Map<String, serde_json::Value>)>,
        tasks: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let bucket = bus.name(BUCKET);
        // Declared like every stream: the installation's replicas, never lowered at start.
        bus.declare_stream(stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: HISTORY,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            storage: StorageType::File,
            ..Default::default()
        })
        .await?;
        let kv = bus.js.get_key_value(&bucket).await?;
        let defaults = Arc::new(defaults);
        let (platform_tx, current) = watch::channel(defaults.clone());
        let own_defaults = match &own {
            Some((spec, configured)) => spec.merged(configured)?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        let (own_tx, current_own) = watch::channel(Arc::new(own_defaults));
        let settings = Self { kv, defaults, own: own.map(Arc::new), current, current_own };
        let senders = Senders { platform: platform_tx, own: own_tx };
        let mut entries = settings.kv.watch_with_history(">").await?;
        // Apply what is stored now before the service starts serving.
        let mut overrides = Overrides::default();
        let initial_pending = settings.kv.status().await.map(|s| s.values()).unwrap_or(0);
        if initial_pending > 0 {
            while let Ok(Some(entry)) =
                tokio::time::timeout(Duration::from_secs(2), entries.next()).await
            {
                let Ok(entry) = entry else { break };
                settings.apply(&senders, &mut overrides, &entry);
                if entry.delta == 0 {
                    break;
                }
            }
        }
        tasks.spawn(settings.clone().watch(bus.clone(), senders, overrides, entries, shutdown));
        Ok(settings)
    }

    fn apply(&self, tx: &Senders, overrides: &mut Overrides, entry: &kv::Entry) {
        let own = self.own.as_deref().and_then(|(spec, configured)| {
            let field = entry.key.strip_prefix(&spec.prefix())?;
            Some((spec, configured, field.to_owned()))
        });
        let (map, field) = match &own {
            Some((_, _, field)) => (&mut overrides.own, field.clone()),
            // Another service's own setting: not ours to read.
            None if entry.key.contains('.') => return,
            None => (&mut overrides.platform, entry.key.clone()),
        };
        let previous = if entry.operation != kv::Operation::Put {
            map.remove(&field)
        } else {
            match serde_json::from_slice(&entry.value) {
                Ok(value) => map.insert(field.clone(), value),
                Err(e) => {
                    tracing::warn!(key = %entry.key, error = %e, "ignoring non-JSON setting");
                    return;
                }
            }
        };
        let applied = match &own {
            Some((spec, configured, _)) => {
                let mut all = (*configured).clone();
                all.extend(overrides.own.iter().map(|(k, v)| (k.clone(), v.clone())));
                spec.merged(&all).map(|v| {
                    tx.own.send_replace(Arc::new(v));
                })
            }
            None => merge(&self.defaults, &overrides.platform).map(|v| {
                tx.platform.send_replace(Arc::new(v));
            }),
        };
        match applied {
            Ok(()) => tracing::info!(key = %entry.key, "runtime setting applied"),
            Err(e) => {
                // Keep what was in force (and remembered) before this value.
                tracing::warn!(key = %entry.key, error = %e, "ignoring invalid setting");
                let map = if own.is_some() { &mut overrides.own } else { &mut overrides.platform };
                match previous {
                    Some(value) => map.insert(field, value),
                    None => map.remove(&field),
                };
            }
        }
    }

    async fn watch(
        self,
        bus: Bus,
        tx: Senders,
        mut overrides: Overrides,
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

    /// The platform settings in force now.
    pub fn current(&self) -> Arc<RuntimeSettings> {
        self.current.borrow().clone()
    }

    /// The service's own settings in force now (their defaults when the service has none or a
    /// stored value cannot be read as `T`).
    pub fn own<T: serde::de::DeserializeOwned + Default>(&self) -> T {
        serde_json::from_value((**self.current_own.borrow()).clone()).unwrap_or_default()
    }

    /// Everything in force, as the admin endpoints show it: the platform's fields, and the
    /// service's own under its name.
    pub fn view(&self) -> serde_json::Value {
        let mut view = serde_json::to_value(&*self.current()).unwrap_or_default();
        if let (Some(own), serde_json::Value::Object(map)) = (self.own.as_deref(), &mut view) {
            map.insert(own.0.service.to_owned(), (**self.current_own.borrow()).clone());
        }
        view
    }

    /// A receiver that changes whenever a platform setting does.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RuntimeSettings>> {
        self.current.clone()
    }

    /// Validates and stores one field (`<field>` for the platform's, `<service>.<field>` for
    /// this service's own); every service picks it up through its watch. Answers the
    /// settings in force with the change ([`Settings::view`]).
    /// [`Settings::set`], announced for the audit: `who` changed `key` from its old value, on
    /// `sync.events.<service>.settings` through `schema`'s outbox. Every way to change a
    /// setting (any service's `/admin/settings`, the dashboard) goes through here.
    pub async fn change(
        &self,
        db: &crate::db::PgPool,
        (schema, service): (&'static str, &str),
        key: &str,
        value: serde_json::Value,
        who: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let old_value = self.view().get(key).cloned();
        let view = self.set(key, value.clone()).await?;
        let changed = crate::schemas::sync::SettingChanged {
            service: service.to_owned(),
            key: key.to_owned(),
            who: who.to_owned(),
            old_value,
            new_value: value,
        };
        let row =
            crate::bus::outbox::OutboxRow::new(&crate::schemas::Envelope::new(service, changed));
        let announced = async {
            let mut conn = db.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            crate::bus::outbox::enqueue(&mut conn, schema, &[row]).await?;
            anyhow::Ok(())
        };
        if let Err(e) = announced.await {
            // The change is in force; only its audit entry is missing.
            tracing::error!(key, error = %format!("{e:#}"), "setting changed but not announced for the audit");
        }
        tracing::info!(setting = %key, who, "runtime setting changed");
        Ok(view)
    }

    pub async fn set(
        &self,
        key: &str,
        value: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let named = |e: ApiError| match e {
            ApiError::Invalid { status, detail, .. } => {
                ApiError::Invalid { status, field: Some(key.to_owned()), detail }
            }
            other => other,
        };
        let own = self.own.as_deref().and_then(|(spec, configured)| {
            Some((spec, configured, key.strip_prefix(&spec.prefix())?))
        });
        let mut view = self.view();
        if let Some((spec, configured, field)) = own {
            if !spec.defaults.contains_key(field) {
                return Err(ApiError::field(key, format!("unknown setting {key:?}")));
            }
            let mut candidate = configured.clone();
            if let serde_json::Value::Object(current) = &*self.current_own.borrow().clone() {
                candidate.extend(current.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            candidate.insert(field.to_owned(), value.clone());
            let merged = spec.merged(&candidate).map_err(named)?;
            view[spec.service] = merged;
        } else if key.contains('.') {
            return Err(ApiError::field(
                key,
                format!("{key:?} is another service's setting: set it through that service"),
            ));
        } else {
            let fields = serde_json::to_value(&*self.defaults).map_err(anyhow::Error::from)?;
            if fields.get(key).is_none() {
                return Err(ApiError::field(key, format!("unknown setting {key:?}")));
            }
            let current = self.current();
            let candidate =
                merge(&current, &serde_json::Map::from_iter([(key.to_owned(), value.clone())]))
                    .map_err(named)?;
            let own = view.get(self.own.as_deref().map_or("", |o| o.0.service)).cloned();
            view = serde_json::to_value(candidate).map_err(anyhow::Error::from)?;
            if let (Some(own), Some(spec)) = (own, self.own.as_deref()) {
                view[spec.0.service] = own;
            }
        }
        let bytes = serde_json::to_vec(&value).map_err(anyhow::Error::from)?;
        self.kv
            .put(key, bytes.into())
            .await
            .map_err(|e| ApiError::Unavailable(format!("settings store: {e}")))?;
        Ok(view)
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
