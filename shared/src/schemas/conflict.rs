//! Conflicts, for every connector: a service that finds both sides changed a record's fields
//! differently publishes [`ConflictDetected`] on `sync.conflicts.detected.<system>` (base,
//! local and remote) and applies the [`ConflictResolved`] that comes back on
//! `sync.conflicts.resolved.<system>` (`{conflict_id, entity, record_id, values}`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::Event;

/// Both sides changed the same fields of a record differently, and the system's change could
/// not simply win: nothing was overwritten. `sync.conflicts.detected.<system>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictDetected {
    pub conflict_id: Uuid,
    pub system: String,
    /// The kind of record (`contact`, `order`, ...), as the owning service names it.
    pub entity: String,
    /// The local id.
    pub record_id: i64,
    /// The system's id.
    pub external_id: String,
    /// The conflicting fields (local column names).
    pub fields: Vec<String>,
    /// The last synced copy, the local record and the system's record (local column names).
    pub base: Map<String, Value>,
    pub local: Map<String, Value>,
    pub remote: Map<String, Value>,
    pub local_updated_at: DateTime<Utc>,
    pub remote_updated_at: DateTime<Utc>,
    /// The clock each time was read from (`local`: ours; unset: `local` and the system's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_clock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_clock: Option<String>,
    /// Set when this conflict is an earlier resolution that could not be applied (the record
    /// was deleted meanwhile, say): why. No rule decides such a conflict; a person does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unapplied: Option<String>,
}

impl ConflictDetected {
    /// A resolution that cannot be applied (the record was deleted meanwhile, say), as a new
    /// conflict for a person: what was decided is the remote side (`base` too, so no rule reads
    /// a change into it), the local side is empty.
    pub fn unapplied(resolution: &ConflictResolved, why: &str) -> Self {
        let now = Utc::now();
        Self {
            conflict_id: Uuid::now_v7(),
            system: resolution.system.clone(),
            entity: resolution.entity.clone(),
            record_id: resolution.record_id,
            external_id: String::new(),
            fields: resolution.values.keys().cloned().collect(),
            base: resolution.values.clone(),
            local: Map::new(),
            remote: resolution.values.clone(),
            local_updated_at: now,
            remote_updated_at: now,
            local_clock: Some("local".into()),
            remote_clock: Some("local".into()),
            unapplied: Some(format!(
                "the resolution of conflict {} could not be applied: {why}",
                resolution.conflict_id
            )),
        }
    }
}

impl Event for ConflictDetected {
    const TYPE: &'static str = "sync.conflict_detected";
    fn subject(&self) -> String {
        format!("sync.conflicts.detected.{}", self.system)
    }
}

/// How a conflict was decided: `sync.conflicts.resolved.<system>`. `values` are the winning
/// values of the conflicting fields (local column names); the owning service makes the local
/// record hold them, and pushes them where the system holds something else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictResolved {
    pub conflict_id: Uuid,
    pub system: String,
    /// The kind of record (`contact`, `order`, ...), as the owning service names it.
    pub entity: String,
    pub record_id: i64,
    pub values: Map<String, Value>,
    /// Who decided (`rule:<name>` or an operator).
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// This undoes an earlier automatic resolution of the conflict: the owning service applies
    /// the values whatever it holds now (a local change, pushed where the system differs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undo: bool,
}

impl Event for ConflictResolved {
    const TYPE: &'static str = "sync.conflict_resolved";
    fn subject(&self) -> String {
        format!("sync.conflicts.resolved.{}", self.system)
    }
}

/// A conflict no rule decides, waiting for a person: `sync.conflicts.escalated.<system>`,
/// published once per conflict by conflict-resolver (its email and Slack message come from it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictEscalated {
    pub conflict_id: Uuid,
    pub system: String,
    pub entity: String,
    pub record_id: i64,
    pub external_id: String,
    /// The fields each side changed from the base, with the side's values.
    pub local_changes: Map<String, Value>,
    pub remote_changes: Map<String, Value>,
    /// Where a person reviews it.
    pub review_url: String,
}

impl Event for ConflictEscalated {
    const TYPE: &'static str = "sync.conflict_escalated";
    fn subject(&self) -> String {
        format!("sync.conflicts.escalated.{}", self.system)
    }
}
