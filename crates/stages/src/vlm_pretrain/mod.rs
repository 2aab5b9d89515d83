//! The `vlm-pretrain` kind: joins a vision tower (a clip-train stage's, or a Hugging Face CLIP
//! or SigLIP folder's: `vlm_vision`) to a language model (an `lm-train` stage, or a Hugging Face
//! Qwen2 folder) through a new projector, and trains the caption objective with the LM frozen.
//! Reports the validation caption loss.

mod vision;

use std::path::{Path, PathBuf};

use anyhow::bail;
use serde::Deserialize;
use serde_json::Value;

use crate::shared::inputs::{is_data, require_input};
use crate::shared::kind_params::{self, part};
use crate::shared::vlm_common::{Common, VlmManifest, sequences, train_vlm, write_vlm};
use crate::{Kind, StageContext};
use vision::{VisionParams, VisionSource};
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::data::chat::ChatTemplate;
use vlmflow_ml::data::conversations::Objective;
use vlmflow_ml::data::tokenizer::Tokenizer;
use vlmflow_ml::infer::vlm_eval::mean_loss;
use vlmflow_ml::models::projector::ProjectorConfig;
use vlmflow_ml::models::qwen2_load::load_hf_folder;
use vlmflow_ml::models::vlm::{VlmConfig, is_lm, is_vision};
use vlmflow_ml::models::vlm_folder::LmFiles;
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::train::train_loop::Hyper;

pub struct VlmPretrain;

fn default_queries() -> usize {
    16
}
fn default_heads() -> usize {
    4
}
fn default_projector() -> String {
    "resampler".into()
}
fn default_resampler_positions() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PretrainParams {
    #[serde(flatten)]
    own: OwnParams,
    #[serde(flatten)]
    vision: VisionParams,
    #[serde(flatten)]
    common: Common,
    #[serde(flatten)]
    hyper: Hyper,
}

/// The params only `vlm-pretrain` reads, flattened with the shared ones into one table.
#[derive(Deserialize)]
struct OwnParams {
    /// `resampler` (learned queries cross-attending to the patches) or `mlp` (one token per patch).
    #[serde(default = "default_projector")]
    projector: String,
    /// The resampler's queries: image tokens per image.
    #[serde(default = "default_queries")]
    queries: usize,
    #[serde(default = "default_heads")]
    projector_heads: usize,
    /// Give the resampler's keys and values the patches' places on the grid
    /// (see `ml::models::projector`).
    #[serde(default = "default_resampler_positions")]
    resampler_positions: bool,
    /// Train the vision tower too (at `lr × vision_lr_scale`); frozen by default.
    #[serde(default)]
    train_vision: bool,
    /// A Hugging Face Qwen2 folder in the workspace (a declared input) to use as the language
    /// model, instead of a needed `lm-train` stage.
    lm: Option<String>,
    /// A system prompt for the chat template (Qwen2.5-Instruct expects its default one).
    system: Option<String>,
}

fn is_hf_lm(path: &Path) -> bool {
    crate::read_json::<serde_json::Value>(&path.join("config.json"))
        .is_ok_and(|v| v["hidden_size"].is_u64())
}

impl Kind for VlmPretrain {
    fn name(&self) -> &'static str {
        "vlm-pretrain"
    }

    fn version(&self) -> &'static str {
        // 3: the resampler's keys and values carry the patches' positions by default.
        "3"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check_flattened::<PretrainParams>(
            params,
            &[
                part::<OwnParams>(),
                part::<VisionParams>(),
                part::<Common>(),
                part::<Hyper>(),
            ],
        )
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: PretrainParams = kind_params::read(ctx)?;
        let data = ctx.find_upstream("preprocess stage", is_data)?;
        let device = crate::device(ctx)?;
        let vision = VisionSource::open(ctx, &p.vision, &data.join("train"), &device)?;
        let lm_dir: PathBuf = match &p.own.lm {
            Some(path) => {
                require_input(ctx, path)?;
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
        let projector = match p.own.projector.as_str() {
            "resampler" => ProjectorConfig::Resampler {
                queries: p.own.queries,
                heads: p.own.projector_heads,
                positions: p.own.resampler_positions,
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
        let template = ChatTemplate::new(&tokenizer, model.image_tokens(), p.own.system.clone())?;
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

        let train_vision = p.own.train_vision;
        let params = ParamStore::new(p.hyper.seed, &device)
            .with_frozen(move |name| is_lm(name) || (is_vision(name) && !train_vision));
        let cfg = p.common.config(model.clone(), &p.hyper);
        let (trained, hooks) = train_vlm(
            ctx,
            &cfg,
            params,
            data,
            &train_seqs,
            tokenizer.pad_id(),
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
