//! Plain candle code for data, models and training: functions over paths and tensors.
//!
//! Never imports the engine, stages, SQLite or the cache (DESIGN.md, "the one rule").
//!
//! The rooms, from the bottom up:
//! - `kernels`: hand-written compute kernels with analytic backward (CPU today), below candle's tensors.
//! - `ops`: the differentiable ops and layers models are written in; each picks a kernel or its
//!   composite candle form in one place (`ops::backend`).
//! - `models`: CLIP, ViT, Qwen2, the VLM, and the files their weights live in.
//! - `data`: datasets, shards, tokenizers, images: everything before a tensor.
//! - `train`: optimizer, schedule, steps and checkpoints, the shared loop and the trainers.
//! - `infer`: what uses a trained model: generation, chat bundles, evaluations.
//!
//! Beside them, `param_store` (the named trainable parameters every model is built from) and `rng`
//! (the one seeded generator: initial weights, shuffles, sampling, synthetic data).

pub mod data;
pub mod infer;
pub mod kernels;
pub mod models;
pub mod ops;
pub mod param_store;
pub mod rng;
pub mod train;

#[cfg(test)]
mod reference_tests;
