//! Products: the reorder data stock alerts are computed from.

use actix_web::{HttpResponse, get, put, web};
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use shared::{
    http::{Admin, ApiError, Reader, parse_json},
    schemas::is_subject_safe,
};

use crate::AppState;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    pub name: String,
    #[serde(default)]
    pub reorder_point: i64,
    #[serde(default)]
    pub reorder_quantity: i64,
}

#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct Product {
    #[diesel(sql_type = Text)]
    pub sku: String,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = BigInt)]
    pub reorder_point: i64,
    #[diesel(sql_type = BigInt)]
    pub reorder_quantity: i64,
    #[diesel(sql_type = Nullable<Bool>)]
    pub shop_available: Option<bool>,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "sku, name, reorder_point, reorder_quantity, shop_available, updated_at";

/// Creates or updates a product (admin).
#[utoipa::path(put, path = "/products/{sku}", tag = "inventory", params(("sku" = String, Path, description = "product sku")), security(("admin_token" = [])),
    request_body = ProductRequest, responses((status = 200, description = "the product", body = Product), (status = 422, description = "invalid field")))]
#[put("/products/{sku}")]
pub async fn put_product(
    _: Admin,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let request: ProductRequest = parse_json(&body)?;
    if !is_subject_safe(&sku) {
        return Err(ApiError::field("sku", "sku must be 1-64 letters, digits, '.', '_' or '-'"));
    }
    if request.name.trim().is_empty()
        || request.name.len() > 200
        || request.name.chars().any(char::is_control)
    {
        return Err(ApiError::field(
            "name",
            "name must be 1-200 characters without control characters",
        ));
    }
    if request.reorder_point < 0 {
        return Err(ApiError::field("reorder_point", "reorder_point must not be negative"));
    }
    if request.reorder_quantity < 0 {
        return Err(ApiError::field("reorder_quantity", "reorder_quantity must not be negative"));
    }
    let mut conn = state.platform.db.get().await?;
    let product: Product = diesel::sql_query(format!(
        "INSERT INTO inventory.products (sku, name, reorder_point, reorder_quantity) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, reorder_point = excluded.reorder_point, \
           reorder_quantity = excluded.reorder_quantity, updated_at = now() \
         RETURNING {COLUMNS}"
    ))
    .bind::<Text, _>(sku.as_str())
    .bind::<Text, _>(request.name.trim())
    .bind::<BigInt, _>(request.reorder_point)
    .bind::<BigInt, _>(request.reorder_quantity)
    .get_result(&mut conn)
    .await?;
    Ok(HttpResponse::Ok().json(product))
}

/// A product.
#[utoipa::path(get, path = "/products/{sku}", tag = "inventory", params(("sku" = String, Path, description = "product sku")), security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "the product", body = Product), (status = 404, description = "unknown product")))]
#[get("/products/{sku}")]
pub async fn get_product(
    _: Reader,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.platform.db.get().await?;
    let product: Product =
        diesel::sql_query(format!("SELECT {COLUMNS} FROM inventory.products WHERE sku = $1"))
            .bind::<Text, _>(sku.as_str())
            .get_result(&mut conn)
            .await
            .map_err(|e| match e {
                diesel::result::Error::NotFound => ApiError::NotFound(format!("product {sku}")),
                e => e.into(),
            })?;
    Ok(HttpResponse::Ok().json(product))
}
