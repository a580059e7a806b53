//! Black-box tests of erp-sync against the real PostgreSQL and NATS.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod bulk;
mod conflicts;
mod helpers;
mod ledger;
mod push;
mod schema;
mod webhooks;
