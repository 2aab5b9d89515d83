pub mod data;
pub mod plot;
