//! Hugging Face folders: save → load round trips, sharded checkpoints, and errors that name the
//! file, the tensor and what was expected.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor};

use super::*;
use crate::models::qwen2::tests::{lively_model, random_ids, tiny_config};
use crate::ops::tests::max_abs_diff;
use crate::rng::Rng;

fn logits(model: &Qwen2) -> Result<Tensor> {
    let ids = random_ids(&mut Rng::new(1), 2, 7, model.config().vocab_size)?;
    model.forward_ids(&ids, Some(&[0, 2]))
}

fn error_of(dir: &Path) -> String {
    match load_hf_folder(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// Writes `model`'s tensors as two shards plus `model.safetensors.index.json`, Hugging Face style.
fn write_sharded(dir: &Path, model: &Qwen2) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(CONFIG), model.config().to_json())?;
    let tensors = model.tensors();
    let half = tensors.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&tensors[..half], &tensors[half..]].into_iter().enumerate() {
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        let shard: HashMap<String, Tensor> = part.iter().cloned().collect();
        candle_core::safetensors::save(&shard, dir.join(&file))?;
        for (name, _) in part {
            weight_map.insert(name.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.join(INDEX), index.to_string())?;
    Ok(())
}

#[test]
fn a_saved_folder_loads_back_to_the_same_model() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for tied in [false, true] {
        let (_, model) = lively_model(&tiny_config(tied), 2)?;
        let dir = tmp.path().join(format!("tied-{tied}"));
        save_hf_folder(&dir, &model)?;
        std::fs::write(dir.join(TOKENIZER), "{}")?;
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"chat_template": "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"}"#,
        )?;
        let hf = load_hf_folder(&dir, &Device::Cpu)?;
        assert_eq!(hf.model.config(), model.config());
        assert_eq!(max_abs_diff(&logits(&hf.model)?, &logits(&model)?)?, 0.0);
        assert_eq!(hf.params.vars().len(), model.config().tensor_shapes().len());
        assert_eq!(hf.tokenizer, Some(dir.join(TOKENIZER)));
        assert!(
            hf.chat_template
                .unwrap()
                .starts_with("{% for m in messages %}")
        );
        assert_eq!(hf.stop_token_ids, [1]);
    }
    Ok(())
}

#[test]
fn a_sharded_checkpoint_loads_like_the_single_file() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, model) = lively_model(&tiny_config(false), 3)?;
    let (single, sharded) = (tmp.path().join("single"), tmp.path().join("sharded"));
    save_hf_folder(&single, &model)?;
    write_sharded(&sharded, &model)?;
    assert!(!sharded.join(WEIGHTS).exists());
    let a = load_hf_folder(&single, &Device::Cpu)?;
    let b = load_hf_folder(&sharded, &Device::Cpu)?;
    assert_eq!(max_abs_diff(&logits(&a.model)?, &logits(&b.model)?)?, 0.0);
    assert_eq!(max_abs_diff(&logits(&b.model)?, &logits(&model)?)?, 0.0);
    Ok(())
}

#[test]
fn a_missing_shard_or_index_entry_is_named() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, model) = lively_model(&tiny_config(false), 4)?;
    let dir = tmp.path().join("m");
    write_sharded(&dir, &model)?;
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors"))?;
    let err = error_of(&dir);
    assert!(
        err.contains("model-00002-of-00002.safetensors") && err.contains("cannot read"),
        "{err}"
    );

    write_sharded(&dir, &model)?;
    let index = std::fs::read_to_string(dir.join(INDEX))?;
    let index = index.replace("\"model.norm.weight\"", "\"model.norm.gain\"");
    std::fs::write(dir.join(INDEX), index)?;
    let err = error_of(&dir);
    assert!(
        err.contains(INDEX) && err.contains("no entry for model.norm.weight"),
        "{err}"
    );

    std::fs::remove_file(dir.join(INDEX))?;
    let err = error_of(&dir);
    assert!(err.contains(WEIGHTS) && err.contains(INDEX), "{err}");
    Ok(())
}

#[test]
fn a_wrong_shape_or_missing_tensor_is_named_with_what_was_expected() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let (_, model) = lively_model(&tiny_config(false), 5)?;
    let dir = tmp.path().join("m");
    save_hf_folder(&dir, &model)?;
    let mut tensors: HashMap<String, Tensor> = model.tensors().into_iter().collect();
    let name = "model.layers.1.self_attn.k_proj.weight";
    tensors.insert(
        name.into(),
        Tensor::zeros((8, 32), candle_core::DType::F32, &Device::Cpu)?,
    );
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS))?;
    let err = error_of(&dir);
    assert!(err.contains(WEIGHTS) && err.contains(name), "{err}");
    assert!(err.contains("[8, 32]") && err.contains("[16, 32]"), "{err}");

    tensors.remove(name);
    candle_core::safetensors::save(&tensors, dir.join(WEIGHTS))?;
    let err = error_of(&dir);
    assert!(err.contains(&format!("no tensor named {name}")), "{err}");
    Ok(())
}

#[test]
fn a_bad_config_is_named() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let err = error_of(tmp.path());
    assert!(err.contains(CONFIG) && err.contains("cannot read"), "{err}");
    std::fs::write(tmp.path().join(CONFIG), r#"{"model_type": "llama"}"#)?;
    let err = error_of(tmp.path());
    assert!(err.contains(CONFIG) && err.contains("llama"), "{err}");
    std::fs::write(tmp.path().join(CONFIG), tiny_config(true).to_json())?;
    std::fs::write(tmp.path().join(WEIGHTS), b"not safetensors")?;
    let err = error_of(tmp.path());
    assert!(
        err.contains(WEIGHTS) && err.contains("not a safetensors file"),
        "{err}"
    );
    Ok(())
}
