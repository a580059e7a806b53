//! URLs of inventory-sync (the operator and admin endpoints are mounted by the platform).

use actix_web::web;

use crate::handlers::{adjustments, products, stock};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(adjustments::post_adjustment)
        .service(products::put_product)
        .service(products::get_product)
        .service(stock::get_stock)
        .service(stock::get_ledger)
        .service(stock::get_reconciliation);
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(description = "Stock ledger with fan-out to ERP, e-commerce, POS and WMS"),
    paths(
        adjustments::post_adjustment,
        products::put_product,
        products::get_product,
        stock::get_stock,
        stock::get_ledger,
        stock::get_reconciliation
    )
)]
pub struct ApiDoc;
