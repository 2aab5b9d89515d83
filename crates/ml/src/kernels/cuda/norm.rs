//! LayerNorm and RMSNorm over the last dim of f32 tensors (`norm.cu`): the semantics of
//! `ops::layer_norm_composite` and `cpu::norm::RmsNorm`. Each backward is one more custom op
//! that returns its gradients packed in one flat tensor, `[dx | dw (| db)]`, cut apart here.

use candle_core::cuda_backend::cudarc::driver::{
    CudaSlice, CudaViewMut, LaunchConfig, PushKernelArg,
};
use candle_core::{
    CpuStorage, CudaDevice, CudaStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor,
};

use super::launch::{
    Kernel, Module, cpu_unsupported, launch, output, per_row, require_f32, row_threads, to_i32,
    to_u32, view,
};

const MODULE: Module = Module {
    name: "vlmflow_norm",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/norm.ptx")),
};

/// Blocks that share the rows in a backward pass, each adding its weight gradients into its own
/// partial row: two per SM of an H100/H200, few enough that summing the partials is cheap.
const GRAD_BLOCKS: usize = 264;

/// `(x − mean) / sqrt(var + eps) · w + b` over the last dim; `x` `(..., C)`, `w` and `b` `(C)`.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f32) -> Result<Tensor> {
    require_f32("layer_norm", &[x, w, b])?;
    x.apply_op3(w, b, LayerNorm { eps })
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dim; `x` `(..., C)`, `w` `(C)`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    require_f32("rms_norm", &[x, w])?;
    x.apply_op2(w, RmsNorm { eps })
}

/// `(rows, cols)` of `x` whose rows are normalised with a weight of `w_len` values.
fn rows_cols(x: &Shape, w_len: usize, op: &str) -> Result<(usize, usize)> {
    let cols = x.dims().last().copied().unwrap_or(1);
    if cols == 0 || w_len != cols {
        candle_core::bail!("{op}: rows of {cols} with a weight of {w_len}");
    }
    Ok((x.elem_count() / cols, cols))
}

/// `out[j] = Σ_b partial[b, j]` for `width` columns of `blocks` partial rows.
fn sum_partials(
    dev: &CudaDevice,
    partial: &CudaSlice<f32>,
    blocks: usize,
    mut out: CudaViewMut<'_, f32>,
    width: usize,
) -> Result<()> {
    let kernel = Kernel::load(dev, &MODULE, "column_sums")?;
    let mut args = kernel.builder();
    let (blocks_i, width_i) = (to_i32(blocks, "blocks")?, to_i32(width, "width")?);
    args.arg(partial).arg(&mut out).arg(&blocks_i).arg(&width_i);
    let cfg = LaunchConfig {
        grid_dim: (to_u32(width.div_ceil(256), "column blocks")?, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    launch(args, cfg)
}

/// The backward of both norms: the `*_bwd` kernel (dx and per-block partial weight gradients
/// of `width_per_col` columns each), then the column sums after dx in the packed output.
fn norm_grad(
    kernel_name: &str,
    [(xs, xl), (ws, wl), (gs, gl)]: [(&CudaStorage, &Layout); 3],
    eps: f32,
    width_per_col: usize,
) -> Result<(CudaStorage, Shape)> {
    let dev = &xs.device;
    let (rows, cols) = rows_cols(xl.shape(), wl.shape().elem_count(), kernel_name)?;
    if gl.shape() != xl.shape() {
        candle_core::bail!(
            "{kernel_name}: gradient {:?} for x {:?}",
            gl.shape(),
            xl.shape()
        );
    }
    let (x, w, g) = (
        view::<f32>(xs, xl, kernel_name)?,
        view::<f32>(ws, wl, kernel_name)?,
        view::<f32>(gs, gl, kernel_name)?,
    );
    let (dx_len, width) = (rows * cols, width_per_col * cols);
    let blocks = rows.min(GRAD_BLOCKS);
    let mut packed = output::<f32>(dev, dx_len + width)?;
    let mut partial = output::<f32>(dev, blocks * width)?;
    let kernel = Kernel::load(dev, &MODULE, kernel_name)?;
    let mut args = kernel.builder();
    let mut dx = packed.slice_mut(..dx_len);
    let (rows_i, cols_i) = (to_i32(rows, "rows")?, to_i32(cols, "cols")?);
    args.arg(&x).arg(&w).arg(&g).arg(&mut dx).arg(&mut partial);
    args.arg(&rows_i).arg(&cols_i).arg(&eps);
    launch(args, per_row(blocks, row_threads(cols))?)?;
    sum_partials(dev, &partial, blocks, packed.slice_mut(dx_len..), width)?;
    let shape = Shape::from(dx_len + width);
    Ok((CudaStorage::wrap_cuda_slice(packed, dev.clone()), shape))
}

/// The `shape.elem_count()` values of `packed` from `at`, as `shape`.
fn unpack(packed: &Tensor, at: usize, shape: &Shape) -> Result<Tensor> {
    packed.narrow(0, at, shape.elem_count())?.reshape(shape)
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "cuda-layer-norm"
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
        ws: &CudaStorage,
        wl: &Layout,
        bs: &CudaStorage,
        bl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (rows, cols) = rows_cols(xl.shape(), wl.shape().elem_count(), self.name())?;
        if bl.shape().elem_count() != cols {
            candle_core::bail!("{}: bias {:?} for rows of {cols}", self.name(), bl.shape());
        }
        let (x, w, b) = (
            view::<f32>(xs, xl, self.name())?,
            view::<f32>(ws, wl, self.name())?,
            view::<f32>(bs, bl, self.name())?,
        );
        let mut y = output::<f32>(dev, rows * cols)?;
        let kernel = Kernel::load(dev, &MODULE, "layer_norm_fwd")?;
        let mut args = kernel.builder();
        let cols_i = to_i32(cols, "cols")?;
        args.arg(&x)
            .arg(&w)
            .arg(&b)
            .arg(&mut y)
            .arg(&cols_i)
            .arg(&self.eps);
        launch(args, per_row(rows, row_threads(cols))?)?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = LayerNormGrad { eps: self.eps };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        let n = x.elem_count();
        Ok((
            Some(unpack(&packed, 0, x.shape())?),
            Some(unpack(&packed, n, w.shape())?),
            Some(unpack(&packed, n + w.elem_count(), w.shape())?),
        ))
    }
}

/// Args: x, w, dy. Output: `[dx | dw | db]`, flat.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "layer_norm_bwd"
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
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        norm_grad(self.name(), [(xs, xl), (ws, wl), (gs, gl)], self.eps, 2)
    }
}

struct RmsNorm {
    eps: f32,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "cuda-rms-norm"
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
        ws: &CudaStorage,
        wl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let (rows, cols) = rows_cols(xl.shape(), wl.shape().elem_count(), self.name())?;
        let (x, w) = (
            view::<f32>(xs, xl, self.name())?,
            view::<f32>(ws, wl, self.name())?,
        );
        let mut y = output::<f32>(dev, rows * cols)?;
        let kernel = Kernel::load(dev, &MODULE, "rms_norm_fwd")?;
        let mut args = kernel.builder();
        let cols_i = to_i32(cols, "cols")?;
        args.arg(&x).arg(&w).arg(&mut y).arg(&cols_i).arg(&self.eps);
        launch(args, per_row(rows, row_threads(cols))?)?;
        Ok((
            CudaStorage::wrap_cuda_slice(y, dev.clone()),
            xl.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = RmsNormGrad { eps: self.eps };
        let packed = x.apply_op3_no_bwd(w, &grad.contiguous()?, &op)?;
        Ok((
            Some(unpack(&packed, 0, x.shape())?),
            Some(unpack(&packed, x.elem_count(), w.shape())?),
        ))
    }
}

/// Args: x, w, dy. Output: `[dx | dw]`, flat.
struct RmsNormGrad {
    eps: f32,
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms_norm_bwd"
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
        ws: &CudaStorage,
        wl: &Layout,
        gs: &CudaStorage,
        gl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        norm_grad(self.name(), [(xs, xl), (ws, wl), (gs, gl)], self.eps, 1)
    }
}
