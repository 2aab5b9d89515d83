//! Multi-head attention as one CPU custom op with an analytic backward.
//!
//! Why: candle runs a batched matmul as a sequential loop of small GEMMs (N·H of them, each a
//! few hundred FLOPs for CLIP-small), so attention did not use the second core; and the
//! composite form needs ~10 graph nodes per layer (head split/merge copies, scale, mask add,
//! softmax, two matmuls), each costing an allocation, and in backward a zero-fill and an add.
//! Here each sample is one rayon task that reads q, k, v straight from the projections' (N, T, C)
//! layout and writes (N, T, C) for the output projection: no transposes at all.
//!
//! Backward recomputes the T×T probabilities (cheap for T ≤ 77) rather than storing them:
//! with S = q kᵀ·s + mask, P = softmax(S), O = P v:
//!   dV = Pᵀ dO,  dP = dO vᵀ,  dS = P ∘ (dP − rowsum(P ∘ dP)),  dQ = s·dS k,  dK = s·dSᵀ q.

use super::fused::with_data;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Attention over (N, T, C) q, k, v with `heads` heads of width C/heads.
pub struct Attention {
    pub heads: usize,
    /// Additive mask, row-major `(mask_n, T, T)`, `mask_n` 1 (shared) or N (per sample).
    pub mask: Option<(Vec<f32>, usize)>,
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::fused::slice(s, l, "fused attention")
}

/// Dot product with 8 independent accumulators, so that it vectorises without fast-math.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// y += a·x
#[inline(always)]
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// Row `i` of head `h` in one (T, C) sample.
#[inline(always)]
fn head_row<'a>(x: &'a [f32], i: usize, dm: &Dims, h: usize) -> &'a [f32] {
    &x[i * dm.c + h * dm.d..][..dm.d]
}

struct Dims {
    t: usize,
    c: usize,
    d: usize,
    scale: f32,
}

impl Attention {
    fn dims(&self, shape: &Shape) -> Result<(usize, Dims)> {
        let (n, t, c) = shape.dims3()?;
        if self.heads == 0 || c % self.heads != 0 {
            candle_core::bail!(
                "fused attention: width {c} not divisible by {} heads",
                self.heads
            );
        }
        let d = c / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        Ok((n, Dims { t, c, d, scale }))
    }

    /// P = softmax(q kᵀ·s + mask) for sample `n`, head `h`, into `p` (T×T).
    fn probs(&self, q: &[f32], k: &[f32], n: usize, h: usize, dm: &Dims, p: &mut [f32]) {
        let (t, c, d) = (dm.t, dm.c, dm.d);
        let mask = self
            .mask
            .as_ref()
            .map(|(m, mn)| &m[(n % mn) * t * t..][..t * t]);
        for i in 0..t {
            let qi = &q[i * c + h * d..][..d];
            let row = &mut p[i * t..][..t];
            for (j, s) in row.iter_mut().enumerate() {
                *s = dot(qi, &k[j * c + h * d..][..d]) * dm.scale;
            }
            if let Some(m) = mask {
                row.iter_mut()
                    .zip(&m[i * t..][..t])
                    .for_each(|(s, m)| *s += m);
            }
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for s in row.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let inv = 1.0 / sum;
            row.iter_mut().for_each(|s| *s *= inv);
        }
    }
}

impl Attention {
    /// Gradients for sample `n`: `x = [q, k, v, dO]` in, `dx = [dq, dk, dv]` out, all (T, C).
    fn backward_sample(&self, n: usize, x: [&[f32]; 4], dx: [&mut [f32]; 3], dm: &Dims) {
        let [q, k, v, g] = x;
        let [dq, dk, dv] = dx;
        let t = dm.t;
        let (mut p, mut ds) = (vec![0f32; t * t], vec![0f32; t * t]);
        for h in 0..self.heads {
            let row = |x, i| head_row(x, i, dm, h);
            let at = |i: usize| i * dm.c + h * dm.d..i * dm.c + (h + 1) * dm.d;
            self.probs(q, k, n, h, dm, &mut p);
            for i in 0..t {
                let gi = row(g, i);
                let (pr, dsr) = (&p[i * t..][..t], &mut ds[i * t..][..t]);
                // dP[i, j] = dO[i]·v[j]; then dS = P ∘ (dP − Σⱼ P∘dP), with the scale folded in.
                for (j, s) in dsr.iter_mut().enumerate() {
                    *s = dot(gi, row(v, j));
                }
                let rowdot: f32 = pr.iter().zip(dsr.iter()).map(|(a, b)| a * b).sum();
                for (j, (s, &pij)) in dsr.iter_mut().zip(pr).enumerate() {
                    *s = pij * (*s - rowdot) * dm.scale;
                    axpy(&mut dv[at(j)], pij, gi); // dV[j] += P[i, j]·dO[i]
                }
                for (j, &s) in dsr.iter().enumerate() {
                    axpy(&mut dq[at(i)], s, row(k, j)); // dQ[i] += dS[i, j]·k[j]
                }
            }
            for j in 0..t {
                for i in 0..t {
                    axpy(&mut dk[at(j)], ds[i * t + j], row(q, i)); // dK[j] += dS[i, j]·q[i]
                }
            }
        }
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
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
        let (q, k, v) = (f32s(s1, l1)?, f32s(s2, l2)?, f32s(s3, l3)?);
        let (_, dm) = self.dims(l1.shape())?;
        let (t, c, d) = (dm.t, dm.c, dm.d);
        let mut out = vec![0f32; q.len()];
        out.par_chunks_mut(t * c).enumerate().for_each(|(n, o)| {
            let (q, k, v) = (&q[n * t * c..], &k[n * t * c..], &v[n * t * c..]);
            let mut p = vec![0f32; t * t];
            for h in 0..self.heads {
                self.probs(q, k, n, h, &dm, &mut p);
                for i in 0..t {
                    let oi = &mut o[i * c + h * d..][..d];
                    for j in 0..t {
                        axpy(oi, p[i * t + j], &v[j * c + h * d..][..d]);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, dm) = self.dims(q.shape())?;
        let (t, c) = (dm.t, dm.c);
        let len = q.elem_count();
        let (mut dq, mut dk, mut dv) = (vec![0f32; len], vec![0f32; len], vec![0f32; len]);
        with_data(q, |q| {
            with_data(k, |k| {
                with_data(v, |v| {
                    with_data(grad, |g| {
                        let chunks = dq
                            .par_chunks_mut(t * c)
                            .zip(dk.par_chunks_mut(t * c))
                            .zip(dv.par_chunks_mut(t * c))
                            .enumerate();
                        chunks.for_each(|(n, ((dq, dk), dv))| {
                            let at = n * t * c;
                            let inputs = [&q[at..], &k[at..], &v[at..], &g[at..]];
                            self.backward_sample(n, inputs, [dq, dk, dv], &dm);
                        });
                        Ok(())
                    })
                })
            })
        })?;
        let dev = candle_core::Device::Cpu;
        let shape = q.shape();
        Ok((
            Some(Tensor::from_vec(dq, shape, &dev)?),
            Some(Tensor::from_vec(dk, shape, &dev)?),
            Some(Tensor::from_vec(dv, shape, &dev)?),
        ))
    }
}
