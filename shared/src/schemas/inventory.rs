//! Inventory records and events.

use serde::{Deserialize, Serialize};

use super::Event;

/// The systems that hold stock levels besides datasync. Their names are also the adjustment
/// `source` values, which is how a change is kept from being pushed back where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Erp,
    Ecommerce,
    Pos,
    Wms,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Erp, Target::Ecommerce, Target::Pos, Target::Wms];

    pub fn as_str(self) -> &'static str {
        match self {
            Target::Erp => "erp",
            Target::Ecommerce => "ecommerce",
            Target::Pos => "pos",
            Target::Wms => "wms",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Kinds of stock adjustment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentType {
    /// Goods received: adds.
    Receipt,
    /// Transfer into this warehouse: adds.
    TransferIn,
    /// Goods shipped: subtracts.
    Shipment,
    /// Transfer out of this warehouse: subtracts.
    TransferOut,
    /// Manual correction: sets the absolute level.
    Adjustment,
    /// Stock count: sets the absolute level.
    Count,
}

impl AdjustmentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Receipt => "receipt",
            Self::TransferIn => "transfer_in",
            Self::Shipment => "shipment",
            Self::TransferOut => "transfer_out",
            Self::Adjustment => "adjustment",
            Self::Count => "count",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Receipt,
            Self::TransferIn,
            Self::Shipment,
            Self::TransferOut,
            Self::Adjustment,
            Self::Count,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Whether the type sets the level outright (the sender then knows the resulting level).
    pub fn is_absolute(self) -> bool {
        matches!(self, Self::Adjustment | Self::Count)
    }
}

/// One applied adjustment: published on `inventory.adjusted.<sku>` for every change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockAdjusted {
    pub ledger_id: i64,
    pub source: String,
    pub reference: String,
    pub sku: String,
    pub warehouse: String,
    #[serde(rename = "type")]
    pub kind: AdjustmentType,
    pub quantity: i64,
    pub quantity_before: i64,
    pub quantity_after: i64,
    pub reason: Option<String>,
}

impl Event for StockAdjusted {
    const TYPE: &'static str = "inventory.stock_adjusted";
    fn subject(&self) -> String {
        format!("inventory.adjusted.{}", self.sku)
    }
}

/// A bulk page applied: its counts at once, `inventory.loaded.<source>`, one event per page of
/// a bulk load instead of one `inventory.adjusted.<sku>` per record. Records the page left as
/// they were (or older than a count already applied) are not listed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockPageLoaded {
    /// The system the page was read from.
    pub source: String,
    /// The bulk job.
    pub job_id: String,
    pub records: Vec<LoadedCount>,
}

/// One record of a [`StockPageLoaded`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadedCount {
    pub ledger_id: i64,
    pub sku: String,
    pub warehouse: String,
    pub quantity_before: i64,
    pub quantity_after: i64,
}

impl Event for StockPageLoaded {
    const TYPE: &'static str = "inventory.stock_page_loaded";
    fn subject(&self) -> String {
        format!("inventory.loaded.{}", self.source)
    }
}

/// A system's own count of a sku in a warehouse, stamped with that system's time of the count
/// (and its version, when it has one): `inventory.count.<source>`. The connector that owns the
/// system turns its messages into these; inventory-sync applies a count only if it is newer
/// than the last one it applied from that source for that sku and warehouse, so a redelivered,
/// replayed or reordered count can never move stock backwards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CountReported {
    pub source: String,
    /// Idempotency key within `source` (the inbound event's id).
    pub reference: String,
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
    /// The source's own time of the count.
    pub counted_at: chrono::DateTime<chrono::Utc>,
    /// The source's own version of the record, when it sends one: compared before the time.
    #[serde(default)]
    pub version: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

impl Event for CountReported {
    const TYPE: &'static str = "inventory.count_reported";
    fn subject(&self) -> String {
        format!("inventory.count.{}", self.source)
    }
}

/// "The level of this sku/warehouse changed: push it to every target". Carries no quantity:
/// each target's pusher reads the latest level when it runs, so stale or reordered messages are
/// harmless and the stream keeps only the last one per subject. One message serves every
/// target: each target's durable consumer reads the stream on its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockLevelChanged {
    pub sku: String,
    pub warehouse: String,
}

impl Event for StockLevelChanged {
    const TYPE: &'static str = "inventory.level_changed";
    fn subject(&self) -> String {
        format!("inventory.level.{}.{}", self.warehouse, self.sku)
    }
}

/// The level a target is told about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StockLevel {
    pub sku: String,
    pub warehouse: String,
    pub on_hand: i64,
}
