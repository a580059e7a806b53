//! inventory-sync's own metrics.

use std::sync::LazyLock;

use prometheus::{IntGauge, register_int_gauge};

/// Stock rows whose ledger sum differs from on_hand at the last reconciliation (should be 0).
pub static RECONCILIATION_MISMATCHES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "inventory_reconciliation_mismatches",
        "Stock rows whose ledger sum differs from on_hand at the last check"
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

/// Reported counts not applied because a newer count from the same source was already applied.
pub static STALE_COUNTS: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::register_int_counter!(
        "inventory_stale_counts_total",
        "Reported counts ignored because a newer count from the same source was already applied"
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

pub fn stale_count() {
    STALE_COUNTS.inc();
}
