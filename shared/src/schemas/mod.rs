//! Canonical records and events exchanged on the bus. Every message is an [`Envelope`]
//! `{id, type, source, occurred_at, trace, data}`; event types are past tense and know their
//! own subject.

pub mod erp;
pub mod inventory;
pub mod sync;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An event that travels on the bus.
pub trait Event: Serialize {
    /// The envelope's `type`.
    const TYPE: &'static str;
    /// The subject it is published on (without installation prefix).
    fn subject(&self) -> String;
}

/// The JSON envelope of every bus message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    /// Unique id; also the dedupe key (`Nats-Msg-Id`, inbox).
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    /// The system or service the change came from (loop prevention uses it).
    pub source: String,
    pub occurred_at: DateTime<Utc>,
    /// W3C `traceparent` of the operation that produced the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    pub data: T,
}

impl<T: Event> Envelope<T> {
    /// Wraps `data` with a fresh time-ordered id and the current trace context.
    pub fn new(source: &str, data: T) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind: T::TYPE.to_owned(),
            source: source.to_owned(),
            occurred_at: Utc::now(),
            trace: crate::telemetry::current_traceparent(),
            data,
        }
    }

    /// The subject of the wrapped event.
    pub fn subject(&self) -> String {
        self.data.subject()
    }
}

/// True when `token` can be used inside a NATS subject and as an identifier in URLs:
/// 1..=64 characters of letters, digits, `_`, `-` and `.` (not leading or trailing, no `..`).
pub fn is_subject_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 64
        && token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !token.starts_with('.')
        && !token.ends_with('.')
        && !token.contains("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_safe_tokens_reject_wildcards_and_empty_tokens() {
        assert!(is_subject_safe("SKU-1.blue_L"));
        for bad in ["", "a b", "a*", ">", "a..b", ".a", "a.", "ä"] {
            assert!(!is_subject_safe(bad), "{bad:?}");
        }
    }
}
