//! Grouped-query attention on CUDA without the Tq × Tk score matrix (`attention.cu`,
//! flash-attention-2 style), the semantics of `ops::grouped_attention`, in f32 or bf16 (f32
//! arithmetic), head dims 32, 64 and 128. The backward is in `attention_grad.rs`.
//!
//! The forward keeps each row's log-sum-exp (N·H·Tq floats) in the op, which candle holds in an
//! `Arc` until the backward: recomputing it would cost the backward a third pass over q kᵀ.

use std::sync::Mutex;

use candle_core::cuda_backend::CudaStorageSlice;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, PushKernelArg};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::attention_grad;
use super::attention_launch::{Dims, Element, MODULE, MaskArg, Tiles};
use super::launch::{Kernel, cpu_unsupported, launch, output, view};

/// Attention of q `(N, Tq, H·d)` over k, v `(N, Tk, KV·d)` with query head h reading key/value
/// head `h / (H / KV)`; `mask` additive, broadcastable to `(N, 1, Tq, Tk)`. `None` when the
/// kernel does not cover the case (dtype other than f32/bf16, head dim other than 32/64/128, a
/// per-head mask, an empty dim, a tensor off CUDA): the caller then takes the composite form.
pub fn grouped_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    mask: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        candle_core::bail!(
            "attention: {heads} query heads cannot share {kv_heads} key/value heads"
        );
    }
    let (n, tq, c) = q.dims3()?;
    let (nk, tk, ckv) = k.dims3()?;
    if !c.is_multiple_of(heads) || nk != n || ckv != kv_heads * (c / heads) || v.dims() != k.dims()
    {
        candle_core::bail!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads sharing {kv_heads}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let dtype = q.dtype();
    let supported = [q, k, v]
        .iter()
        .all(|t| t.device().is_cuda() && t.dtype() == dtype)
        && matches!(dtype, DType::F32 | DType::BF16)
        && Tiles::for_head_dim(c / heads).is_some()
        && n * tq * tk > 0
        && n <= 65_535
        && heads <= 65_535
        && mask.is_none_or(|m| m.rank() < 4 || m.dim(1).is_ok_and(|h| h == 1));
    if !supported {
        return Ok(None);
    }
    let mask = match mask {
        None => None,
        // A broadcast view (strides 0): the kernels index it, nothing is copied.
        Some(m) => Some(m.to_dtype(DType::F32)?.broadcast_as((n, 1, tq, tk))?),
    };
    let op = Attention {
        heads,
        kv_heads,
        mask,
        lse: Mutex::new(None),
    };
    let out = q
        .contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)?;
    Ok(Some(out))
}

/// Args: q, k, v. The mask, if any, is held here as a `(N, 1, Tq, Tk)` f32 view.
struct Attention {
    heads: usize,
    kv_heads: usize,
    mask: Option<Tensor>,
    /// `(N, H, Tq)`, written by the forward for the backward.
    lse: Mutex<Option<CudaSlice<f32>>>,
}

impl Attention {
    fn forward<T: Element>(
        &self,
        q: &CudaSlice<T>,
        ql: &Layout,
        (ks, kl): (&CudaStorage, &Layout),
        (vs, vl): (&CudaStorage, &Layout),
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &ks.device;
        let dims = Dims::new(ql.shape(), kl.shape(), self.heads, self.kv_heads)?;
        let tiles = dims.tiles()?;
        let Some((start, end)) = ql.contiguous_offsets() else {
            candle_core::bail!("attention: q must be contiguous");
        };
        let (q, k, v) = (
            q.slice(start..end),
            view::<T>(ks, kl, "attention k")?,
            view::<T>(vs, vl, "attention v")?,
        );
        let locked = self.mask.as_ref().map(|m| m.storage_and_layout());
        let mask = MaskArg::new(locked.as_ref().map(|(s, l)| (&**s, *l)), &dims)?;
        let scalars = dims.scalars(&mask)?;
        let mut out = output::<T>(dev, ql.shape().elem_count())?;
        let mut lse = output::<f32>(dev, dims.n * dims.heads * dims.tq)?;
        let kernel = Kernel::load(dev, &MODULE, &dims.kernel_name::<T>("fwd"))?;
        let smem = tiles.fwd_smem();
        kernel.allow_shared_memory(smem)?;
        let mut args = kernel.builder();
        args.arg(&q).arg(&k).arg(&v);
        mask.push(&mut args);
        args.arg(&mut out).arg(&mut lse);
        scalars.push(&mut args);
        launch(args, tiles.grid(dims.tq, dims.heads, dims.n, smem)?)?;
        *self.lse.lock().map_err(|_| poisoned())? = Some(lse);
        Ok((
            CudaStorage::wrap_cuda_slice(out, dev.clone()),
            ql.shape().clone(),
        ))
    }
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("attention: a thread panicked holding the saved log-sum-exp".into())
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "cuda-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Err(cpu_unsupported(self.name()))
    }

    fn cuda_fwd(
        &self,
        qs: &CudaStorage,
        ql: &Layout,
        ks: &CudaStorage,
        kl: &Layout,
        vs: &CudaStorage,
        vl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match &qs.slice {
            CudaStorageSlice::F32(q) => self.forward(q, ql, (ks, kl), (vs, vl)),
            CudaStorageSlice::BF16(q) => self.forward(q, ql, (ks, kl), (vs, vl)),
            _ => candle_core::bail!("attention: f32 or bf16 only"),
        }
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let lse = self.lse.lock().map_err(|_| poisoned())?;
        let Some(lse) = lse.as_ref() else {
            candle_core::bail!("attention: backward without a forward");
        };
        let inputs = attention_grad::GradInputs {
            heads: self.heads,
            kv_heads: self.kv_heads,
            mask: self.mask.as_ref(),
            lse,
        };
        let (dq, dk, dv) = inputs.grads(q, k, v, out, &grad.contiguous()?)?;
        Ok((Some(dq), Some(dk), Some(dv)))
    }
}
