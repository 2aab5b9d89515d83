//! Normalisation kernels with analytic backward: LayerNorm (CLIP, ViT, the projector) and RMSNorm
//! (the Qwen2 decoder), one pass per direction over rows of the last dim.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::rows::{cpu_tensor, map_rows, rows_cols, rows_with_partials, slice, sum8, with_data};

// ---------------------------------------------------------------- LayerNorm

/// `y = (x - mean) / sqrt(var + eps) * w + b` over the last dim. Args: x, w, b.
pub struct LayerNorm {
    pub eps: f32,
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
