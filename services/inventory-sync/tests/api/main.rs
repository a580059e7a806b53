//! Black-box tests of inventory-sync against the real PostgreSQL and NATS, with the sandbox
//! standing in for the ERP, shop, POS and WMS.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod adjustments;
mod bulk;
mod convergence;
mod fanout;
mod helpers;
mod operations;
mod schema;
