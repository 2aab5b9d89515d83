//! vlmflow: `make` for vision-language-model training.

pub mod engine;
pub mod store;
