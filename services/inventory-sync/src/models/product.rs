//! `inventory.products`: the reorder data stock alerts are computed from.

use chrono::{DateTime, Utc};
use diesel::{
    prelude::*,
    sql_types::{Bool, Nullable, Text},
    upsert::excluded,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

use super::schema::products;

#[derive(Debug, Serialize, Queryable, Selectable, utoipa::ToSchema)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub reorder_point: i64,
    pub reorder_quantity: i64,
    /// Availability last confirmed by the shop (`null`: never pushed).
    pub shop_available: Option<bool>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = products)]
pub struct NewProduct<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub reorder_point: i64,
    pub reorder_quantity: i64,
}

impl Product {
    pub async fn find(conn: &mut AsyncPgConnection, sku: &str) -> QueryResult<Option<Product>> {
        products::table.find(sku).select(Product::as_select()).first(conn).await.optional()
    }

    /// Creates the product or updates its name and reorder data.
    pub async fn upsert(
        conn: &mut AsyncPgConnection,
        product: &NewProduct<'_>,
    ) -> QueryResult<Product> {
        diesel::insert_into(products::table)
            .values(product)
            .on_conflict(products::sku)
            .do_update()
            .set((
                products::name.eq(excluded(products::name)),
                products::reorder_point.eq(excluded(products::reorder_point)),
                products::reorder_quantity.eq(excluded(products::reorder_quantity)),
                products::updated_at.eq(diesel::dsl::now),
            ))
            .returning(Product::as_returning())
            .get_result(conn)
            .await
    }
}

/// What stock alerts need of a product.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg))]
pub struct ReorderData {
    pub sku: String,
    pub name: String,
    pub reorder_point: i64,
}

impl ReorderData {
    /// The products among `skus` (unknown skus are absent).
    pub async fn of(conn: &mut AsyncPgConnection, skus: &[&str]) -> QueryResult<Vec<ReorderData>> {
        products::table
            .filter(products::sku.eq_any(skus))
            .select(ReorderData::as_select())
            .load(conn)
            .await
    }
}

/// Whether a product is in stock anywhere, and what the shop was last told.
#[derive(Debug, QueryableByName)]
pub struct Availability {
    #[diesel(sql_type = Bool)]
    pub in_stock: bool,
    #[diesel(sql_type = Nullable<Bool>)]
    pub shop_available: Option<bool>,
}

impl Availability {
    /// Locks the product row (so pushes of two warehouses cannot decide on stale totals) and
    /// reads its availability.
    pub async fn lock(conn: &mut AsyncPgConnection, sku: &str) -> QueryResult<Availability> {
        products::table.find(sku).select(products::sku).for_no_key_update().execute(conn).await?;
        diesel::sql_query(
            "SELECT COALESCE(SUM(s.on_hand), 0) > 0 AS in_stock, p.shop_available \
             FROM inventory.products p LEFT JOIN inventory.stock s ON s.sku = p.sku \
             WHERE p.sku = $1 GROUP BY p.shop_available",
        )
        .bind::<Text, _>(sku)
        .get_result(conn)
        .await
    }

    /// Records what the shop now has.
    pub async fn confirm(
        conn: &mut AsyncPgConnection,
        sku: &str,
        available: bool,
    ) -> QueryResult<()> {
        diesel::update(products::table.find(sku))
            .set((
                products::shop_available.eq(available),
                products::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// SQL returning the push key (`<warehouse>/<sku>`, a warehouse of the product) of every
    /// product whose availability on the shop differs from its stock.
    pub const UNSETTLED_SQL: &'static str = "SELECT min(s.warehouse) || '/' || p.sku \
         FROM inventory.products p JOIN inventory.stock s ON s.sku = p.sku \
         GROUP BY p.sku, p.shop_available \
         HAVING p.shop_available IS DISTINCT FROM (SUM(s.on_hand) > 0)";
}
