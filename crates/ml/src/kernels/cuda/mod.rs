//! CUDA kernels (compiled to PTX by `build.rs`, embedded, JIT-compiled by the driver at first
//! use) as candle custom ops whose backward is another CUDA op, so autograd works through them:
//! LayerNorm, RMSNorm, softmax cross-entropy, attention without the score matrix, and a fused
//! in-place AdamW step. Each `.cu` file sits beside its Rust wrapper. Inputs must be contiguous.
//!
//! `check_all` compares each with its composite form on the device; nothing here is tested
//! without a GPU beyond compiling.

mod adamw;
mod attention;
mod attention_grad;
mod attention_launch;
mod check;
mod check_attention;
mod cross_entropy;
mod inplace;
mod launch;
mod norm;

pub use adamw::{AdamWStep, adamw_step};
pub use attention::grouped_attention;
pub use check::{KernelCheck, check_all};
pub use cross_entropy::cross_entropy;
pub use norm::{layer_norm, rms_norm};
