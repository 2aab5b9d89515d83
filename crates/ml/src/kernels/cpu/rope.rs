//! Rotary position embedding (Llama, Qwen2) with analytic backward.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::rows::{cpu_tensor, map_rows, rows_cols, slice, with_data};

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
