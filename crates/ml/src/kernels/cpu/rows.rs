//! The toolkit the CPU kernels share: f32 data out of candle's CPU storage, loops over rows split
//! over rayon, and column reductions in fixed row blocks summed in block order, so that results
//! do not depend on the number of threads (resumed runs stay bit-identical).

use candle_core::{CpuStorage, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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

/// Sum with 8 independent accumulators, so that it vectorises without fast-math.
#[inline(always)]
pub(crate) fn sum8(xs: impl Iterator<Item = f32>) -> f32 {
    let mut acc = [0f32; 8];
    for (i, x) in xs.enumerate() {
        acc[i % 8] += x;
    }
    acc.iter().sum()
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
