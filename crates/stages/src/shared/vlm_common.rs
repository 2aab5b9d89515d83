//! What the two VLM kinds share: `vlm-pretrain` (`vlm_pretrain/`) and `finetune`
//! (`finetune.rs`) both train with `train_vlm` and write a VLM folder, `vlm.json` (model and chat template),
//! `tokenizer.json`, and the weights as `ml::models::vlm_folder` lays them out: `model.safetensors`
//! (vision, projector, adapters) and `lm/`, the language model's Hugging Face folder, a byte copy
//! of its source when frozen.

use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::training::{StageHooks, check_finished};
use crate::StageContext;
use vlmflow_ml::data::chat::ChatTemplate;
use vlmflow_ml::data::conversations::{Objective, Sequences, build, read_split_records};
use vlmflow_ml::data::tokenizer::Tokenizer;
use vlmflow_ml::models::vlm::{Vlm, VlmConfig};
use vlmflow_ml::models::vlm_folder::{self, LmFiles};
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::train::train_loop::{Hooks, Hyper, Trained};
use vlmflow_ml::train::vlm::{PartScales, VlmTrainConfig, train};

/// `vlm.json`: what a VLM folder holds besides weights and tokenizer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VlmManifest {
    pub model: VlmConfig,
    pub template: ChatTemplate,
}

pub const VLM_JSON: &str = "vlm.json";

/// The params both kinds share besides `Hyper`. Flattened, like `Hyper`, into each kind's params
/// (one level only: serde's `deny_unknown_fields` on the outer struct then refuses a misspelt
/// name; it cannot see through a flatten inside a flatten).
#[derive(Deserialize)]
pub(crate) struct Common {
    /// The other parts train at `lr × <part>_lr_scale` (`lr` is the projector's).
    #[serde(default = "default_vision_lr_scale")]
    vision_lr_scale: f64,
    #[serde(default = "default_lm_lr_scale")]
    lm_lr_scale: f64,
    #[serde(default = "default_shuffle_buffer")]
    shuffle_buffer: usize,
    /// Conversations longer than this many tokens (image included) are left out and counted.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_vision_lr_scale() -> f64 {
    0.1
}
fn default_lm_lr_scale() -> f64 {
    0.3
}
fn default_shuffle_buffer() -> usize {
    4096
}
fn default_max_len() -> usize {
    256
}

impl Common {
    pub(crate) fn config(&self, model: VlmConfig, train: &Hyper) -> VlmTrainConfig {
        VlmTrainConfig {
            model,
            hyper: train.clone(),
            shuffle_buffer: self.shuffle_buffer,
            lr_scale: PartScales {
                vision: self.vision_lr_scale,
                projector: 1.0,
                lm: self.lm_lr_scale,
            },
        }
    }
}

pub(crate) fn is_vlm(path: &Path) -> bool {
    path.join(VLM_JSON).is_file()
}

/// A VLM folder (a vlm-pretrain or finetune artifact) loaded onto a device.
pub(crate) struct VlmFolder {
    pub manifest: VlmManifest,
    pub tokenizer: Tokenizer,
    pub params: ParamStore,
    pub model: Vlm,
}

impl VlmFolder {
    pub(crate) fn load(dir: &Path, device: &candle_core::Device) -> anyhow::Result<VlmFolder> {
        let manifest: VlmManifest = crate::read_json(&dir.join(VLM_JSON))?;
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
        let params = ParamStore::new(0, device);
        let model = Vlm::new(&params, &manifest.model)?;
        vlm_folder::load(dir, &params, true)
            .with_context(|| format!("loading the VLM in {}", dir.display()))?;
        Ok(VlmFolder {
            manifest,
            tokenizer,
            params,
            model,
        })
    }

    /// The tokens that end a reply: the template's `<|im_end|>` and the tokenizer's EOS.
    pub(crate) fn stop_tokens(&self) -> Vec<u32> {
        vec![self.manifest.template.im_end, self.tokenizer.eos_id()]
    }
}

/// Sequences of the split in `split_dir` (`train` or `validation`), with their counts as metrics.
pub(crate) fn sequences(
    ctx: &StageContext<'_>,
    split_dir: &Path,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    objective: Objective,
    max_len: usize,
    seed: u64,
) -> anyhow::Result<Sequences> {
    let split = split_dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let records = read_split_records(split_dir)?;
    let seqs = build(&records, tokenizer, template, objective, max_len, seed)?;
    ctx.metric(&format!("{split}.too_long"), None, seqs.too_long as f64);
    if split == "train" && seqs.usable() == 0 {
        bail!(
            "stage `{}`: no usable training conversation ({} too long for max_len = {max_len}, {} without \
             question–answer pairs)",
            ctx.stage,
            seqs.too_long,
            seqs.empty
        );
    }
    Ok(seqs)
}

/// Train `cfg`'s model from `params` (what trains already chosen) on the train split of `data`,
/// `init` putting in the starting weights. An interrupted run is an error whose checkpoint the next
/// build resumes from. The hooks come back to write the loss curve once the artifact is written.
pub(crate) fn train_vlm<'a, 'c>(
    ctx: &'a StageContext<'c>,
    cfg: &VlmTrainConfig,
    params: ParamStore,
    data: &Path,
    sequences: &Sequences,
    pad_id: u32,
    init: impl FnOnce(&ParamStore, &mut dyn Hooks) -> candle_core::Result<()>,
) -> anyhow::Result<(Trained<Vlm>, StageHooks<'a, 'c>)> {
    let steps = cfg.hyper.steps;
    let mut hooks = StageHooks::new(ctx, steps);
    let train_dir = data.join("train");
    let checkpoints = ctx.checkpoint_dir;
    let trained = train(
        cfg,
        params,
        &train_dir,
        sequences,
        pad_id,
        checkpoints,
        &mut hooks,
        init,
    )?;
    check_finished(trained.finish, steps)?;
    Ok((trained, hooks))
}

/// Write the VLM folder: `vlm.json`, `tokenizer.json` and the weights (`ml::models::vlm_folder`).
pub(crate) fn write_vlm(
    ctx: &StageContext<'_>,
    trained: &Trained<Vlm>,
    manifest: &VlmManifest,
    lm: LmFiles,
    tokenizer: &Path,
) -> anyhow::Result<()> {
    vlm_folder::save(ctx.out_dir, &trained.params, &trained.model, lm, tokenizer)?;
    std::fs::write(
        ctx.out_dir.join(VLM_JSON),
        serde_json::to_string_pretty(manifest)?,
    )?;
    std::fs::copy(tokenizer, ctx.out_dir.join("tokenizer.json"))
        .context("copying the tokenizer")?;
    Ok(())
}
