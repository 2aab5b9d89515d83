//! The differentiable ops models are written in, safe for training.
//!
//! Each op has a composite form built only from candle primitives whose backward is known to work
//! (CANDLE-NOTES.md: candle-nn's fused `layer_norm`, `softmax_last_dim`, `rms_norm` and `sdpa`
//! silently drop gradients), and, where it pays, a kernel from `kernels` with an analytic
//! backward. `backend` alone decides which one runs; tests check both forms agree.
//!
//! Here: the ops every model uses. `decoder`: what a Llama/Qwen2 decoder adds. `layers`: the
//! parameterised layers over them that model files are assembled from.

use candle_core::{D, DType, Device, Result, Tensor};

use crate::kernels::{cpu, cuda};

pub mod backend;
pub mod decoder;
pub mod layers;
pub mod precision;

pub use backend::with_composite;
use backend::{Backend, backend};
use precision::in_f32;
pub use precision::{Precision, cast_like, to_compute, with_precision};

/// A mask value that zeroes a softmax weight without the NaNs `-inf` brings to fully-masked rows.
pub const MASKED: f32 = -1e9;

// ---------------------------------------------------------------- LayerNorm

/// LayerNorm over the last dim, computed in f32 whatever `x`'s dtype (returned in `x`'s).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        return in_f32(x, |x| layer_norm(x, w, b, eps));
    }
    let (w, b) = (&cast_like(w, x)?, &cast_like(b, x)?);
    match backend(x) {
        Backend::Cpu => {
            let op = cpu::norm::LayerNorm { eps: eps as f32 };
            x.contiguous()?
                .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
        }
        Backend::Cuda => cuda::layer_norm(&x.contiguous()?, w, b, eps as f32),
        Backend::Composite => layer_norm_composite(x, w, b, eps),
    }
}

pub fn layer_norm_composite(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(w)?.broadcast_add(b)
}

// ---------------------------------------------------------------- Softmax

/// Softmax over the last dim, computed in f32 whatever `x`'s dtype (returned in `x`'s).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F32 {
        return in_f32(x, softmax);
    }
    match backend(x) {
        Backend::Cpu => x.contiguous()?.apply_op1(cpu::softmax::Softmax),
        Backend::Cuda | Backend::Composite => softmax_composite(x),
    }
}

pub fn softmax_composite(x: &Tensor) -> Result<Tensor> {
    // Subtract the row max (a constant for the gradient) so exp never overflows.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

// ---------------------------------------------------------------- Cross-entropy

/// Per-row cross-entropy of logits `(M, V)` against class indices `targets` `(M)` (any integer
/// dtype): `logsumexp(x[r]) − x[r, targets[r]]`, shape `(M)`, always in f32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.dtype() != DType::F32 {
        return cross_entropy(&logits.to_dtype(DType::F32)?, targets);
    }
    match backend(logits) {
        Backend::Cpu => {
            let targets = targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
            let op = cpu::cross_entropy::CrossEntropy { targets };
            logits.contiguous()?.apply_op1(op)
        }
        Backend::Cuda => cuda::cross_entropy(&logits.contiguous()?, targets),
        Backend::Composite => cross_entropy_composite(logits, targets),
    }
}

pub fn cross_entropy_composite(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    // Subtracting the row max (a constant for the gradient) keeps exp finite.
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let targets = targets.to_dtype(DType::U32)?.unsqueeze(1)?;
    (log_z - shifted.gather(&targets, 1)?)?.squeeze(1)
}

// ---------------------------------------------------------------- GELU

/// GELU with the tanh approximation (PyTorch `approximate="tanh"`, candle `Tensor::gelu`): its
/// backward needs no `erf`, which CANDLE-NOTES measured at 11% of a step on CPU.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    match backend(x) {
        Backend::Cpu => x.contiguous()?.apply_op1(cpu::activation::Gelu),
        Backend::Cuda | Backend::Composite => x.gelu(),
    }
}

/// QuickGELU, `x·σ(1.702·x)` (OpenAI CLIP's `quick_gelu`).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    match backend(x) {
        Backend::Cpu => x.contiguous()?.apply_op1(cpu::activation::QuickGelu),
        Backend::Cuda | Backend::Composite => quick_gelu_composite(x),
    }
}

pub fn quick_gelu_composite(x: &Tensor) -> Result<Tensor> {
    x * (x.affine(-1.702, 0.0)?.exp()? + 1.0)?.recip()?
}

// ---------------------------------------------------------------- Linear

/// `x + b` with `b` broadcast over the leading dims of `x` (`b`'s shape = `x`'s trailing dims).
pub fn bias_add(x: &Tensor, b: &Tensor) -> Result<Tensor> {
    let b = &cast_like(b, x)?;
    match backend(x) {
        Backend::Cpu => x
            .contiguous()?
            .apply_op2(&b.contiguous()?, cpu::bias_add::BiasAdd),
        Backend::Cuda | Backend::Composite => x.broadcast_add(b),
    }
}

/// `x @ wᵀ + b` for `x` of shape `(.., in)` and `w` of shape `(out, in)` (PyTorch layout).
///
/// The leading dims are folded into one so that a single 2-D matmul runs, and the weight gradient
/// is one GEMM rather than a batch of them summed afterwards. A kernel on CPU (`kernels/cpu/linear.rs`).
/// The weight and bias are cast to `x`'s dtype (`precision`).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let w = &cast_like(w, x)?;
    let b = b.map(|b| cast_like(b, x)).transpose()?;
    let b = b.as_ref();
    let dims = x.dims().to_vec();
    let Some((inner, lead)) = dims.split_last() else {
        candle_core::bail!("linear: input is a scalar")
    };
    let rows: usize = lead.iter().product();
    let x = x.reshape((rows, *inner))?;
    let y = match backend(&x) {
        Backend::Cpu => {
            let (x, w) = (x.contiguous()?, w.contiguous()?);
            match b {
                Some(b) => x.apply_op3(&w, &b.contiguous()?, cpu::linear::Linear)?,
                None => x.apply_op2(&w, cpu::linear::LinearNoBias)?,
            }
        }
        Backend::Cuda | Backend::Composite => {
            let y = x.matmul(&w.t()?)?;
            match b {
                Some(b) => y.broadcast_add(b)?,
                None => y,
            }
        }
    };
    let mut out = lead.to_vec();
    out.push(w.dim(0)?);
    y.reshape(out)
}

// ---------------------------------------------------------------- Attention

/// Scaled dot-product attention, written out: `softmax(q kᵀ / √d + mask) v`.
///
/// `q`, `k`, `v`: `(N, H, T, d)`. `mask`: additive (0 keeps, `MASKED` drops), broadcastable to
/// `(N, H, T, T)`, e.g. `causal_mask` `(T, T)` or `padding_mask` `(N, 1, 1, T)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    // Scaling q (T·d values) is cheaper than scaling the T·T scores.
    let q = (q * (1.0 / (d as f64).sqrt()))?;
    let scores = q.contiguous()?.matmul(&k.t()?.contiguous()?)?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(&cast_like(m, &scores)?)?,
        None => scores,
    };
    softmax(&scores)?.matmul(&v.contiguous()?)
}

/// Multi-head attention on `(N, T, C)` queries and `(N, S, C)` keys and values (S = T for
/// self-attention): heads are the C/`heads`-wide column blocks. Returns `(N, T, C)`, heads side
/// by side, ready for the output projection. `mask` as for `attention`.
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    grouped_attention(q, k, v, heads, heads, mask)
}

/// Attention with `heads` query heads sharing `kv_heads` key/value heads (grouped-query
/// attention; `kv_heads = heads` is plain multi-head attention).
///
/// `q`: `(N, Tq, H·d)`; `k`, `v`: `(N, Tk, KV·d)` (`Tk > Tq` when earlier keys come from a KV
/// cache, or for cross-attention); `mask`: additive, broadcastable to `(N, H, Tq, Tk)`. Returns
/// `(N, Tq, H·d)`. On CPU with a head-independent mask (broadcastable to `(N, 1, Tq, Tk)`) this
/// is one kernel (`kernels/cpu/attention.rs`); on CUDA, for the head dims and dtypes it covers,
/// one kernel that never holds the score matrix (`kernels/cuda/attention.rs`).
pub fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        candle_core::bail!(
            "attention: {heads} query heads cannot share {kv_heads} key/value heads"
        );
    }
    let (n, tq, c) = q.dims3()?;
    let tk = k.dim(1)?;
    let per_head = mask.is_none_or(|m| m.rank() < 4 || m.dim(1).is_ok_and(|h| h == 1));
    if backend(q) == Backend::Cuda
        && let Some(y) = cuda::grouped_attention(q, k, v, heads, kv_heads, mask)?
    {
        return Ok(y);
    }
    // The kernel takes one mask for all heads of a sample.
    if backend(q) == Backend::Cpu && per_head {
        let mask = match mask {
            None => None,
            Some(m) => {
                let shared = m.rank() < 3 || m.dim(0)? == 1;
                let mn = if shared { 1 } else { n };
                let m = m
                    .broadcast_as((mn, 1, tq, tk))?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                Some((m, mn))
            }
        };
        let op = cpu::attention::Attention {
            heads,
            kv_heads,
            mask,
        };
        return q
            .contiguous()?
            .apply_op3(&k.contiguous()?, &v.contiguous()?, op);
    }
    let rep = heads / kv_heads;
    let (k, v) = (repeat_kv(k, kv_heads, rep)?, repeat_kv(v, kv_heads, rep)?);
    let split = |x: &Tensor, t: usize| -> Result<Tensor> {
        // (N, T, C) -> (N, H, T, d)
        x.reshape((n, t, heads, c / heads))?
            .transpose(1, 2)?
            .contiguous()
    };
    let y = attention(&split(q, tq)?, &split(&k, tk)?, &split(&v, tk)?, mask)?;
    y.transpose(1, 2)?.contiguous()?.reshape((n, tq, c))
}

/// `(N, T, KV·d)` → `(N, T, KV·rep·d)`: each key/value head repeated for the `rep` query heads
/// that share it (query head `h` reads key/value head `h / rep`, as Hugging Face's `repeat_kv`).
pub fn repeat_kv(x: &Tensor, kv_heads: usize, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(x.clone());
    }
    let (n, t, c) = x.dims3()?;
    let d = c / kv_heads;
    x.reshape((n, t, kv_heads, 1, d))?
        .broadcast_as((n, t, kv_heads, rep, d))?
        .contiguous()?
        .reshape((n, t, kv_heads * rep * d))
}

/// `(T, T)` additive mask: position i sees positions ≤ i.
pub fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|k| if k % t > k / t { MASKED } else { 0.0 })
        .collect();
    Tensor::from_vec(m, (t, t), device)
}

/// `(N, 1, 1, T)` additive mask: sample n sees keys `0..lengths[n]`.
pub fn padding_mask(lengths: &[usize], t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..t).map(move |j| if j < len { 0.0 } else { MASKED }))
        .collect();
    Tensor::from_vec(m, (lengths.len(), 1, 1, t), device)
}

#[cfg(test)]
#[path = "ops_tests.rs"]
pub(crate) mod tests;
