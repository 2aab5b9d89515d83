//! The pre-LN transformer shared by both CLIP towers.
//!
//! `x = x + attn(ln_1(x)); x = x + mlp(ln_2(x))`, as in GPT-2 and CLIP. The towers differ only
//! in the mask they pass: none for the ViT, causal for the text encoder.

use candle_core::{Result, Tensor};

use crate::ops;
use crate::ops::layers::{Activation, LN_EPS, LayerNorm, Linear};
use crate::param_store::ParamStore;

/// What a block is made of besides its width and heads. This project's towers use
/// [`BlockOptions::standard`]; a pretrained Hugging Face ViT brings its own.
#[derive(Clone, Copy, Debug)]
pub struct BlockOptions {
    /// The MLP's hidden width.
    pub mlp_width: usize,
    pub activation: Activation,
    /// Every LayerNorm's epsilon.
    pub ln_eps: f64,
}

impl BlockOptions {
    /// GPT-2's and CLIP's: a 4×-wide MLP, tanh-GELU, LayerNorm epsilon 1e-5.
    pub fn standard(width: usize) -> Self {
        Self {
            mlp_width: 4 * width,
            activation: Activation::GeluTanh,
            ln_eps: LN_EPS,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SelfAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
}

impl SelfAttention {
    /// `layers` scales the output projection's init by 1/√(2·layers) (GPT-2, CLIP), so the
    /// residual stream's variance does not grow with depth.
    pub fn new(p: &ParamStore, width: usize, heads: usize, layers: usize) -> Result<Self> {
        if heads == 0 || !width.is_multiple_of(heads) {
            candle_core::bail!("attention: width {width} is not divisible by {heads} heads");
        }
        let out_std = (width as f64).powf(-0.5) / (2.0 * layers as f64).sqrt();
        Ok(Self {
            q_proj: Linear::new(&p.pp("q_proj"), width, width, true)?,
            k_proj: Linear::new(&p.pp("k_proj"), width, width, true)?,
            v_proj: Linear::new(&p.pp("v_proj"), width, width, true)?,
            out_proj: Linear::with_std(&p.pp("out_proj"), width, width, true, out_std)?,
            heads,
        })
    }

    /// `x`: `(N, T, C)`; `mask`: additive, broadcastable to `(N, H, T, T)`.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let q = self.q_proj.forward(x)?;
        let k = self.k_proj.forward(x)?;
        let v = self.v_proj.forward(x)?;
        let y = ops::multi_head_attention(&q, &k, &v, self.heads, mask)?;
        self.out_proj.forward(&y)
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    pub fn new(
        p: &ParamStore,
        width: usize,
        hidden: usize,
        layers: usize,
        activation: Activation,
    ) -> Result<Self> {
        let out_std = (width as f64).powf(-0.5) / (2.0 * layers as f64).sqrt();
        Ok(Self {
            fc1: Linear::new(&p.pp("fc1"), width, hidden, true)?,
            fc2: Linear::with_std(&p.pp("fc2"), hidden, width, true, out_std)?,
            activation,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2
            .forward(&self.activation.forward(&self.fc1.forward(x)?)?)
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    ln_1: LayerNorm,
    attn: SelfAttention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    pub fn new(
        p: &ParamStore,
        width: usize,
        heads: usize,
        layers: usize,
        opts: &BlockOptions,
    ) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::with_eps(&p.pp("ln_1"), width, opts.ln_eps)?,
            attn: SelfAttention::new(&p.pp("attn"), width, heads, layers)?,
            ln_2: LayerNorm::with_eps(&p.pp("ln_2"), width, opts.ln_eps)?,
            mlp: Mlp::new(&p.pp("mlp"), width, opts.mlp_width, layers, opts.activation)?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, mask)?)?;
        &x + self.mlp.forward(&self.ln_2.forward(&x)?)?
    }
}

/// A stack of `layers` blocks, named `blocks.0`, `blocks.1`, ….
#[derive(Clone, Debug)]
pub struct Transformer {
    blocks: Vec<Block>,
}

impl Transformer {
    pub fn new(
        p: &ParamStore,
        width: usize,
        layers: usize,
        heads: usize,
        opts: &BlockOptions,
    ) -> Result<Self> {
        let blocks = (0..layers)
            .map(|i| Block::new(&p.pp("blocks").pp(i), width, heads, layers, opts))
            .collect::<Result<_>>()?;
        Ok(Self { blocks })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        self.forward_first(x, mask, self.blocks.len())
    }

    /// The output of the first `n` blocks only (a ViT's intermediate features).
    pub fn forward_first(&self, x: &Tensor, mask: Option<&Tensor>, n: usize) -> Result<Tensor> {
        self.blocks
            .iter()
            .take(n)
            .try_fold(x.clone(), |x, b| b.forward(&x, mask))
    }
}
