//! The CRM's records and events: contacts, accounts and opportunities.
//!
//! - `webhooks.crm.<entity>`: one [`CrmEvent`] per CRM change, verified by the ingress.
//! - `outbound.crm.<entity>`: [`RecordChanged`], written by the capture trigger on
//!   `crm.<table>` for every local change; the push engine sends the record to the CRM.
//! - `sync.conflicts.detected.crm` / `sync.conflicts.resolved.crm`: [`ConflictDetected`] and
//!   [`ConflictResolved`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::Event;

/// A kind of CRM record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Contact,
    Account,
    Opportunity,
}

impl Entity {
    pub const ALL: [Entity; 3] = [Entity::Contact, Entity::Account, Entity::Opportunity];

    /// The name in events, subjects and record keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Contact => "contact",
            Entity::Account => "account",
            Entity::Opportunity => "opportunity",
        }
    }

    /// The local table in the `crm` schema.
    pub fn table(self) -> &'static str {
        match self {
            Entity::Contact => "contacts",
            Entity::Account => "accounts",
            Entity::Opportunity => "opportunities",
        }
    }

    /// The object type in the CRM's objects API (HubSpot's names).
    pub fn object_type(self) -> &'static str {
        match self {
            Entity::Contact => "contacts",
            Entity::Account => "companies",
            Entity::Opportunity => "deals",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to a CRM record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Created,
    Updated,
    Deleted,
    /// HubSpot merged the records [`CrmEvent::merged`] into [`CrmEvent::id`]: they become
    /// deleted, the winner is updated.
    Merged,
}

impl ChangeKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "created" => Some(Self::Created),
            "updated" => Some(Self::Updated),
            "deleted" => Some(Self::Deleted),
            _ => None,
        }
    }
}

/// One verified CRM change, as the ingress publishes it on `webhooks.crm.<entity>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrmEvent {
    pub event: ChangeKind,
    #[serde(rename = "type")]
    pub entity: Entity,
    /// The CRM's id of the record.
    pub id: String,
    /// When the CRM made the change (its own clock).
    pub timestamp: DateTime<Utc>,
    /// The record's CRM properties as sent (HubSpot's names, string values); empty for a
    /// delete and for an event whose record is read first ([`CrmEvent::read`]).
    #[serde(default)]
    pub data: Map<String, Value>,
    /// The event carries no properties (HubSpot's creation, restore and merge events): the
    /// consumer reads the record's properties from the CRM, in one batch read per batch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read: bool,
    /// For a merge: the CRM ids of the records merged into this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<String>,
    /// The error-ledger row this event retries (set by an operator's retry or requeue); the
    /// row is closed once the event is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<i64>,
}

impl Event for CrmEvent {
    const TYPE: &'static str = "crm.webhook_received";
    fn subject(&self) -> String {
        format!("webhooks.crm.{}", self.entity)
    }
}

/// A local change to push: `outbound.crm.<entity>` (written by the capture trigger).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordChanged {
    pub entity: Entity,
    /// The local id.
    pub id: i64,
}

impl Event for RecordChanged {
    const TYPE: &'static str = "crm.record_changed";
    fn subject(&self) -> String {
        format!("outbound.crm.{}", self.entity)
    }
}

/// Both sides changed the same fields of a record differently, and the CRM's change is the
/// older one: nothing was overwritten. `sync.conflicts.detected.<system>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictDetected {
    pub conflict_id: Uuid,
    pub system: String,
    pub entity: Entity,
    /// The local id.
    pub record_id: i64,
    /// The CRM's id.
    pub external_id: String,
    /// The conflicting fields (local column names).
    pub fields: Vec<String>,
    /// The last synced copy, the local record and the CRM's record (local column names).
    pub base: Map<String, Value>,
    pub local: Map<String, Value>,
    pub remote: Map<String, Value>,
    pub local_updated_at: DateTime<Utc>,
    pub remote_updated_at: DateTime<Utc>,
}

impl Event for ConflictDetected {
    const TYPE: &'static str = "sync.conflict_detected";
    fn subject(&self) -> String {
        format!("sync.conflicts.detected.{}", self.system)
    }
}

/// How a conflict was decided: `sync.conflicts.resolved.<system>`. `values` are the winning
/// values of the conflicting fields (local column names); the owning service makes the local
/// record hold them, and pushes them where the CRM holds something else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictResolved {
    pub conflict_id: Uuid,
    pub system: String,
    pub entity: Entity,
    pub record_id: i64,
    pub values: Map<String, Value>,
    /// Who decided (`rule:<name>` or an operator).
    #[serde(default)]
    pub resolved_by: Option<String>,
}

impl Event for ConflictResolved {
    const TYPE: &'static str = "sync.conflict_resolved";
    fn subject(&self) -> String {
        format!("sync.conflicts.resolved.{}", self.system)
    }
}
