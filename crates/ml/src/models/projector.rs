//! The projector: how image features become embeddings in the language model's space.
//!
//! - `mlp` (LLaVA-1.5): `Linear → GELU → Linear` on every patch feature; one LM token per patch.
//! - `resampler` (Qwen-VL's adapter, the miniVLM seed's): `queries` learned vectors
//!   cross-attend to the patch features (keys and values projected to the LM width, both sides
//!   layer-normed), a fixed number of LM tokens whatever the image size. With `positions`, the
//!   keys and values carry each patch's place on the grid (2-D sine–cosine embeddings). Without
//!   them attention sees the patches as a set, and where a shape is must survive in the features
//!   (it barely does: see the README's "Where things are"). In the keys (as Qwen-VL has them) a
//!   query can look at a place; in the values what it reads says where it looked — the
//!   attention-weighted mean of the places, finer than one patch.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::ops::layers::{INIT_STD, LayerNorm, Linear};
use crate::param_store::ParamStore;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProjectorConfig {
    Mlp,
    Resampler {
        queries: usize,
        heads: usize,
        /// Add the patches' 2-D positions to the keys and values (false in models made before
        /// they existed).
        #[serde(default)]
        positions: bool,
    },
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
    positions: bool,
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
            ProjectorConfig::Resampler {
                queries,
                heads,
                positions,
            } => {
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
                    positions,
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
        let kv = if self.positions {
            let grid = grid_positions(kv.dim(1)?, width, kv.device())?;
            kv.broadcast_add(&ops::cast_like(&grid, &kv)?)?
        } else {
            kv
        };
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

/// 2-D sine–cosine embeddings of a square grid of `patches` (row by row), `width` wide: the first
/// half encodes the row, the second the column, each as sines and cosines of geometric
/// frequencies (MAE's and Qwen-VL's `get_2d_sincos_pos_embed`).
pub fn grid_positions(
    patches: usize,
    width: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let side = (patches as f64).sqrt().round() as usize;
    if side * side != patches || !width.is_multiple_of(4) {
        candle_core::bail!(
            "resampler positions: {patches} patches are not a square grid, or the width {width} is not a multiple of 4"
        );
    }
    let quarter = width / 4;
    let mut out = Vec::with_capacity(patches * width);
    for row in 0..side {
        for col in 0..side {
            for coordinate in [row, col] {
                let angles = (0..quarter).map(|i| {
                    let omega = 1.0 / 10000f64.powf(i as f64 / quarter as f64);
                    coordinate as f64 * omega
                });
                let angles: Vec<f64> = angles.collect();
                out.extend(angles.iter().map(|a| a.sin() as f32));
                out.extend(angles.iter().map(|a| a.cos() as f32));
            }
        }
    }
    Tensor::from_vec(out, (1, patches, width), device)
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
            positions: true,
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
            positions: true,
        };
        let r = Projector::new(&p, &cfg, 8, 16)?;
        let loss = r.forward(&features(2, 4, 8)?)?.sqr()?.sum_all()?;
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

    #[test]
    fn with_positions_the_resampler_tells_a_moved_patch_apart() -> Result<()> {
        // The same features in another order: a set to the plain resampler, not to one with
        // positions.
        let x = features(1, 16, 24)?;
        let order: Vec<u32> = (0..16).rev().collect();
        let moved = x.index_select(&Tensor::new(order.as_slice(), &Device::Cpu)?, 1)?;
        for positions in [false, true] {
            let p = ParamStore::new(2, &Device::Cpu);
            let cfg = ProjectorConfig::Resampler {
                queries: 4,
                heads: 4,
                positions,
            };
            let r = Projector::new(&p, &cfg, 24, 32)?;
            let diff = (r.forward(&x)? - r.forward(&moved)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert_eq!(diff > 1e-3, positions, "positions {positions}: {diff}");
        }
        // An old model's config, without the field, loads as one without positions.
        let old: ProjectorConfig =
            serde_json::from_str(r#"{"kind": "resampler", "queries": 4, "heads": 2}"#).unwrap();
        assert_eq!(
            old,
            ProjectorConfig::Resampler {
                queries: 4,
                heads: 2,
                positions: false
            }
        );
        Ok(())
    }

    #[test]
    fn grid_positions_differ_by_row_and_column() -> Result<()> {
        let g = grid_positions(9, 8, &Device::Cpu)?
            .squeeze(0)?
            .to_vec2::<f32>()?;
        assert_eq!(g.len(), 9);
        // Patch 0 is (0, 0): sines 0, cosines 1.
        assert_eq!(g[0], vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
        for a in 0..9 {
            for b in 0..a {
                assert_ne!(g[a], g[b], "patches {a} and {b}");
            }
        }
        assert!(grid_positions(8, 8, &Device::Cpu).is_err());
        Ok(())
    }
}
