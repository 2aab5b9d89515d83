//! How a VLM's weights sit in a folder (a `vlm-pretrain` or `finetune` artifact, a chat bundle):
//!
//! ```text
//! model.safetensors   everything but the language model: vision.*, projector.*, LoRA adapters
//! lm/                 the language model as a Hugging Face Qwen2 folder: config.json, weights
//!                     (one file or shards), tokenizer.json
//! ```
//!
//! The language model has files of its own so that a frozen one is a byte-for-byte copy of the
//! folder it came from: the cache stores those objects once however many artifacts hold them (a
//! Qwen2.5-3B is 6 GB of bf16 shards, 12 GB as f32), and other tools load `lm/` as it is.

use std::path::Path;

use candle_core::Result;

use super::lora::is_adapter;
use super::qwen2_load::{TOKENIZER, copy_hf_folder, load_hf_folder, save_hf_folder};
use super::vlm::{Vlm, VlmConfig, is_lm};
use crate::param_store::{ParamStore, save_vars};

/// The weights that are not the language model's.
pub const PARTS: &str = "model.safetensors";
/// The language model's Hugging Face folder.
pub const LM: &str = "lm";

/// Where the language model's files come from.
pub enum LmFiles<'a> {
    /// Unchanged from this Hugging Face folder, whose files are copied as they are.
    CopyOf(&'a Path),
    /// Written from the model's (f32) weights: it trained, or LoRA updates were merged into it.
    Written,
}

fn in_parts(name: &str) -> bool {
    !is_lm(name) || is_adapter(name)
}

/// Writes `model`'s weights (`params`, its store) into `dir`, with `tokenizer` beside the LM.
pub fn save(
    dir: &Path,
    params: &ParamStore,
    model: &Vlm,
    lm: LmFiles,
    tokenizer: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| candle_core::Error::Msg(format!("creating {}: {e}", dir.display())))?;
    let mut parts = params.vars();
    parts.retain(|(name, _)| in_parts(name));
    save_vars(&parts, &dir.join(PARTS))?;
    let lm_dir = dir.join(LM);
    match lm {
        LmFiles::CopyOf(source) => copy_hf_folder(source, &lm_dir)?,
        LmFiles::Written => save_hf_folder(&lm_dir, &model.lm)?,
    }
    std::fs::copy(tokenizer, lm_dir.join(TOKENIZER))
        .map_err(|e| candle_core::Error::Msg(format!("copying {}: {e}", tokenizer.display())))?;
    Ok(())
}

/// Loads a folder written by `save` into the store of a `Vlm` of the same config. With
/// `adapters` false, LoRA adapters the store has are left as they are (new ones, to train).
pub fn load(dir: &Path, params: &ParamStore, adapters: bool) -> Result<()> {
    let parts = dir.join(PARTS);
    params
        .load_matching(&parts, |name| {
            !is_lm(name) || (adapters && is_adapter(name))
        })
        .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", parts.display())))?;
    let lm = load_hf_folder(&dir.join(LM), params.device())?;
    params.copy_from(&lm.params)
}

/// Loads the VLM in `dir`, of config `cfg`, into `params`: the store of a model to continue
/// training, which may have new LoRA adapters of its own. `dir`'s adapters, if it has any, are
/// merged into its weights first.
pub fn load_merged(dir: &Path, cfg: &VlmConfig, params: &ParamStore) -> Result<()> {
    if cfg.lora.is_none() {
        return load(dir, params, false);
    }
    let store = ParamStore::new(0, params.device());
    let model = Vlm::new(&store, cfg)?;
    load(dir, &store, true)?;
    let (merged, _) = model.merged(&store)?;
    params.copy_from(&merged)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::models::lora::LoraConfig;
    use crate::models::vlm::tests::tiny;

    fn values(p: &ParamStore) -> Vec<(String, Vec<f32>)> {
        p.vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
            .collect()
    }

    #[test]
    fn an_unchanged_lm_is_a_byte_copy_and_every_weight_loads_back() -> Result<()> {
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let tokenizer = dir.path().join("tokenizer.json");
        std::fs::write(&tokenizer, "{}").map_err(candle_core::Error::wrap)?;
        let lora = LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["q_proj".into()],
        };
        let cfg = VlmConfig {
            lora: Some(lora),
            ..tiny()
        };
        let params = ParamStore::new(3, &Device::Cpu);
        let model = Vlm::new(&params, &cfg)?;
        let source = dir.path().join("source-lm");
        save_hf_folder(&source, &model.lm)?;

        let out = dir.path().join("vlm");
        save(&out, &params, &model, LmFiles::CopyOf(&source), &tokenizer)?;
        let read = |p: &Path| std::fs::read(p).map_err(candle_core::Error::wrap);
        assert_eq!(
            read(&out.join("lm/model.safetensors"))?,
            read(&source.join("model.safetensors"))?
        );
        let parts = crate::models::hf_weights::tensor_names(&out, "VLM")?;
        assert!(
            parts.iter().all(|n| !is_lm(n) || is_adapter(n)),
            "{parts:?}"
        );
        assert!(parts.iter().any(|n| is_adapter(n)));

        let back = ParamStore::new(4, &Device::Cpu);
        Vlm::new(&back, &cfg)?;
        load(&out, &back, true)?;
        assert_eq!(values(&back), values(&params));
        Ok(())
    }
}
