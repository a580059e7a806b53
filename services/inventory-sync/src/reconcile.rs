//! Reconciliation: for every stock row, the ledger's sum of deltas must equal `on_hand`.

use std::time::Duration;

use diesel::sql_types::{BigInt, Text};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::AppState;

/// How often the periodic check runs.
const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct Mismatch {
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub warehouse: String,
    #[diesel(sql_type = BigInt)]
    pub on_hand: i64,
    #[diesel(sql_type = BigInt)]
    pub ledger_sum: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub rows_checked: i64,
    pub mismatches: Vec<Mismatch>,
}

/// Runs the check and updates the `inventory_reconciliation_mismatches` gauge.
pub async fn check(state: &AppState) -> anyhow::Result<Report> {
    let mut conn = state.platform.db.get().await?;
    let mismatches: Vec<Mismatch> = diesel::sql_query(
        "SELECT s.sku, s.warehouse, s.on_hand, COALESCE(l.total, 0)::bigint AS ledger_sum \
         FROM inventory.stock s \
         LEFT JOIN (SELECT sku, warehouse, SUM(delta) AS total FROM inventory.ledger GROUP BY sku, warehouse) l \
           ON l.sku = s.sku AND l.warehouse = s.warehouse \
         WHERE s.on_hand <> COALESCE(l.total, 0) ORDER BY s.sku, s.warehouse",
    )
    .load(&mut conn)
    .await?;
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
