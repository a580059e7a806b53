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
