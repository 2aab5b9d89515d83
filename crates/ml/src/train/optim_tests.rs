//! AdamW groups, state round trip and gradient clipping. (Agreement with PyTorch's AdamW is in
//! `reference_tests.rs`.)

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};

use super::*;

#[test]
fn decay_is_decided_by_name() {
    for name in [
        "vision.transformer.blocks.0.ln_1.weight",
        "vision.ln_post.bias",
        "text.transformer.blocks.2.attn.q_proj.bias",
        "text.token_embedding",
        "text.position_embedding",
        "vision.class_embedding",
        "logit_scale",
    ] {
        assert!(no_decay(name), "{name} should not decay");
    }
    for name in [
        "vision.patch_proj.weight",
        "text.transformer.blocks.0.mlp.fc1.weight",
        "visual_projection.weight",
    ] {
        assert!(!no_decay(name), "{name} should decay");
    }
}

fn setup() -> Result<(Var, Var, AdamW)> {
    let w = Var::from_tensor(&Tensor::new(&[[1f32, -2.0], [0.5, 3.0]], &Device::Cpu)?)?;
    let b = Var::from_tensor(&Tensor::new(&[0.1f32, 0.2], &Device::Cpu)?)?;
    let params = vec![
        ("fc.weight".to_string(), w.clone()),
        ("fc.bias".to_string(), b.clone()),
    ];
    let opt = AdamW::with_default_groups(params, AdamWConfig::default())?;
    Ok((w, b, opt))
}

fn grads(w: &Var, b: &Var, k: f32) -> Result<GradStore> {
    let mut g = GradStore::default();
    g.insert(w, Tensor::new(&[[k, -k], [2.0 * k, 0.5]], &Device::Cpu)?);
    g.insert(b, Tensor::new(&[k, 1.0], &Device::Cpu)?);
    Ok(g)
}

#[test]
fn state_round_trip_resumes_identically() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let (w1, b1, mut a) = setup()?;
    let (w2, b2, mut b) = setup()?;
    assert_eq!(a.groups()[0].params[0].0, "fc.weight");
    assert_eq!(a.groups()[1].params[0].0, "fc.bias");
    for k in 0..3 {
        a.step(&grads(&w1, &b1, k as f32)?)?;
        b.step(&grads(&w2, &b2, k as f32)?)?;
    }
    a.save(&dir.path().join("opt.safetensors"))?;
    // A fresh optimizer on the second copy, loaded from the first's state.
    let (_, _, mut c) = setup()?;
    let params: Vec<_> = b.params().cloned().collect();
    let mut fresh = AdamW::with_default_groups(params, AdamWConfig::default())?;
    fresh.load(&dir.path().join("opt.safetensors"))?;
    assert_eq!(fresh.step_count(), 3);
    for k in 3..5 {
        a.step(&grads(&w1, &b1, k as f32)?)?;
        fresh.step(&grads(&w2, &b2, k as f32)?)?;
    }
    assert_eq!(w1.to_vec2::<f32>()?, w2.to_vec2::<f32>()?);
    assert_eq!(b1.to_vec1::<f32>()?, b2.to_vec1::<f32>()?);
    // Loading a state that lacks a parameter is an error.
    let mut missing = a.state_dict()?;
    missing.remove("m.fc.bias");
    assert!(c.load_state(missing).is_err());
    Ok(())
}

#[test]
fn clipping_scales_to_max_norm() -> Result<()> {
    let (w, b, opt) = setup()?;
    let mut g = GradStore::default();
    g.insert(&w, Tensor::new(&[[3f32, 0.0], [0.0, 0.0]], &Device::Cpu)?);
    g.insert(&b, Tensor::new(&[0f32, 4.0], &Device::Cpu)?);
    let params: Vec<_> = opt.params().cloned().collect();
    let norm = clip_grad_norm(&mut g, &params, 1.0)?;
    assert!((norm - 5.0).abs() < 1e-6);
    let after = clip_grad_norm(&mut g, &params, 10.0)?;
    assert!((after - 1.0).abs() < 1e-5, "{after}");
    Ok(())
}
