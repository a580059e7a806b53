//! The `crm` schema's tables, one module each.

pub mod records;
pub mod schema;
pub mod sync_state;
