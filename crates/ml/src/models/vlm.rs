//! The VLM: the CLIP's vision tower, a projector, and a Qwen2 language model.
//!
//! An image becomes `image_tokens` embeddings in the language model's space, spliced into the
//! token embeddings where the chat template put the image placeholders; from there on the
//! language model runs as usual. Parameter names keep each part loadable on its own: `vision.*`
//! as in the CLIP checkpoint, `projector.*`, and the Hugging Face Qwen2 names (`model.*`,
//! `lm_head.*`) for the language model.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::lm_loss::next_token_loss;
use super::lora::LoraConfig;
use super::projector::{Projector, ProjectorConfig};
use super::qwen2::Qwen2;
use super::qwen2_config::Qwen2Config;
use super::vit::{VisionConfig, VisionTransformer};
use crate::param_store::ParamStore;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VlmConfig {
    pub vision: VisionConfig,
    pub projector: ProjectorConfig,
    pub lm: Qwen2Config,
    /// LoRA adapters on the language model's linear layers (finetune), merged away on export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraConfig>,
}

impl VlmConfig {
    /// Embeddings per image: one per patch for `mlp`, one per query for `resampler`.
    pub fn image_tokens(&self) -> usize {
        match self.projector {
            ProjectorConfig::Mlp => self.vision.grid() * self.vision.grid(),
            ProjectorConfig::Resampler { queries, .. } => queries,
        }
    }
}

/// Which part a parameter belongs to, by name.
pub fn is_vision(name: &str) -> bool {
    name.starts_with("vision.")
}

pub fn is_projector(name: &str) -> bool {
    name.starts_with("projector.")
}

pub fn is_lm(name: &str) -> bool {
    name.starts_with("model.") || name.starts_with("lm_head.")
}

#[derive(Clone, Debug)]
pub struct Vlm {
    pub vision: VisionTransformer,
    pub projector: Projector,
    pub lm: Qwen2,
    pub cfg: VlmConfig,
}

impl Vlm {
    pub fn new(p: &ParamStore, cfg: &VlmConfig) -> Result<Self> {
        let mut lm = Qwen2::new(p, &cfg.lm)?;
        if let Some(lora) = &cfg.lora {
            lm.attach_lora(p, lora)?;
        }
        Ok(Self {
            vision: VisionTransformer::new(&p.pp("vision"), &cfg.vision)?,
            projector: Projector::new(
                &p.pp("projector"),
                &cfg.projector,
                cfg.vision.width,
                cfg.lm.hidden_size,
            )?,
            lm,
            cfg: cfg.clone(),
        })
    }

    /// The same model with its LoRA updates folded into the weights and no adapters (itself, in
    /// a new store, when it has none): what is exported.
    pub fn merged(&self, params: &ParamStore) -> Result<(ParamStore, Vlm)> {
        let merged: std::collections::BTreeMap<String, Tensor> =
            self.lm.merged_lora_weights()?.into_iter().collect();
        let cfg = VlmConfig {
            lora: None,
            ..self.cfg.clone()
        };
        let out = ParamStore::new(0, params.device());
        let model = Vlm::new(&out, &cfg)?;
        let source: std::collections::BTreeMap<String, candle_core::Var> =
            params.vars().into_iter().collect();
        for (name, var) in out.vars() {
            let value = match merged.get(&name) {
                Some(t) => t.clone(),
                None => match source.get(&name) {
                    Some(v) => v.as_tensor().clone(),
                    None => candle_core::bail!("merging: the model has no {name}"),
                },
            };
            var.set(&value)?;
        }
        Ok((out, model))
    }

    /// `(N, 3, H, W)` normalised images → `(N, image_tokens, hidden)`.
    pub fn image_embeddings(&self, images: &Tensor) -> Result<Tensor> {
        self.projector.forward(&self.vision.features(images)?)
    }

    /// Token embeddings of `ids` `(N, T)`, with each row's image embeddings written over the
    /// placeholders at `image_at..image_at + image_tokens` (the same column in every row: the
    /// chat template puts the image at a fixed place).
    pub fn embed(&self, ids: &Tensor, image: Option<(&Tensor, usize)>) -> Result<Tensor> {
        let text = self.lm.embed(ids)?;
        let Some((images, at)) = image else {
            return Ok(text);
        };
        let img = self.image_embeddings(images)?;
        let (t, q) = (text.dim(1)?, img.dim(1)?);
        if at + q > t {
            candle_core::bail!("vlm: {q} image embeddings at column {at} overflow {t} tokens");
        }
        let before = text.narrow(1, 0, at)?;
        let after = text.narrow(1, at + q, t - at - q)?;
        Tensor::cat(&[before, img, after], 1)
    }

    /// Mean next-token cross-entropy over the labelled positions (see `lm_loss`).
    pub fn loss(
        &self,
        ids: &Tensor,
        labels: &Tensor,
        image: Option<(&Tensor, usize)>,
    ) -> Result<Tensor> {
        let hidden = self.lm.hidden_states(&self.embed(ids, image)?, None)?;
        next_token_loss(&self.lm, &hidden, labels)
    }
}

#[cfg(test)]
#[path = "vlm_tests.rs"]
pub(crate) mod tests;
