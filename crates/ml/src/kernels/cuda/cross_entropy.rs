//! Softmax cross-entropy per row (`cross_entropy.cu`), the semantics of
//! `ops::cross_entropy_composite`: `loss[r] = logsumexp(x[r]) − x[r, t[r]]`. The backward
//! recomputes each row's log-sum-exp instead of keeping it: one more read of the logits, and
//! no state in the op.

use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
use candle_core::{
    CpuStorage, CudaStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

use super::launch::{
    Kernel, Module, cpu_unsupported, launch, output, per_row, row_threads, to_i32, view,
};

const MODULE: Module = Module {
    name: "vlmflow_cross_entropy",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/cross_entropy.ptx")),
};

/// Per-row loss `(M)` of f32 logits `(M, V)` against `targets` `(M)` (any integer dtype, on the
/// logits' device). A target outside `0..V` gives a NaN loss.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if logits.dtype() != DType::F32 {
        candle_core::bail!(
            "cross_entropy: the CUDA kernel takes f32 logits, got {:?}",
            logits.dtype()
        );
    }
    logits.apply_op2(&targets.to_dtype(DType::U32)?.contiguous()?, CrossEntropy)
}

/// `(rows, cols)` of logits `(M, V)` with a `(M)` targets vector.
fn rows_cols(logits: &Shape, targets: &Shape) -> Result<(usize, usize)> {
    let (rows, cols) = logits.dims2()?;
    if targets.dims() != [rows] || cols == 0 {
        candle_core::bail!(
            "cross_entropy: logits {:?} for targets {:?}",
            logits.dims(),
            targets.dims()
        );
    }
    Ok((rows, cols))
}

struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cuda-cross-entropy"
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
        xs: &CudaStorage,
        xl: &Layout,
        ts: &CudaStorage,
        tl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (rows, cols) = rows_cols(xl.shape(), tl.shape())?;
        let (x, t) = (
            view::<f32>(xs, xl, self.name())?,
            view::<u32>(ts, tl, self.name())?,
        );
        let mut loss = output::<f32>(dev, rows)?;
        let kernel = Kernel::load(dev, &MODULE, "cross_entropy_fwd")?;
        let mut args = kernel.builder();
        let cols_i = to_i32(cols, "vocabulary")?;
        args.arg(&x).arg(&t).arg(&mut loss).arg(&cols_i);
        launch(args, per_row(rows, row_threads(cols))?)?;
        Ok((
            CudaStorage::wrap_cuda_slice(loss, dev.clone()),
            Shape::from(rows),
        ))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        _loss: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dlogits = logits.apply_op3_no_bwd(targets, &grad.contiguous()?, &CrossEntropyGrad)?;
        Ok((Some(dlogits), None))
    }
}

/// Args: logits, targets, dloss. Output: dlogits.
struct CrossEntropyGrad;

impl CustomOp3 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cuda-cross-entropy-grad"
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
        xs: &CudaStorage,
        xl: &Layout,
        ts: &CudaStorage,
        tl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (rows, cols) = rows_cols(xl.shape(), tl.shape())?;
        if gl.shape().dims() != [rows] {
            candle_core::bail!("{}: gradient {:?} for {rows} rows", self.name(), gl.shape());
        }
        let (x, t, g) = (
            view::<f32>(xs, xl, self.name())?,
            view::<u32>(ts, tl, self.name())?,
            view::<f32>(gs, gl, self.name())?,
        );
        let mut dx = output::<f32>(dev, rows * cols)?;
        let kernel = Kernel::load(dev, &MODULE, "cross_entropy_bwd")?;
        let mut args = kernel.builder();
        let cols_i = to_i32(cols, "vocabulary")?;
        args.arg(&x).arg(&t).arg(&g).arg(&mut dx).arg(&cols_i);
        launch(args, per_row(rows, row_threads(cols))?)?;
        Ok((
            CudaStorage::wrap_cuda_slice(dx, dev.clone()),
            xl.shape().clone(),
        ))
    }
}
