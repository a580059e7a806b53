//! Products: the reorder data stock alerts are computed from.

use actix_web::{HttpResponse, get, put, web};
use serde::Deserialize;
use shared::{
    http::{Admin, ApiError, Reader, parse_json},
    schemas::is_subject_safe,
};

use crate::{
    AppState,
    models::product::{NewProduct, Product},
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductRequest {
    pub name: String,
    #[serde(default)]
    pub reorder_point: i64,
    #[serde(default)]
    pub reorder_quantity: i64,
}

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
    let product = Product::upsert(
        &mut conn,
        &NewProduct {
            sku: sku.as_str(),
            name: request.name.trim(),
            reorder_point: request.reorder_point,
            reorder_quantity: request.reorder_quantity,
        },
    )
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
    let product = Product::find(&mut conn, &sku)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product {sku}")))?;
    Ok(HttpResponse::Ok().json(product))
}
