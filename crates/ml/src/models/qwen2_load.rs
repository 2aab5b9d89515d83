//! A Hugging Face model folder for Qwen2, read and written: `config.json`, the weights (one
//! `model.safetensors` or shards, read by `hf_weights`), `tokenizer.json` and the chat template.
//!
//! Every tensor the config implies is checked by name and shape before anything is built, and an
//! error names the file, the tensor, and what was expected. Weights on disk may be bf16, f16 or
//! f32; they become f32 parameters. Tied-embedding checkpoints have no `lm_head.weight`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Result, Tensor};

pub use super::hf_weights::{CONFIG, INDEX, WEIGHTS};
use super::hf_weights::{fail, read_tensors, read_text, weight_files};
use super::qwen2::{Qwen2, Qwen2Config};
use crate::param_store::ParamStore;

pub const TOKENIZER: &str = "tokenizer.json";

/// A model read from a folder, with what else the folder offers for chatting with it.
pub struct HfModel {
    pub model: Qwen2,
    /// Every parameter, named as on disk (what an optimizer or `save_hf_folder` is given).
    pub params: ParamStore,
    /// `tokenizer.json`, when the folder has one.
    pub tokenizer: Option<PathBuf>,
    /// The Jinja chat template: `chat_template.jinja`, or `tokenizer_config.json`'s `chat_template`.
    pub chat_template: Option<String>,
    /// Ids that end a reply: `config.json`'s `eos_token_id` and `generation_config.json`'s.
    pub stop_token_ids: Vec<u32>,
}

/// Reads `dir` as Hugging Face ships Qwen2 / Qwen2.5 models (or as `save_hf_folder` wrote it).
pub fn load_hf_folder(dir: &Path, device: &Device) -> Result<HfModel> {
    let config_path = dir.join(CONFIG);
    let cfg = Qwen2Config::from_json(&read_text(&config_path, "the model config")?)
        .map_err(|e| fail(&config_path, e))?;
    let wanted = cfg.tensor_shapes();
    let params = ParamStore::new(0, device);
    for ((name, _), t) in wanted
        .iter()
        .zip(read_tensors(dir, &wanted, device, "Qwen2")?)
    {
        params.insert(name, &t)?;
    }
    let model = Qwen2::new(&params, &cfg)?;
    debug_assert_eq!(
        params.vars().len(),
        wanted.len(),
        "every parameter came from the files"
    );
    Ok(HfModel {
        model,
        params,
        tokenizer: Some(dir.join(TOKENIZER)).filter(|p| p.is_file()),
        chat_template: chat_template(dir)?,
        stop_token_ids: stop_tokens(dir, &cfg)?,
    })
}

fn chat_template(dir: &Path) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return Ok(Some(read_text(&jinja, "the chat template")?));
    }
    let path = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_str(&read_text(&path, "the tokenizer config")?)
        .map_err(|e| fail(&path, e))?;
    Ok(match &v["chat_template"] {
        serde_json::Value::String(s) => Some(s.clone()),
        // A list of named templates: take "default".
        serde_json::Value::Array(named) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_string),
        _ => None,
    })
}

fn stop_tokens(dir: &Path, cfg: &Qwen2Config) -> Result<Vec<u32>> {
    let mut ids = cfg.eos_token_id.clone();
    let path = dir.join("generation_config.json");
    if path.is_file() {
        let v: serde_json::Value =
            serde_json::from_str(&read_text(&path, "the generation config")?)
                .map_err(|e| fail(&path, e))?;
        let more = match &v["eos_token_id"] {
            serde_json::Value::Number(n) => n.as_u64().into_iter().collect(),
            serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_u64()).collect(),
            _ => vec![],
        };
        ids.extend(more.into_iter().map(|x| x as u32));
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Writes `config.json` and `model.safetensors` (f32) into `dir`, loadable by `load_hf_folder`
/// and by `transformers`' `Qwen2ForCausalLM.from_pretrained`.
pub fn save_hf_folder(dir: &Path, model: &Qwen2) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, format!("cannot create folder: {e}")))?;
    let config_path = dir.join(CONFIG);
    std::fs::write(&config_path, model.config().to_json())
        .map_err(|e| fail(&config_path, format!("cannot write: {e}")))?;
    let tensors: HashMap<String, Tensor> = model.tensors().into_iter().collect();
    let path = dir.join(WEIGHTS);
    candle_core::safetensors::save(&tensors, &path)
        .map_err(|e| fail(&path, format!("cannot write: {e}")))
}

/// Copies a Qwen2 folder's `config.json`, `generation_config.json` (when there is one) and weight
/// files into `target`, byte for byte: a model that did not change, kept in its own precision and
/// sharding (and stored once by a content-addressed cache).
pub fn copy_hf_folder(source: &Path, target: &Path) -> Result<()> {
    std::fs::create_dir_all(target)
        .map_err(|e| fail(target, format!("cannot create folder: {e}")))?;
    let generation =
        Some("generation_config.json".to_string()).filter(|name| source.join(name).is_file());
    let files = [CONFIG.to_string()]
        .into_iter()
        .chain(generation)
        .chain(weight_files(source, "Qwen2")?);
    for name in files {
        let from = source.join(&name);
        std::fs::copy(&from, target.join(&name))
            .map_err(|e| fail(&from, format!("cannot copy into {}: {e}", target.display())))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "qwen2_load_tests.rs"]
mod tests;
