//! `x + b` with `b` broadcast over the leading dims, with analytic backward.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use super::rows::{column_sums, map_rows, slice};

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
