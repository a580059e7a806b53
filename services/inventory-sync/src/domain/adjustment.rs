//! An adjustment as callers send it (`POST /adjustments`, the ERP's counts, bulk loads) and
//! its validation into an [`Adjustment`].

use serde::Deserialize;
use shared::schemas::{inventory::AdjustmentType, is_subject_safe};

use super::adjuster::Adjustment;

/// The request body. Unknown fields are refused, so a typo cannot silently drop a value.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    /// Where the change happened: `erp`, `ecommerce`, `pos`, `wms`, or another system name.
    pub source: String,
    pub sku: String,
    pub warehouse: String,
    #[serde(rename = "type")]
    pub kind: AdjustmentType,
    /// Units moved, or the absolute level for `adjustment`/`count`. Never negative.
    pub quantity: i64,
    pub reason: Option<String>,
    /// The caller's id for this adjustment; with `source`, the idempotency key.
    pub reference: String,
    /// Compare-and-set: apply only if on hand is exactly this now.
    pub expected_on_hand: Option<i64>,
}

/// Largest quantity accepted (far above any real stock; keeps every sum inside `i64`).
pub const MAX_QUANTITY: i64 = 1_000_000_000_000;

/// PostgreSQL text cannot hold NUL, and no other control character belongs in these fields.
fn has_control(s: &str) -> bool {
    s.chars().any(char::is_control)
}

/// A field of an adjustment request that is not acceptable; nothing is applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct InvalidField {
    pub field: &'static str,
    pub detail: String,
}

fn invalid(field: &'static str, detail: impl Into<String>) -> InvalidField {
    InvalidField { field, detail: detail.into() }
}

/// Checks every field, naming the first bad one.
impl TryFrom<AdjustmentRequest> for Adjustment {
    type Error = InvalidField;

    fn try_from(request: AdjustmentRequest) -> Result<Self, InvalidField> {
        let r = request;
        for (field, value) in [("source", &r.source), ("sku", &r.sku)] {
            if !is_subject_safe(value) {
                return Err(invalid(
                    field,
                    format!("{field} must be 1-64 letters, digits, '.', '_' or '-'"),
                ));
            }
        }
        // The warehouse and the sku are the last two tokens of a level subject: a dot in the
        // warehouse would make two records share one subject.
        if !is_subject_safe(&r.warehouse) || r.warehouse.contains('.') {
            return Err(invalid("warehouse", "warehouse must be 1-64 letters, digits, '_' or '-'"));
        }
        if r.reference.trim().is_empty() || r.reference.len() > 200 || has_control(&r.reference) {
            return Err(invalid(
                "reference",
                "reference must be 1-200 characters without control characters",
            ));
        }
        if !(0..=MAX_QUANTITY).contains(&r.quantity) {
            return Err(invalid(
                "quantity",
                format!("quantity must be between 0 and {MAX_QUANTITY}"),
            ));
        }
        if !r.kind.is_absolute() && r.quantity == 0 {
            return Err(invalid(
                "quantity",
                format!("quantity must be positive for {}", r.kind.as_str()),
            ));
        }
        if r.expected_on_hand.is_some_and(|e| !(0..=MAX_QUANTITY).contains(&e)) {
            return Err(invalid(
                "expected_on_hand",
                format!("expected_on_hand must be between 0 and {MAX_QUANTITY}"),
            ));
        }
        if r.reason.as_ref().is_some_and(|r| r.len() > 500 || has_control(r)) {
            return Err(invalid(
                "reason",
                "reason must be at most 500 characters without control characters",
            ));
        }
        Ok(Self {
            source: r.source,
            reference: r.reference,
            sku: r.sku,
            warehouse: r.warehouse,
            kind: r.kind,
            quantity: r.quantity,
            expected_on_hand: r.expected_on_hand,
            reason: r.reason,
            stamp: None,
            loaded: None,
        })
    }
}
