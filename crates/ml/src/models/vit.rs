//! Vision transformer (the CLIP image tower).
//!
//! image (N,3,H,W) → non-overlapping P×P patches, each flattened and projected to `width`
//! (a stride-P convolution written as unfold + linear) → [CLS] + patches + learned positions
//! → pre-LN blocks, unmasked → final LayerNorm → the CLS token's vector (N, width).
//!
//! The same tower runs Hugging Face `CLIPVisionModel` and `SiglipVisionModel` checkpoints
//! (`hf_vision.rs`). [`VitArch`] holds where those differ from this project's CLIP: SigLIP has
//! no CLS token but a patch bias, CLIP a LayerNorm before the blocks, each its own activation,
//! MLP width, LayerNorm epsilon and pixel normalisation.

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::transformer::{BlockOptions, Transformer};
use crate::data::image::{CLIP_MEAN, CLIP_STD};
use crate::ops;
use crate::ops::layers::{Activation, INIT_STD, LN_EPS, LayerNorm, Linear};
use crate::param_store::ParamStore;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
    /// How the tower is built where it is not this project's CLIP. Left out of the JSON when
    /// it is, so configs written before it existed read, and are written, the same.
    #[serde(default, skip_serializing_if = "VitArch::is_standard")]
    pub arch: VitArch,
    /// Which hidden state [`VisionTransformer::features`] returns (left out when standard).
    #[serde(default, skip_serializing_if = "FeatureLayer::is_standard")]
    pub features: FeatureLayer,
}

impl VisionConfig {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches plus the CLS token, when there is one.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + usize::from(self.arch.class_token)
    }
}

/// The parts of a ViT that differ between this project's CLIP (the default) and pretrained
/// Hugging Face CLIP or SigLIP towers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VitArch {
    /// A learned [CLS] token before the patches (CLIP); SigLIP has none.
    pub class_token: bool,
    /// A bias on the patch projection (SigLIP's convolution has one).
    pub patch_bias: bool,
    /// A LayerNorm `ln_pre` on the embeddings before the blocks (CLIP's `pre_layrnorm`).
    pub pre_norm: bool,
    /// The MLP's hidden width; `None` is 4 × width.
    pub mlp_width: Option<usize>,
    pub activation: Activation,
    /// Every LayerNorm's epsilon.
    pub ln_eps: f64,
    /// The per-channel normalisation the checkpoint was trained with, when it is not CLIP's.
    /// The data pipeline normalises with CLIP's mean and std; the tower maps that to this.
    pub pixel_norm: Option<PixelNorm>,
}

impl Default for VitArch {
    fn default() -> Self {
        Self {
            class_token: true,
            patch_bias: false,
            pre_norm: false,
            mlp_width: None,
            activation: Activation::GeluTanh,
            ln_eps: LN_EPS,
            pixel_norm: None,
        }
    }
}

impl VitArch {
    fn is_standard(&self) -> bool {
        *self == Self::default()
    }
}

/// Per-channel (R, G, B) mean and std on the 0..1 pixel scale (SigLIP: 0.5 and 0.5).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PixelNorm {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl PixelNorm {
    /// Equal within 1e-6 (a `preprocessor_config.json` may spell CLIP's values longer).
    pub fn close_to(&self, other: &PixelNorm) -> bool {
        let close = |a: &[f32; 3], b: &[f32; 3]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6);
        close(&self.mean, &other.mean) && close(&self.std, &other.std)
    }

    /// `(scale, shift)`, each `(1, 3, 1, 1)`, taking CLIP-normalised pixels to this
    /// normalisation: `(p − m)/s = x·(s_clip/s) + (m_clip − m)/s` for `x = (p − m_clip)/s_clip`.
    fn affine_from_clip(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let per_channel = |f: &dyn Fn(usize) -> f64| -> Result<Tensor> {
            let v: Vec<f32> = (0..3).map(|c| f(c) as f32).collect();
            Tensor::from_vec(v, (1, 3, 1, 1), device)
        };
        let (m, s) = (
            |c: usize| f64::from(self.mean[c]),
            |c: usize| f64::from(self.std[c]),
        );
        Ok((
            per_channel(&|c| f64::from(CLIP_STD[c]) / s(c))?,
            per_channel(&|c| (f64::from(CLIP_MEAN[c]) - m(c)) / s(c))?,
        ))
    }
}

/// Which hidden state a VLM's projector reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureLayer {
    /// Counted as Hugging Face counts `hidden_states`: 0 is the embeddings, k the output of
    /// block k, a negative number counts from the end (-1 the last block; LLaVA reads -2).
    pub layer: i64,
    /// Through `ln_post`, as this project's CLIP does (the default), or raw, as LLaVA reads.
    pub post_norm: bool,
}

impl Default for FeatureLayer {
    fn default() -> Self {
        Self {
            layer: -1,
            post_norm: true,
        }
    }
}

impl FeatureLayer {
    /// LLaVA's choice: the penultimate block's output, no final LayerNorm.
    pub const LLAVA: FeatureLayer = FeatureLayer {
        layer: -2,
        post_norm: false,
    };

    fn is_standard(&self) -> bool {
        *self == Self::default()
    }

    /// How many blocks run to reach this layer in a tower of `layers` blocks.
    pub fn blocks(&self, layers: usize) -> Result<usize> {
        let n = layers as i64;
        let blocks = if self.layer < 0 {
            n + 1 + self.layer
        } else {
            self.layer
        };
        if !(0..=n).contains(&blocks) {
            // A plain message (no `bail!`): a param's mistake, not worth a backtrace.
            return Err(candle_core::Error::Msg(format!(
                "feature layer {} is outside -{}..={n} for a tower of {n} blocks",
                self.layer,
                n + 1
            )));
        }
        Ok(blocks as usize)
    }
}

#[derive(Clone, Debug)]
pub struct VisionTransformer {
    /// `(scale, shift)` from CLIP's pixel normalisation to the checkpoint's.
    pixel_affine: Option<(Tensor, Tensor)>,
    patch_proj: Linear,
    class_embedding: Option<Tensor>,
    position_embedding: Tensor,
    ln_pre: Option<LayerNorm>,
    transformer: Transformer,
    ln_post: LayerNorm,
    cfg: VisionConfig,
}

impl VisionTransformer {
    pub fn new(p: &ParamStore, cfg: &VisionConfig) -> Result<Self> {
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            candle_core::bail!(
                "vit: image size {} is not a multiple of patch size {}",
                cfg.image_size,
                cfg.patch_size
            );
        }
        cfg.features.blocks(cfg.layers)?;
        let arch = &cfg.arch;
        let opts = BlockOptions {
            mlp_width: arch.mlp_width.unwrap_or(4 * cfg.width),
            activation: arch.activation,
            ln_eps: arch.ln_eps,
        };
        let patch_dim = 3 * cfg.patch_size * cfg.patch_size;
        let ln = |name: &str| LayerNorm::with_eps(&p.pp(name), cfg.width, arch.ln_eps);
        Ok(Self {
            pixel_affine: match &arch.pixel_norm {
                Some(norm) => Some(norm.affine_from_clip(p.device())?),
                None => None,
            },
            // No bias in ours: the positional embedding already adds a learned offset per token.
            patch_proj: Linear::new(&p.pp("patch_proj"), patch_dim, cfg.width, arch.patch_bias)?,
            class_embedding: if arch.class_token {
                Some(p.normal("class_embedding", cfg.width, INIT_STD)?)
            } else {
                None
            },
            position_embedding: p.normal("position_embedding", (cfg.tokens(), cfg.width), 0.01)?,
            ln_pre: if arch.pre_norm {
                Some(ln("ln_pre")?)
            } else {
                None
            },
            transformer: Transformer::new(
                &p.pp("transformer"),
                cfg.width,
                cfg.layers,
                cfg.heads,
                &opts,
            )?,
            ln_post: ln("ln_post")?,
            cfg: cfg.clone(),
        })
    }

    /// `images`: `(N, 3, H, W)` f32, already normalised. Returns the CLS token's final state
    /// through `ln_post`, `(N, width)`: what CLIP projects.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        if self.class_embedding.is_none() {
            candle_core::bail!("vit: this tower has no CLS token to pool (a SigLIP tower)");
        }
        let x = self.transformer.forward(&self.embed(images)?, None)?;
        let cls_out = x.narrow(1, 0, 1)?.squeeze(1)?;
        self.ln_post.forward(&cls_out)
    }

    /// The patch tokens of the configured feature layer, `(N, grid², width)`: what a VLM's
    /// projector reads. The CLS token is left out, as LLaVA does.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.hidden_state(images, &self.cfg.features)?;
        let cls = usize::from(self.cfg.arch.class_token);
        x.narrow(1, cls, x.dim(1)? - cls)
    }

    /// Every token (CLS first, when there is one) at `layer`: `(N, tokens, width)`.
    pub fn hidden_state(&self, images: &Tensor, layer: &FeatureLayer) -> Result<Tensor> {
        let blocks = layer.blocks(self.cfg.layers)?;
        let x = self
            .transformer
            .forward_first(&self.embed(images)?, None, blocks)?;
        if layer.post_norm {
            self.ln_post.forward(&x)
        } else {
            Ok(x)
        }
    }

    /// What the first block reads: [CLS] + patch embeddings + positions, `ln_pre` applied.
    fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = images.dims4()?;
        let (s, g) = (self.cfg.image_size, self.cfg.grid());
        if (c, h, w) != (3, s, s) {
            candle_core::bail!(
                "vit: expected images (N, 3, {s}, {s}), got {:?}",
                images.dims()
            );
        }
        let images = ops::to_compute(images)?;
        let images = match &self.pixel_affine {
            Some((scale, shift)) => images
                .broadcast_mul(&ops::cast_like(scale, &images)?)?
                .broadcast_add(&ops::cast_like(shift, &images)?)?,
            None => images,
        };
        let p = self.cfg.patch_size;
        // (N,3,g·p,g·p) → (N,3,g,p,g,p) → (N,g,g,3,p,p) → (N, g², 3·p·p): channel-major per
        // patch, the same order as a conv weight (width, 3, p, p) flattened.
        let patches = images
            .reshape((n, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, g * g, 3 * p * p))?;
        let x = self.patch_proj.forward(&patches)?;
        let x = match &self.class_embedding {
            Some(cls) => {
                let cls = ops::cast_like(cls, &x)?.reshape((1, 1, self.cfg.width))?;
                Tensor::cat(&[cls.broadcast_as((n, 1, self.cfg.width))?, x], 1)?
            }
            None => x,
        };
        let x = ops::bias_add(&x, &self.position_embedding)?;
        match &self.ln_pre {
            Some(ln) => ln.forward(&x),
            None => Ok(x),
        }
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }
}

#[cfg(test)]
#[path = "vit_tests.rs"]
mod tests;
