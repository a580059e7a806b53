//! inventory-sync: the stock ledger and its fan-out to ERP, e-commerce, POS and WMS.
//!
//! `inventory-sync [serve]` runs the service; `inventory-sync migrate` applies database
//! migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(inventory_sync::Config::from_env, |c| &c.common, inventory_sync::run).await
}
