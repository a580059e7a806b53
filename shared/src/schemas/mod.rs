//! Canonical records and events exchanged on the bus. Every message is an [`Envelope`]
//! `{id, type, source, occurred_at, trace, data}`; event types are past tense and know their
//! own subject.

pub mod conflict;
pub mod crm;
pub mod directory;
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

/// An email with a text part and an optional HTML part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Email {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: Option<String>,
    /// The `Message-ID` (without angle brackets): derived from the event that asked for the
    /// email, so a copy sent again after a crash carries the same id and can be told apart.
    #[serde(default)]
    pub message_id: Option<String>,
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

/// The wire format of every event is a contract between services: these tests pin it.
#[cfg(test)]
mod wire_format {
    use chrono::TimeZone;
    use serde_json::json;

    use super::{
        Envelope, Event,
        inventory::{AdjustmentType, StockAdjusted, StockLevelChanged},
        sync::{
            AlertRaised, Direction, MessageDeadLettered, RecordSynced, Severity, SyncBatchRecorded,
            SyncRecorded, SyncStatus,
        },
    };

    fn wire<T: Event + Clone>(data: T) -> (String, serde_json::Value) {
        let envelope = Envelope {
            id: uuid::Uuid::nil(),
            kind: T::TYPE.to_owned(),
            source: "inventory-sync".into(),
            occurred_at: chrono::Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap(),
            trace: None,
            data: data.clone(),
        };
        (data.subject(), serde_json::to_value(&envelope).unwrap())
    }

    #[test]
    fn stock_adjusted() {
        let (subject, json) = wire(StockAdjusted {
            ledger_id: 7,
            source: "pos".into(),
            reference: "sale-1".into(),
            sku: "MUG-1".into(),
            warehouse: "W1".into(),
            kind: AdjustmentType::TransferOut,
            quantity: 2,
            quantity_before: 5,
            quantity_after: 3,
            reason: Some("sale".into()),
        });
        assert_eq!(subject, "inventory.adjusted.MUG-1");
        assert_eq!(
            json,
            json!({"id": "00000000-0000-0000-0000-000000000000", "type": "inventory.stock_adjusted",
                   "source": "inventory-sync", "occurred_at": "2026-11-25T12:00:00Z",
                   "data": {"ledger_id": 7, "source": "pos", "reference": "sale-1", "sku": "MUG-1",
                            "warehouse": "W1", "type": "transfer_out", "quantity": 2,
                            "quantity_before": 5, "quantity_after": 3, "reason": "sale"}})
        );
    }

    #[test]
    fn stock_level_changed() {
        let (subject, json) =
            wire(StockLevelChanged { sku: "MUG-1".into(), warehouse: "W1".into() });
        assert_eq!(subject, "inventory.level.W1.MUG-1");
        assert_eq!(json["data"], json!({"sku": "MUG-1", "warehouse": "W1"}));
    }

    #[test]
    fn sync_recorded() {
        let (subject, json) = wire(SyncRecorded {
            system: "erp".into(),
            direction: Direction::Outbound,
            entity: "stock_level".into(),
            record_id: "W1/MUG-1".into(),
            status: SyncStatus::DeadLettered,
            http_status: Some(503),
            detail: Some("503".into()),
        });
        assert_eq!(subject, "sync.events.erp.outbound.stock_level");
        assert_eq!(
            json["data"],
            json!({"system": "erp", "direction": "outbound", "entity": "stock_level",
                   "record_id": "W1/MUG-1", "status": "dead_lettered", "http_status": 503, "detail": "503"})
        );
    }

    #[test]
    fn sync_batch_recorded() {
        let (subject, json) = wire(SyncBatchRecorded {
            system: "erp".into(),
            direction: Direction::Outbound,
            entity: "stock_level".into(),
            records: vec![
                RecordSynced {
                    record_id: "W1/MUG-1".into(),
                    status: SyncStatus::Synced,
                    http_status: Some(200),
                    detail: None,
                },
                RecordSynced {
                    record_id: "W1/MUG-2".into(),
                    status: SyncStatus::Failed,
                    http_status: Some(503),
                    detail: Some("push: 503".into()),
                },
            ],
        });
        assert_eq!(subject, "sync.events.erp.outbound.stock_level");
        assert_eq!(json["type"], "sync.batch_recorded");
        assert_eq!(
            json["data"],
            json!({"system": "erp", "direction": "outbound", "entity": "stock_level", "records": [
                {"record_id": "W1/MUG-1", "status": "synced", "http_status": 200},
                {"record_id": "W1/MUG-2", "status": "failed", "http_status": 503, "detail": "push: 503"}]})
        );
    }

    #[test]
    fn alert_raised_and_dead_lettered() {
        let (subject, json) = wire(AlertRaised {
            severity: Severity::Critical,
            kind: "out_of_stock".into(),
            title: "Out of Stock: MUG-1".into(),
            text: "🚨 *Out of Stock*".into(),
            dedup_key: "out_of_stock/MUG-1/W1".into(),
            fields: Default::default(),
        });
        assert_eq!(subject, "alerts.critical");
        assert_eq!(json["data"]["severity"], "critical");
        assert_eq!(json["data"]["dedup_key"], "out_of_stock/MUG-1/W1");

        let (subject, json) = wire(MessageDeadLettered {
            service: "inventory-sync".into(),
            consumer: "inventory-push-wms".into(),
            dead_letter_id: uuid::Uuid::nil(),
            subject: "inventory.level.W1.MUG-1".into(),
            error: "budget".into(),
            deliveries: 8,
        });
        assert_eq!(subject, "sync.events.inventory-sync.dead_letter.inventory-push-wms");
        assert_eq!(json["type"], "sync.dead_lettered");
        assert_eq!(json["data"]["deliveries"], 8);
    }
}
