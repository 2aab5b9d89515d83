//! ViT tests: configs written before `arch`/`features` existed, feature layers, the pixel
//! re-normalisation, and gradient flow in the Hugging Face variants.

use candle_core::{Device, Result, Tensor};

use super::*;
use crate::ops::tests::{max_abs_diff, randn};
use crate::rng::Rng;

fn config(arch: VitArch, features: FeatureLayer) -> VisionConfig {
    VisionConfig {
        image_size: 16,
        patch_size: 8,
        width: 16,
        layers: 3,
        heads: 2,
        arch,
        features,
    }
}

/// A CLIP-like and a SigLIP-like variant: every option away from the default.
fn clip_arch() -> VitArch {
    VitArch {
        pre_norm: true,
        mlp_width: Some(24),
        activation: Activation::QuickGelu,
        ..VitArch::default()
    }
}

fn siglip_arch() -> VitArch {
    VitArch {
        class_token: false,
        patch_bias: true,
        activation: Activation::Gelu,
        ln_eps: 1e-6,
        pixel_norm: Some(PixelNorm {
            mean: [0.5; 3],
            std: [0.5; 3],
        }),
        ..VitArch::default()
    }
}

fn images(n: usize, seed: u64) -> Result<Tensor> {
    randn(&mut Rng::new(seed), &[n, 3, 16, 16], 1.0)
}

#[test]
fn a_config_from_before_reads_and_writes_unchanged() -> Result<()> {
    let old = r#"{"image_size":32,"patch_size":8,"width":128,"layers":4,"heads":4}"#;
    let cfg: VisionConfig = serde_json::from_str(old).map_err(candle_core::Error::wrap)?;
    assert_eq!(cfg.arch, VitArch::default());
    assert_eq!(cfg.features, FeatureLayer::default());
    assert_eq!(cfg.tokens(), 17);
    assert_eq!(
        serde_json::to_string(&cfg).map_err(candle_core::Error::wrap)?,
        old
    );
    let hf = config(
        siglip_arch(),
        FeatureLayer {
            layer: -2,
            post_norm: false,
        },
    );
    let json = serde_json::to_string(&hf).map_err(candle_core::Error::wrap)?;
    let back: VisionConfig = serde_json::from_str(&json).map_err(candle_core::Error::wrap)?;
    assert_eq!(back, hf);
    assert_eq!(back.tokens(), 4);
    Ok(())
}

#[test]
fn feature_layers_count_as_hugging_face_hidden_states() -> Result<()> {
    let at = |layer| FeatureLayer {
        layer,
        post_norm: false,
    };
    for (layer, blocks) in [(-1, 3), (-2, 2), (-4, 0), (0, 0), (3, 3)] {
        assert_eq!(at(layer).blocks(3)?, blocks, "layer {layer}");
    }
    for layer in [-5, 4] {
        let err = at(layer).blocks(3).unwrap_err().to_string();
        assert!(err.contains(&format!("feature layer {layer}")), "{err}");
    }
    Ok(())
}

#[test]
fn features_are_the_patch_tokens_of_the_chosen_layer() -> Result<()> {
    let x = images(2, 1)?;
    let penultimate = FeatureLayer {
        layer: -2,
        post_norm: false,
    };
    for (arch, cls) in [(clip_arch(), 1), (siglip_arch(), 0)] {
        let p = ParamStore::new(3, &Device::Cpu);
        let vit = VisionTransformer::new(&p, &config(arch.clone(), penultimate))?;
        let f = vit.features(&x)?;
        assert_eq!(f.dims(), &[2, 4, 16]);
        let all = vit.hidden_state(&x, &penultimate)?;
        assert_eq!(all.dims(), &[2, 4 + cls, 16]);
        assert_eq!(max_abs_diff(&f, &all.narrow(1, cls, 4)?)?, 0.0);
        // The same weights read at the last layer give another answer.
        let last = VisionTransformer::new(&p, &config(arch, FeatureLayer::default()))?;
        assert!(max_abs_diff(&f, &last.features(&x)?)? > 1e-3);
    }
    Ok(())
}

#[test]
fn a_pixel_norm_tower_sees_what_its_checkpoint_was_trained_on() -> Result<()> {
    // CLIP-normalised input x, and the same pixels under SigLIP's mean = std = 0.5.
    let x = images(1, 2)?;
    let v: Vec<f32> = x.flatten_all()?.to_vec1()?;
    let plane = 16 * 16;
    let siglip: Vec<f32> = v
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = i / plane;
            let pixel = x * CLIP_STD[c] + CLIP_MEAN[c];
            (pixel - 0.5) / 0.5
        })
        .collect();
    let siglip = Tensor::from_vec(siglip, x.shape(), &Device::Cpu)?;
    let p = ParamStore::new(4, &Device::Cpu);
    let with = VisionTransformer::new(&p, &config(siglip_arch(), FeatureLayer::default()))?;
    let plain = VitArch {
        pixel_norm: None,
        ..siglip_arch()
    };
    let without = VisionTransformer::new(&p, &config(plain, FeatureLayer::default()))?;
    let d = max_abs_diff(&with.features(&x)?, &without.features(&siglip)?)?;
    assert!(d < 1e-5, "{d}");
    Ok(())
}

#[test]
fn every_parameter_of_the_hugging_face_variants_gets_a_gradient() -> Result<()> {
    for arch in [clip_arch(), siglip_arch()] {
        let p = ParamStore::new(5, &Device::Cpu);
        let vit = VisionTransformer::new(&p, &config(arch, FeatureLayer::default()))?;
        let grads = vit.features(&images(2, 6)?)?.sqr()?.sum_all()?.backward()?;
        for (name, var) in p.vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} got no gradient"));
            assert!(g.sqr()?.sum_all()?.to_scalar::<f32>()? > 0.0, "{name}");
        }
    }
    Ok(())
}

#[test]
fn a_tower_without_a_cls_token_cannot_pool() -> Result<()> {
    let p = ParamStore::new(7, &Device::Cpu);
    let vit = VisionTransformer::new(&p, &config(siglip_arch(), FeatureLayer::default()))?;
    let err = vit.forward(&images(1, 8)?).unwrap_err().to_string();
    assert!(err.contains("no CLS token"), "{err}");
    Ok(())
}
