//! The local directory's changes, published by user-sync on `directory.user.<change>` and
//! `directory.group.<change>` (`created`, `updated`, `deactivated`, `deleted`).

use serde::{Deserialize, Serialize};

use super::Event;

/// A user of the local directory changed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserChanged {
    /// The source that owns it (a SCIM client's name, or `ldap`).
    pub source: String,
    pub id: String,
    pub user_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub active: bool,
    /// `created`, `updated`, `deactivated` or `deleted`.
    pub change: String,
}

impl Event for UserChanged {
    const TYPE: &'static str = "directory.user_changed";
    fn subject(&self) -> String {
        format!("directory.user.{}", self.change)
    }
}

/// A group of the local directory changed (its name or its members).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupChanged {
    pub source: String,
    pub id: String,
    pub display_name: String,
    pub members: usize,
    /// `created`, `updated` or `deleted`.
    pub change: String,
}

impl Event for GroupChanged {
    const TYPE: &'static str = "directory.group_changed";
    fn subject(&self) -> String {
        format!("directory.group.{}", self.change)
    }
}
