//! `inventory.stock`: one row per sku and warehouse.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
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
