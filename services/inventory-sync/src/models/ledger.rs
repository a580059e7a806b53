//! `inventory.ledger`: append-only; the sum of `delta` per sku and warehouse is on hand.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Nullable, Text, Timestamptz},
};
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

/// A ledger row as the adjuster stores and replays it.
#[derive(Debug, QueryableByName)]
pub struct LedgerRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub reference: String,
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub warehouse: String,
    #[diesel(sql_type = Text)]
    pub r#type: String,
    #[diesel(sql_type = BigInt)]
    pub quantity: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub expected_on_hand: Option<i64>,
    #[diesel(sql_type = BigInt)]
    pub quantity_before: i64,
    #[diesel(sql_type = BigInt)]
    pub quantity_after: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// A ledger row to write.
pub struct NewLedgerRow<'a> {
    pub source: &'a str,
    pub reference: &'a str,
    pub sku: &'a str,
    pub warehouse: &'a str,
    pub kind: &'a str,
    pub quantity: i64,
    pub expected_on_hand: Option<i64>,
    pub before: i64,
    pub after: i64,
    pub reason: Option<&'a str>,
}

const LEDGER_COLUMNS: &str = "id, source, reference, sku, warehouse, type, quantity, \
    expected_on_hand, quantity_before, quantity_after, reason, created_at";

impl LedgerRow {
    /// The rows of these idempotency keys (source, reference).
    pub async fn by_keys(
        conn: &mut AsyncPgConnection,
        keys: &[(&str, &str)],
    ) -> QueryResult<Vec<LedgerRow>> {
        let (sources, references): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        diesel::sql_query(format!(
            "SELECT {LEDGER_COLUMNS} FROM inventory.ledger \
             WHERE (source, reference) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        ))
        .bind::<Array<Text>, _>(sources)
        .bind::<Array<Text>, _>(references)
        .load(conn)
        .await
    }

    /// Appends rows (one statement for the batch); returns them as stored.
    pub async fn insert(
        conn: &mut AsyncPgConnection,
        rows: &[NewLedgerRow<'_>],
    ) -> QueryResult<Vec<LedgerRow>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let text = |f: for<'r> fn(&'r NewLedgerRow<'_>) -> &'r str| {
            rows.iter().map(f).collect::<Vec<&str>>()
        };
        let num = |f: fn(&NewLedgerRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        diesel::sql_query(format!(
            "INSERT INTO inventory.ledger (source, reference, sku, warehouse, type, quantity, \
                 expected_on_hand, delta, quantity_before, quantity_after, reason) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                 $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[]) \
             RETURNING {LEDGER_COLUMNS}"
        ))
        .bind::<Array<Text>, _>(text(|r| r.source))
        .bind::<Array<Text>, _>(text(|r| r.reference))
        .bind::<Array<Text>, _>(text(|r| r.sku))
        .bind::<Array<Text>, _>(text(|r| r.warehouse))
        .bind::<Array<Text>, _>(text(|r| r.kind))
        .bind::<Array<BigInt>, _>(num(|r| r.quantity))
        .bind::<Array<Nullable<BigInt>>, _>(rows.iter().map(|r| r.expected_on_hand).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(num(|r| r.after - r.before))
        .bind::<Array<BigInt>, _>(num(|r| r.before))
        .bind::<Array<BigInt>, _>(num(|r| r.after))
        .bind::<Array<Nullable<Text>>, _>(rows.iter().map(|r| r.reason).collect::<Vec<_>>())
        .load(conn)
        .await
    }
}

/// A stock row whose on hand differs from the sum of its ledger entries.
#[derive(Debug, Serialize, QueryableByName, utoipa::ToSchema)]
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

impl Mismatch {
    /// Every stock row whose on hand is not the sum of its ledger's deltas.
    pub async fn all(conn: &mut AsyncPgConnection) -> QueryResult<Vec<Mismatch>> {
        diesel::sql_query(
            "SELECT s.sku, s.warehouse, s.on_hand, COALESCE(l.total, 0)::bigint AS ledger_sum \
             FROM inventory.stock s \
             LEFT JOIN (SELECT sku, warehouse, SUM(delta) AS total FROM inventory.ledger \
                 GROUP BY sku, warehouse) l ON l.sku = s.sku AND l.warehouse = s.warehouse \
             WHERE s.on_hand <> COALESCE(l.total, 0) ORDER BY s.sku, s.warehouse",
        )
        .load(conn)
        .await
    }
}
