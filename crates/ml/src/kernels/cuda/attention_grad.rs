//! The backward of `attention.rs`'s op, three custom ops without backward of their own:
//! delta = rowsum(dO ∘ O) `(N, H, Tq)`, then dq (a block per query tile) and dk, dv packed as
//! `(2, N, Tk, KV·d)` (a block per key tile and kv head). dk and dv sum over the query heads that
//! share a kv head inside one block, in registers: deterministic, with no atomics and no
//! per-query-head buffer, at the price of KV (not H) blocks per key tile.

use candle_core::cuda_backend::CudaStorageSlice;
use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaView, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};

use super::attention_launch::{
    Dims, Element, MODULE, MaskArg, Scalars, THREADS, Tiles, dtype_name,
};
use super::launch::{Kernel, cpu_unsupported, cuda_storage, launch, output, to_i32, to_u32, view};

/// What the backward needs besides q, k, v, out and dO.
pub(super) struct GradInputs<'a> {
    pub heads: usize,
    pub kv_heads: usize,
    /// The forward's `(N, 1, Tq, Tk)` broadcast mask.
    pub mask: Option<&'a Tensor>,
    /// The forward's row log-sum-exps, `(N, H, Tq)`.
    pub lse: &'a CudaSlice<f32>,
}

impl GradInputs<'_> {
    /// `(dq, dk, dv)` given `dout` (contiguous, out's shape and dtype).
    pub fn grads(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        out: &Tensor,
        dout: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let delta = out.apply_op2_no_bwd(dout, &Delta { heads: self.heads })?;
        let held = Held {
            inputs: self,
            dout,
            delta: &delta,
        };
        let dq = q.apply_op3_no_bwd(k, v, &GradQ(&held))?;
        let dkv = q.apply_op3_no_bwd(k, v, &GradKv(&held))?;
        Ok((dq, dkv.get(0)?, dkv.get(1)?))
    }
}

/// The grad ops' inputs other than q, k, v (which candle passes them).
struct Held<'a> {
    inputs: &'a GradInputs<'a>,
    dout: &'a Tensor,
    delta: &'a Tensor,
}

/// Every input of a grad kernel as it is pushed, in the kernels' order: q, k, v, dO, lse,
/// delta, mask.
struct Operands<'a, T> {
    dev: &'a CudaDevice,
    dims: Dims,
    tiles: Tiles,
    q: CudaView<'a, T>,
    k: CudaView<'a, T>,
    v: CudaView<'a, T>,
    dout: CudaView<'a, T>,
    lse: &'a CudaSlice<f32>,
    delta: CudaView<'a, f32>,
    mask: MaskArg<'a>,
    scalars: Scalars,
}

impl<T: Element> Operands<'_, T> {
    fn push_inputs<'b>(&'b self, args: &mut LaunchArgs<'b>) {
        args.arg(&self.q).arg(&self.k).arg(&self.v).arg(&self.dout);
        args.arg(self.lse).arg(&self.delta);
        self.mask.push(args);
    }

    /// The kernel `attention_{what}_..`, allowed `smem` bytes of shared memory.
    fn kernel(&self, what: &str, smem: usize) -> Result<Kernel> {
        let kernel = Kernel::load(self.dev, &MODULE, &self.dims.kernel_name::<T>(what))?;
        kernel.allow_shared_memory(smem)?;
        Ok(kernel)
    }
}

type Input<'a> = (&'a CudaStorage, &'a Layout);

impl Held<'_> {
    /// Runs `f` on the operands, the held tensors' storage locked meanwhile.
    fn with_operands<T: Element, R>(
        &self,
        (q, ql): (&CudaSlice<T>, &Layout),
        (ks, kl): Input,
        (vs, vl): Input,
        f: impl FnOnce(&Operands<'_, T>) -> Result<R>,
    ) -> Result<R> {
        let dims = Dims::new(
            ql.shape(),
            kl.shape(),
            self.inputs.heads,
            self.inputs.kv_heads,
        )?;
        let Some((start, end)) = ql.contiguous_offsets() else {
            candle_core::bail!("attention backward: q must be contiguous");
        };
        let (dout_s, dout_l) = self.dout.storage_and_layout();
        let (delta_s, delta_l) = self.delta.storage_and_layout();
        let mask_locked = self.inputs.mask.map(|m| m.storage_and_layout());
        let mask = MaskArg::new(mask_locked.as_ref().map(|(s, l)| (&**s, *l)), &dims)?;
        if dout_l.shape() != ql.shape() {
            candle_core::bail!(
                "attention backward: dO {:?} for q {:?}",
                dout_l.shape(),
                ql.shape()
            );
        }
        let operands = Operands {
            dev: &ks.device,
            dims,
            tiles: dims.tiles()?,
            q: q.slice(start..end),
            k: view::<T>(ks, kl, "attention k")?,
            v: view::<T>(vs, vl, "attention v")?,
            dout: view::<T>(
                cuda_storage(&dout_s, "attention dO")?,
                dout_l,
                "attention dO",
            )?,
            lse: self.inputs.lse,
            delta: view::<f32>(cuda_storage(&delta_s, "attention delta")?, delta_l, "delta")?,
            scalars: dims.scalars(&mask)?,
            mask,
        };
        f(&operands)
    }
}

/// Args: q, k, v. Output: dq.
struct GradQ<'a>(&'a Held<'a>);

impl GradQ<'_> {
    fn run<T: Element>(
        &self,
        q: (&CudaSlice<T>, &Layout),
        k: Input,
        v: Input,
    ) -> Result<(CudaStorage, Shape)> {
        let shape = q.1.shape().clone();
        self.0.with_operands(q, k, v, |o| {
            let mut dq = output::<T>(o.dev, shape.elem_count())?;
            let smem = o.tiles.grad_q_smem();
            let kernel = o.kernel("grad_q", smem)?;
            let mut args = kernel.builder();
            o.push_inputs(&mut args);
            args.arg(&mut dq);
            o.scalars.push(&mut args);
            launch(args, o.tiles.grid(o.dims.tq, o.dims.heads, o.dims.n, smem)?)?;
            Ok((CudaStorage::wrap_cuda_slice(dq, o.dev.clone()), shape))
        })
    }
}

/// Args: q, k, v. Output: `(2, N, Tk, KV·d)`, dk then dv.
struct GradKv<'a>(&'a Held<'a>);

impl GradKv<'_> {
    fn run<T: Element>(
        &self,
        q: (&CudaSlice<T>, &Layout),
        k: Input,
        v: Input,
    ) -> Result<(CudaStorage, Shape)> {
        let (n, tk, ckv) = k.1.shape().dims3()?;
        let half = n * tk * ckv;
        self.0.with_operands(q, k, v, |o| {
            let mut packed = output::<T>(o.dev, 2 * half)?;
            let smem = o.tiles.grad_kv_smem();
            let kernel = o.kernel("grad_kv", smem)?;
            let (mut dk, mut dv) = packed.split_at_mut(half);
            let mut args = kernel.builder();
            o.push_inputs(&mut args);
            args.arg(&mut dk).arg(&mut dv);
            o.scalars.push(&mut args);
            launch(args, o.tiles.grid(tk, o.dims.kv_heads, n, smem)?)?;
            let shape = Shape::from((2, n, tk, ckv));
            Ok((CudaStorage::wrap_cuda_slice(packed, o.dev.clone()), shape))
        })
    }
}

/// `cpu_fwd` and the f32/bf16 dispatch of `cuda_fwd`, the same for both grad ops.
macro_rules! grad_op {
    ($op:ident, $name:literal) => {
        impl CustomOp3 for $op<'_> {
            fn name(&self) -> &'static str {
                $name
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
                    CudaStorageSlice::F32(q) => self.run((q, ql), (ks, kl), (vs, vl)),
                    CudaStorageSlice::BF16(q) => self.run((q, ql), (ks, kl), (vs, vl)),
                    _ => candle_core::bail!("{}: f32 or bf16 only", self.name()),
                }
            }
        }
    };
}

grad_op!(GradQ, "cuda-attention-grad-q");
grad_op!(GradKv, "cuda-attention-grad-kv");

/// Args: out, dO (`(N, Tq, H·d)`). Output: delta `(N, H, Tq)`, f32.
struct Delta {
    heads: usize,
}

/// Warps per block of the delta kernel, one warp per (sample, query, head).
const DELTA_WARPS: usize = THREADS as usize / 32;

impl Delta {
    fn run<T: Element>(
        &self,
        out: &CudaSlice<T>,
        ol: &Layout,
        (gs, gl): Input,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &gs.device;
        let (n, tq, c) = ol.shape().dims3()?;
        if gl.shape() != ol.shape() {
            candle_core::bail!(
                "attention delta: dO {:?} for out {:?}",
                gl.shape(),
                ol.shape()
            );
        }
        let Some((start, end)) = ol.contiguous_offsets() else {
            candle_core::bail!("attention delta: out must be contiguous");
        };
        let (o, g) = (out.slice(start..end), view::<T>(gs, gl, "attention dO")?);
        let rows = n * tq * self.heads;
        let mut delta = output::<f32>(dev, rows)?;
        let name = format!("attention_delta_{}", dtype_name::<T>());
        let kernel = Kernel::load(dev, &MODULE, &name)?;
        let (rows_i, tq_i) = (to_i32(rows, "rows")?, to_i32(tq, "Tq")?);
        let (heads_i, d_i) = (to_i32(self.heads, "heads")?, to_i32(c / self.heads, "d")?);
        let mut args = kernel.builder();
        args.arg(&o).arg(&g).arg(&mut delta);
        args.arg(&rows_i).arg(&tq_i).arg(&heads_i).arg(&d_i);
        let cfg = LaunchConfig {
            grid_dim: (to_u32(rows.div_ceil(DELTA_WARPS), "delta blocks")?, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        launch(args, cfg)?;
        let shape = Shape::from((n, self.heads, tq));
        Ok((CudaStorage::wrap_cuda_slice(delta, dev.clone()), shape))
    }
}

impl CustomOp2 for Delta {
    fn name(&self) -> &'static str {
        "cuda-attention-delta"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Err(cpu_unsupported(self.name()))
    }

    fn cuda_fwd(
        &self,
        os: &CudaStorage,
        ol: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        match &os.slice {
            CudaStorageSlice::F32(o) => self.run(o, ol, (gs, gl)),
            CudaStorageSlice::BF16(o) => self.run(o, ol, (gs, gl)),
            _ => candle_core::bail!("{}: f32 or bf16 only", self.name()),
        }
    }
}
