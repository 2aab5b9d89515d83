//! vlmflow: `make` for vision-language-model training.

pub mod alloc;
pub mod cli;
pub mod engine;
pub mod ml;
pub mod stages;
pub mod store;
