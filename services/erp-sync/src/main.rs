//! erp-sync: ERP -> local orders, lines, invoices, purchase orders and shipments.
//!
//! `erp-sync [serve]` runs the service; `erp-sync migrate` applies database migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(erp_sync::config, |c| c, erp_sync::run).await
}
