//! LoRA (Hu et al., 2021): a frozen weight `W` plus a trained low-rank update,
//! `y = W x + (alpha / rank) · B (A x)`, with `A` `(rank, in)` random and `B` `(out, rank)` zero, so
//! training starts from the unchanged model. Merging folds the update into `W` for export.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::param_store::ParamStore;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Which of the language model's linear layers get adapters, by their last name
    /// (`q_proj`, `k_proj`, `v_proj`, `o_proj`, `gate_proj`, `up_proj`, `down_proj`).
    pub targets: Vec<String>,
}

impl LoraConfig {
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }
}

/// Whether a parameter is a LoRA adapter, by name.
pub fn is_adapter(name: &str) -> bool {
    name.ends_with(".lora_A") || name.ends_with(".lora_B")
}

#[derive(Clone, Debug)]
pub struct Lora {
    a: Tensor,
    b: Tensor,
    scale: f64,
}

impl Lora {
    /// Adapters for a `(d_out, d_in)` weight, named `lora_A` and `lora_B` under `p`.
    pub fn new(p: &ParamStore, d_in: usize, d_out: usize, cfg: &LoraConfig) -> Result<Self> {
        if cfg.rank == 0 {
            candle_core::bail!("lora: rank must be at least 1");
        }
        Ok(Self {
            a: p.normal("lora_A", (cfg.rank, d_in), (d_in as f64).powf(-0.5))?,
            b: p.zeros("lora_B", (d_out, cfg.rank))?,
            scale: cfg.scale(),
        })
    }

    /// `scale · B A x` for `x` `(…, d_in)`.
    pub fn delta(&self, x: &Tensor) -> Result<Tensor> {
        let (a, b) = (ops::cast_like(&self.a, x)?, ops::cast_like(&self.b, x)?);
        let down = x.broadcast_matmul(&a.t()?)?;
        down.broadcast_matmul(&b.t()?)? * self.scale
    }

    /// `W + scale · B A`.
    pub fn merge(&self, weight: &Tensor) -> Result<Tensor> {
        weight + (self.b.matmul(&self.a)? * self.scale)?
    }
}
