//! Mixed precision: the dtype a model's activations are computed in.
//!
//! Parameters stay f32 (the optimizer's master weights). Under `with_precision(Bf16, …)` a model's
//! inputs enter in bf16 (`to_compute`) and the dtype then follows the activations: a linear layer
//! or attention casts its f32 weights to its input's dtype, so matmuls and attention run in bf16,
//! while norms, softmax and losses upcast and compute in f32 (`in_f32`). Gradients flow back
//! through each cast into the f32 weights. This is PyTorch autocast's split, made explicit at the
//! few places a model's inputs enter.

use std::cell::Cell;

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 activations, matmuls and attention; f32 weights, optimizer state, norms and losses.
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

thread_local! {
    static COMPUTE: Cell<DType> = const { Cell::new(DType::F32) };
}

/// Runs `f` (a forward pass) with inputs entering in `precision`'s dtype on this thread.
pub fn with_precision<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    let before = COMPUTE.with(|c| c.replace(precision.dtype()));
    let out = f();
    COMPUTE.with(|c| c.set(before));
    out
}

/// `x` in the dtype set by `with_precision` (f32 outside it): where a model's inputs enter
/// (images, token embeddings).
pub fn to_compute(x: &Tensor) -> Result<Tensor> {
    to_dtype(x, COMPUTE.with(|c| c.get()))
}

/// `p` (a parameter, or a mask) in the dtype of the activations `x` it meets.
pub fn cast_like(p: &Tensor, x: &Tensor) -> Result<Tensor> {
    to_dtype(p, x.dtype())
}

/// `f` computed on `x` in f32, returned in `x`'s dtype: for norms and softmax, whose sums lose
/// too much in bf16.
pub(crate) fn in_f32(x: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    if x.dtype() == DType::F32 {
        return f(x);
    }
    f(&x.to_dtype(DType::F32)?)?.to_dtype(x.dtype())
}

fn to_dtype(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        Ok(x.clone())
    } else {
        x.to_dtype(dtype)
    }
}
