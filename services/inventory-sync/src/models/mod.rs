//! inventory's fixed tables: their diesel definitions ([`schema`], checked against the migrated
//! database by `tests/api/schema.rs`) and one model module per table, where its reads live.
//! The adjuster's set-based batch statements (`unnest`) stay raw SQL in
//! [`crate::domain::adjuster`].

pub mod count_mark;
pub mod ledger;
pub mod product;
pub mod schema;
pub mod stock;
