//! Counts reported by the systems that own them (`inventory.count.<source>`, e.g. erp-sync's
//! canonical form of the ERP's inventory messages): each becomes a `count` adjustment stamped
//! with the system's own time and version.
//!
//! - Exactly-once effect: the adjustment's reference is the count's reference (the inbound
//!   event's id), and `(source, reference)` is unique in the ledger.
//! - Never backwards: a count that is not newer than the last count applied from the same
//!   source for the sku and warehouse changes nothing (redelivery, a dead-letter replay, two
//!   replicas, or the source's own messages overtaking each other).
//! - Unknown products and invalid counts are dead-lettered (a later product import does not
//!   make them valid by itself; an operator replays them).

use shared::{
    bus::{Delivery, HandlerError},
    schemas::inventory::{AdjustmentType, CountReported},
};

use crate::{
    AppState,
    domain::{
        adjuster::{Adjustment, Refused},
        adjustment::AdjustmentRequest,
        plan::Stamp,
    },
};

/// The durable consumer (shared by every replica).
pub const CONSUMER: &str = "inventory-counts";

#[tracing::instrument(skip_all, fields(source = %delivery.envelope.data.source, sku = %delivery.envelope.data.sku))]
pub async fn handle(
    state: &AppState,
    delivery: Delivery<CountReported>,
) -> Result<(), HandlerError> {
    let count = delivery.envelope.data;
    let stamp = Stamp { at: count.counted_at, version: count.version };
    let adjustment = Adjustment::try_from(AdjustmentRequest {
        source: count.source,
        sku: count.sku,
        warehouse: count.warehouse,
        kind: AdjustmentType::Count,
        quantity: count.on_hand,
        reason: count.reason,
        reference: count.reference,
        expected_on_hand: None,
    })
    .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("invalid count: {e}")))?;
    match state.adjuster.apply(Adjustment { stamp: Some(stamp), ..adjustment }).await {
        Ok(applied) => {
            tracing::info!(
                new_quantity = applied.new_quantity,
                replayed = applied.replayed,
                "count applied"
            );
            Ok(())
        }
        Err(stale @ Refused::Stale { .. }) => {
            crate::metrics::stale_count();
            tracing::info!(%stale, "older count ignored");
            Ok(())
        }
        Err(Refused::Failed(reason)) => Err(anyhow::anyhow!(reason).into()),
        Err(refused) => Err(HandlerError::Permanent(anyhow::anyhow!(refused.to_string()))),
    }
}
