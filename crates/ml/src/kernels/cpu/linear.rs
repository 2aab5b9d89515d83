//! `y = x wᵀ + b` as one CPU custom op calling the `gemm` crate (candle's own matmul kernel).
//!
//! Why: the composite form is a graph of reshape, transpose view, matmul and bias-add nodes, and
//! candle's backward gives every node's input a zero-filled gradient buffer plus an add; a
//! transposed weight's gradient is also formed transposed and copied back. Here backward is two
//! GEMMs straight into fresh buffers (dx = g w, dw = gᵀ x) and a column sum (db).

use super::matmul::{Mat, MatMut, all_threads, matmul_into};
use super::rows::with_data;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

/// Linear with bias. Args: x `(M, K)`, w `(N, K)`, b `(N)`.
pub struct Linear;
/// Linear without bias. Args: x `(M, K)`, w `(N, K)`.
pub struct LinearNoBias;

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::rows::slice(s, l, "fused linear")
}

fn dims(x: &Layout, w: &Layout) -> Result<(usize, usize, usize)> {
    let (m, k) = x.shape().dims2()?;
    let (n, k2) = w.shape().dims2()?;
    if k != k2 {
        candle_core::bail!("fused linear: x is (.., {k}) but w is ({n}, {k2})");
    }
    Ok((m, k, n))
}

fn forward(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    // Start from the bias rows and let gemm accumulate onto them: bias-add for free.
    let mut y = match b {
        Some(b) => b.repeat(m),
        None => vec![0f32; m * n],
    };
    matmul_into(
        MatMut::new(&mut y, m, n),
        Mat::new(x, m, k),
        Mat::new(w, n, k).t(),
        1.0,
        b.is_some(),
        all_threads(),
    );
    y
}

/// dx = g w, dw = gᵀ x.
fn backward(x: &Tensor, w: &Tensor, g: &Tensor) -> Result<(Tensor, Tensor)> {
    let ((m, k), n) = (x.dims2()?, w.dim(0)?);
    let (mut dx, mut dw) = (vec![0f32; m * k], vec![0f32; n * k]);
    with_data(x, |xs| {
        with_data(w, |ws| {
            with_data(g, |gs| {
                let g = Mat::new(gs, m, n);
                let (dx, dw) = (MatMut::new(&mut dx, m, k), MatMut::new(&mut dw, n, k));
                matmul_into(dx, g, Mat::new(ws, n, k), 1.0, false, all_threads());
                matmul_into(dw, g.t(), Mat::new(xs, m, k), 1.0, false, all_threads());
                Ok(())
            })
        })
    })?;
    let dev = candle_core::Device::Cpu;
    Ok((
        Tensor::from_vec(dx, (m, k), &dev)?,
        Tensor::from_vec(dw, (n, k), &dev)?,
    ))
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "fused-linear"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k, n) = dims(l1, l2)?;
        let y = forward(f32s(s1, l1)?, f32s(s2, l2)?, Some(f32s(s3, l3)?), m, k, n);
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = backward(x, w, g)?;
        // db = column sums of g: the same deterministic kernel as the fused bias-add.
        let db = super::rows::column_sums(g, b.elem_count())?.reshape(b.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

impl CustomOp2 for LinearNoBias {
    fn name(&self) -> &'static str {
        "fused-linear-no-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k, n) = dims(l1, l2)?;
        let y = forward(f32s(s1, l1)?, f32s(s2, l2)?, None, m, k, n);
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = backward(x, w, g)?;
        Ok((Some(dx), Some(dw)))
    }
}
