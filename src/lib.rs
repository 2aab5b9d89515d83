//! vlmflow: `make` for vision-language-model training. This crate is the command line; the rooms
//! are crates of their own: `vlmflow-engine` (Stagefile, DAG, keys, scheduling, the kind contract),
//! `vlmflow-store` (objects and run records), `vlmflow-ml` (candle code) and `vlmflow-stages` (the
//! built-in kinds, where the engine's contract meets the ML code).

pub mod alloc;
pub mod cli;
