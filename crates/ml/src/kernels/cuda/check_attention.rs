//! The attention part of `check_all`: out, dq, dk and dv against the composite form, in f32 and
//! bf16, for every head dim, with no mask, a causal mask and a padding mask, plain and grouped
//! heads, and a case with fewer queries than keys (a causal mask offset as for a KV cache).
//! Sizes straddle tile edges (67 rows: a full 64-row tile and a ragged one).

use candle_core::{D, DType, Device, Result, Tensor};

use super::check::{BF16_TOLERANCE, F32_ATTENTION_TOLERANCE, KernelCheck, compare};
use super::grouped_attention;

#[derive(Clone, Copy, Debug)]
enum MaskKind {
    None,
    /// Query i sees keys `..= i + Tk − Tq`: `(Tq, Tk)`.
    Causal,
    /// Sample n sees its first keys only: `(N, 1, 1, Tk)`.
    Padding,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    n: usize,
    tq: usize,
    tk: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    mask: MaskKind,
}

const MASKED: f32 = -1e9;

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for d in [32, 64, 128] {
        let case = |n, t, heads, kv_heads, mask| Case {
            n,
            tq: t,
            tk: t,
            heads,
            kv_heads,
            d,
            mask,
        };
        cases.push(case(2, 67, 4, 4, MaskKind::None));
        cases.push(case(2, 67, 4, 2, MaskKind::Causal));
        cases.push(case(3, 50, 2, 1, MaskKind::Padding));
    }
    cases.push(Case {
        n: 2,
        tq: 17,
        tk: 80,
        heads: 4,
        kv_heads: 2,
        d: 64,
        mask: MaskKind::Causal,
    });
    cases
}

fn mask(case: &Case, device: &Device) -> Result<Option<Tensor>> {
    let Case { n, tq, tk, .. } = *case;
    let keep = |seen: bool| if seen { 0.0 } else { MASKED };
    match case.mask {
        MaskKind::None => Ok(None),
        MaskKind::Causal => {
            let m: Vec<f32> = (0..tq * tk)
                .map(|e| keep(e % tk <= e / tk + (tk - tq)))
                .collect();
            Ok(Some(Tensor::from_vec(m, (tq, tk), device)?))
        }
        MaskKind::Padding => {
            // The last sample sees a single key.
            let lengths: Vec<usize> = (0..n)
                .map(|i| if i + 1 == n { 1 } else { tk - i * tk / n })
                .collect();
            let m: Vec<f32> = lengths
                .iter()
                .flat_map(|&len| (0..tk).map(move |j| keep(j < len)))
                .collect();
            Ok(Some(Tensor::from_vec(m, (n, 1, 1, tk), device)?))
        }
    }
}

/// `ops::grouped_attention`'s composite form.
fn attention_reference(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    case: &Case,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let Case {
        n,
        tq,
        tk,
        heads,
        kv_heads,
        d,
        ..
    } = *case;
    let rep = heads / kv_heads;
    // (N, T, h·d) → (N, h, T, d)
    let split = |x: &Tensor, h: usize, t: usize| x.reshape((n, t, h, d))?.transpose(1, 2);
    // Key/value head h / rep for query head h.
    let repeat = |x: Tensor| {
        x.unsqueeze(2)?
            .broadcast_as((n, kv_heads, rep, tk, d))?
            .contiguous()?
            .reshape((n, heads, tk, d))
    };
    let q = split(q, heads, tq)?.contiguous()?;
    let k = repeat(split(k, kv_heads, tk)?)?;
    let v = repeat(split(v, kv_heads, tk)?)?;
    let scores = (q.matmul(&k.t()?.contiguous()?)? * (1.0 / (d as f64).sqrt()))?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let e = scores.broadcast_sub(&max)?.exp()?;
    let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
    p.matmul(&v)?.transpose(1, 2)?.reshape((n, tq, heads * d))
}

pub(super) fn check_attention(device: &Device, checks: &mut Vec<KernelCheck>) -> Result<()> {
    for dtype in [DType::F32, DType::BF16] {
        let tolerance = match dtype {
            DType::BF16 => BF16_TOLERANCE,
            _ => F32_ATTENTION_TOLERANCE,
        };
        for case in cases() {
            let Case {
                n,
                tq,
                tk,
                heads,
                kv_heads,
                d,
                ..
            } = case;
            let randn = |t: usize, h: usize| {
                Tensor::randn(0f32, 1f32, (n, t, h * d), device)?.to_dtype(dtype)
            };
            let (q, k, v) = (
                randn(tq, heads)?,
                randn(tk, kv_heads)?,
                randn(tk, kv_heads)?,
            );
            let upstream = randn(tq, heads)?;
            let mask = mask(&case, device)?;
            let ref_mask = match &mask {
                Some(m) => Some(m.to_device(&Device::Cpu)?.to_dtype(DType::F64)?),
                None => None,
            };
            let label = format!(
                "attention {dtype:?} d{d} n{n} tq{tq} tk{tk} h{heads}/kv{kv_heads} {:?}",
                case.mask
            );
            let names = ["out", "dq", "dk", "dv"].map(|o| format!("{label} {o}"));
            compare(
                checks,
                &names,
                tolerance,
                &[q, k, v],
                &upstream,
                |t| match grouped_attention(&t[0], &t[1], &t[2], heads, kv_heads, mask.as_ref())? {
                    Some(out) => Ok(out),
                    None => candle_core::bail!("{label}: the kernel declined the case"),
                },
                |t| attention_reference(&t[0], &t[1], &t[2], &case, ref_mask.as_ref()),
            )?;
        }
    }
    Ok(())
}
