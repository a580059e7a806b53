//! erp-sync: ERP -> local customers, orders, lines, invoices, purchase orders and shipments.
//!
//! `erp-sync [serve]` runs the service; `erp-sync migrate` applies database migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(erp_sync::Config::from_env, |c| &c.common, erp_sync::run).await
}
