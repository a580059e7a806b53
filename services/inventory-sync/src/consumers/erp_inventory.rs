//! The ERP's inventory messages (`webhooks.erp.inventory`, published verified by erp-sync):
//! each becomes a `count` adjustment with source `erp`.
//!
//! Delivery: at-least-once; exactly-once effect because the adjustment's reference is the
//! message id and `(source, reference)` is unique in the ledger. Unknown products and invalid
//! payloads are dead-lettered (a later product import does not make them valid by itself;
//! an operator replays them).

use shared::{
    bus::{Delivery, HandlerError},
    schemas::{
        erp::{ErpInventory, ErpWebhook},
        inventory::AdjustmentType,
    },
};

use crate::{
    AppState,
    domain::{
        adjuster::{Adjustment, Refused},
        adjustment::AdjustmentRequest,
    },
};

#[tracing::instrument(skip_all, fields(sku = %delivery.envelope.data.entity_id))]
pub async fn handle(state: &AppState, delivery: Delivery<ErpWebhook>) -> Result<(), HandlerError> {
    let webhook = delivery.envelope.data;
    let inventory: ErpInventory = serde_json::from_value(webhook.payload).map_err(|e| {
        HandlerError::Permanent(anyhow::anyhow!("invalid ERP inventory payload: {e}"))
    })?;
    let adjustment = Adjustment::try_from(AdjustmentRequest {
        source: "erp".into(),
        sku: webhook.entity_id,
        warehouse: inventory.warehouse,
        kind: AdjustmentType::Count,
        quantity: inventory.qty_on_hand,
        reason: Some(format!("ERP inventory {}", webhook.event_type)),
        reference: delivery.envelope.id.to_string(),
        expected_on_hand: None,
    })
    .map_err(|e| HandlerError::Permanent(anyhow::anyhow!("invalid ERP inventory message: {e}")))?;
    match state.adjuster.apply(adjustment).await {
        Ok(applied) => {
            tracing::info!(
                new_quantity = applied.new_quantity,
                replayed = applied.replayed,
                "ERP count applied"
            );
            Ok(())
        }
        Err(Refused::Failed(reason)) => Err(anyhow::anyhow!(reason).into()),
        Err(refused) => Err(HandlerError::Permanent(anyhow::anyhow!(refused.to_string()))),
    }
}
