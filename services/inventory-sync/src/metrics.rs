//! inventory-sync's own metrics.

use std::sync::LazyLock;

use prometheus::{Histogram, IntGauge, register_histogram, register_int_gauge};

/// Adjustments per transaction: how much concurrent requests are sharing commits.
pub static BATCH_SIZE: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "inventory_adjustment_batch_size",
        "Adjustments applied per transaction",
        vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});

/// Stock rows whose ledger sum differs from on_hand at the last reconciliation (should be 0).
pub static RECONCILIATION_MISMATCHES: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "inventory_reconciliation_mismatches",
        "Stock rows whose ledger sum differs from on_hand at the last check"
    )
    .unwrap_or_else(|e| panic!("metric registration: {e}"))
});
