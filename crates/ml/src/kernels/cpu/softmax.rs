//! Softmax over the last dim, with analytic backward.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::fast_math::fast_exp;
use super::rows::{cpu_tensor, map_rows, rows_cols, slice, with_data};

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
