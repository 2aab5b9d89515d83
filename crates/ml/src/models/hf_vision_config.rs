//! The vision tower of a Hugging Face CLIP or SigLIP `config.json`, as a [`VisionConfig`].
//!
//! Either a whole model's config (`CLIPModel`, `SiglipModel`: the tower under `vision_config`)
//! or a tower's own (`CLIPVisionModel`, `SiglipVisionModel`). Absent fields take transformers'
//! defaults for the family. What this ViT cannot compute the same way (another `hidden_act`,
//! other than 3 channels, SigLIP 2's patch layout) is refused rather than run differently.

use serde::Deserialize;

use super::vit::{FeatureLayer, PixelNorm, VisionConfig, VitArch};
use crate::data::image::{CLIP_MEAN, CLIP_STD};
use crate::ops::layers::Activation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Clip,
    Siglip,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Clip => "CLIP",
            Family::Siglip => "SigLIP",
        }
    }

    /// The normalisation the family's image processors use when the folder does not say.
    fn default_norm(self) -> PixelNorm {
        match self {
            Family::Clip => PixelNorm {
                mean: CLIP_MEAN,
                std: CLIP_STD,
            },
            Family::Siglip => PixelNorm {
                mean: [0.5; 3],
                std: [0.5; 3],
            },
        }
    }
}

/// A checkpoint's tower as `config.json` describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct HfVisionConfig {
    pub family: Family,
    /// The size it was trained at (not always a multiple of the patch size: the convolution
    /// drops the remainder, as SigLIP's 384-px, 14-px-patch towers do).
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    pub mlp_width: usize,
    pub activation: Activation,
    pub ln_eps: f64,
}

/// `config.json`'s tower fields; absent ones take the family's defaults.
#[derive(Deserialize)]
struct Fields {
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    image_size: Option<usize>,
    patch_size: Option<usize>,
    num_channels: Option<usize>,
    hidden_act: Option<String>,
    layer_norm_eps: Option<f64>,
}

/// Hugging Face's `hidden_act` names for the activations this ViT has.
fn activation(name: &str) -> Option<Activation> {
    match name {
        "quick_gelu" => Some(Activation::QuickGelu),
        "gelu" => Some(Activation::Gelu),
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Activation::GeluTanh),
        _ => None,
    }
}

/// The `hidden_act` name Hugging Face writes for each activation.
fn activation_name(activation: Activation) -> &'static str {
    match activation {
        Activation::QuickGelu => "quick_gelu",
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_pytorch_tanh",
    }
}

impl HfVisionConfig {
    /// Parses `config.json`'s text; an error says what is wrong, the caller adds the path.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let model_type = v["model_type"].as_str().unwrap_or("(none)");
        let family = match model_type {
            "clip" | "clip_vision_model" => Family::Clip,
            "siglip" | "siglip_vision_model" => Family::Siglip,
            other => {
                return Err(format!(
                    "model_type `{other}` is neither CLIP nor SigLIP: expected the config of a \
                     CLIPModel, CLIPVisionModel, SiglipModel or SiglipVisionModel"
                ));
            }
        };
        let tower = match v.get("vision_config") {
            Some(inner) if inner.is_object() => inner.clone(),
            _ if model_type.ends_with("_vision_model") => v.clone(),
            _ => return Err(format!("a `{model_type}` config without `vision_config`")),
        };
        let f: Fields = serde_json::from_value(tower).map_err(|e| format!("vision config: {e}"))?;
        let (patch, act, eps) = match family {
            Family::Clip => (32, "quick_gelu", 1e-5),
            Family::Siglip => (16, "gelu_pytorch_tanh", 1e-6),
        };
        if let Some(c) = f.num_channels.filter(|&c| c != 3) {
            return Err(format!(
                "num_channels = {c}: only RGB (3) towers are supported"
            ));
        }
        let act = f.hidden_act.as_deref().unwrap_or(act);
        let activation = activation(act).ok_or_else(|| {
            format!("hidden_act `{act}` is not supported (quick_gelu, gelu, gelu_pytorch_tanh)")
        })?;
        let width = f.hidden_size.unwrap_or(768);
        let cfg = Self {
            family,
            image_size: f.image_size.unwrap_or(224),
            patch_size: f.patch_size.unwrap_or(patch),
            width,
            layers: f.num_hidden_layers.unwrap_or(12),
            heads: f.num_attention_heads.unwrap_or(12),
            mlp_width: f.intermediate_size.unwrap_or(3072),
            activation,
            ln_eps: f.layer_norm_eps.unwrap_or(eps),
        };
        if cfg.patch_size == 0 || cfg.image_size < cfg.patch_size {
            return Err(format!(
                "image_size {} and patch_size {} make no patches",
                cfg.image_size, cfg.patch_size
            ));
        }
        Ok(cfg)
    }

    /// The checkpoint config of a tower read from one (`at`'s inverse), at the tower's present
    /// image size. `None` for this project's own CLIP: transformers has no class for a ViT
    /// with a CLS token but no LayerNorm before its blocks.
    pub fn of(cfg: &VisionConfig) -> Option<Self> {
        let arch = &cfg.arch;
        let family = match (arch.class_token, arch.patch_bias, arch.pre_norm) {
            (true, false, true) => Family::Clip,
            (false, true, false) => Family::Siglip,
            _ => return None,
        };
        Some(Self {
            family,
            image_size: cfg.image_size,
            patch_size: cfg.patch_size,
            width: cfg.width,
            layers: cfg.layers,
            heads: cfg.heads,
            mlp_width: arch.mlp_width.unwrap_or(4 * cfg.width),
            activation: arch.activation,
            ln_eps: arch.ln_eps,
        })
    }

    /// The tower's own `config.json` (`CLIPVisionConfig`, `SiglipVisionConfig`), as
    /// transformers reads it; SigLIP's pooling head, which a VLM does not use, left out.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "model_type": match self.family {
                Family::Clip => "clip_vision_model",
                Family::Siglip => "siglip_vision_model",
            },
            "hidden_size": self.width,
            "intermediate_size": self.mlp_width,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_channels": 3,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_act": activation_name(self.activation),
            "layer_norm_eps": self.ln_eps,
            "attention_dropout": 0.0,
        });
        if self.family == Family::Siglip {
            v["vision_use_head"] = false.into();
        }
        v
    }

    /// Patches per side at the checkpoint's own size.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// The tower at `image_size` (a multiple of the patch size), with the checkpoint's pixel
    /// normalisation `norm` and the default feature layer.
    pub fn at(&self, image_size: usize, norm: PixelNorm) -> VisionConfig {
        let clip = self.family == Family::Clip;
        VisionConfig {
            image_size,
            patch_size: self.patch_size,
            width: self.width,
            layers: self.layers,
            heads: self.heads,
            arch: VitArch {
                class_token: clip,
                patch_bias: !clip,
                pre_norm: clip,
                mlp_width: Some(self.mlp_width),
                activation: self.activation,
                ln_eps: self.ln_eps,
                // The data pipeline's own normalisation needs no re-normalisation.
                pixel_norm: Some(norm).filter(|n| !n.close_to(&Family::Clip.default_norm())),
            },
            features: FeatureLayer::default(),
        }
    }

    /// The pixel normalisation a tower expects (CLIP's unless it says otherwise).
    pub fn pixel_norm_of(cfg: &VisionConfig) -> PixelNorm {
        cfg.arch
            .pixel_norm
            .unwrap_or_else(|| Family::Clip.default_norm())
    }

    /// The pixel normalisation of `preprocessor_config.json`'s text (`image_mean`, `image_std`),
    /// or the family's usual one without that file.
    pub fn pixel_norm(&self, preprocessor: Option<&str>) -> Result<PixelNorm, String> {
        let Some(text) = preprocessor else {
            return Ok(self.family.default_norm());
        };
        #[derive(Deserialize)]
        struct Processor {
            image_mean: Option<[f32; 3]>,
            image_std: Option<[f32; 3]>,
        }
        let p: Processor = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let default = self.family.default_norm();
        let norm = PixelNorm {
            mean: p.image_mean.unwrap_or(default.mean),
            std: p.image_std.unwrap_or(default.std),
        };
        if norm.std.iter().any(|&s| s <= 0.0) {
            return Err(format!("image_std {:?} must be positive", norm.std));
        }
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_layouts_of_both_families_are_read_with_their_defaults() {
        let full = r#"{"model_type": "clip", "vision_config": {"hidden_size": 64, "patch_size": 16},
                       "text_config": {"hidden_size": 32}}"#;
        let cfg = HfVisionConfig::from_json(full).unwrap();
        assert_eq!(
            (cfg.family, cfg.width, cfg.patch_size, cfg.image_size),
            (Family::Clip, 64, 16, 224)
        );
        assert_eq!((cfg.activation, cfg.ln_eps), (Activation::QuickGelu, 1e-5));
        let own = r#"{"model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14}"#;
        let cfg = HfVisionConfig::from_json(own).unwrap();
        assert_eq!((cfg.family, cfg.grid()), (Family::Siglip, 27));
        assert_eq!((cfg.activation, cfg.ln_eps), (Activation::GeluTanh, 1e-6));
        let v = cfg.at(28, cfg.pixel_norm(None).unwrap());
        assert!(!v.arch.class_token && v.arch.patch_bias && !v.arch.pre_norm);
        assert_eq!(v.arch.pixel_norm.unwrap().std, [0.5; 3]);
        assert_eq!(v.tokens(), 4);
    }

    #[test]
    fn clip_normalisation_needs_no_renormalisation() {
        let cfg = HfVisionConfig::from_json(r#"{"model_type": "clip_vision_model"}"#).unwrap();
        let openai = r#"{"image_mean": [0.48145466, 0.4578275, 0.40821073],
                         "image_std": [0.26862954, 0.26130258, 0.27577711]}"#;
        let norm = cfg.pixel_norm(Some(openai)).unwrap();
        assert_eq!(cfg.at(224, norm).arch.pixel_norm, None);
        let other = cfg
            .pixel_norm(Some(r#"{"image_mean": [0.4, 0.4, 0.4]}"#))
            .unwrap();
        assert_eq!(other.mean, [0.4; 3]);
        assert_eq!(other.std, CLIP_STD);
        assert!(cfg.at(224, other).arch.pixel_norm.is_some());
    }

    #[test]
    fn what_this_vit_cannot_run_is_refused_by_name() {
        let cases = [
            (
                r#"{"model_type": "qwen2"}"#,
                "model_type `qwen2` is neither CLIP nor SigLIP",
            ),
            (r#"{"hidden_size": 8}"#, "model_type `(none)`"),
            (
                r#"{"model_type": "siglip2_vision_model"}"#,
                "`siglip2_vision_model`",
            ),
            (r#"{"model_type": "clip"}"#, "without `vision_config`"),
            (
                r#"{"model_type": "clip_vision_model", "hidden_act": "relu"}"#,
                "hidden_act `relu`",
            ),
            (
                r#"{"model_type": "siglip_vision_model", "num_channels": 1}"#,
                "num_channels = 1",
            ),
            (
                r#"{"model_type": "clip_vision_model", "hidden_size": "wide"}"#,
                "vision config: invalid type",
            ),
        ];
        for (json, want) in cases {
            let err = HfVisionConfig::from_json(json).unwrap_err();
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
