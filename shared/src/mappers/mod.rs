//! Pure conversions between the external systems' formats and the canonical records. No I/O:
//! connectors call these and send the result with [`crate::outbound`].

pub mod erp;
pub mod pos;
pub mod shop;
pub mod wms;
