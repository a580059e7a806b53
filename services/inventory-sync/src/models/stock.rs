//! `inventory.stock`: one row per sku and warehouse.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Array, BigInt, Nullable, Text},
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use super::schema::stock;

/// A sku's stock in one warehouse, as readers see it.
#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = stock, check_for_backend(diesel::pg::Pg))]
pub struct StockLevel {
    pub warehouse: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

impl StockLevel {
    /// Every warehouse's stock of `sku`, by warehouse.
    pub async fn of_sku(conn: &mut AsyncPgConnection, sku: &str) -> QueryResult<Vec<StockLevel>> {
        stock::table
            .filter(stock::sku.eq(sku))
            .order(stock::warehouse)
            .select(StockLevel::as_select())
            .load(conn)
            .await
    }

    /// How many stock rows there are.
    pub async fn count(conn: &mut AsyncPgConnection) -> QueryResult<i64> {
        stock::table.count().get_result(conn).await
    }
}

/// A stock row as the adjuster and the push engine use it.
#[derive(Debug, QueryableByName)]
pub struct StockRow {
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub warehouse: String,
    #[diesel(sql_type = BigInt)]
    pub on_hand: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    /// The system the latest change of the level came from.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_source: Option<String>,
}

/// A row's new level after a batch of adjustments.
pub struct NewLevel<'a> {
    pub sku: &'a str,
    pub warehouse: &'a str,
    pub on_hand: i64,
    pub version: i64,
    pub last_source: &'a str,
}

impl StockRow {
    /// Creates the missing rows of `keys` (sku, warehouse) and locks all of them in a fixed
    /// order (no deadlocks between batches or replicas).
    pub async fn lock(
        conn: &mut AsyncPgConnection,
        keys: &[(&str, &str)],
    ) -> QueryResult<Vec<StockRow>> {
        let (skus, warehouses): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        diesel::sql_query(
            "INSERT INTO inventory.stock (sku, warehouse) \
             SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1, 2 ON CONFLICT DO NOTHING",
        )
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&warehouses)
        .execute(conn)
        .await?;
        diesel::sql_query(
            "SELECT sku, warehouse, on_hand, version, last_source FROM inventory.stock \
             WHERE (sku, warehouse) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
             ORDER BY sku, warehouse FOR UPDATE",
        )
        .bind::<Array<Text>, _>(&skus)
        .bind::<Array<Text>, _>(&warehouses)
        .load(conn)
        .await
    }

    /// The rows of `keys` (warehouse, sku), by sku then warehouse (unknown keys are absent).
    pub async fn by_warehouse_and_sku(
        conn: &mut AsyncPgConnection,
        keys: &[(&str, &str)],
    ) -> QueryResult<Vec<StockRow>> {
        let (warehouses, skus): (Vec<&str>, Vec<&str>) = keys.iter().copied().unzip();
        diesel::sql_query(
            "SELECT sku, warehouse, on_hand, version, last_source FROM inventory.stock \
             WHERE (warehouse, sku) IN (SELECT * FROM unnest($1::text[], $2::text[])) \
             ORDER BY sku, warehouse",
        )
        .bind::<Array<Text>, _>(warehouses)
        .bind::<Array<Text>, _>(skus)
        .load(conn)
        .await
    }

    /// Writes new levels (one statement for the batch).
    pub async fn update_levels(
        conn: &mut AsyncPgConnection,
        levels: &[NewLevel<'_>],
    ) -> QueryResult<()> {
        if levels.is_empty() {
            return Ok(());
        }
        diesel::sql_query(
            "UPDATE inventory.stock s SET on_hand = v.on_hand, version = v.version, \
                 last_source = v.last_source, updated_at = now() \
             FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[]) \
                 AS v(sku, warehouse, on_hand, version, last_source) \
             WHERE s.sku = v.sku AND s.warehouse = v.warehouse",
        )
        .bind::<Array<Text>, _>(levels.iter().map(|l| l.sku).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(levels.iter().map(|l| l.warehouse).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(levels.iter().map(|l| l.on_hand).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(levels.iter().map(|l| l.version).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(levels.iter().map(|l| l.last_source).collect::<Vec<_>>())
        .execute(conn)
        .await?;
        Ok(())
    }
}
