//! The projector: how image features become embeddings in the language model's space.
//!
//! - `mlp` (LLaVA-1.5): `Linear → GELU → Linear` on every patch feature; one LM token per patch.
//! - `resampler` (Qwen-VL's adapter, the miniVLM seed's): `queries` learned vectors
//!   cross-attend to the patch features (keys and values projected to the LM width, both sides
//!   layer-normed), a fixed number of LM tokens whatever the image size.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::ops::layers::{INIT_STD, LayerNorm, Linear};
use crate::param_store::ParamStore;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProjectorConfig {
    Mlp,
    Resampler { queries: usize, heads: usize },
}

#[derive(Clone, Debug)]
pub enum Projector {
    Mlp { fc1: Linear, fc2: Linear },
    Resampler(Box<Resampler>),
}

#[derive(Clone, Debug)]
pub struct Resampler {
    queries: Tensor,
    kv_proj: Linear,
    ln_q: LayerNorm,
    ln_kv: LayerNorm,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    ln_post: LayerNorm,
    proj: Linear,
    heads: usize,
}

impl Projector {
    /// Parameters under `p`: `fc1`, `fc2` or the resampler's named parts. `vision_width` is the
    /// ViT's width, `lm_width` the language model's hidden size.
    pub fn new(
        p: &ParamStore,
        cfg: &ProjectorConfig,
        vision_width: usize,
        lm_width: usize,
    ) -> Result<Self> {
        Ok(match *cfg {
            ProjectorConfig::Mlp => Projector::Mlp {
                fc1: Linear::new(&p.pp("fc1"), vision_width, lm_width, true)?,
                fc2: Linear::new(&p.pp("fc2"), lm_width, lm_width, true)?,
            },
            ProjectorConfig::Resampler { queries, heads } => {
                if queries == 0 || heads == 0 || !lm_width.is_multiple_of(heads) {
                    candle_core::bail!(
                        "resampler: needs queries ≥ 1 and an LM width ({lm_width}) divisible by heads ({heads})"
                    );
                }
                let linear = |name: &str, d_in| Linear::new(&p.pp(name), d_in, lm_width, true);
                Projector::Resampler(Box::new(Resampler {
                    queries: p.normal("queries", (queries, lm_width), INIT_STD)?,
                    kv_proj: Linear::new(&p.pp("kv_proj"), vision_width, lm_width, false)?,
                    ln_q: LayerNorm::new(&p.pp("ln_q"), lm_width)?,
                    ln_kv: LayerNorm::new(&p.pp("ln_kv"), lm_width)?,
                    q_proj: linear("q_proj", lm_width)?,
                    k_proj: linear("k_proj", lm_width)?,
                    v_proj: linear("v_proj", lm_width)?,
                    out_proj: linear("out_proj", lm_width)?,
                    ln_post: LayerNorm::new(&p.pp("ln_post"), lm_width)?,
                    proj: Linear::new(&p.pp("proj"), lm_width, lm_width, false)?,
                    heads,
                }))
            }
        })
    }

    /// How many LM tokens an image becomes, given its number of patch features.
    pub fn output_tokens(&self, patches: usize) -> usize {
        match self {
            Projector::Mlp { .. } => patches,
            Projector::Resampler(r) => r.queries.dim(0).unwrap_or(0),
        }
    }

    /// `patches`: the ViT's patch features `(N, patches, vision_width)` (no CLS token: see
    /// `VisionTransformer::features`). Returns `(N, output_tokens, lm_width)`.
    pub fn forward(&self, patches: &Tensor) -> Result<Tensor> {
        match self {
            Projector::Mlp { fc1, fc2 } => fc2.forward(&ops::gelu(&fc1.forward(patches)?)?),
            Projector::Resampler(r) => r.forward(patches),
        }
    }
}

impl Resampler {
    fn forward(&self, patches: &Tensor) -> Result<Tensor> {
        let n = patches.dim(0)?;
        let (q_len, width) = self.queries.dims2()?;
        let kv = self.ln_kv.forward(&self.kv_proj.forward(patches)?)?;
        let q = self
            .ln_q
            .forward(&ops::cast_like(&self.queries, patches)?)?
            .unsqueeze(0)?
            .broadcast_as((n, q_len, width))?
            .contiguous()?;
        let attended = ops::multi_head_attention(
            &self.q_proj.forward(&q)?,
            &self.k_proj.forward(&kv)?,
            &self.v_proj.forward(&kv)?,
            self.heads,
            None,
        )?;
        let y = self.ln_post.forward(&self.out_proj.forward(&attended)?)?;
        self.proj.forward(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn features(n: usize, tokens: usize, width: usize) -> Result<Tensor> {
        Tensor::randn(0f32, 1.0, (n, tokens, width), &Device::Cpu)
    }

    #[test]
    fn shapes_of_both_projectors() -> Result<()> {
        let x = features(2, 16, 24)?;
        let p = ParamStore::new(0, &Device::Cpu);
        let mlp = Projector::new(&p.pp("mlp"), &ProjectorConfig::Mlp, 24, 32)?;
        assert_eq!(mlp.output_tokens(16), 16);
        assert_eq!(mlp.forward(&x)?.dims(), &[2, 16, 32]);
        let cfg = ProjectorConfig::Resampler {
            queries: 5,
            heads: 4,
        };
        let r = Projector::new(&p.pp("resampler"), &cfg, 24, 32)?;
        assert_eq!(r.output_tokens(16), 5);
        assert_eq!(r.forward(&x)?.dims(), &[2, 5, 32]);
        Ok(())
    }

    #[test]
    fn every_resampler_parameter_gets_a_gradient() -> Result<()> {
        let p = ParamStore::new(1, &Device::Cpu);
        let cfg = ProjectorConfig::Resampler {
            queries: 3,
            heads: 2,
        };
        let r = Projector::new(&p, &cfg, 8, 16)?;
        let loss = r.forward(&features(2, 5, 8)?)?.sqr()?.sum_all()?;
        let grads = loss.backward()?;
        for (name, var) in p.vars() {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} got no gradient"));
            let norm = g.sqr()?.sum_all()?.to_scalar::<f32>()?;
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
        Ok(())
    }
}
