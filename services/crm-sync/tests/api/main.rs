//! Black-box tests of crm-sync against the real PostgreSQL, NATS and SMTP, with the sandbox's
//! HubSpot CRM (its objects v3 API and native webhooks) standing in for the CRM (it keeps its own records and changes them first,
//! as a real one does).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

mod bulk;
mod conflicts;
mod helpers;
mod hubspot;
mod inbound;
mod ledger;
mod outbound;
mod schema;
