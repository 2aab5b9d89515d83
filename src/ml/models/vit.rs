//! Vision transformer (the CLIP image tower).
//!
//! image (N,3,H,W) → non-overlapping P×P patches, each flattened and projected to `width`
//! (a stride-P convolution written as unfold + linear) → [CLS] + patches + learned positions
//! → pre-LN blocks, unmasked → final LayerNorm → the CLS token's vector (N, width).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use super::transformer::Transformer;
use crate::ml::layers::{INIT_STD, LayerNorm, Linear};
use crate::ml::ops;
use crate::ml::params::Params;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
}

impl VisionConfig {
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches plus the CLS token.
    pub fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }
}

#[derive(Clone, Debug)]
pub struct VisionTransformer {
    patch_proj: Linear,
    class_embedding: Tensor,
    position_embedding: Tensor,
    transformer: Transformer,
    ln_post: LayerNorm,
    cfg: VisionConfig,
}

impl VisionTransformer {
    pub fn new(p: &Params, cfg: &VisionConfig) -> Result<Self> {
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            candle_core::bail!(
                "vit: image size {} is not a multiple of patch size {}",
                cfg.image_size,
                cfg.patch_size
            );
        }
        let patch_dim = 3 * cfg.patch_size * cfg.patch_size;
        Ok(Self {
            // No bias: the positional embedding already adds a learned offset per token.
            patch_proj: Linear::new(&p.pp("patch_proj"), patch_dim, cfg.width, false)?,
            class_embedding: p.normal("class_embedding", cfg.width, INIT_STD)?,
            position_embedding: p.normal("position_embedding", (cfg.tokens(), cfg.width), 0.01)?,
            transformer: Transformer::new(&p.pp("transformer"), cfg.width, cfg.layers, cfg.heads)?,
            ln_post: LayerNorm::new(&p.pp("ln_post"), cfg.width)?,
            cfg: cfg.clone(),
        })
    }

    /// `images`: `(N, 3, H, W)` f32, already normalised. Returns `(N, width)`.
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let x = self.encode(images)?;
        let cls_out = x.narrow(1, 0, 1)?.squeeze(1)?;
        self.ln_post.forward(&cls_out)
    }

    /// Every token's final state, `ln_post` applied: `(N, 1 + grid², width)`, CLS first. What
    /// a VLM's projector reads.
    pub fn features(&self, images: &Tensor) -> Result<Tensor> {
        self.ln_post.forward(&self.encode(images)?)
    }

    /// The transformer's output for CLS + patches, before the final norm.
    fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = images.dims4()?;
        let (s, g) = (self.cfg.image_size, self.cfg.grid());
        if (c, h, w) != (3, s, s) {
            candle_core::bail!(
                "vit: expected images (N, 3, {s}, {s}), got {:?}",
                images.dims()
            );
        }
        let p = self.cfg.patch_size;
        // (N,3,g·p,g·p) → (N,3,g,p,g,p) → (N,g,g,3,p,p) → (N, g², 3·p·p): channel-major per
        // patch, the same order as a conv weight (width, 3, p, p) flattened.
        let patches = images
            .reshape((n, 3, g, p, g, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((n, g * g, 3 * p * p))?;
        let x = self.patch_proj.forward(&patches)?;
        let cls = self.class_embedding.reshape((1, 1, self.cfg.width))?;
        let x = Tensor::cat(&[cls.broadcast_as((n, 1, self.cfg.width))?, x], 1)?;
        let x = ops::bias_add(&x, &self.position_embedding)?;
        self.transformer.forward(&x, None)
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }
}
