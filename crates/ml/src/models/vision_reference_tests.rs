//! Agreement with Hugging Face `transformers`: the folders under
//! `tests/fixtures/vision_reference/` were written by `scripts/reference/vision_reference.py`
//! (a tiny random `CLIPVisionModel` and `SiglipModel`, `save_pretrained`, and their float64
//! hidden states for fixed u8 pixels). Here the same folders go through our loader, the same
//! pixels through the data pipeline's normalisation and our ViT, and every token's state must
//! agree within 1e-4 (f32): the last layer after the post-LayerNorm, the penultimate raw (what
//! LLaVA reads), and the last at another image size (position grid resized).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Result, Tensor};

use super::hf_vision::load_hf_vision;
use super::qwen2_reference_tests::max_diff;
use super::vit::{FeatureLayer, VisionTransformer};
use crate::data::image::normalize_into;
use crate::ops::with_composite;

const TOL: f32 = 1e-4;

pub(crate) fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/vision_reference")
        .join(case)
}

fn expected(case: &str) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(case_dir(case).join("expected.safetensors"), &Device::Cpu)
}

/// u8 `(N, 3, S, S)` pixels → what training feeds the tower (CLIP-normalised f32).
pub(crate) fn normalised(pixels: &Tensor) -> Result<Tensor> {
    let bytes = pixels.flatten_all()?.to_vec1::<u8>()?;
    let per_image = pixels.elem_count() / pixels.dim(0)?;
    let mut out = vec![0f32; bytes.len()];
    for (b, o) in bytes.chunks(per_image).zip(out.chunks_mut(per_image)) {
        normalize_into(b, o);
    }
    Tensor::from_vec(out, pixels.shape(), &Device::Cpu)
}

const LAST: FeatureLayer = FeatureLayer {
    layer: -1,
    post_norm: true,
};
const PENULTIMATE: FeatureLayer = FeatureLayer::LLAVA;

/// Max |ours − transformers| for (last, penultimate, resized last).
fn diffs(case: &str) -> Result<[f32; 3]> {
    let want = expected(case)?;
    let (pixels, resized) = (&want["pixels"], &want["pixels_resized"]);
    let tower = load_hf_vision(&case_dir(case), pixels.dim(3)?, &Device::Cpu)?;
    assert_eq!(tower.resized_from, None);
    let x = normalised(pixels)?;
    let last = max_diff(&tower.model.hidden_state(&x, &LAST)?, &want["last"])?;
    let penultimate = max_diff(
        &tower.model.hidden_state(&x, &PENULTIMATE)?,
        &want["penultimate"],
    )?;
    let size = resized.dim(3)?;
    let big = load_hf_vision(&case_dir(case), size, &Device::Cpu)?;
    assert_eq!(big.resized_from, Some(pixels.dim(3)?));
    assert_eq!(big.model.config().image_size, size);
    let y = big.model.hidden_state(&normalised(resized)?, &LAST)?;
    Ok([last, penultimate, max_diff(&y, &want["resized_last"])?])
}

fn check(case: &str) -> Result<()> {
    for composite in [false, true] {
        let [last, penultimate, resized] = if composite {
            with_composite(|| diffs(case))?
        } else {
            diffs(case)?
        };
        println!(
            "{case}, composite {composite}: max |Δ| last {last:e}, penultimate {penultimate:e}, \
             resized {resized:e}"
        );
        for (what, d) in [
            ("last", last),
            ("penultimate", penultimate),
            ("resized", resized),
        ] {
            assert!(d <= TOL, "{case} {what} (composite {composite}): {d}");
        }
    }
    Ok(())
}

#[test]
fn clip_hidden_states_match_transformers() -> Result<()> {
    check("clip")
}

#[test]
fn siglip_hidden_states_match_transformers() -> Result<()> {
    check("siglip")
}

#[test]
fn llava_features_are_the_penultimate_patch_tokens() -> Result<()> {
    // CLIP drops its CLS token; SigLIP has none to drop.
    for (case, cls) in [("clip", 1), ("siglip", 0)] {
        let want = expected(case)?;
        let tower = load_hf_vision(&case_dir(case), 32, &Device::Cpu)?;
        let mut cfg = tower.model.config().clone();
        cfg.features = PENULTIMATE;
        let vit = VisionTransformer::new(&tower.params.pp("vision"), &cfg)?;
        let features = vit.features(&normalised(&want["pixels"])?)?;
        assert_eq!(features.dims(), &[2, 16, 32]);
        let patches = want["penultimate"].narrow(1, cls, 16)?;
        assert!(max_diff(&features, &patches)? <= TOL, "{case}");
        assert_eq!(features.dtype(), DType::F32);
    }
    Ok(())
}
