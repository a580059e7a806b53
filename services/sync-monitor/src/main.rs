//! sync-monitor: health checks, alert routing (Slack, PagerDuty, email) and the dashboard.
//!
//! `sync-monitor [serve]` runs the service; `sync-monitor migrate` applies database migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(sync_monitor::Config::from_env, |c| &c.common, sync_monitor::run).await
}
