//! Parameterised layers over `ops`: what a model file is assembled from.
//!
//! Names follow PyTorch/Hugging Face (`weight`, `bias`) so weights can be compared or ported.
//! Init follows CLIP: normal weights with std 1/√fan_in, zero biases, unit norm gains (GPT-2's
//! fixed 0.02 is 1/√2500, made for 768-wide models: at this project's 128-wide default it starts
//! every layer 4× too small, and CLIP training took more than twice the steps to reach 0.90).

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::lora::{Lora, LoraConfig};
use crate::ops;
use crate::param_store::ParamStore;

/// Embeddings, class tokens and learned queries start at this std (as in CLIP).
pub const INIT_STD: f64 = 0.02;
pub const LN_EPS: f64 = 1e-5;

#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    /// A low-rank update trained beside the (then frozen) weight.
    pub lora: Option<Lora>,
}

impl Linear {
    pub fn new(p: &ParamStore, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Self::with_std(p, d_in, d_out, bias, (d_in as f64).powf(-0.5))
    }

    pub fn with_std(
        p: &ParamStore,
        d_in: usize,
        d_out: usize,
        bias: bool,
        std: f64,
    ) -> Result<Self> {
        Ok(Self {
            weight: p.normal("weight", (d_out, d_in), std)?,
            bias: if bias {
                Some(p.zeros("bias", d_out)?)
            } else {
                None
            },
            lora: None,
        })
    }

    /// Give this layer LoRA adapters, as parameters `lora_A` and `lora_B` under `p`.
    pub fn attach_lora(&mut self, p: &ParamStore, cfg: &LoraConfig) -> Result<()> {
        let (d_out, d_in) = self.weight.dims2()?;
        self.lora = Some(Lora::new(p, d_in, d_out, cfg)?);
        Ok(())
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = ops::linear(x, &self.weight, self.bias.as_ref())?;
        match &self.lora {
            Some(lora) => y + lora.delta(x)?,
            None => Ok(y),
        }
    }
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(p: &ParamStore, dim: usize) -> Result<Self> {
        Self::with_eps(p, dim, LN_EPS)
    }

    /// A LayerNorm with another epsilon (SigLIP checkpoints use 1e-6).
    pub fn with_eps(p: &ParamStore, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.ones("weight", dim)?,
            bias: p.zeros("bias", dim)?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// A transformer MLP's nonlinearity. This project's models use `gelu_tanh`; the others are
/// there so that pretrained checkpoints run with the activation they were trained with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU, tanh approximation (Hugging Face `gelu_pytorch_tanh`, `gelu_new`), fused on CPU.
    #[default]
    GeluTanh,
    /// GELU with the exact erf (Hugging Face `gelu`).
    Gelu,
    /// `x·σ(1.702·x)` (OpenAI CLIP's `quick_gelu`), fused on CPU.
    QuickGelu,
}

impl Activation {
    pub fn forward(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::GeluTanh => ops::gelu(x),
            Activation::Gelu => x.gelu_erf(),
            Activation::QuickGelu => ops::quick_gelu(x),
        }
    }
}
