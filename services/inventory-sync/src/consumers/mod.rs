//! Durable consumers of inventory-sync: the ERP's inventory counts. (The per-target push
//! consumers are run by the shared push engine, see [`crate::push`].)

pub mod erp_inventory;

use shared::bus::{ConsumerSpec, streams};

use crate::AppState;

pub fn spawn_all(state: &AppState) {
    let spec =
        ConsumerSpec::new("inventory-erp-counts", &streams::WEBHOOKS, "webhooks.erp.inventory");
    let consumer_state = state.clone();
    state.platform.spawn_consumer(spec, move |delivery| {
        let state = consumer_state.clone();
        async move { erp_inventory::handle(&state, delivery).await }
    });
}
