//! The shared plumbing against the real PostgreSQL and NATS on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod bus;
mod db;
mod ingress;
mod nats_auth;
mod notify;
mod pg_tls;
mod retention;
mod settings;
mod telemetry;
