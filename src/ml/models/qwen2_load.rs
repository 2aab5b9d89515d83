//! A Hugging Face model folder for Qwen2, read and written: `config.json`, the weights as one
//! `model.safetensors` or as shards `model-0000N-of-0000M.safetensors` listed by
//! `model.safetensors.index.json` (its `weight_map`), `tokenizer.json` and the chat template.
//!
//! Every tensor the config implies is checked by name and shape before anything is built, and an
//! error names the file, the tensor, and what was expected. Weights on disk may be bf16, f16 or
//! f32; they become f32 parameters. Tied-embedding checkpoints have no `lm_head.weight`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::safetensors::{BufferedSafetensors, Load};
use candle_core::{Device, Error, Result, Tensor};

use super::qwen2::{Qwen2, Qwen2Config};
use crate::ml::params::Params;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const INDEX: &str = "model.safetensors.index.json";
pub const TOKENIZER: &str = "tokenizer.json";

/// A model read from a folder, with what else the folder offers for chatting with it.
pub struct HfModel {
    pub model: Qwen2,
    /// Every parameter, named as on disk (what an optimizer or `save_hf_folder` is given).
    pub params: Params,
    /// `tokenizer.json`, when the folder has one.
    pub tokenizer: Option<PathBuf>,
    /// The Jinja chat template: `chat_template.jinja`, or `tokenizer_config.json`'s `chat_template`.
    pub chat_template: Option<String>,
    /// Ids that end a reply: `config.json`'s `eos_token_id` and `generation_config.json`'s.
    pub stop_token_ids: Vec<u32>,
}

fn fail(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Msg(format!("{}: {message}", path.display()))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| fail(path, format!("cannot read {what}: {e}")))
}

/// Which file holds each tensor, from the index or the single `model.safetensors`.
fn weight_files(
    dir: &Path,
    wanted: &[(String, Vec<usize>)],
) -> Result<BTreeMap<PathBuf, Vec<usize>>> {
    let (single, index) = (dir.join(WEIGHTS), dir.join(INDEX));
    let mut files: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
    if single.is_file() {
        files.insert(single, (0..wanted.len()).collect());
        return Ok(files);
    }
    if !index.is_file() {
        return Err(fail(
            dir,
            format!("no {WEIGHTS} and no {INDEX}: a Hugging Face Qwen2 folder has one of them"),
        ));
    }
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let parsed: Index = serde_json::from_str(&read_text(&index, "the shard index")?)
        .map_err(|e| fail(&index, format!("not a safetensors index ({e})")))?;
    for (i, (name, _)) in wanted.iter().enumerate() {
        let file = parsed.weight_map.get(name).ok_or_else(|| {
            fail(
                &index,
                format!("weight_map has no entry for {name}, which config.json implies"),
            )
        })?;
        files.entry(dir.join(file)).or_default().push(i);
    }
    Ok(files)
}

/// Reads `dir` as Hugging Face ships Qwen2 / Qwen2.5 models (or as `save_hf_folder` wrote it).
pub fn load_hf_folder(dir: &Path, device: &Device) -> Result<HfModel> {
    let config_path = dir.join(CONFIG);
    let cfg = Qwen2Config::from_json(&read_text(&config_path, "the model config")?)
        .map_err(|e| fail(&config_path, e))?;
    let wanted = cfg.tensor_shapes();
    let params = Params::new(0, device);
    for (path, indices) in weight_files(dir, &wanted)? {
        let bytes =
            std::fs::read(&path).map_err(|e| fail(&path, format!("cannot read weights: {e}")))?;
        let file = BufferedSafetensors::new(bytes)
            .map_err(|e| fail(&path, format!("not a safetensors file ({e})")))?;
        for i in indices {
            let (name, shape) = &wanted[i];
            let view = file.get(name).map_err(|_| {
                fail(
                    &path,
                    format!("no tensor named {name}; the weights do not match {CONFIG}"),
                )
            })?;
            if view.shape() != shape.as_slice() {
                return Err(fail(
                    &path,
                    format!(
                        "{name} has shape {:?}, {CONFIG} implies {shape:?}",
                        view.shape()
                    ),
                ));
            }
            let t = view
                .load(device)
                .map_err(|e| fail(&path, format!("{name}: {e}")))?;
            params.insert(name, &t)?;
        }
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

#[cfg(test)]
#[path = "qwen2_load_tests.rs"]
mod tests;
