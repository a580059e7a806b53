//! The ERP's webhook envelope, as erp-sync's ingress publishes it (verified, unchanged) on
//! `webhooks.erp.<entity>` for erp-sync's own consumers.

use serde::{Deserialize, Serialize};

use super::Event;

/// `{eventType, entity, entityId, payload}` as the ERP sends it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErpWebhook {
    pub event_type: String,
    pub entity: String,
    pub entity_id: String,
    pub payload: serde_json::Value,
    /// Set when an operator retries the error-ledger row `retry_of` with this event: the row
    /// closes once the event is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<i64>,
}

impl Event for ErpWebhook {
    const TYPE: &'static str = "erp.webhook_received";
    fn subject(&self) -> String {
        format!("webhooks.erp.{}", self.entity)
    }
}

/// The ERP's inventory payload (`entity = "inventory"`, `entityId` = sku).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErpInventory {
    pub qty_on_hand: i64,
    pub warehouse: String,
    #[serde(default)]
    pub qty_available: Option<i64>,
    #[serde(default)]
    pub qty_reserved: Option<i64>,
    #[serde(default)]
    pub bin_location: Option<String>,
    /// The ERP's time of this state of the record.
    #[serde(default)]
    pub updated_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The ERP's version of the record, when it keeps one.
    #[serde(default)]
    pub version: Option<i64>,
}

/// A local change to push to the ERP: `outbound.erp.<entity>` (`order`: its status;
/// `customer`: name, email, phone), written by the capture trigger on `erp.<table>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordChanged {
    pub entity: String,
    /// The ERP's id of the record.
    pub id: String,
}

impl Event for RecordChanged {
    const TYPE: &'static str = "erp.record_changed";
    fn subject(&self) -> String {
        format!("outbound.erp.{}", self.entity)
    }
}

/// An email erp-sync sends about the ERP's records: `outbound.email.erp`, written to the outbox
/// with the change it is about and sent by erp-sync's mail consumer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailRequested {
    pub email: super::Email,
}

impl Event for EmailRequested {
    const TYPE: &'static str = "notify.email_requested";
    fn subject(&self) -> String {
        "outbound.email.erp".into()
    }
}
