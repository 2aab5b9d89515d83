//! `kernels::cuda` in a build without the `cuda` feature: the same entry points, each an error.
//! No tensor is on a GPU in such a build, so `ops::backend` never picks them; they exist so that
//! `ops` names each CUDA kernel once, without a `cfg` at every call.

use candle_core::{Result, Tensor};

fn absent<T>(op: &str) -> Result<T> {
    candle_core::bail!("{op}: this build has no CUDA kernels (build with `--features cuda`)")
}

pub fn layer_norm(_x: &Tensor, _w: &Tensor, _b: &Tensor, _eps: f32) -> Result<Tensor> {
    absent("layer_norm")
}

pub fn rms_norm(_x: &Tensor, _w: &Tensor, _eps: f32) -> Result<Tensor> {
    absent("rms_norm")
}

pub fn cross_entropy(_logits: &Tensor, _targets: &Tensor) -> Result<Tensor> {
    absent("cross_entropy")
}

pub fn grouped_attention(
    _q: &Tensor,
    _k: &Tensor,
    _v: &Tensor,
    _heads: usize,
    _kv_heads: usize,
    _mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    absent("attention")
}
