//! Reading stock, the ledger and the reconciliation report.

use actix_web::{HttpResponse, get, web};
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::{Deserialize, Serialize};
use shared::http::{ApiError, Reader};

use crate::AppState;

#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct StockLevel {
    #[diesel(sql_type = Text)]
    pub warehouse: String,
    #[diesel(sql_type = BigInt)]
    pub on_hand: i64,
    #[diesel(sql_type = BigInt)]
    pub reserved: i64,
    #[diesel(sql_type = BigInt)]
    pub available: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Timestamptz)]
    pub updated_at: DateTime<Utc>,
}

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
    #[derive(diesel::QueryableByName)]
    struct Found {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let found: Found =
        diesel::sql_query("SELECT count(*) AS n FROM inventory.products WHERE sku = $1")
            .bind::<Text, _>(sku)
            .get_result(conn)
            .await?;
    if found.n == 0 {
        return Err(ApiError::NotFound(format!("product {sku}")));
    }
    Ok(())
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
    let warehouses: Vec<StockLevel> = diesel::sql_query(
        "SELECT warehouse, on_hand, reserved, available, version, updated_at FROM inventory.stock \
         WHERE sku = $1 ORDER BY warehouse",
    )
    .bind::<Text, _>(sku.as_str())
    .load(&mut conn)
    .await?;
    let on_hand = warehouses.iter().map(|w| w.on_hand).sum();
    Ok(HttpResponse::Ok().json(StockReport { sku: sku.into_inner(), on_hand, warehouses }))
}

#[derive(Debug, Serialize, diesel::QueryableByName, utoipa::ToSchema)]
pub struct LedgerEntry {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub warehouse: String,
    #[diesel(sql_type = Text)]
    pub source: String,
    #[diesel(sql_type = Text)]
    pub reference: String,
    #[diesel(sql_type = Text)]
    #[serde(rename = "type")]
    pub kind: String,
    #[diesel(sql_type = BigInt)]
    pub quantity: i64,
    #[diesel(sql_type = BigInt)]
    pub delta: i64,
    #[diesel(sql_type = BigInt)]
    pub quantity_before: i64,
    #[diesel(sql_type = BigInt)]
    pub quantity_after: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
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
    let entries: Vec<LedgerEntry> = diesel::sql_query(
        "SELECT id, warehouse, source, reference, type AS kind, quantity, delta, quantity_before, \
                quantity_after, reason, created_at \
         FROM inventory.ledger WHERE sku = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
    )
    .bind::<Text, _>(sku.as_str())
    .bind::<BigInt, _>(query.before.unwrap_or(i64::MAX))
    .bind::<BigInt, _>(limit)
    .load(&mut conn)
    .await?;
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
