//! Fused CPU kernels with analytic backward, as candle custom ops.
//!
//! Why: candle composes LayerNorm, softmax, GELU, QuickGELU and bias-add from many elementwise ops, each
//! allocating a full tensor, and their backward passes go through a generic broadcast-reduction
//! loop. One pass per direction here is ~1.5× faster end to end (CANDLE-NOTES.md). Each op is
//! checked against its composite twin in `ops.rs` (forward and gradients).
//!
//! Every kernel works on a contiguous f32 `(rows, cols)` view, splits rows over rayon, and makes
//! column reductions (bias / norm-weight gradients) in fixed row blocks summed in block order,
//! so results do not depend on the number of threads: resumed runs stay bit-identical.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fast_math::{fast_exp, fast_tanh};

/// Rows per rayon task and per partial sum of a column reduction.
const BLOCK_ROWS: usize = 32;
/// Below this many elements the rayon hand-off costs more than it saves.
pub(crate) const PAR_MIN: usize = 1 << 14;

pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = s else {
        candle_core::bail!("{op}: f32 tensors only")
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Runs `f` with the contiguous f32 data of a CPU tensor (used by the backward passes).
pub(crate) fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        candle_core::Storage::Cpu(s) => f(slice(s, layout, "fused backward")?),
        _ => candle_core::bail!("fused ops are CPU only"),
    }
}

/// Applies `f(row_in, row_out)` to each row of width `cols`, in parallel when large.
pub(crate) fn map_rows(
    input: &[f32],
    out: &mut [f32],
    cols: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) {
    let body = |(blk, chunk): (usize, &mut [f32])| {
        for (i, row) in chunk.chunks_mut(cols).enumerate() {
            f(blk * BLOCK_ROWS + i, row);
        }
    };
    if input.len() >= PAR_MIN {
        out.par_chunks_mut(cols * BLOCK_ROWS)
            .enumerate()
            .for_each(body);
    } else {
        out.chunks_mut(cols * BLOCK_ROWS).enumerate().for_each(body);
    }
}

/// Processes rows in blocks of `BLOCK_ROWS`: `f(first_row, out_block, partial)` writes the
/// block's rows of `out` (`cols` wide; `out` may be empty) and adds into its own zeroed
/// `partial` (`width` long). Returns the partials summed in block order: deterministic.
pub(crate) fn rows_with_partials(
    out: &mut [f32],
    rows: usize,
    cols: usize,
    width: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let n_blocks = rows.div_ceil(BLOCK_ROWS);
    let mut parts = vec![0f32; n_blocks * width];
    let body = |(b, (o, acc)): (usize, (&mut [f32], &mut [f32]))| f(b * BLOCK_ROWS, o, acc);
    let step = (cols * BLOCK_ROWS).max(1);
    if out.is_empty() {
        // No per-row output: give each block an empty slice.
        let empty = |b: usize, acc: &mut [f32]| f(b * BLOCK_ROWS, &mut [], acc);
        if rows * width >= PAR_MIN {
            parts
                .par_chunks_mut(width)
                .enumerate()
                .for_each(|(b, acc)| empty(b, acc));
        } else {
            parts
                .chunks_mut(width)
                .enumerate()
                .for_each(|(b, acc)| empty(b, acc));
        }
    } else if rows * cols >= PAR_MIN {
        out.par_chunks_mut(step)
            .zip(parts.par_chunks_mut(width))
            .enumerate()
            .for_each(body);
    } else {
        out.chunks_mut(step)
            .zip(parts.chunks_mut(width))
            .enumerate()
            .for_each(body);
    }
    let mut total = vec![0f32; width];
    for p in parts.chunks(width) {
        total.iter_mut().zip(p).for_each(|(t, x)| *t += x);
    }
    total
}

pub(crate) fn rows_cols(shape: &Shape) -> (usize, usize) {
    let cols = shape.dims().last().copied().unwrap_or(1);
    (shape.elem_count() / cols.max(1), cols)
}

pub(crate) fn cpu_tensor(data: Vec<f32>, shape: &Shape) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

// ---------------------------------------------------------------- LayerNorm

/// `y = (x - mean) / sqrt(var + eps) * w + b` over the last dim. Args: x, w, b.
pub struct LayerNorm {
    pub eps: f32,
}

/// Sum with 8 independent accumulators, so that it vectorises without fast-math.
#[inline(always)]
pub(crate) fn sum8(xs: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, x) in xs.enumerate() {
        acc[i % 8] += x;
    }
    acc.iter().sum()
}

/// `(mean, 1/sqrt(var + eps))` of one row.
#[inline(always)]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum8(row.iter().copied()) / n;
    let var = sum8(row.iter().map(|x| (x - mean) * (x - mean))) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let (x, w, b) = (
            slice(s1, l1, "ln")?,
            slice(s2, l2, "ln")?,
            slice(s3, l3, "ln")?,
        );
        let (_, cols) = rows_cols(l1.shape());
        let mut out = vec![0f32; x.len()];
        map_rows(x, &mut out, cols, |r, y| {
            let xr = &x[r * cols..][..cols];
            let (mean, rstd) = moments(xr, self.eps);
            for (((y, x), w), b) in y.iter_mut().zip(xr).zip(w).zip(b) {
                *y = (x - mean) * rstd * w + b;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, cols) = rows_cols(x.shape());
        let eps = self.eps;
        // One pass per block of rows: its dx rows, and its partial dw = Σ g·x̂, db = Σ g.
        let (dx, dwb) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(grad, |g| {
                    let mut dx = vec![0f32; x.len()];
                    let dwb = rows_with_partials(&mut dx, rows, cols, 2 * cols, |r0, dxb, acc| {
                        let (mut xhat, mut gw) = (vec![0f32; cols], vec![0f32; cols]);
                        for (i, d) in dxb.chunks_mut(cols).enumerate() {
                            let r = r0 + i;
                            let (xr, gr) = (&x[r * cols..][..cols], &g[r * cols..][..cols]);
                            let (mean, rstd) = moments(xr, eps);
                            for j in 0..cols {
                                xhat[j] = (xr[j] - mean) * rstd;
                                gw[j] = gr[j] * w[j];
                            }
                            // dx = rstd · (g·w − mean(g·w) − x̂ · mean(g·w·x̂))
                            let s1 = sum8(gw.iter().copied()) / cols as f32;
                            let s2 = sum8(gw.iter().zip(&xhat).map(|(a, b)| a * b)) / cols as f32;
                            for j in 0..cols {
                                d[j] = rstd * (gw[j] - s1 - xhat[j] * s2);
                            }
                            let (dw, db) = acc.split_at_mut(cols);
                            for j in 0..cols {
                                dw[j] += gr[j] * xhat[j];
                                db[j] += gr[j];
                            }
                        }
                    });
                    Ok((dx, dwb))
                })
            })
        })?;
        let (dw, db) = dwb.split_at(cols);
        Ok((
            Some(cpu_tensor(dx, x.shape())?),
            Some(cpu_tensor(dw.to_vec(), w.shape())?),
            Some(cpu_tensor(db.to_vec(), w.shape())?),
        ))
    }
}

// ---------------------------------------------------------------- Softmax

/// Softmax over the last dim.
pub struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "softmax")?;
        let (_, cols) = rows_cols(l.shape());
        let mut out = vec![0f32; x.len()];
        map_rows(x, &mut out, cols, |r, y| {
            let xr = &x[r * cols..][..cols];
            let max = xr.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (yj, xj) in y.iter_mut().zip(xr) {
                *yj = fast_exp(xj - max);
                sum += *yj;
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        // dx = y · (g - Σ g·y)
        let (_, cols) = rows_cols(y.shape());
        let dx = with_data(y, |y| {
            with_data(grad, |g| {
                let mut dx = vec![0f32; y.len()];
                map_rows(y, &mut dx, cols, |r, d| {
                    let (yr, gr) = (&y[r * cols..][..cols], &g[r * cols..][..cols]);
                    let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
                    for j in 0..cols {
                        d[j] = yr[j] * (gr[j] - dot);
                    }
                });
                Ok(dx)
            })
        })?;
        Ok(Some(cpu_tensor(dx, y.shape())?))
    }
}

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

/// `out[i] = f(a[i], b[i])` in 4096-element chunks, in parallel when large.
pub(crate) fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    let body = |((o, a), b): ((&mut [f32], &[f32]), &[f32])| {
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = f(a, b);
        }
    };
    const CHUNK: usize = 4096;
    if a.len() >= PAR_MIN {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .zip(b.par_chunks(CHUNK))
            .for_each(body);
    } else {
        body(((&mut out[..], a), b));
    }
    out
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

// ---------------------------------------------------------------- Bias add

/// `x + b` where `b`'s shape is `x`'s trailing dims: a bias, or a positional embedding.
pub struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "fused-bias-add"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, b) = (slice(s1, l1, "bias-add")?, slice(s2, l2, "bias-add")?);
        let cols = b.len();
        let mut out = vec![0f32; x.len()];
        map_rows(x, &mut out, cols, |r, y| {
            let xr = &x[r * cols..][..cols];
            for j in 0..cols {
                y[j] = xr[j] + b[j];
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = column_sums(grad, b.elem_count())?.reshape(b.shape())?;
        Ok((Some(grad.clone()), Some(db)))
    }
}

/// Sums of the columns of `g` viewed as `(rows, cols)`: a bias's gradient.
pub(crate) fn column_sums(g: &Tensor, cols: usize) -> Result<Tensor> {
    let sums = with_data(g, |g| {
        let rows = g.len() / cols;
        Ok(rows_with_partials(&mut [], rows, 0, cols, |r0, _, acc| {
            for r in r0..(r0 + BLOCK_ROWS).min(rows) {
                acc.iter_mut()
                    .zip(&g[r * cols..][..cols])
                    .for_each(|(a, x)| *a += x);
            }
        }))
    })?;
    cpu_tensor(sums, &Shape::from(cols))
}
