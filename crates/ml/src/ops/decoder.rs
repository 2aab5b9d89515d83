//! The differentiable ops a Llama/Qwen2-style decoder adds to `ops`: RMSNorm, rotary position
//! embeddings and the SwiGLU gate (grouped-query attention is `ops::grouped_attention`).
//!
//! Like `ops`, each has a composite form built from candle primitives with a working backward
//! (candle-nn's `rms_norm` and `rope` have none: CANDLE-NOTES.md) and a kernel from `kernels`,
//! chosen by `ops::backend`.

use std::sync::Arc;

use candle_core::{D, Device, Result, Tensor};

use super::backend::{Backend, backend};
use crate::kernels::{cpu, cuda};

// ---------------------------------------------------------------- RMSNorm

/// `x / sqrt(mean(x²) + eps) · w` over the last dim, computed in f32 whatever `x`'s dtype
/// (returned in `x`'s).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() != candle_core::DType::F32 {
        return super::precision::in_f32(x, |x| rms_norm(x, w, eps));
    }
    let w = &super::cast_like(w, x)?;
    match backend(x) {
        Backend::Cpu => {
            let op = cpu::norm::RmsNorm { eps: eps as f32 };
            x.contiguous()?.apply_op2(&w.contiguous()?, op)
        }
        Backend::Cuda => cuda::rms_norm(&x.contiguous()?, w, eps as f32),
        Backend::Composite => rms_norm_composite(x, w, eps),
    }
}

pub fn rms_norm_composite(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

// ---------------------------------------------------------------- SwiGLU

/// `silu(gate) · up`.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    match backend(gate) {
        // The kernel takes no broadcast.
        Backend::Cpu if gate.shape() == up.shape() => gate
            .contiguous()?
            .apply_op2(&up.contiguous()?, cpu::activation::SwiGlu),
        _ => gate.silu()? * up,
    }
}

// ---------------------------------------------------------------- Rotary embedding

/// Rotary position embedding tables for one batch: `cos` and `sin` of `position · θ^(−2i/d)`
/// for every row `(n, t)` and `i < d/2`, applied "rotate half" style as in Hugging Face's
/// Llama/Qwen2 (the two halves of each head, not interleaved pairs).
#[derive(Clone, Debug)]
pub struct Rotary {
    cos: Arc<[f32]>,
    sin: Arc<[f32]>,
    n: usize,
    t: usize,
    head_dim: usize,
    device: Device,
}

impl Rotary {
    /// `positions`: `n·t` values, row-major `(n, t)`; `head_dim` even; `theta` the base.
    pub fn new(
        positions: &[usize],
        n: usize,
        t: usize,
        head_dim: usize,
        theta: f64,
        device: &Device,
    ) -> Result<Self> {
        if positions.len() != n * t || head_dim == 0 || !head_dim.is_multiple_of(2) {
            candle_core::bail!(
                "rotary: {} positions for ({n}, {t}), head size {head_dim} (must be even)",
                positions.len()
            );
        }
        let half = head_dim / 2;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-((2 * i) as f64) / head_dim as f64))
            .collect();
        let (mut cos, mut sin) = (
            Vec::with_capacity(n * t * half),
            Vec::with_capacity(n * t * half),
        );
        for &p in positions {
            for f in &inv_freq {
                let angle = p as f64 * f;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Ok(Self {
            cos: cos.into(),
            sin: sin.into(),
            n,
            t,
            head_dim,
            device: device.clone(),
        })
    }

    /// Rotates `x`: `(N, T, H·d)` with `(N, T)` as given to `new`.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let (n, t, _) = x.dims3()?;
        if (n, t) != (self.n, self.t) {
            candle_core::bail!(
                "rotary: tables for ({}, {}), input ({n}, {t}, _)",
                self.n,
                self.t
            );
        }
        match backend(x) {
            Backend::Cpu => {
                let op = cpu::rope::Rope {
                    cos: self.cos.clone(),
                    sin: self.sin.clone(),
                    head_dim: self.head_dim,
                };
                x.contiguous()?.apply_op1(op)
            }
            Backend::Cuda | Backend::Composite => self.apply_composite(x),
        }
    }

    pub fn apply_composite(&self, x: &Tensor) -> Result<Tensor> {
        let (n, t, c) = x.dims3()?;
        let (d, half) = (self.head_dim, self.head_dim / 2);
        let table = |v: &Arc<[f32]>| {
            Tensor::from_slice(v, (n, t, 1, half), &self.device)?.to_dtype(x.dtype())
        };
        let (cos, sin) = (table(&self.cos)?, table(&self.sin)?);
        let x = x.reshape((n, t, c / d, d))?;
        let (a, b) = (x.narrow(3, 0, half)?, x.narrow(3, half, half)?);
        let ya = (a.broadcast_mul(&cos)? - b.broadcast_mul(&sin)?)?;
        let yb = (b.broadcast_mul(&cos)? + a.broadcast_mul(&sin)?)?;
        Tensor::cat(&[ya, yb], 3)?.reshape((n, t, c))
    }
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
