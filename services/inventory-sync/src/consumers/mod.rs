//! Durable consumers of inventory-sync: counts reported by other systems. (The per-target push
//! consumers are run by the shared push engine, see [`crate::push`].)

pub mod counts;

use shared::bus::{ConsumerSpec, streams};

use crate::AppState;

pub fn spawn_all(state: &AppState) {
    let spec = ConsumerSpec::new(counts::CONSUMER, &streams::INVENTORY_COUNTS, "inventory.count.>");
    let consumer_state = state.clone();
    state.platform.spawn_consumer(spec, move |delivery| {
        let state = consumer_state.clone();
        async move { counts::handle(&state, delivery).await }
    });
}
