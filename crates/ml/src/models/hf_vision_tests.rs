//! The loader on variations of the reference fixtures: a whole model's checkpoint in shards, the
//! recorded config, and errors that name the file, the tensor and what to do.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor};

use super::*;
use crate::models::hf_weights::{INDEX, WEIGHTS};
use crate::models::vision_reference_tests::{case_dir, normalised};
use crate::models::vit::FeatureLayer;
use crate::ops::tests::max_abs_diff;

fn copy_case(case: &str, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(case_dir(case))? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}

fn tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(dir.join(WEIGHTS), &Device::Cpu)
}

fn error_of(dir: &Path, image_size: usize) -> String {
    match load_hf_vision(dir, image_size, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn last_state(dir: &Path) -> Result<Tensor> {
    let pixels = Tensor::arange(0u8, 96, &Device::Cpu)?
        .repeat(32)?
        .reshape((1, 3, 32, 32))?;
    let tower = load_hf_vision(dir, 32, &Device::Cpu)?;
    tower
        .model
        .hidden_state(&normalised(&pixels)?, &FeatureLayer::default())
}

#[test]
fn a_whole_clip_model_in_shards_loads_like_the_tower_alone() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("clip-model");
    std::fs::create_dir_all(&dir)?;
    // CLIPModel's layout: the tower's config under `vision_config`, its tensors under
    // `vision_model.`, beside a text tower and a projection the loader must skip.
    let tower_config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(case_dir("clip").join(CONFIG))?)
            .map_err(candle_core::Error::wrap)?;
    let config = serde_json::json!({
        "model_type": "clip", "vision_config": tower_config, "text_config": {"hidden_size": 8}
    });
    std::fs::write(dir.join(CONFIG), config.to_string())?;
    let mut shards = [HashMap::new(), HashMap::new()];
    let mut weight_map = serde_json::Map::new();
    let extra = [
        ("text_model.embeddings.token_embedding.weight", (5, 8)),
        ("visual_projection.weight", (4, 32)),
    ];
    let mut all: Vec<(String, Tensor)> = tensors(&case_dir("clip"))?
        .into_iter()
        .map(|(name, t)| (format!("vision_model.{name}"), t))
        .collect();
    for (name, shape) in extra {
        all.push((
            name.into(),
            Tensor::zeros(shape, DType::BF16, &Device::Cpu)?,
        ));
    }
    for (i, (name, t)) in all.into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        weight_map.insert(name.clone(), file.into());
        shards[i % 2].insert(name, t);
    }
    for (i, shard) in shards.iter().enumerate() {
        candle_core::safetensors::save(
            shard,
            dir.join(format!("model-0000{}-of-00002.safetensors", i + 1)),
        )?;
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join(INDEX), index.to_string())?;
    let d = max_abs_diff(&last_state(&dir)?, &last_state(&case_dir("clip"))?)?;
    assert_eq!(d, 0.0);
    Ok(())
}

#[test]
fn the_config_records_the_family_and_the_new_image_size() -> Result<()> {
    let siglip = load_hf_vision(&case_dir("siglip"), 16, &Device::Cpu)?;
    let cfg = siglip.model.config();
    assert_eq!(siglip.family, Family::Siglip);
    assert_eq!(siglip.resized_from, Some(32));
    assert_eq!((cfg.image_size, cfg.tokens()), (16, 4));
    assert!(!cfg.arch.class_token && cfg.arch.patch_bias && !cfg.arch.pre_norm);
    let norm = cfg.arch.pixel_norm.expect("SigLIP re-normalises");
    assert_eq!((norm.mean, norm.std), ([0.5; 3], [0.5; 3]));
    // Every parameter of the tower came from the file (the pooling head did not).
    let fresh = ParamStore::new(0, &Device::Cpu);
    VisionTransformer::new(&fresh.pp("vision"), cfg)?;
    assert_eq!(siglip.params.num_params(), fresh.num_params());
    let clip = load_hf_vision(&case_dir("clip"), 32, &Device::Cpu)?;
    let cfg = clip.model.config();
    assert_eq!(clip.family, Family::Clip);
    assert!(cfg.arch.class_token && cfg.arch.pre_norm && cfg.arch.pixel_norm.is_none());
    assert_eq!(cfg.arch.mlp_width, Some(48));
    Ok(())
}

#[test]
fn errors_name_the_file_the_tensor_and_what_to_do() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let missing = tmp.path().join("nowhere");
    let err = error_of(&missing, 32);
    assert!(
        err.contains("nowhere") && err.contains("not a folder"),
        "{err}"
    );
    std::fs::create_dir_all(&missing)?;
    let err = error_of(&missing, 32);
    assert!(err.contains("nowhere/config.json: missing"), "{err}");

    let dir = tmp.path().join("clip");
    copy_case("clip", &dir)?;
    let err = error_of(&dir, 36);
    assert!(
        err.contains("36 px") && err.contains("multiple of 8"),
        "{err}"
    );

    let mut weights = tensors(&dir)?;
    let name = "encoder.layers.1.mlp.fc2.weight";
    weights.insert(
        name.into(),
        Tensor::zeros((32, 4), DType::F16, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&weights, dir.join(WEIGHTS))?;
    let err = error_of(&dir, 32);
    assert!(err.contains(WEIGHTS) && err.contains(name), "{err}");
    assert!(err.contains("[32, 4]") && err.contains("[32, 48]"), "{err}");
    weights.remove(name);
    candle_core::safetensors::save(&weights, dir.join(WEIGHTS))?;
    let err = error_of(&dir, 32);
    assert!(err.contains(&format!("no tensor named {name}")), "{err}");

    weights.retain(|n, _| !n.starts_with("embeddings."));
    candle_core::safetensors::save(&weights, dir.join(WEIGHTS))?;
    let err = error_of(&dir, 32);
    assert!(err.contains("no CLIP vision tower"), "{err}");

    std::fs::write(dir.join(CONFIG), r#"{"model_type": "llama"}"#)?;
    let err = error_of(&dir, 32);
    assert!(
        err.contains(CONFIG) && err.contains("neither CLIP nor SigLIP"),
        "{err}"
    );

    let dir = tmp.path().join("siglip");
    copy_case("siglip", &dir)?;
    std::fs::write(dir.join(PREPROCESSOR), "{not json")?;
    let err = error_of(&dir, 32);
    assert!(err.contains(PREPROCESSOR), "{err}");
    Ok(())
}

/// `checkpoint_tensors` and `HfVisionConfig::of` undo the loader: the fixture loaded at 24 px,
/// written back as a checkpoint of a 24-px tower, loads to the same parameters.
#[test]
fn a_loaded_tower_written_back_as_a_checkpoint_loads_the_same() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for case in ["clip", "siglip"] {
        let tower = load_hf_vision(&case_dir(case), 24, &Device::Cpu)?;
        let cfg = tower.model.config();
        let hf = HfVisionConfig::of(cfg).expect("a checkpoint's tower");
        let dir = tmp.path().join(case);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(CONFIG), hf.to_json().to_string())?;
        let norm = HfVisionConfig::pixel_norm_of(cfg);
        let processor = serde_json::json!({"image_mean": norm.mean, "image_std": norm.std});
        std::fs::write(dir.join(PREPROCESSOR), processor.to_string())?;
        let written: HashMap<String, Tensor> = checkpoint_tensors(&tower.params, &hf, "")?
            .into_iter()
            .collect();
        candle_core::safetensors::save(&written, dir.join(WEIGHTS))?;

        let back = load_hf_vision(&dir, 24, &Device::Cpu)?;
        assert_eq!(back.model.config(), cfg, "{case}");
        assert_eq!(back.resized_from, None);
        let values = |p: &ParamStore| -> Result<Vec<(String, Vec<f32>)>> {
            p.vars()
                .into_iter()
                .map(|(n, v)| Ok((n, v.as_tensor().flatten_all()?.to_vec1()?)))
                .collect()
        };
        assert_eq!(values(&back.params)?, values(&tower.params)?, "{case}");
    }
    // This project's own CLIP (no LayerNorm before the blocks) has no checkpoint form.
    let own = crate::models::vlm::tests::tiny().vision;
    assert_eq!(HfVisionConfig::of(&own), None);
    Ok(())
}
