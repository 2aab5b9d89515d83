//! Fused ops against their composite twins: forward values and gradients, f32, 1e-5.

use candle_core::{Device, Result, Tensor, Var};

use super::*;
use crate::rng::Rng;

pub(crate) fn randn(rng: &mut Rng, shape: &[usize], std: f64) -> Result<Tensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| (rng.normal() * std) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// Max difference relative to the larger of 1 and the largest reference value: sums over
/// hundreds of rows (a norm weight's gradient) differ in the last bits with summation order.
fn rel_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
    Ok(max_abs_diff(a, b)? / scale)
}

/// Runs `f` on fresh variables built from `inputs`, fused and composite, and compares the outputs
/// and the gradients of `Σ f(x)·r` for a random `r`.
pub(crate) fn check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> Result<()> {
    let run = |fused: bool| -> Result<(Tensor, Vec<Tensor>)> {
        let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
        let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
        let y = if fused {
            f(&ts)?
        } else {
            with_composite(|| f(&ts))?
        };
        let r = randn(&mut Rng::new(99), y.dims(), 1.0)?;
        let grads = (&y * &r)?.sum_all()?.backward()?;
        let gs = ts
            .iter()
            .map(|t| grads.get(t).cloned().expect("missing gradient"))
            .collect();
        Ok((y, gs))
    };
    let (y1, g1) = run(true)?;
    let (y2, g2) = run(false)?;
    let d = max_abs_diff(&y1, &y2)?;
    assert!(d < 1e-5, "forward differs by {d}");
    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
        let d = rel_diff(a, b)?;
        assert!(d < 1e-5, "gradient of input {i} differs by {d} (relative)");
    }
    Ok(())
}

#[test]
fn fused_layer_norm_matches_composite() -> Result<()> {
    let mut rng = Rng::new(1);
    // 70 rows: more than one row block, and > PAR_MIN elements to take the parallel path.
    let x = (randn(&mut rng, &[70, 3, 128], 1.0)? + 0.5)?;
    let w = (randn(&mut rng, &[128], 0.1)? + 1.0)?;
    let b = randn(&mut rng, &[128], 0.1)?;
    check(&[x, w, b], |t| layer_norm(&t[0], &t[1], &t[2], 1e-5))
}

#[test]
fn fused_softmax_matches_composite() -> Result<()> {
    let mut rng = Rng::new(2);
    check(&[randn(&mut rng, &[2, 4, 17, 17], 2.0)?], |t| {
        softmax(&t[0])
    })?;
    check(&[randn(&mut rng, &[3, 5], 2.0)?], |t| softmax(&t[0]))
}

#[test]
fn fused_gelu_matches_composite() -> Result<()> {
    let mut rng = Rng::new(3);
    check(&[randn(&mut rng, &[64, 300], 2.0)?], |t| gelu(&t[0]))?;
    check(&[randn(&mut rng, &[7], 2.0)?], |t| gelu(&t[0]))
}

#[test]
fn fused_quick_gelu_matches_composite() -> Result<()> {
    let mut rng = Rng::new(9);
    check(&[randn(&mut rng, &[64, 300], 3.0)?], |t| quick_gelu(&t[0]))?;
    check(&[randn(&mut rng, &[7], 3.0)?], |t| quick_gelu(&t[0]))
}

#[test]
fn quick_gelu_is_x_times_sigmoid_of_1_702_x() -> Result<()> {
    let xs = [-6.0f32, -1.0, -0.1, 0.0, 0.3, 2.0, 9.0];
    let x = Tensor::new(&xs, &Device::Cpu)?;
    for y in [quick_gelu(&x)?, with_composite(|| quick_gelu(&x))?] {
        for (&x, y) in xs.iter().zip(y.to_vec1::<f32>()?) {
            let want = x as f64 / (1.0 + (-1.702 * x as f64).exp());
            assert!(
                (y as f64 - want).abs() < 1e-6,
                "quick_gelu({x}) = {y}, want {want}"
            );
        }
    }
    Ok(())
}

#[test]
fn fused_bias_add_matches_composite() -> Result<()> {
    let mut rng = Rng::new(4);
    let x = randn(&mut rng, &[40, 17, 64], 1.0)?;
    let b = randn(&mut rng, &[17, 64], 1.0)?;
    check(&[x, b], |t| bias_add(&t[0], &t[1]))?;
    let x = randn(&mut rng, &[5, 3], 1.0)?;
    let b = randn(&mut rng, &[3], 1.0)?;
    check(&[x, b], |t| bias_add(&t[0], &t[1]))
}

#[test]
fn linear_and_attention_match_composite() -> Result<()> {
    let mut rng = Rng::new(5);
    let x = randn(&mut rng, &[2, 9, 16], 1.0)?;
    let w = randn(&mut rng, &[24, 16], 0.2)?;
    let b = randn(&mut rng, &[24], 0.2)?;
    check(&[x, w, b], |t| linear(&t[0], &t[1], Some(&t[2])))?;
    let q = randn(&mut rng, &[2, 3, 9, 8], 1.0)?;
    let k = randn(&mut rng, &[2, 3, 9, 8], 1.0)?;
    let v = randn(&mut rng, &[2, 3, 9, 8], 1.0)?;
    let mask =
        causal_mask(9, &Device::Cpu)?.broadcast_add(&padding_mask(&[9, 4], 9, &Device::Cpu)?)?;
    check(&[q, k, v], |t| attention(&t[0], &t[1], &t[2], Some(&mask)))
}

#[test]
fn masked_keys_get_no_weight() -> Result<()> {
    // Changing a masked key or value must not change the output.
    let mut rng = Rng::new(6);
    let q = randn(&mut rng, &[1, 1, 4, 8], 1.0)?;
    let k = randn(&mut rng, &[1, 1, 4, 8], 1.0)?;
    let v = randn(&mut rng, &[1, 1, 4, 8], 1.0)?;
    let mask = padding_mask(&[2], 4, &Device::Cpu)?;
    let a = attention(&q, &k, &v, Some(&mask))?;
    let k2 = Tensor::cat(&[k.narrow(2, 0, 2)?, (k.narrow(2, 2, 2)? * 7.0)?], 2)?;
    let v2 = Tensor::cat(&[v.narrow(2, 0, 2)?, (v.narrow(2, 2, 2)? - 3.0)?], 2)?;
    let b = attention(&q, &k2, &v2, Some(&mask))?;
    assert!(max_abs_diff(&a, &b)? < 1e-6);
    Ok(())
}

#[test]
fn fused_multi_head_attention_matches_composite() -> Result<()> {
    let mut rng = Rng::new(7);
    let dev = Device::Cpu;
    let (n, t, c) = (3, 7, 24); // 3 heads of 8: dot's 8-wide chunks and no remainder
    let masks = [
        None,
        Some(causal_mask(t, &dev)?),
        Some(padding_mask(&[7, 3, 5], t, &dev)?),
        Some(causal_mask(t, &dev)?.broadcast_add(&padding_mask(&[7, 3, 5], t, &dev)?)?),
    ];
    for mask in &masks {
        for heads in [3, 2] {
            let q = randn(&mut rng, &[n, t, c], 1.0)?;
            let k = randn(&mut rng, &[n, t, c], 1.0)?;
            let v = randn(&mut rng, &[n, t, c], 1.0)?;
            check(&[q, k, v], |x| {
                multi_head_attention(&x[0], &x[1], &x[2], heads, mask.as_ref())
            })?;
        }
    }
    Ok(())
}

#[test]
fn grouped_query_attention_shares_kv_heads_and_matches_composite() -> Result<()> {
    let mut rng = Rng::new(4);
    let dev = Device::Cpu;
    let (n, t, d) = (2, 6, 8);
    let q = randn(&mut rng, &[n, t, 4 * d], 1.0)?;
    let k = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
    let v = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
    let mask = causal_mask(t, &dev)?;
    check(&[q.clone(), k.clone(), v.clone()], |x| {
        grouped_attention(&x[0], &x[1], &x[2], 4, 2, Some(&mask))
    })?;
    // Query heads 0 and 1 read kv head 0; 2 and 3 read kv head 1.
    let y = grouped_attention(&q, &k, &v, 4, 2, Some(&mask))?;
    for h in 0..4 {
        let head = |x: &Tensor, i: usize| x.narrow(D::Minus1, i * d, d);
        let one = multi_head_attention(
            &head(&q, h)?,
            &head(&k, h / 2)?,
            &head(&v, h / 2)?,
            1,
            Some(&mask),
        )?;
        assert!(max_abs_diff(&head(&y, h)?, &one)? < 1e-6, "head {h}");
    }
    Ok(())
}

#[test]
fn attention_of_the_last_queries_over_all_keys_equals_the_full_causal_rows() -> Result<()> {
    // What a KV cache relies on: queries t0..T against all T keys (mask for the offset) give the
    // same rows as the full causal attention.
    let mut rng = Rng::new(5);
    let dev = Device::Cpu;
    let (n, t, d, t0) = (2, 7, 8, 4);
    let q = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
    let k = randn(&mut rng, &[n, t, d], 1.0)?;
    let v = randn(&mut rng, &[n, t, d], 1.0)?;
    let full = grouped_attention(&q, &k, &v, 2, 1, Some(&causal_mask(t, &dev)?))?;
    let mask = causal_mask(t, &dev)?.narrow(0, t0, t - t0)?;
    let tail = grouped_attention(&q.narrow(1, t0, t - t0)?, &k, &v, 2, 1, Some(&mask))?;
    assert!(max_abs_diff(&full.narrow(1, t0, t - t0)?, &tail)? < 1e-6);
    Ok(())
}
#[test]
fn fused_attention_blocks_match_composite_on_long_masked_rows() -> Result<()> {
    // 70 query rows: three row blocks, the last partial; left padding leaves rows that see no
    // key at all (uniform, as the composite's softmax of equal scores).
    let mut rng = Rng::new(9);
    let dev = Device::Cpu;
    let (n, t, d) = (2, 70, 8);
    let causal = causal_mask(t, &dev)?;
    let left_pad: Vec<f32> = [0usize, 37]
        .iter()
        .flat_map(|&pad| (0..t * t).map(move |k| if k % t < pad { MASKED } else { 0.0 }))
        .collect();
    let left_pad = Tensor::from_vec(left_pad, (n, 1, t, t), &dev)?.broadcast_add(&causal)?;
    for mask in [None, Some(&causal), Some(&left_pad)] {
        let q = randn(&mut rng, &[n, t, 4 * d], 1.0)?;
        let k = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
        let v = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
        check(&[q, k, v], |x| {
            grouped_attention(&x[0], &x[1], &x[2], 4, 2, mask)
        })?;
    }
    // Fewer queries than keys (a KV cache's last rows; a resampler's queries).
    let tq = 40;
    let q = randn(&mut rng, &[n, tq, 2 * d], 1.0)?;
    let k = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
    let v = randn(&mut rng, &[n, t, 2 * d], 1.0)?;
    check(&[q.clone(), k.clone(), v.clone()], |x| {
        multi_head_attention(&x[0], &x[1], &x[2], 2, None)
    })?;
    let tail = causal.narrow(0, t - tq, tq)?;
    check(&[q, k, v], |x| {
        multi_head_attention(&x[0], &x[1], &x[2], 2, Some(&tail))
    })
}

#[test]
fn fused_cross_entropy_matches_composite() -> Result<()> {
    let mut rng = Rng::new(10);
    // Enough rows for the parallel path; one row far from the others in scale.
    let (m, v) = (300, 97);
    let mut logits = randn(&mut rng, &[m, v], 3.0)?;
    logits = logits.slice_assign(&[0..1, 0..v], &(logits.narrow(0, 0, 1)? * 40.0)?)?;
    let targets: Vec<u32> = (0..m as u32).map(|r| (r * 31) % v as u32).collect();
    let targets = Tensor::from_vec(targets, m, &Device::Cpu)?;
    check(&[logits], |x| cross_entropy(&x[0], &targets))?;
    let bad = Tensor::from_vec(vec![v as u32; m], m, &Device::Cpu)?;
    let err = cross_entropy(&randn(&mut rng, &[m, v], 1.0)?, &bad).unwrap_err();
    assert!(err.to_string().contains("outside a vocabulary"), "{err}");
    Ok(())
}

#[test]
fn fused_linear_matches_composite() -> Result<()> {
    let mut rng = Rng::new(8);
    // Big enough for gemm's parallel path; 3-D input to exercise the row folding.
    let x = randn(&mut rng, &[4, 33, 72], 1.0)?;
    let w = randn(&mut rng, &[40, 72], 0.2)?;
    let b = randn(&mut rng, &[40], 0.2)?;
    check(&[x.clone(), w.clone(), b], |t| {
        linear(&t[0], &t[1], Some(&t[2]))
    })?;
    check(&[x, w], |t| linear(&t[0], &t[1], None))
}
