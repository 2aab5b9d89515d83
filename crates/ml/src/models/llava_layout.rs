//! A LLaVA-shaped VLM — a Hugging Face CLIP or SigLIP tower, the `mlp` projector, a Qwen2
//! language model — as `transformers` holds a `LlavaForConditionalGeneration`: one config with
//! the tower's and the LM's inside, and the weights under llava-hf's names:
//!
//! ```text
//! vision_tower.vision_model.*            the tower, named as CLIPVisionModel / SiglipVisionModel
//! multi_modal_projector.linear_1.*       projector.fc1, then GELU (tanh)
//! multi_modal_projector.linear_2.*       projector.fc2
//! language_model.model.*                 the Qwen2 LM
//! language_model.lm_head.weight          written also when the LM ties it to the embeddings
//! ```
//!
//! Those are the names of the published llava-hf checkpoints: transformers ≥ 4.52 renames them
//! as it loads (`model.vision_tower.*`, …), older versions read them as they are. The model is
//! the same computation: the tower's hidden state at `vision_feature_layer` (CLS dropped for
//! CLIP, "default"; SigLIP has none, "full"), projected and written over the image tokens.

use std::fmt;

use candle_core::{DType, Result, Tensor};
use serde_json::{Value, json};

use super::hf_vision::checkpoint_tensors;
use super::hf_vision_config::{Family, HfVisionConfig};
use super::projector::ProjectorConfig;
use super::vlm::{Vlm, VlmConfig};
use crate::param_store::ParamStore;

/// Why a VLM has no LLaVA form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotLlava {
    /// The tower is this project's CLIP (trained by clip-train), not a CLIP or SigLIP one.
    OwnTower,
    /// The projector is the resampler; LLaVA's is the `mlp`.
    Resampler,
    /// The projector reads the tower's features through its final LayerNorm; LLaVA reads them raw.
    FeaturesNormed,
    /// LoRA adapters not merged yet (`Vlm::merged` first).
    Adapters,
}

impl fmt::Display for NotLlava {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotLlava::OwnTower => {
                "its vision tower is this project's CLIP, which transformers has no class for \
                 (give vlm-pretrain a Hugging Face CLIP or SigLIP folder as `vision`)"
            }
            NotLlava::Resampler => {
                "its projector is the resampler; LLaVA's is `projector = \"mlp\"`"
            }
            NotLlava::FeaturesNormed => {
                "its projector reads the tower's features through the final LayerNorm; \
                 LLaVA reads them raw (`vision_feature_norm = false`)"
            }
            NotLlava::Adapters => "its LoRA adapters are not merged into the weights",
        })
    }
}

/// The tower's checkpoint config when `cfg` is LLaVA-shaped, or why it is not.
pub fn llava_tower(cfg: &VlmConfig) -> std::result::Result<HfVisionConfig, NotLlava> {
    let tower = HfVisionConfig::of(&cfg.vision).ok_or(NotLlava::OwnTower)?;
    if matches!(cfg.projector, ProjectorConfig::Resampler { .. }) {
        return Err(NotLlava::Resampler);
    }
    if cfg.vision.features.post_norm {
        return Err(NotLlava::FeaturesNormed);
    }
    if cfg.lora.is_some() {
        return Err(NotLlava::Adapters);
    }
    Ok(tower)
}

/// `vision_feature_select_strategy`: CLIP's CLS token is dropped ("default"), SigLIP has none.
pub fn select_strategy(tower: &HfVisionConfig) -> &'static str {
    match tower.family {
        Family::Clip => "default",
        Family::Siglip => "full",
    }
}

/// `config.json` of the LLaVA model; `image_token` is the id the processor repeats once per
/// image embedding.
pub fn config_json(cfg: &VlmConfig, tower: &HfVisionConfig, image_token: u32) -> Value {
    let mut text: Value = serde_json::from_str(&cfg.lm.to_json()).expect("a Qwen2 config is JSON");
    // lm_head is written out, so nothing needs tying (and transformers ties by this flag).
    text["tie_word_embeddings"] = false.into();
    json!({
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "vision_config": tower.to_json(),
        "text_config": text,
        "image_token_index": image_token,
        "image_seq_length": cfg.image_tokens(),
        "projector_hidden_act": "gelu_pytorch_tanh",
        "multimodal_projector_bias": true,
        "vision_feature_select_strategy": select_strategy(tower),
        "vision_feature_layer": cfg.vision.features.layer,
        "tie_word_embeddings": false,
        "torch_dtype": "float32",
    })
}

/// Every weight of `model` (its store `params`) under its LLaVA name, as f32.
pub fn llava_tensors(
    params: &ParamStore,
    model: &Vlm,
    tower: &HfVisionConfig,
) -> Result<Vec<(String, Tensor)>> {
    let mut out = checkpoint_tensors(params, tower, "vision_tower.vision_model.")?;
    let projector: std::collections::BTreeMap<String, Tensor> = params
        .vars()
        .into_iter()
        .filter_map(|(name, var)| {
            let part = name.strip_prefix("projector.")?;
            Some((part.to_string(), var.as_tensor().clone()))
        })
        .collect();
    for (ours, theirs) in [("fc1", "linear_1"), ("fc2", "linear_2")] {
        for what in ["weight", "bias"] {
            let Some(t) = projector.get(&format!("{ours}.{what}")) else {
                candle_core::bail!("the projector has no {ours}.{what}: not the `mlp` projector");
            };
            out.push((format!("multi_modal_projector.{theirs}.{what}"), t.clone()));
        }
    }
    let lm = model.lm.tensors();
    let has_head = lm.iter().any(|(name, _)| name == "lm_head.weight");
    for (name, t) in &lm {
        if !has_head && name == "model.embed_tokens.weight" {
            out.push(("language_model.lm_head.weight".into(), t.clone()));
        }
        out.push((format!("language_model.{name}"), t.clone()));
    }
    out.into_iter()
        .map(|(name, t)| Ok((name, t.to_dtype(DType::F32)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::models::hf_vision_config::HfVisionConfig;
    use crate::models::lora::LoraConfig;
    use crate::models::vit::FeatureLayer;

    /// The tiny VLM with a SigLIP-shaped tower read at LLaVA's layer and the `mlp` projector.
    fn llava_shaped() -> VlmConfig {
        let mut cfg = crate::models::vlm::tests::tiny();
        let siglip = HfVisionConfig::from_json(
            r#"{"model_type": "siglip_vision_model", "hidden_size": 24, "intermediate_size": 40,
                "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}"#,
        )
        .unwrap();
        cfg.vision = siglip.at(16, HfVisionConfig::pixel_norm_of(&cfg.vision));
        cfg.vision.features = FeatureLayer::LLAVA;
        cfg.projector = ProjectorConfig::Mlp;
        cfg
    }

    #[test]
    fn only_a_tower_checkpoint_the_mlp_raw_features_and_no_adapters_make_a_llava() {
        let cfg = llava_shaped();
        assert!(llava_tower(&cfg).is_ok());
        let mut own = cfg.clone();
        own.vision.arch = Default::default();
        let resampler = VlmConfig {
            projector: crate::models::vlm::tests::tiny().projector,
            ..cfg.clone()
        };
        let mut normed = cfg.clone();
        normed.vision.features.post_norm = true;
        let adapters = VlmConfig {
            lora: Some(LoraConfig {
                rank: 2,
                alpha: 4.0,
                targets: vec!["q_proj".into()],
            }),
            ..cfg.clone()
        };
        for (cfg, why) in [
            (own, NotLlava::OwnTower),
            (resampler, NotLlava::Resampler),
            (normed, NotLlava::FeaturesNormed),
            (adapters, NotLlava::Adapters),
        ] {
            assert_eq!(llava_tower(&cfg).err(), Some(why));
        }
    }

    #[test]
    fn every_weight_has_its_llava_name_and_the_config_says_how_to_read_it() -> Result<()> {
        let cfg = llava_shaped();
        let tower = llava_tower(&cfg).unwrap();
        let params = ParamStore::new(1, &Device::Cpu);
        let model = Vlm::new(&params, &cfg)?;
        let tensors: std::collections::BTreeMap<String, Tensor> =
            llava_tensors(&params, &model, &tower)?
                .into_iter()
                .collect();
        let ours = params.vars().len();
        // Every parameter once, plus the lm_head written out of the tied embeddings.
        assert!(cfg.lm.tie_word_embeddings);
        assert_eq!(tensors.len(), ours + 1);
        let shape = |name: &str| tensors[name].dims().to_vec();
        assert_eq!(
            shape("vision_tower.vision_model.embeddings.patch_embedding.weight"),
            [24, 3, 8, 8]
        );
        assert_eq!(
            shape("vision_tower.vision_model.embeddings.position_embedding.weight"),
            [4, 24]
        );
        assert_eq!(shape("multi_modal_projector.linear_1.weight"), [32, 24]);
        let (head, embed) = (
            &tensors["language_model.lm_head.weight"],
            &tensors["language_model.model.embed_tokens.weight"],
        );
        let diff = (head - embed)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);

        let config = config_json(&cfg, &tower, 7);
        assert_eq!(config["image_token_index"], 7);
        assert_eq!(config["image_seq_length"], 4);
        assert_eq!(config["vision_feature_select_strategy"], "full");
        assert_eq!(config["vision_feature_layer"], -2);
        assert_eq!(config["vision_config"]["vision_use_head"], false);
        assert_eq!(config["text_config"]["tie_word_embeddings"], false);
        Ok(())
    }
}
