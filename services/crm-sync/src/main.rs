//! crm-sync: CRM (Salesforce, HubSpot) <-> local contacts, accounts and opportunities.
//!
//! `crm-sync [serve]` runs the service; `crm-sync migrate` applies database migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(crm_sync::Config::from_env, |c| &c.common, crm_sync::run).await
}
