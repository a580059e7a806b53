//! Cross-cutting events: the sync audit trail, alerts and dead letters.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Event;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    Synced,
    Skipped,
    Failed,
    DeadLettered,
    /// Anti-entropy found the target holding another value than ours (and corrected it).
    Drifted,
}

impl SyncStatus {
    /// The name in sync logs (`Failed` is logged as `retrying`: the attempt will be repeated).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Synced => "synced",
            SyncStatus::Skipped => "skipped",
            SyncStatus::Failed => "retrying",
            SyncStatus::DeadLettered => "dead_lettered",
            SyncStatus::Drifted => "drifted",
        }
    }
}

/// One sync attempt with an external system: `sync.events.<system>.<direction>.<entity>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRecorded {
    pub system: String,
    pub direction: Direction,
    pub entity: String,
    pub record_id: String,
    pub status: SyncStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event for SyncRecorded {
    const TYPE: &'static str = "sync.recorded";
    fn subject(&self) -> String {
        let direction = match self.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        format!("sync.events.{}.{direction}.{}", self.system, self.entity)
    }
}

/// One record's sync attempt within a [`SyncBatchRecorded`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordSynced {
    pub record_id: String,
    pub status: SyncStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The sync attempts of one batch with an external system (a push engine's batch is one
/// transaction and one announcement): `sync.events.<system>.<direction>.<entity>`, like
/// [`SyncRecorded`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncBatchRecorded {
    pub system: String,
    pub direction: Direction,
    pub entity: String,
    pub records: Vec<RecordSynced>,
}

impl Event for SyncBatchRecorded {
    const TYPE: &'static str = "sync.batch_recorded";
    fn subject(&self) -> String {
        SyncRecorded {
            system: self.system.clone(),
            direction: self.direction,
            entity: self.entity.clone(),
            record_id: String::new(),
            status: SyncStatus::Synced,
            http_status: None,
            detail: None,
        }
        .subject()
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// An alert for sync-monitor to route: `alerts.<severity>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlertRaised {
    pub severity: Severity,
    /// Machine-readable kind, e.g. `low_stock`, `out_of_stock`.
    pub kind: String,
    /// One-line title (email subject, PagerDuty summary).
    pub title: String,
    /// Human text (Slack message, email body).
    pub text: String,
    /// Dedupe key for incident tools: the same condition raises the same key.
    pub dedup_key: String,
    #[serde(default)]
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl Event for AlertRaised {
    const TYPE: &'static str = "alert.raised";
    fn subject(&self) -> String {
        format!("alerts.{}", self.severity.as_str())
    }
}

/// A message that could not be processed: `sync.events.<service>.dead_letter.<consumer>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageDeadLettered {
    pub service: String,
    pub consumer: String,
    pub dead_letter_id: Uuid,
    pub subject: String,
    pub error: String,
    pub deliveries: i64,
}

impl Event for MessageDeadLettered {
    const TYPE: &'static str = "sync.dead_lettered";
    fn subject(&self) -> String {
        format!("sync.events.{}.dead_letter.{}", self.service, self.consumer)
    }
}

/// A bulk-sync job changed state (started, completed, failed, cancelled):
/// `sync.events.<source>.bulk.<entity>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BulkJobChanged {
    pub job_id: String,
    pub service: String,
    pub source: String,
    pub target: String,
    pub entity: String,
    pub status: String,
    pub total_records: i64,
    pub processed_records: i64,
    pub error_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Event for BulkJobChanged {
    const TYPE: &'static str = "sync.bulk_job";
    fn subject(&self) -> String {
        format!("sync.events.{}.bulk.{}", self.source, self.entity)
    }
}

/// A runtime setting was changed through a service's admin API or the dashboard:
/// `sync.events.<service>.settings` (sync-monitor keeps them as the settings audit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingChanged {
    pub service: String,
    pub key: String,
    pub who: String,
    pub old_value: Option<serde_json::Value>,
    pub new_value: serde_json::Value,
}

impl Event for SettingChanged {
    const TYPE: &'static str = "sync.setting_changed";
    fn subject(&self) -> String {
        format!("sync.events.{}.settings", self.service)
    }
}
