//! user-sync: SCIM 2.0 server and LDAP/Active Directory pull into the local directory.
//!
//! `user-sync [serve]` runs the service; `user-sync migrate` applies database migrations and exits.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::app::main(user_sync::Config::from_env, |c| &c.common, user_sync::run).await
}
