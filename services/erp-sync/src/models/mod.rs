//! The `erp` schema's tables as diesel knows them ([`schema`]).

pub mod schema;
