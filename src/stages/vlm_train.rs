//! The VLM kinds. `vlm-pretrain` joins a vision tower (a clip-train stage's, or a Hugging Face
//! CLIP or SigLIP folder's: `vlm_vision`) to a language model (an `lm-train` stage, or a Hugging
//! Face Qwen2 folder) through a new projector and trains the caption objective with the LM
//! frozen; `finetune` continues from a `vlm-pretrain` (or another `finetune`) on question–answer
//! conversations, training what its `train` param names, and reports exact-match accuracy on the
//! held-out images' questions.
//!
//! Both write a VLM folder: `vlm.json` (model and chat template), `tokenizer.json`, and the
//! weights as `ml::vlm_folder` lays them out: `model.safetensors` (vision, projector, adapters)
//! and `lm/`, the language model's Hugging Face folder, a byte copy of its source when frozen.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::lm_train::is_data;
use super::train_rules::{TrainSpec, check_rules, trains};
use super::training::{StageHooks, check_finished};
use super::vlm_vision::{VisionParams, VisionSource};
use super::{Kind, StageContext, params};
use crate::ml::data::chat::ChatTemplate;
use crate::ml::data::conversations::{Objective, Sequences, build, read_split_records};
use crate::ml::data::tokenizer::Tokenizer;
use crate::ml::models::lora::{LoraConfig, is_adapter};
use crate::ml::models::projector::ProjectorConfig;
use crate::ml::models::qwen2_load::load_hf_folder;
use crate::ml::models::vlm::{Vlm, VlmConfig, is_lm, is_vision};
use crate::ml::params::Params;
use crate::ml::train_loop::{Hyper, Trained};
use crate::ml::vlm_eval::{exact_match, mean_loss};
use crate::ml::vlm_folder::{self, LmFiles};
use crate::ml::vlm_train::{PartScales, VlmTrainConfig, train};

pub struct VlmPretrain;
pub struct Finetune;

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
struct Common {
    /// The other parts train at `lr × <part>_lr_scale` (`lr` is the projector's).
    #[serde(default = "default_vision_lr_scale")]
    vision_lr_scale: f64,
    #[serde(default = "default_lm_lr_scale")]
    lm_lr_scale: f64,
    #[serde(default = "default_shuffle_buffer")]
    shuffle_buffer: usize,
    /// Conversations longer than this many tokens (image included) are left out and counted.
    #[serde(default = "default_max_len")]
    max_len: usize,
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
fn default_queries() -> usize {
    16
}
fn default_heads() -> usize {
    4
}
fn default_eval_images() -> usize {
    1000
}
fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PretrainParams {
    /// `resampler` (learned queries cross-attending to the patches) or `mlp` (one token per patch).
    #[serde(default = "default_projector")]
    projector: String,
    /// The resampler's queries: image tokens per image.
    #[serde(default = "default_queries")]
    queries: usize,
    #[serde(default = "default_heads")]
    projector_heads: usize,
    /// Train the vision tower too (at `lr × vision_lr_scale`); frozen by default.
    #[serde(default)]
    train_vision: bool,
    /// A Hugging Face Qwen2 folder in the workspace (a declared input) to use as the language
    /// model, instead of a needed `lm-train` stage.
    lm: Option<String>,
    /// A system prompt for the chat template (Qwen2.5-Instruct expects its default one).
    system: Option<String>,
    #[serde(flatten)]
    vision: VisionParams,
    #[serde(flatten)]
    common: Common,
    #[serde(flatten)]
    hyper: Hyper,
}

fn default_projector() -> String {
    "resampler".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FinetuneParams {
    /// What trains: `"all"`, or a list of parts (`vision`, `projector`, `lm`) and parameter-name
    /// patterns (`*` matches any run of characters, e.g. `model.layers.*.mlp.*`). By default the
    /// projector and the LM (with `lora`: the projector and the adapters).
    train: Option<TrainSpec>,
    /// Give each conversation's turns an order of their own, so every question is sometimes
    /// asked first (as a one-question chat does).
    #[serde(default = "default_true")]
    shuffle_turns: bool,
    /// Held-out images whose questions are asked for the exact-match accuracy.
    #[serde(default = "default_eval_images")]
    eval_images: usize,
    /// Train LoRA adapters on the language model's linear layers instead of its weights:
    /// `{ rank = 8, alpha = 16, targets = ["q_proj", "v_proj"] }`. Merged by chat-export.
    lora: Option<LoraConfig>,
    #[serde(flatten)]
    common: Common,
    #[serde(flatten)]
    hyper: Hyper,
}

impl Common {
    fn config(&self, model: VlmConfig, train: &Hyper) -> VlmTrainConfig {
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

fn is_hf_lm(path: &Path) -> bool {
    super::read_json::<serde_json::Value>(&path.join("config.json"))
        .is_ok_and(|v| v["hidden_size"].is_u64())
}

fn is_vlm(path: &Path) -> bool {
    path.join(VLM_JSON).is_file()
}

/// Sequences of the split in `split_dir` (`train` or `validation`), with their counts as metrics.
fn sequences(
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

/// Write the VLM folder: `vlm.json`, `tokenizer.json` and the weights (`ml::vlm_folder`).
fn write_vlm(
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

impl Kind for VlmPretrain {
    fn name(&self) -> &'static str {
        "vlm-pretrain"
    }

    fn version(&self) -> &'static str {
        "2"
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: PretrainParams = params::read(ctx)?;
        let data = ctx.find_upstream("preprocess stage", is_data)?;
        let device = super::device(ctx)?;
        let vision = VisionSource::open(ctx, &p.vision, &data.join("train"), &device)?;
        let lm_dir: PathBuf = match &p.lm {
            Some(path) => {
                super::download::require_input(ctx, path)?;
                ctx.workspace.join(path)
            }
            None => ctx
                .find_upstream("lm-train stage (or set `lm` to a Qwen2 folder)", is_hf_lm)?
                .to_path_buf(),
        };
        let lm = load_hf_folder(&lm_dir, &device)?;
        let tokenizer_path = lm.tokenizer.clone().ok_or_else(|| {
            anyhow::anyhow!("{}: no tokenizer.json beside the model", lm_dir.display())
        })?;
        let tokenizer = Tokenizer::load(&tokenizer_path)?;
        let projector = match p.projector.as_str() {
            "resampler" => ProjectorConfig::Resampler {
                queries: p.queries,
                heads: p.projector_heads,
            },
            "mlp" => ProjectorConfig::Mlp,
            other => bail!(
                "stage `{}`: unknown projector `{other}`: expected `resampler` or `mlp`",
                ctx.stage
            ),
        };
        let model = VlmConfig {
            vision: vision.config.clone(),
            projector,
            lm: lm.model.config().clone(),
            lora: None,
        };
        let template = ChatTemplate::new(&tokenizer, model.image_tokens(), p.system.clone())?;
        let objective = Objective::Caption;
        let train_seqs = sequences(
            ctx,
            &data.join("train"),
            &tokenizer,
            &template,
            objective,
            p.common.max_len,
            p.hyper.seed,
        )?;
        let val_seqs = sequences(
            ctx,
            &data.join("validation"),
            &tokenizer,
            &template,
            objective,
            p.common.max_len,
            p.hyper.seed,
        )?;

        let train_vision = p.train_vision;
        let params = Params::new(p.hyper.seed, &device)
            .with_frozen(move |name| is_lm(name) || (is_vision(name) && !train_vision));
        let cfg = p.common.config(model.clone(), &p.hyper);
        let mut hooks = StageHooks::new(ctx, p.hyper.steps);
        let trained = train(
            &cfg,
            params,
            &data.join("train"),
            &train_seqs,
            tokenizer.pad_id(),
            ctx.checkpoint_dir,
            &mut hooks,
            |params, hooks| {
                vision.load_into(params)?;
                params.copy_from(&lm.params)?;
                hooks.log(&format!(
                    "vision tower from {}, language model from {}",
                    vision.origin.display(),
                    lm_dir.display()
                ));
                Ok(())
            },
        )?;
        check_finished(trained.finish, p.hyper.steps)?;
        let val_loss = mean_loss(
            &trained.model,
            &data.join("validation"),
            &val_seqs,
            tokenizer.pad_id(),
            p.hyper.batch_size,
            &device,
        )?;
        ctx.metric("val.loss", None, val_loss);
        ctx.log(&format!("validation caption loss {val_loss:.4}"));
        // The LM was frozen: its files are the source's.
        let manifest = VlmManifest { model, template };
        write_vlm(
            ctx,
            &trained,
            &manifest,
            LmFiles::CopyOf(&lm_dir),
            &tokenizer_path,
        )?;
        hooks.finish()
    }
}

impl Kind for Finetune {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn version(&self) -> &'static str {
        "2"
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: FinetuneParams = params::read(ctx)?;
        let data = ctx.find_upstream("preprocess stage", is_data)?;
        let base = ctx.find_upstream("vlm-pretrain stage", is_vlm)?;
        let manifest: VlmManifest = super::read_json(&base.join(VLM_JSON))?;
        let tokenizer_path = base.join("tokenizer.json");
        let tokenizer = Tokenizer::load(&tokenizer_path)?;
        let template = &manifest.template;
        let objective = Objective::Answers {
            shuffle_turns: p.shuffle_turns,
        };
        let train_seqs = sequences(
            ctx,
            &data.join("train"),
            &tokenizer,
            template,
            objective,
            p.common.max_len,
            p.hyper.seed,
        )?;

        let device = super::device(ctx)?;
        let with_lora = p.lora.is_some();
        let rules = match &p.train {
            Some(spec) => spec.rules(),
            None if with_lora => vec!["projector".to_string()],
            None => vec!["projector".to_string(), "lm".to_string()],
        };
        if with_lora && rules.iter().any(|r| r == "lm" || r == "all") {
            bail!(
                "stage `{}`: with `lora`, the language model's weights stay frozen and its adapters \
                 train: drop `lm`/`all` from `train` (e.g. train = [\"projector\"])",
                ctx.stage
            );
        }
        let frozen_rules = rules.clone();
        let params = Params::new(p.hyper.seed, &device).with_frozen(move |n| {
            !trains(&frozen_rules, n) || (with_lora && is_lm(n) && !is_adapter(n))
        });
        let model = VlmConfig {
            lora: p.lora.clone(),
            ..manifest.model.clone()
        };
        let cfg = p.common.config(model.clone(), &p.hyper);
        let mut hooks = StageHooks::new(ctx, p.hyper.steps);
        let trained = train(
            &cfg,
            params,
            &data.join("train"),
            &train_seqs,
            tokenizer.pad_id(),
            ctx.checkpoint_dir,
            &mut hooks,
            |params, hooks| {
                let names: Vec<String> = params.vars().into_iter().map(|(n, _)| n).collect();
                check_rules(ctx, &rules, &names)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                vlm_folder::load_merged(base, &manifest.model, params)?;
                hooks.log(&format!("started from {}", base.display()));
                Ok(())
            },
        )?;
        check_finished(trained.finish, p.hyper.steps)?;
        let validation = data.join("validation");
        let records = read_split_records(&validation)?;
        let result = exact_match(
            &trained.model,
            &tokenizer,
            template,
            &validation,
            &records,
            p.eval_images,
            p.hyper.batch_size,
            &device,
        )?;
        ctx.metric("val.exact_match", None, result.accuracy);
        ctx.metric("val.questions", None, result.questions as f64);
        for (kind, (correct, asked)) in &result.per_kind {
            ctx.metric(
                &format!("val.exact_match.{kind}"),
                None,
                *correct as f64 / (*asked).max(1) as f64,
            );
        }
        ctx.log(&format!(
            "exact match {:.4} over {} questions",
            result.accuracy, result.questions
        ));
        for (question, expected, answered) in &result.examples {
            ctx.log(&format!(
                "  {question} → {answered:?} (expected {expected:?})"
            ));
        }
        std::fs::write(
            ctx.out_dir.join("eval.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
        // The LM's files are the base's when its weights neither trained nor took merged adapters.
        let lm_trained = trained
            .params
            .trainable_vars()
            .iter()
            .any(|(n, _)| is_lm(n) && !is_adapter(n));
        let base_lm = base.join(vlm_folder::LM);
        let lm = if lm_trained || manifest.model.lora.is_some() {
            LmFiles::Written
        } else {
            LmFiles::CopyOf(&base_lm)
        };
        let manifest = VlmManifest {
            model,
            template: manifest.template,
        };
        write_vlm(ctx, &trained, &manifest, lm, &tokenizer_path)?;
        hooks.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_level_of_the_params_is_read_and_a_misspelt_one_refused() {
        let ok: FinetuneParams = serde_json::from_value(serde_json::json!({
            "steps": 5, "lr": 0.1, "batch_size": 8, "max_len": 99, "eval_images": 3
        }))
        .unwrap();
        assert_eq!(
            (ok.hyper.batch_size, ok.common.max_len, ok.eval_images),
            (8, 99, 3)
        );
        let err = serde_json::from_value::<PretrainParams>(serde_json::json!({
            "steps": 5, "lr": 0.1, "querys": 4
        }))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("unknown field `querys`"), "{err}");
    }
}
