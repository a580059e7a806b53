//! conflict-resolver: conflict queue, automatic rules and manual review.
//!
//! `conflict-resolver [serve]` runs the service; `conflict-resolver migrate` applies database migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(conflict_resolver::Config::from_env, |c| &c.common, conflict_resolver::run)
        .await
}
