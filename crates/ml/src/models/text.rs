//! Causal text transformer (the CLIP text tower).
//!
//! tokens (N,T) → token + learned position embeddings → pre-LN blocks under a causal mask →
//! final LayerNorm → the vector at position `length-1` (the last real token, normally EOS).
//!
//! No padding mask is needed: under the causal mask, position `length-1` only ever sees
//! positions `0..length`, so whatever fills the padding cannot reach the pooled vector.

use candle_core::{DType, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::transformer::{BlockOptions, Transformer};
use crate::ops;
use crate::ops::layers::{INIT_STD, LayerNorm};
use crate::param_store::ParamStore;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub max_len: usize,
    pub width: usize,
    pub layers: usize,
    pub heads: usize,
}

#[derive(Clone, Debug)]
pub struct TextTransformer {
    token_embedding: Tensor,
    position_embedding: Tensor,
    transformer: Transformer,
    ln_final: LayerNorm,
    cfg: TextConfig,
}

impl TextTransformer {
    pub fn new(p: &ParamStore, cfg: &TextConfig) -> Result<Self> {
        Ok(Self {
            token_embedding: p.normal("token_embedding", (cfg.vocab_size, cfg.width), INIT_STD)?,
            position_embedding: p.normal("position_embedding", (cfg.max_len, cfg.width), 0.01)?,
            transformer: Transformer::new(
                &p.pp("transformer"),
                cfg.width,
                cfg.layers,
                cfg.heads,
                &BlockOptions::standard(cfg.width),
            )?,
            ln_final: LayerNorm::new(&p.pp("ln_final"), cfg.width)?,
            cfg: cfg.clone(),
        })
    }

    /// `tokens`: `(N, T)` u32 with `T ≤ max_len`; `lengths`: `(N)` u32, each in `1..=T`.
    /// Returns `(N, width)`.
    pub fn forward(&self, tokens: &Tensor, lengths: &Tensor) -> Result<Tensor> {
        let (n, t) = tokens.dims2()?;
        if t > self.cfg.max_len {
            candle_core::bail!(
                "text: {t} tokens, the model takes at most {}",
                self.cfg.max_len
            );
        }
        let lens = lengths.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if lens.len() != n || lens.iter().any(|&l| l == 0 || l as usize > t) {
            candle_core::bail!("text: lengths {lens:?} must be {n} values in 1..={t}");
        }
        let c = self.cfg.width;
        let x = self
            .token_embedding
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((n, t, c))?;
        let x = ops::to_compute(&x)?;
        let x = ops::bias_add(&x, &self.position_embedding.narrow(0, 0, t)?)?;
        let mask = ops::causal_mask(t, x.device())?;
        let x = self.transformer.forward(&x, Some(&mask))?;
        // Row n·T + length−1 of the flattened (N·T, C) output.
        let last: Vec<u32> = (0..n).map(|i| (i * t) as u32 + lens[i] - 1).collect();
        let last = Tensor::from_vec(last, n, x.device())?;
        let pooled = x.reshape((n * t, c))?.index_select(&last, 0)?;
        self.ln_final.forward(&pooled)
    }
}
