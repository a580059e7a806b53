//! Durable consumers of inventory-sync.

pub mod erp_inventory;
pub mod push;

use shared::bus::{ConsumerSpec, streams};

use crate::AppState;

/// One push consumer per configured target (`push_concurrency` pushes in flight, each holding a
/// connection of `AppState::push_db`), and the ERP inventory consumer.
pub fn spawn_all(state: &AppState) {
    for &target in state.targets.keys() {
        let spec = ConsumerSpec {
            // The hard cap; the live retry budget is the `push_max_attempts` setting.
            max_deliver: 100,
            concurrency: state.push_concurrency,
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
