//! `inventory.products`: the reorder data stock alerts are computed from.

use chrono::{DateTime, Utc};
use diesel::{prelude::*, upsert::excluded};
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
