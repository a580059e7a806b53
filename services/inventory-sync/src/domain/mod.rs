//! The stock ledger's domain logic.

pub mod adjuster;
pub mod adjustment;
pub mod alerts;
pub mod plan;
