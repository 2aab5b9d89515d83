//! Plain candle code for data, models and training: functions over paths and tensors.
//!
//! Never imports the engine, stages, SQLite or the cache (DESIGN.md, "the one rule").

pub mod bundle;
pub mod clip_train;
pub mod data;
pub mod fast_math;
pub mod fused;
pub mod fused_attention;
pub mod fused_linear;
pub mod fused_lm;
pub mod fused_loss;
pub mod generate;
pub mod layers;
pub mod lm_ops;
pub mod lm_train;
pub mod matmul;
pub mod models;
pub mod ops;
pub mod optim;
pub mod params;
pub mod plot;
pub mod rng;
pub mod schedule;
pub mod train;
pub mod train_loop;
pub mod vlm_eval;
pub mod vlm_folder;
pub mod vlm_train;
pub mod zero_shot;

#[cfg(test)]
mod reference_tests;
