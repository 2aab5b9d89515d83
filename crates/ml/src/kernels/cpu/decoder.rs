//! Fused CPU kernels for the Qwen2 decoder, with analytic backward: RMSNorm, rotary position
//! embedding and the SwiGLU gate, in the style of `fused.rs` (one pass per direction, rows split
//! over rayon, column reductions in fixed row blocks so results do not depend on thread count).
//! Each is checked against its composite twin in `lm_ops.rs` (values and gradients).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::fast_math::fast_exp;
use super::rows::{
    cpu_tensor, map_rows, rows_cols, rows_with_partials, slice, sum8, with_data, zip_map,
};

// ---------------------------------------------------------------- RMSNorm

/// `y = x / sqrt(mean(x²) + eps) · w` over the last dim. Args: x, w.
pub struct RmsNorm {
    pub eps: f32,
}

#[inline(always)]
fn rstd(row: &[f32], eps: f32) -> f32 {
    let ms = sum8(row.iter().map(|x| x * x)) / row.len() as f32;
    1.0 / (ms + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "rms-norm")?, slice(s2, l2, "rms-norm")?);
        let (_, cols) = rows_cols(l1.shape());
        if w.len() != cols {
            candle_core::bail!("rms-norm: weight has {} values for rows of {cols}", w.len());
        }
        let mut out = vec![0f32; x.len()];
        map_rows(x, &mut out, cols, |r, y| {
            let xr = &x[r * cols..][..cols];
            let rs = rstd(xr, self.eps);
            for ((y, x), w) in y.iter_mut().zip(xr).zip(w) {
                *y = x * rs * w;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, cols) = rows_cols(x.shape());
        let eps = self.eps;
        // dx = rstd · (g·w − x̂ · mean(g·w·x̂)),  dw = Σ_rows g·x̂,  with x̂ = x · rstd.
        let (dx, dw) = with_data(x, |x| {
            with_data(w, |w| {
                with_data(grad, |g| {
                    let mut dx = vec![0f32; x.len()];
                    let dw = rows_with_partials(&mut dx, rows, cols, cols, |r0, dxb, acc| {
                        let mut xhat = vec![0f32; cols];
                        for (i, d) in dxb.chunks_mut(cols).enumerate() {
                            let r = r0 + i;
                            let (xr, gr) = (&x[r * cols..][..cols], &g[r * cols..][..cols]);
                            let rs = rstd(xr, eps);
                            for j in 0..cols {
                                xhat[j] = xr[j] * rs;
                                acc[j] += gr[j] * xhat[j];
                            }
                            let m = sum8((0..cols).map(|j| gr[j] * w[j] * xhat[j])) / cols as f32;
                            for j in 0..cols {
                                d[j] = rs * (gr[j] * w[j] - xhat[j] * m);
                            }
                        }
                    });
                    Ok((dx, dw))
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(dx, x.shape())?),
            Some(cpu_tensor(dw, w.shape())?),
        ))
    }
}

// ---------------------------------------------------------------- Rotary embedding

/// Rotary position embedding, "rotate half" form (GPT-NeoX, Llama, Qwen2), on `(N, T, H·d)`
/// projections whose heads are the `d`-wide column blocks. For row `r = n·T + t` and each head,
/// with `a = x[i]`, `b = x[i + d/2]`: `y[i] = a·cos − b·sin`, `y[i + d/2] = b·cos + a·sin`,
/// `cos, sin = tables[r][i]`. The backward is the inverse rotation.
pub struct Rope {
    /// `(N·T, d/2)` row-major.
    pub cos: Arc<[f32]>,
    pub sin: Arc<[f32]>,
    pub head_dim: usize,
}

impl Rope {
    /// Rotates each row by `sign`·angle: +1 forward, −1 backward.
    fn rotate(&self, x: &[f32], cols: usize, sign: f32) -> Result<Vec<f32>> {
        let (d, half) = (self.head_dim, self.head_dim / 2);
        if d == 0
            || !d.is_multiple_of(2)
            || !cols.is_multiple_of(d)
            || self.cos.len() * 2 * cols != x.len() * d
        {
            candle_core::bail!(
                "rope: rows of {cols} with head size {d} do not fit tables of {} values",
                self.cos.len()
            );
        }
        let mut out = vec![0f32; x.len()];
        map_rows(x, &mut out, cols, |r, y| {
            let xr = &x[r * cols..][..cols];
            let (cos, sin) = (&self.cos[r * half..][..half], &self.sin[r * half..][..half]);
            for (xh, yh) in xr.chunks_exact(d).zip(y.chunks_exact_mut(d)) {
                let (a, b) = xh.split_at(half);
                let (ya, yb) = yh.split_at_mut(half);
                for i in 0..half {
                    let s = sign * sin[i];
                    ya[i] = a[i] * cos[i] - b[i] * s;
                    yb[i] = b[i] * cos[i] + a[i] * s;
                }
            }
        });
        Ok(out)
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "rope")?;
        let (_, cols) = rows_cols(l.shape());
        Ok((
            CpuStorage::F32(self.rotate(x, cols, 1.0)?),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (_, cols) = rows_cols(x.shape());
        let dx = with_data(grad, |g| self.rotate(g, cols, -1.0))?;
        Ok(Some(cpu_tensor(dx, x.shape())?))
    }
}

// ---------------------------------------------------------------- SwiGLU

/// `silu(gate) · up`, the gated MLP's middle. Args: gate, up (same shape).
pub struct SwiGlu;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fast_exp(-x))
}

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "fused-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, "swiglu")?, slice(s2, l2, "swiglu")?);
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} and up {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let y = zip_map(a, b, |a, b| a * sigmoid(a) * b);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // d gate = g·up·σ(a)·(1 + a·(1 − σ(a))),  d up = g·a·σ(a).
        let (da, db) = with_data(gate, |a| {
            with_data(up, |b| {
                with_data(grad, |g| {
                    let gb = zip_map(g, b, |g, b| g * b);
                    let da = zip_map(a, &gb, |a, gb| {
                        let s = sigmoid(a);
                        gb * s * (1.0 + a * (1.0 - s))
                    });
                    let db = zip_map(a, g, |a, g| g * a * sigmoid(a));
                    Ok((da, db))
                })
            })
        })?;
        Ok((
            Some(cpu_tensor(da, gate.shape())?),
            Some(cpu_tensor(db, up.shape())?),
        ))
    }
}
