//! The shared crate of datasync: canonical schemas, mappers between external formats and those
//! schemas, and the plumbing every service is built from (configuration, telemetry, database,
//! NATS bus with outbox/inbox, HTTP errors and authentication, health endpoints, runtime
//! settings). A service crate only adds its own domain on top of [`app::Application`].

pub mod admin;
pub mod app;
pub mod bulk;
pub mod bus;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod ingress;
pub mod mappers;
pub mod merge;
pub mod metrics;
pub mod notify;
pub mod outbound;
pub mod platform;
pub mod push;
pub mod record_errors;
pub mod resolutions;
pub mod retention;
pub mod schemas;
pub mod settings;
pub mod telemetry;
pub mod tls;
