//! Multi-head (and grouped-query) attention as one CPU custom op with an analytic backward.
//!
//! Why: the composite form is ~10 graph nodes per layer (head split/merge copies, scale, mask,
//! softmax, two batched matmuls that candle runs as a loop of small single-core GEMMs), each an
//! allocation, and in backward a zero-fill and an add. Here each sample is one rayon task that
//! reads q, k, v straight from the projections' `(N, T, C)` layout and writes its output there.
//!
//! A head is worked in blocks of query rows, each two `gemm` products on strided views (no
//! copies) over only the keys its rows can see: under a causal mask that is about half of them.
//! A dropped key (mask ≤ `MASKED`/2) gets probability exactly 0 without an `exp`.
//!
//! Backward recomputes a block's probabilities instead of keeping N·H·Tq·Tk of them. With
//! S = s·q kᵀ + mask, P = softmax(S), O = P v:
//!   dV = Pᵀ dO,  dP = dO vᵀ,  dS = P ∘ (dP − rowsum(P ∘ dP)),  dQ = s·dS k,  dK = s·dSᵀ q.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fast_math::fast_exp;
use super::matmul::{Mat, MatMut, Parallelism, matmul_into};
use super::rows::with_data;
use crate::ops::MASKED;

/// Attention of q `(N, Tq, H·d)` over k, v `(N, Tk, KV·d)`.
pub struct Attention {
    pub heads: usize,
    /// Query head `h` reads key/value head `h / (heads / kv_heads)`, as Hugging Face's
    /// `repeat_kv` does.
    pub kv_heads: usize,
    /// Additive mask, row-major `(mask_n, Tq, Tk)`, `mask_n` 1 (shared) or N (per sample).
    pub mask: Option<(Vec<f32>, usize)>,
}

/// Query rows per block: large enough for `gemm` to run well, small enough that a causal
/// mask's skipped upper triangle is most of it.
const BLOCK: usize = 32;
const DROPPED: f32 = MASKED / 2.0;
const SERIAL: Parallelism = Parallelism::None;

#[derive(Clone, Copy)]
struct Dims {
    tq: usize,
    tk: usize,
    /// Query (and output) width H·d, key/value width KV·d, head width d.
    c: usize,
    ckv: usize,
    d: usize,
    /// Query heads per key/value head.
    rep: usize,
    scale: f32,
}

/// The keys one query row sees: `lo..hi`, and whether dropped keys inside are skipped. A row
/// whose mask drops every key keeps them all: a softmax of equal scores is uniform, as the
/// composite form computes.
#[derive(Clone, Copy)]
struct Span {
    lo: usize,
    hi: usize,
    skip_dropped: bool,
}

/// Query rows `r0..r0 + rows` and the keys `lo..lo + w` that any of them sees.
#[derive(Clone, Copy)]
struct Block {
    r0: usize,
    rows: usize,
    lo: usize,
    w: usize,
}

fn f32s<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    super::rows::slice(s, l, "fused attention")
}

fn spans(mask: Option<&[f32]>, dm: &Dims) -> Vec<Span> {
    (0..dm.tq)
        .map(|i| {
            let all = Span {
                lo: 0,
                hi: dm.tk,
                skip_dropped: false,
            };
            let Some(m) = mask else { return all };
            let row = &m[i * dm.tk..][..dm.tk];
            match row.iter().position(|&x| x > DROPPED) {
                None => all,
                Some(lo) => Span {
                    lo,
                    hi: dm.tk - row.iter().rev().position(|&x| x > DROPPED).unwrap_or(0),
                    skip_dropped: true,
                },
            }
        })
        .collect()
}

fn blocks(spans: &[Span]) -> Vec<Block> {
    spans
        .chunks(BLOCK)
        .enumerate()
        .map(|(b, rows)| {
            let lo = rows.iter().map(|s| s.lo).min().unwrap_or(0);
            let hi = rows.iter().map(|s| s.hi).max().unwrap_or(0);
            Block {
                r0: b * BLOCK,
                rows: rows.len(),
                lo,
                w: hi - lo,
            }
        })
        .collect()
}

/// In place: a row of scores for keys `lo..lo + row.len()` → its probabilities.
fn softmax_row(row: &mut [f32], mask: Option<&[f32]>, span: Span, lo: usize) {
    let (a, b) = (span.lo - lo, span.hi - lo);
    row[..a].fill(0.0);
    row[b..].fill(0.0);
    let live = &mut row[a..b];
    if let Some(m) = mask {
        for (s, &m) in live.iter_mut().zip(&m[span.lo..span.hi]) {
            *s = if span.skip_dropped && m <= DROPPED {
                f32::NEG_INFINITY // fast_exp → 0
            } else {
                *s + m
            };
        }
    }
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in live.iter_mut() {
        *s = fast_exp(*s - max);
        sum += *s;
    }
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|s| *s *= inv);
}

/// One sample's q, k, v and mask, and the keys each of its query rows sees.
struct Sample<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    mask: Option<&'a [f32]>,
    spans: &'a [Span],
}

impl Sample<'_> {
    /// Head `h`'s query rows of `blk`, as a view.
    fn q_rows(&self, h: usize, blk: Block, dm: &Dims) -> Mat<'_> {
        Mat::strided(&self.q[blk.r0 * dm.c + h * dm.d..], blk.rows, dm.d, dm.c)
    }

    /// The rows of `x` (k or v) that head `h` reads for `blk`, as a view.
    fn kv_rows<'x>(&self, x: &'x [f32], h: usize, blk: Block, dm: &Dims) -> Mat<'x> {
        let at = blk.lo * dm.ckv + (h / dm.rep) * dm.d;
        Mat::strided(&x[at..], blk.w, dm.d, dm.ckv)
    }

    /// P of head `h` for `blk`'s rows, into `p` (`rows × w`).
    fn probs(&self, h: usize, blk: Block, dm: &Dims, p: &mut [f32]) {
        let keys = self.kv_rows(self.k, h, blk, dm);
        let scores = MatMut::new(p, blk.rows, blk.w);
        matmul_into(
            scores,
            self.q_rows(h, blk, dm),
            keys.t(),
            dm.scale,
            false,
            SERIAL,
        );
        for (r, row) in p.chunks_exact_mut(blk.w).enumerate() {
            let i = blk.r0 + r;
            let mask = self.mask.map(|m| &m[i * dm.tk..][..dm.tk]);
            softmax_row(row, mask, self.spans[i], blk.lo);
        }
    }
}

impl Attention {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> Result<Dims> {
        let (n, tq, c) = q.dims3()?;
        let (nk, tk, ckv) = k.dims3()?;
        let (heads, kv_heads) = (self.heads, self.kv_heads);
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || c % heads != 0 {
            candle_core::bail!(
                "fused attention: width {c} cannot hold {heads} query heads sharing {kv_heads} \
                 key/value heads"
            );
        }
        let d = c / heads;
        if nk != n || ckv != kv_heads * d || v.dims() != k.dims() || tk == 0 {
            candle_core::bail!(
                "fused attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads of {d} sharing \
                 {kv_heads}",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        if let Some((m, mn)) = &self.mask
            && m.len() != mn * tq * tk
        {
            candle_core::bail!(
                "fused attention: mask of {} for ({mn}, {tq}, {tk})",
                m.len()
            );
        }
        Ok(Dims {
            tq,
            tk,
            c,
            ckv,
            d,
            rep: heads / kv_heads,
            scale: 1.0 / (d as f32).sqrt(),
        })
    }

    fn mask_of(&self, n: usize, dm: &Dims) -> Option<&[f32]> {
        let (m, mn) = self.mask.as_ref()?;
        Some(&m[(n % mn) * dm.tq * dm.tk..][..dm.tq * dm.tk])
    }

    /// Each distinct mask's spans and blocks (one set when there is no mask, or it is shared):
    /// worked out once per call, not per sample.
    fn layouts(&self, dm: &Dims) -> Vec<(Vec<Span>, Vec<Block>)> {
        let masks = self.mask.as_ref().map_or(1, |(_, mn)| *mn);
        (0..masks)
            .map(|n| {
                let spans = spans(self.mask_of(n, dm), dm);
                let blocks = blocks(&spans);
                (spans, blocks)
            })
            .collect()
    }

    /// Sample `n` of the batch `[q, k, v]`, and the blocks its query rows are worked in.
    fn sample<'a>(
        &'a self,
        n: usize,
        [q, k, v]: [&'a [f32]; 3],
        layouts: &'a [(Vec<Span>, Vec<Block>)],
        dm: &Dims,
    ) -> (Sample<'a>, &'a [Block]) {
        let (qn, kn) = (dm.tq * dm.c, dm.tk * dm.ckv);
        let (spans, blocks) = &layouts[n % layouts.len()];
        let sample = Sample {
            q: &q[n * qn..][..qn],
            k: &k[n * kn..][..kn],
            v: &v[n * kn..][..kn],
            mask: self.mask_of(n, dm),
            spans,
        };
        (sample, blocks)
    }

    fn forward_sample(&self, s: &Sample, blocks: &[Block], o: &mut [f32], dm: &Dims) {
        let mut p = vec![0f32; BLOCK * dm.tk];
        for h in 0..self.heads {
            for &blk in blocks {
                let p = &mut p[..blk.rows * blk.w];
                s.probs(h, blk, dm, p);
                let out = MatMut::strided(&mut o[blk.r0 * dm.c + h * dm.d..], blk.rows, dm.d, dm.c);
                let values = s.kv_rows(s.v, h, blk, dm);
                matmul_into(
                    out,
                    Mat::new(p, blk.rows, blk.w),
                    values,
                    1.0,
                    false,
                    SERIAL,
                );
            }
        }
    }

    /// Sample `s`'s gradients given dO `g`: dq `(Tq, C)` is overwritten, dk and dv `(Tk, KV·d)`
    /// accumulate (query heads sharing a key/value head add to it).
    fn backward_sample(
        &self,
        s: &Sample,
        g: &[f32],
        blocks: &[Block],
        dx: [&mut [f32]; 3],
        dm: &Dims,
    ) {
        let [dq, dk, dv] = dx;
        let (mut p, mut ds) = (vec![0f32; BLOCK * dm.tk], vec![0f32; BLOCK * dm.tk]);
        for h in 0..self.heads {
            for &blk in blocks {
                let (rows, w) = (blk.rows, blk.w);
                let (p, ds) = (&mut p[..rows * w], &mut ds[..rows * w]);
                s.probs(h, blk, dm, p);
                let g_rows = Mat::strided(&g[blk.r0 * dm.c + h * dm.d..], rows, dm.d, dm.c);
                let (keys, values) = (s.kv_rows(s.k, h, blk, dm), s.kv_rows(s.v, h, blk, dm));
                // dP = dO vᵀ, then dS = s·P ∘ (dP − Σⱼ P∘dP) in place.
                matmul_into(
                    MatMut::new(ds, rows, w),
                    g_rows,
                    values.t(),
                    1.0,
                    false,
                    SERIAL,
                );
                for (pr, dr) in p.chunks_exact(w).zip(ds.chunks_exact_mut(w)) {
                    let rowdot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    for (d, &pij) in dr.iter_mut().zip(pr) {
                        *d = pij * (*d - rowdot) * dm.scale;
                    }
                }
                let (ds, p) = (Mat::new(ds, rows, w), Mat::new(p, rows, w));
                let kv_at = blk.lo * dm.ckv + (h / dm.rep) * dm.d;
                let dq_rows =
                    MatMut::strided(&mut dq[blk.r0 * dm.c + h * dm.d..], rows, dm.d, dm.c);
                matmul_into(dq_rows, ds, keys, 1.0, false, SERIAL);
                let dk_rows = MatMut::strided(&mut dk[kv_at..], w, dm.d, dm.ckv);
                matmul_into(dk_rows, ds.t(), s.q_rows(h, blk, dm), 1.0, true, SERIAL);
                let dv_rows = MatMut::strided(&mut dv[kv_at..], w, dm.d, dm.ckv);
                matmul_into(dv_rows, p.t(), g_rows, 1.0, true, SERIAL);
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
        let dm = self.dims(l1.shape(), l2.shape(), l3.shape())?;
        let qn = dm.tq * dm.c;
        let layouts = self.layouts(&dm);
        let mut out = vec![0f32; q.len()];
        out.par_chunks_mut(qn).enumerate().for_each(|(n, o)| {
            let (s, blocks) = self.sample(n, [q, k, v], &layouts, &dm);
            self.forward_sample(&s, blocks, o, &dm);
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
        let dm = self.dims(q.shape(), k.shape(), v.shape())?;
        let (qn, kn) = (dm.tq * dm.c, dm.tk * dm.ckv);
        let layouts = self.layouts(&dm);
        let mut dq = vec![0f32; q.elem_count()];
        let (mut dk, mut dv) = (vec![0f32; k.elem_count()], vec![0f32; v.elem_count()]);
        with_data(q, |q| {
            with_data(k, |k| {
                with_data(v, |v| {
                    with_data(grad, |g| {
                        let chunks = dq
                            .par_chunks_mut(qn)
                            .zip(dk.par_chunks_mut(kn))
                            .zip(dv.par_chunks_mut(kn))
                            .enumerate();
                        chunks.for_each(|(n, ((dq, dk), dv))| {
                            let (s, blocks) = self.sample(n, [q, k, v], &layouts, &dm);
                            let g = &g[n * qn..][..qn];
                            self.backward_sample(&s, g, blocks, [dq, dk, dv], &dm);
                        });
                        Ok(())
                    })
                })
            })
        })?;
        let dev = candle_core::Device::Cpu;
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), &dev)?),
            Some(Tensor::from_vec(dk, k.shape(), &dev)?),
            Some(Tensor::from_vec(dv, v.shape(), &dev)?),
        ))
    }
}
