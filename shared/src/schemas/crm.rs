//! The CRM's records and events: contacts, accounts and opportunities.
//!
//! - `webhooks.crm.<entity>`: one [`CrmEvent`] per CRM change, verified by the ingress.
//! - `outbound.crm.<entity>`: [`RecordChanged`], written by the capture trigger on
//!   `crm.<table>` for every local change; the push engine sends the record to the CRM.
//! - `sync.conflicts.detected.crm` / `sync.conflicts.resolved.crm`: the platform's conflict
//!   events ([`super::conflict`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

    /// The local table with its schema (`crm.contacts`).
    pub fn qualified_table(self) -> &'static str {
        match self {
            Entity::Contact => "crm.contacts",
            Entity::Account => "crm.accounts",
            Entity::Opportunity => "crm.opportunities",
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
