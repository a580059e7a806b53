//! Reconciliation: for every stock row, the ledger's sum of deltas must equal `on_hand`.

use std::time::Duration;

use serde::Serialize;

use crate::{AppState, models::ledger::Mismatch};

/// How often the periodic check runs.
const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub rows_checked: i64,
    pub mismatches: Vec<Mismatch>,
}

/// Runs the check and updates the `inventory_reconciliation_mismatches` gauge.
pub async fn check(state: &AppState) -> anyhow::Result<Report> {
    let mut conn = state.platform.db.get().await?;
    let mismatches = Mismatch::all(&mut conn).await?;
    let rows_checked = crate::models::stock::StockLevel::count(&mut conn).await?;
    crate::metrics::RECONCILIATION_MISMATCHES.set(mismatches.len() as i64);
    if !mismatches.is_empty() {
        tracing::error!(mismatches = mismatches.len(), "ledger and stock disagree");
    }
    Ok(Report { rows_checked, mismatches })
}

pub async fn run_periodically(state: AppState) {
    loop {
        tokio::select! {
            _ = state.platform.shutdown.cancelled() => return,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
        if let Err(e) = check(&state).await {
            tracing::warn!(error = %e, "reconciliation check failed");
        }
    }
}
