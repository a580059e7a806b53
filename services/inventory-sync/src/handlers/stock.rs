//! Reading stock, the ledger and the reconciliation report.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use shared::http::{ApiError, Reader};

use crate::{
    AppState,
    models::{ledger::LedgerEntry, product::Product, stock::StockLevel},
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StockReport {
    pub sku: String,
    pub on_hand: i64,
    pub warehouses: Vec<StockLevel>,
}

async fn ensure_product(
    conn: &mut diesel_async::AsyncPgConnection,
    sku: &str,
) -> Result<(), ApiError> {
    match Product::find(conn, sku).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("product {sku}"))),
    }
}

/// Stock of a sku per warehouse.
#[utoipa::path(get, path = "/stock/{sku}", tag = "inventory", params(("sku" = String, Path, description = "product sku")), security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "stock per warehouse", body = StockReport), (status = 404, description = "unknown product")))]
#[get("/stock/{sku}")]
pub async fn get_stock(
    _: Reader,
    state: web::Data<AppState>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut conn = state.platform.db.get().await?;
    ensure_product(&mut conn, &sku).await?;
    let warehouses = StockLevel::of_sku(&mut conn, &sku).await?;
    let on_hand = warehouses.iter().map(|w| w.on_hand).sum();
    Ok(HttpResponse::Ok().json(StockReport { sku: sku.into_inner(), on_hand, warehouses }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Only entries with a smaller id (paging backwards).
    before: Option<i64>,
    /// At most this many entries (default 100, max 1000).
    limit: Option<i64>,
}

/// Ledger entries of a sku, newest first.
#[utoipa::path(get, path = "/ledger/{sku}", tag = "inventory", security(("api_key" = []), ("admin_token" = [])),
    params(("sku" = String, Path, description = "product sku"), LedgerQuery), responses((status = 200, description = "ledger entries, newest first", body = Vec<LedgerEntry>), (status = 404, description = "unknown product")))]
#[get("/ledger/{sku}")]
pub async fn get_ledger(
    _: Reader,
    state: web::Data<AppState>,
    sku: web::Path<String>,
    query: web::Query<LedgerQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::field("limit", "limit must be between 1 and 1000"));
    }
    let mut conn = state.platform.db.get().await?;
    ensure_product(&mut conn, &sku).await?;
    let entries =
        LedgerEntry::page(&mut conn, &sku, query.before.unwrap_or(i64::MAX), limit).await?;
    Ok(HttpResponse::Ok().json(entries))
}

/// Checks that every stock row equals the sum of its ledger entries.
#[utoipa::path(get, path = "/reconciliation", tag = "inventory", security(("api_key" = []), ("admin_token" = [])),
    responses((status = 200, description = "all rows agree", body = crate::reconcile::Report),
              (status = 409, description = "mismatches found", body = crate::reconcile::Report)))]
#[get("/reconciliation")]
pub async fn get_reconciliation(
    _: Reader,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let report = crate::reconcile::check(&state).await?;
    Ok(if report.mismatches.is_empty() {
        HttpResponse::Ok().json(report)
    } else {
        HttpResponse::Conflict().json(report)
    })
}
