//! Text generation from a Qwen2 decoder: greedy or sampled (temperature, top-p), seeded,
//! stopping at stop tokens (EOS, `<|im_end|>`), each token handed to a callback as it comes.
//!
//! Prompts are token ids or input embeddings (image embeddings spliced in), one row each, of any
//! lengths: rows are left-padded to a common length so that new tokens land in the same column.
//!
//! Two paths give the same tokens: `generate` keeps a KV cache and feeds one token per step;
//! `generate_uncached` recomputes the whole sequence every step. The second is the reference the
//! first is tested against, and the baseline of `benches/generate.rs`.

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::models::qwen2::Qwen2;
use crate::rng::Rng;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy (argmax, lowest id on ties).
    pub temperature: f64,
    /// Nucleus sampling: draw among the most likely tokens whose probabilities add up to at
    /// least `top_p` (1 keeps all).
    pub top_p: f64,
    pub seed: u64,
    /// A row ends at any of these; the stop token is not part of its output.
    pub stop_tokens: Vec<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: vec![],
        }
    }
}

/// What to continue: one entry per row.
#[derive(Clone, Copy, Debug)]
pub enum Prompt<'a> {
    Ids(&'a [Vec<u32>]),
    /// `(T_i, C)` input embeddings per row.
    Embeds(&'a [Tensor]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    /// New tokens per row, without the stop token.
    pub tokens: Vec<Vec<u32>>,
    /// Whether each row ended at a stop token (rather than at `max_new_tokens`).
    pub stopped: Vec<bool>,
}

/// Generates with a KV cache. `on_token(row, token)` is called for every kept token, in order.
pub fn generate(
    model: &Qwen2,
    prompt: Prompt,
    cfg: &SamplingConfig,
    on_token: impl FnMut(usize, u32),
) -> Result<Generated> {
    let (x, pad) = left_padded(model, prompt)?;
    let mut cache = model.new_cache(&pad);
    let first = model.forward_step(&x, &mut cache)?;
    decode_loop(model, cfg, first, on_token, |emb| {
        model.forward_step(emb, &mut cache)
    })
}

/// Generates by recomputing the whole sequence at each step: slow, and the reference for
/// `generate` (same tokens for the same inputs and seed).
pub fn generate_uncached(
    model: &Qwen2,
    prompt: Prompt,
    cfg: &SamplingConfig,
    on_token: impl FnMut(usize, u32),
) -> Result<Generated> {
    let (mut seq, pad) = left_padded(model, prompt)?;
    let last_logits = |seq: &Tensor| -> Result<Tensor> {
        let h = model.hidden_states(seq, Some(&pad))?;
        let t = h.dim(1)?;
        model.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    };
    let first = last_logits(&seq)?;
    decode_loop(model, cfg, first, on_token, |emb| {
        seq = Tensor::cat(&[&seq, emb], 1)?;
        last_logits(&seq)
    })
}

/// Samples from `logits` `(N, vocab)`, then asks `next(embeddings of the new tokens (N, 1, C))`
/// for the following logits, until every row stopped or `max_new_tokens`.
fn decode_loop(
    model: &Qwen2,
    cfg: &SamplingConfig,
    mut logits: Tensor,
    mut on_token: impl FnMut(usize, u32),
    mut next: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Generated> {
    let mut sampler = Sampler::new(cfg)?;
    let n = logits.dim(0)?;
    let mut out = Generated {
        tokens: vec![vec![]; n],
        stopped: vec![false; n],
    };
    for step in 0..cfg.max_new_tokens {
        let rows = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let mut fed = vec![0u32; n];
        for (r, row) in rows.iter().enumerate() {
            if out.stopped[r] {
                continue; // a finished row is fed token 0; nothing reads what it computes
            }
            let token = sampler.pick(row);
            fed[r] = token;
            if cfg.stop_tokens.contains(&token) {
                out.stopped[r] = true;
            } else {
                out.tokens[r].push(token);
                on_token(r, token);
            }
        }
        if step + 1 == cfg.max_new_tokens || out.stopped.iter().all(|&s| s) {
            break;
        }
        let ids = Tensor::from_vec(fed, (n, 1), logits.device())?;
        logits = next(&model.embed(&ids)?)?;
    }
    Ok(out)
}

/// The rows of `prompt` as one `(N, T, C)` tensor, left-padded with zeros, and the pad counts.
fn left_padded(model: &Qwen2, prompt: Prompt) -> Result<(Tensor, Vec<usize>)> {
    let lens: Vec<usize> = match prompt {
        Prompt::Ids(rows) => rows.iter().map(Vec::len).collect(),
        Prompt::Embeds(rows) => rows.iter().map(|r| r.dim(0)).collect::<Result<_>>()?,
    };
    let t = lens.iter().copied().max().unwrap_or(0);
    if lens.is_empty() || lens.contains(&0) {
        candle_core::bail!("generate: every prompt needs at least one position (lengths {lens:?})");
    }
    let pad: Vec<usize> = lens.iter().map(|l| t - l).collect();
    let x = match prompt {
        Prompt::Ids(rows) => {
            let ids: Vec<u32> = rows
                .iter()
                .zip(&pad)
                .flat_map(|(r, &p)| std::iter::repeat_n(0, p).chain(r.iter().copied()))
                .collect();
            model.embed(&Tensor::from_vec(ids, (rows.len(), t), model.device())?)?
        }
        Prompt::Embeds(rows) => {
            let c = model.config().hidden_size;
            let padded = rows
                .iter()
                .zip(&pad)
                .map(|(r, &p)| {
                    let r = r.to_dtype(candle_core::DType::F32)?;
                    if r.rank() != 2 || r.dim(1)? != c {
                        candle_core::bail!(
                            "generate: prompt embeddings {:?}, want (T, {c})",
                            r.dims()
                        );
                    }
                    match p {
                        0 => Ok(r),
                        p => Tensor::cat(&[&Tensor::zeros((p, c), r.dtype(), r.device())?, &r], 0),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Tensor::stack(&padded, 0)?
        }
    };
    Ok((x, pad))
}

/// Picks tokens from logits per `SamplingConfig`, drawing from one seeded stream.
struct Sampler {
    rng: Rng,
    temperature: f64,
    top_p: f64,
}

impl Sampler {
    fn new(cfg: &SamplingConfig) -> Result<Self> {
        if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
            candle_core::bail!(
                "generate: temperature {} must be 0 (greedy) or positive",
                cfg.temperature
            );
        }
        if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
            candle_core::bail!("generate: top_p {} must be in (0, 1]", cfg.top_p);
        }
        Ok(Self {
            rng: Rng::new(cfg.seed),
            temperature: cfg.temperature,
            top_p: cfg.top_p,
        })
    }

    fn pick(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits.iter().position(|&l| l == best).unwrap_or(0) as u32
        };
        if self.temperature == 0.0 {
            return argmax();
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l as f64 - max) / self.temperature).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        if self.top_p < 1.0 {
            // Most likely first (ties by id), then the shortest prefix reaching top_p.
            probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            let mut acc = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    acc += p.1;
                    acc >= self.top_p * total
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
        }
        let kept: f64 = probs.iter().map(|p| p.1).sum();
        if !(kept > 0.0 && kept.is_finite()) {
            return argmax(); // NaN or infinite logits: nothing sensible to draw from
        }
        let mut u = self.rng.f64() * kept;
        for &(id, p) in &probs {
            if u < p {
                return id;
            }
            u -= p;
        }
        probs.last().map_or(0, |p| p.0)
    }
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod tests;
