pub mod adjustments;
pub mod products;
pub mod stock;
