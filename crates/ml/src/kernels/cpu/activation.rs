//! Elementwise activations with analytic backward: GELU (tanh approximation), QuickGELU, and the
//! SwiGLU gate of the Qwen2 MLP.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::fast_math::{fast_exp, fast_tanh};
use super::rows::{cpu_tensor, slice, with_data, zip_map};

// ---------------------------------------------------------------- GELU

/// GELU, tanh approximation (PyTorch's `approximate="tanh"`): cheaper than erf, same quality.
pub struct Gelu;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

#[inline(always)]
fn gelu_fwd(x: f32) -> f32 {
    0.5 * x * (1.0 + fast_tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x)))
}

#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let t = fast_tanh(SQRT_2_OVER_PI * (x + GELU_C * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_C * x * x)
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "fused-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "gelu")?;
        // zip_map takes two inputs; the forward needs one, so x goes in twice.
        let y = zip_map(x, x, |v, _| gelu_fwd(v));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_data(x, |xs| {
            with_data(grad, |g| Ok(zip_map(xs, g, |v, g| g * gelu_grad(v))))
        })?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}

// ---------------------------------------------------------------- QuickGELU

/// QuickGELU, `x·σ(1.702·x)`: OpenAI CLIP's activation, so that its checkpoints run as trained.
pub struct QuickGelu;

const QUICK_GELU_K: f32 = 1.702;

impl CustomOp1 for QuickGelu {
    fn name(&self) -> &'static str {
        "fused-quick-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "quick-gelu")?;
        let y = zip_map(x, x, |v, _| v / (1.0 + (-QUICK_GELU_K * v).exp()));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // d/dx x·σ(kx) = σ(kx) + k·x·σ(kx)·(1 − σ(kx))
        let dx = with_data(x, |xs| {
            with_data(grad, |g| {
                Ok(zip_map(xs, g, |v, g| {
                    let s = 1.0 / (1.0 + (-QUICK_GELU_K * v).exp());
                    g * (s + QUICK_GELU_K * v * s * (1.0 - s))
                }))
            })
        })?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}

// ---------------------------------------------------------------- SwiGLU

/// `silu(gate) · up`, the gated MLP's middle. Args: gate, up (same shape).
pub struct SwiGlu;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, "swiglu")?, slice(s2, l2, "swiglu")?);
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} and up {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let y = zip_map(a, b, |a, b| a * sigmoid(a) * b);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d gate = g·up·σ(a)·(1 + a·(1 − σ(a))),  d up = g·a·σ(a).
        let (da, db) = with_data(gate, |a| {
            with_data(up, |b| {
                with_data(grad, |g| {
                    let gb = zip_map(g, b, |g, b| g * b);
                    let da = zip_map(a, &gb, |a, gb| {
                        let s = sigmoid(a);
                        gb * s * (1.0 + a * (1.0 - s))
                    });
                    let db = zip_map(a, g, |a, g| g * a * sigmoid(a));
                    Ok((da, db))
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(da, gate.shape())?),
            Some(cpu_tensor(db, up.shape())?),
        ))
    }
}
