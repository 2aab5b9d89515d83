//! CLIP: an image tower and a text tower trained to agree (Radford et al., 2021).
//!
//! Each tower's pooled vector is projected (no bias) to `embed_dim` and L2-normalised; the N×N
//! table of cosine similarities, times a learned temperature `exp(logit_scale)`, is scored with
//! cross-entropy in both directions: image i should pick caption i and caption i image i.

use candle_core::{D, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::text::{TextConfig, TextTransformer};
use super::vit::{VisionConfig, VisionTransformer};
use crate::ops::layers::Linear;
use crate::param_store::ParamStore;

/// Initial temperature 1/0.07, as in the paper.
pub const LOGIT_SCALE_INIT: f64 = 2.659_260_036_932_778; // ln(1/0.07)
/// The temperature is capped at 100 so that training cannot blow the logits up.
pub const LOGIT_SCALE_MAX: f64 = 4.605_170_185_988_092; // ln(100)

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClipConfig {
    pub vision: VisionConfig,
    pub text: TextConfig,
    pub embed_dim: usize,
}

impl ClipConfig {
    /// The 1.44M-parameter model of CALIBRATION.md, sized for 32-px images on a 2-core CPU.
    pub fn small(vocab_size: usize) -> Self {
        Self {
            vision: VisionConfig {
                image_size: 32,
                patch_size: 8,
                width: 128,
                layers: 4,
                heads: 4,
                arch: Default::default(),
                features: Default::default(),
            },
            text: TextConfig {
                vocab_size,
                max_len: 32,
                width: 128,
                layers: 3,
                heads: 4,
            },
            embed_dim: 64,
        }
    }

    /// OpenAI's ViT-B/16 shape (~150M parameters with CLIP's 49,408-token vocabulary).
    pub fn vit_b16(vocab_size: usize) -> Self {
        Self {
            vision: VisionConfig {
                image_size: 224,
                patch_size: 16,
                width: 768,
                layers: 12,
                heads: 12,
                arch: Default::default(),
                features: Default::default(),
            },
            text: TextConfig {
                vocab_size,
                max_len: 77,
                width: 512,
                layers: 12,
                heads: 8,
            },
            embed_dim: 512,
        }
    }

    /// A named config: `small` or `vit_b16`.
    pub fn named(name: &str, vocab_size: usize) -> Option<Self> {
        match name {
            "small" => Some(Self::small(vocab_size)),
            "vit_b16" => Some(Self::vit_b16(vocab_size)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Clip {
    pub vision: VisionTransformer,
    pub text: TextTransformer,
    visual_projection: Linear,
    text_projection: Linear,
    logit_scale: Tensor,
    pub cfg: ClipConfig,
}

impl Clip {
    /// Parameters are named `vision.*`, `text.*`, `visual_projection.weight`,
    /// `text_projection.weight` and `logit_scale`.
    pub fn new(p: &ParamStore, cfg: &ClipConfig) -> Result<Self> {
        let (vw, tw, e) = (cfg.vision.width, cfg.text.width, cfg.embed_dim);
        Ok(Self {
            vision: VisionTransformer::new(&p.pp("vision"), &cfg.vision)?,
            text: TextTransformer::new(&p.pp("text"), &cfg.text)?,
            visual_projection: Linear::with_std(
                &p.pp("visual_projection"),
                vw,
                e,
                false,
                (vw as f64).powf(-0.5),
            )?,
            text_projection: Linear::with_std(
                &p.pp("text_projection"),
                tw,
                e,
                false,
                (tw as f64).powf(-0.5),
            )?,
            logit_scale: p.constant("logit_scale", (), LOGIT_SCALE_INIT as f32)?,
            cfg: cfg.clone(),
        })
    }

    /// `(N,3,H,W)` normalised images → `(N, embed_dim)` unit vectors.
    pub fn encode_image(&self, images: &Tensor) -> Result<Tensor> {
        l2_normalize(
            &self
                .visual_projection
                .forward(&self.vision.forward(images)?)?,
        )
    }

    /// `(N,T)` u32 tokens and `(N)` u32 lengths → `(N, embed_dim)` unit vectors.
    pub fn encode_text(&self, tokens: &Tensor, lengths: &Tensor) -> Result<Tensor> {
        l2_normalize(
            &self
                .text_projection
                .forward(&self.text.forward(tokens, lengths)?)?,
        )
    }

    /// The temperature actually used: `exp(min(logit_scale, ln 100))`, a scalar tensor.
    pub fn temperature(&self) -> Result<Tensor> {
        self.logit_scale.minimum(LOGIT_SCALE_MAX)?.exp()
    }

    /// Mean symmetric contrastive loss of a batch of matching pairs (pair i = image i, text i).
    pub fn loss(&self, images: &Tensor, tokens: &Tensor, lengths: &Tensor) -> Result<Tensor> {
        let img = self.encode_image(images)?;
        let txt = self.encode_text(tokens, lengths)?;
        contrastive_loss(&img, &txt, &self.temperature()?)
    }
}

/// `x / ‖x‖` over the last dim, in f32 (embeddings leave a bf16 forward here).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let x = &x.to_dtype(candle_core::DType::F32)?;
    x.broadcast_div(&x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?)
}

/// `(CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)) / 2` for unit vectors `img`, `txt` `(N, E)` and a
/// scalar temperature `s`.
pub fn contrastive_loss(img: &Tensor, txt: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let logits = img.matmul(&txt.t()?)?.broadcast_mul(scale)?;
    let n = logits.dim(0)?;
    let eye = Tensor::eye(n, logits.dtype(), logits.device())?;
    // Mean over rows of −log p(diagonal), rows = images then rows = texts.
    let ce = |l: &Tensor| -> Result<Tensor> {
        let max = l.max_keepdim(D::Minus1)?.detach();
        let shifted = l.broadcast_sub(&max)?;
        let log_p = shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)?;
        (log_p * &eye)?.sum_all()?.neg()? / n as f64
    };
    (ce(&logits)? + ce(&logits.t()?)?)? * 0.5
}
