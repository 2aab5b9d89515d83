//! Where `vlm-pretrain`'s vision tower comes from, and which of its hidden states the projector
//! reads.
//!
//! - A needed `clip-train` stage (the default): its `vision.*` weights. The projector reads the
//!   last block's tokens through the final LayerNorm, as it always has.
//! - A Hugging Face CLIP or SigLIP folder in the workspace, named by the `vision` param (a
//!   declared input, like `lm`): read by `ml::models::hf_vision`, its position grid resized to
//!   the shards' image size when they differ. The projector reads the penultimate block's tokens
//!   without the final LayerNorm, as LLaVA does (`vision_feature_layer = -2`).
//!
//! Either way the CLS token (CLIP) is left out; SigLIP has none. The chosen tower and layer go
//! into `vlm.json`'s vision config, so finetune, chat-export and the chat bundle build the same
//! tower without knowing where it came from.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::StageContext;
use crate::shared::inputs::require_input;
use vlmflow_ml::data::shards::ShardSet;
use vlmflow_ml::models::hf_vision::load_hf_vision;
use vlmflow_ml::models::vit::{FeatureLayer, VisionConfig};
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::train::clip::TrainConfig as ClipTrainConfig;

/// The vision params of `vlm-pretrain` (flattened into its params).
#[derive(serde::Deserialize)]
pub(super) struct VisionParams {
    /// A Hugging Face CLIP or SigLIP folder in the workspace (a declared input) to take the
    /// vision tower from, instead of a needed `clip-train` stage.
    vision: Option<String>,
    /// The hidden state the projector reads, counted as Hugging Face counts `hidden_states`
    /// (-1 the last block, -2 the one before). Default: -1 for a clip-train tower, -2 for a
    /// Hugging Face one.
    vision_feature_layer: Option<i64>,
    /// Whether that state goes through the tower's final LayerNorm. Default: yes for a
    /// clip-train tower, no for a Hugging Face one.
    vision_feature_norm: Option<bool>,
}

/// The tower's config (at the shards' image size, feature layer chosen) and its weights.
pub(super) struct VisionSource {
    pub config: VisionConfig,
    weights: Weights,
    /// Where it came from, for the log.
    pub origin: PathBuf,
}

enum Weights {
    /// A clip-train artifact's `model.safetensors`, whose `vision.*` the VLM shares.
    ClipStage(PathBuf),
    /// A Hugging Face tower, already read and renamed to `vision.*`.
    HfFolder(ParamStore),
}

fn is_clip(path: &Path) -> bool {
    crate::read_json::<serde_json::Value>(&path.join("config.json"))
        .is_ok_and(|v| v["model"]["vision"].is_object())
}

impl VisionSource {
    /// Finds the tower for a stage whose training shards are in `train_dir`.
    pub fn open(
        ctx: &StageContext<'_>,
        p: &VisionParams,
        train_dir: &Path,
        device: &candle_core::Device,
    ) -> anyhow::Result<Self> {
        let image_size = ShardSet::open(train_dir)?.spec().image_size as usize;
        let (mut config, weights, origin, llava) = match &p.vision {
            Some(path) => {
                require_input(ctx, path)?;
                let dir = ctx.workspace.join(path);
                let tower = load_hf_vision(&dir, image_size, device).with_context(|| {
                    format!(
                        "stage `{}`: reading the vision tower from {path} (the `vision` param)",
                        ctx.stage
                    )
                })?;
                ctx.log(&format!(
                    "vision tower: {} from {path}{}",
                    tower.family.name(),
                    match tower.resized_from {
                        Some(from) => format!(
                            ", position embeddings resized (bicubic) from {from}-px to \
                             {image_size}-px images"
                        ),
                        None => String::new(),
                    }
                ));
                let config = tower.model.config().clone();
                (config, Weights::HfFolder(tower.params), dir, true)
            }
            None => {
                let dir = ctx.find_upstream(
                    "clip-train stage (or set `vision` to a Hugging Face CLIP or SigLIP folder)",
                    is_clip,
                )?;
                let clip: ClipTrainConfig = crate::read_json(&dir.join("config.json"))?;
                let config = clip.model.vision;
                if config.image_size != image_size {
                    bail!(
                        "stage `{}`: the clip-train stage's vision tower takes {}-px images, the \
                         preprocess stage's shards hold {image_size}-px ones: train the CLIP on \
                         the same preprocess stage, or give both the same image_size",
                        ctx.stage,
                        config.image_size
                    );
                }
                let weights = Weights::ClipStage(dir.join("model.safetensors"));
                (config, weights, dir.to_path_buf(), false)
            }
        };
        let default = if llava {
            FeatureLayer::LLAVA
        } else {
            FeatureLayer::default()
        };
        config.features = FeatureLayer {
            layer: p.vision_feature_layer.unwrap_or(default.layer),
            post_norm: p.vision_feature_norm.unwrap_or(default.post_norm),
        };
        config
            .features
            .blocks(config.layers)
            .map_err(|e| anyhow::anyhow!("stage `{}`: vision_feature_layer: {e}", ctx.stage))?;
        Ok(Self {
            config,
            weights,
            origin,
        })
    }

    /// Puts the tower's weights into a VLM's `params` (its `vision.*`).
    pub fn load_into(&self, params: &ParamStore) -> candle_core::Result<()> {
        match &self.weights {
            Weights::ClipStage(path) => params.load_prefixed(path, "vision."),
            Weights::HfFolder(tower) => params.copy_from(tower),
        }
    }
}
