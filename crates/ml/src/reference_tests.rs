//! Agreement with PyTorch: `tests/fixtures/clip_reference.json`, written by
//! `scripts/reference/clip_reference.py`. Values and gradients within 1e-5 (relative to the
//! largest value when that exceeds 1).

use candle_core::{Device, Result, Tensor, Var};
use serde_json::Value;

use super::models::clip::{LOGIT_SCALE_MAX, contrastive_loss, l2_normalize};
use super::ops;
use crate::train::optim::{AdamW, AdamWConfig, ParamGroup};

const TOL: f32 = 1e-5;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/clip_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as usize)
        .collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Result<Tensor> {
    Tensor::from_vec(floats(v), shape, &Device::Cpu)
}

fn var(v: &Value, shape: &[usize]) -> Result<Var> {
    Var::from_tensor(&tensor(v, shape)?)
}

fn assert_close(what: &str, got: &Tensor, want: &Value) -> Result<()> {
    let got = got.flatten_all()?.to_vec1::<f32>()?;
    let want = floats(want);
    assert_eq!(got.len(), want.len(), "{what}: length");
    // Relative to the largest reference value when that exceeds 1: f32 sums of ~10-sized
    // terms carry ~1e-6 relative rounding whatever the order.
    let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs() / scale)
        .fold(0f32, f32::max);
    assert!(worst < TOL, "{what}: off by {worst} (relative to {scale})");
    Ok(())
}

#[test]
fn contrastive_loss_and_gradients_match_pytorch() -> Result<()> {
    for case in fixture()["contrastive"].as_array().unwrap() {
        let shape = [
            case["n"].as_u64().unwrap() as usize,
            case["dim"].as_u64().unwrap() as usize,
        ];
        let img = var(&case["image"], &shape)?;
        let txt = var(&case["text"], &shape)?;
        let s = Var::from_tensor(&Tensor::new(
            case["logit_scale"].as_f64().unwrap() as f32,
            &Device::Cpu,
        )?)?;
        let temp = s.minimum(LOGIT_SCALE_MAX)?.exp()?;
        let loss = contrastive_loss(&l2_normalize(&img)?, &l2_normalize(&txt)?, &temp)?;
        assert_close("loss", &loss, &Value::from(vec![case["loss"].clone()]))?;
        let g = loss.backward()?;
        assert_close("d/d image", g.get(&img).unwrap(), &case["grad_image"])?;
        assert_close("d/d text", g.get(&txt).unwrap(), &case["grad_text"])?;
        let gs = g
            .get(&s)
            .map(|t| t.to_scalar::<f32>())
            .transpose()?
            .unwrap_or(0.0);
        let want = case["grad_logit_scale"].as_f64().unwrap() as f32;
        assert!((gs - want).abs() < TOL, "d/d logit_scale: {gs} vs {want}");
    }
    Ok(())
}

#[test]
fn masked_attention_matches_pytorch() -> Result<()> {
    for case in fixture()["attention"].as_array().unwrap() {
        let shape = dims(&case["shape"]);
        let t = shape[2];
        let (q, k, v) = (
            var(&case["q"], &shape)?,
            var(&case["k"], &shape)?,
            var(&case["v"], &shape)?,
        );
        let mut mask: Option<Tensor> = None;
        if case["causal"].as_bool().unwrap() {
            mask = Some(ops::causal_mask(t, &Device::Cpu)?);
        }
        if let Some(lengths) = case["lengths"].as_array() {
            let lengths: Vec<usize> = lengths
                .iter()
                .map(|l| l.as_u64().unwrap() as usize)
                .collect();
            let pad = ops::padding_mask(&lengths, t, &Device::Cpu)?;
            mask = Some(match mask {
                Some(m) => pad.broadcast_add(&m)?,
                None => pad,
            });
        }
        // (N, H, T, d) -> (N, T, H·d) and back, for the fused multi-head form.
        let (n, h, d) = (shape[0], shape[1], shape[3]);
        let merge = |x: &Tensor| x.transpose(1, 2)?.contiguous()?.reshape((n, t, h * d));
        let mha = || -> Result<Tensor> {
            let y =
                ops::multi_head_attention(&merge(&q)?, &merge(&k)?, &merge(&v)?, h, mask.as_ref())?;
            y.reshape((n, t, h, d))?.transpose(1, 2)
        };
        for (composite, fused_mha) in [(false, false), (true, false), (false, true), (true, true)] {
            let run = || {
                if fused_mha {
                    mha()
                } else {
                    ops::attention(&q, &k, &v, mask.as_ref())
                }
            };
            let out = if composite {
                ops::with_composite(run)?
            } else {
                run()?
            };
            assert_close("attention", &out, &case["out"])?;
            let upstream = tensor(&case["upstream"], &shape)?;
            let g = (&out * upstream)?.sum_all()?.backward()?;
            assert_close("d/d q", g.get(&q).unwrap(), &case["grad_q"])?;
            assert_close("d/d k", g.get(&k).unwrap(), &case["grad_k"])?;
            assert_close("d/d v", g.get(&v).unwrap(), &case["grad_v"])?;
        }
    }
    Ok(())
}

#[test]
fn layer_norm_and_gelu_match_pytorch() -> Result<()> {
    let case = &fixture()["layer_norm_gelu"];
    let (rows, cols) = (
        case["rows"].as_u64().unwrap() as usize,
        case["cols"].as_u64().unwrap() as usize,
    );
    let x = var(&case["x"], &[rows, cols])?;
    let w = var(&case["w"], &[cols])?;
    let b = var(&case["b"], &[cols])?;
    for composite in [false, true] {
        let run = || -> Result<Tensor> { ops::gelu(&(ops::layer_norm(&x, &w, &b, 1e-5)? * 2.0)?) };
        let y = if composite {
            ops::with_composite(run)?
        } else {
            run()?
        };
        assert_close("gelu(ln(x))", &y, &case["out"])?;
        let g = (&y * tensor(&case["upstream"], &[rows, cols])?)?
            .sum_all()?
            .backward()?;
        assert_close("d/d x", g.get(&x).unwrap(), &case["grad_x"])?;
        assert_close("d/d w", g.get(&w).unwrap(), &case["grad_w"])?;
        assert_close("d/d b", g.get(&b).unwrap(), &case["grad_b"])?;
    }
    Ok(())
}

#[test]
fn adamw_matches_pytorch() -> Result<()> {
    let case = &fixture()["adamw"];
    let f = |k: &str| case[k].as_f64().unwrap();
    let w = var(&case["w0"], &[3, 4])?;
    let b = var(&case["b0"], &[4])?;
    let group = |name: &str, wd, v: &Var| ParamGroup {
        name: name.into(),
        lr_scale: 1.0,
        weight_decay: wd,
        params: vec![(name.to_string(), v.clone())],
    };
    let cfg = AdamWConfig {
        lr: f("lr"),
        beta1: f("beta1"),
        beta2: f("beta2"),
        eps: f("eps"),
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(
        vec![group("w", f("weight_decay"), &w), group("b", 0.0, &b)],
        cfg,
    )?;
    for g in case["grads"].as_array().unwrap() {
        let mut grads = candle_core::backprop::GradStore::default();
        grads.insert(&w, tensor(&g["w"], &[3, 4])?);
        grads.insert(&b, tensor(&g["b"], &[4])?);
        opt.step(&grads)?;
    }
    assert_close("w", &w, &case["w"])?;
    assert_close("b", &b, &case["b"])?;
    Ok(())
}
