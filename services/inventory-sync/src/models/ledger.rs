//! `inventory.ledger`: append-only; the sum of `delta` per sku and warehouse is on hand.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use super::schema::ledger;

/// A ledger entry as readers see it.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = ledger, check_for_backend(diesel::pg::Pg))]
pub struct LedgerEntry {
    pub id: i64,
    pub warehouse: String,
    pub source: String,
    pub reference: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub quantity: i64,
    pub delta: i64,
    pub quantity_before: i64,
    pub quantity_after: i64,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl LedgerEntry {
    /// Up to `limit` entries of `sku` with an id below `before`, newest first.
    pub async fn page(
        conn: &mut AsyncPgConnection,
        sku: &str,
        before: i64,
        limit: i64,
    ) -> QueryResult<Vec<LedgerEntry>> {
        ledger::table
            .filter(ledger::sku.eq(sku))
            .filter(ledger::id.lt(before))
            .order(ledger::id.desc())
            .limit(limit)
            .select(LedgerEntry::as_select())
            .load(conn)
            .await
    }
}
