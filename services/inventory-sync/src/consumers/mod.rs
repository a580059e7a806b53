//! Durable consumers of inventory-sync.

pub mod erp_inventory;
pub mod push;

use shared::bus::{ConsumerSpec, streams};

use crate::AppState;

/// One push consumer per configured target, and the ERP inventory consumer.
pub fn spawn_all(state: &AppState) {
    for &target in state.targets.keys() {
        let spec = ConsumerSpec {
            // The hard cap; the live retry budget is the `push_max_attempts` setting.
            max_deliver: 100,
            // Each push holds a pooled connection (its advisory lock) during the HTTP call:
            // 4 targets x 4 stay well inside the pool.
            concurrency: 4,
            ..ConsumerSpec::new(
                &format!("inventory-push-{}", target.as_str()),
                &streams::INVENTORY_LEVELS,
                &format!("inventory.level.{}.>", target.as_str()),
            )
        };
        let state = state.clone();
        state.platform.clone().spawn_consumer(spec, move |delivery| {
            let state = state.clone();
            async move { push::handle(&state, delivery).await }
        });
    }
    let spec =
        ConsumerSpec::new("inventory-erp-counts", &streams::WEBHOOKS, "webhooks.erp.inventory");
    let consumer_state = state.clone();
    state.platform.spawn_consumer(spec, move |delivery| {
        let state = consumer_state.clone();
        async move { erp_inventory::handle(&state, delivery).await }
    });
}
