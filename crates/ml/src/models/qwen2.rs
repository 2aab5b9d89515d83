//! Qwen2: the decoder-only language model of Qwen2 / Qwen2.5 (Hugging Face `Qwen2ForCausalLM`).
//!
//! tokens (N,T) → embeddings (N,T,C) → `num_hidden_layers` pre-norm blocks:
//!   x = x + attention(rms_norm(x))   q, k, v projections with biases; rotary positions on q and
//!                                    k; causal grouped-query attention; output projection
//!   x = x + mlp(rms_norm(x))         down(silu(gate(x)) · up(x)), no biases
//! → final RMSNorm → logits by `lm_head`, or by the embedding matrix when embeddings are tied.
//!
//! Parameter names are Hugging Face's (`model.layers.0.self_attn.q_proj.weight`, …), so its
//! safetensors load by name and ours load in `transformers` (`qwen2_load.rs`). One forward serves
//! training (whole sequences, differentiable: image embeddings can be spliced in with
//! `forward_embeds`) and generation (`forward_step` with a `KvCache`).
//!
//! Padding. Right padding needs nothing: under the causal mask a real token never sees the pads
//! after it, and their logits are ignored by the loss. Left padding, which batched generation
//! uses to line prompts of different lengths up at their ends, is given as a count per row: the
//! pads are masked out as keys, and positions count from each row's first real token.
//!
//! A little over 500 lines, kept whole so that the decoder reads top to bottom; its config, its
//! Hugging Face loader and its loss have files of their own beside it.

use candle_core::{DType, Device, Result, Tensor};

use super::lora::LoraConfig;
use crate::ops::decoder::{Rotary, rms_norm, swiglu};
use crate::ops::layers::{INIT_STD, Linear};
use crate::ops::{self, MASKED, grouped_attention};
use crate::param_store::ParamStore;

pub use super::qwen2_config::Qwen2Config;

#[derive(Clone, Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(p: &ParamStore, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: p.ones("weight", dim)?,
            eps,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        rms_norm(x, &self.weight, self.eps)
    }
}

/// Init of a projection back into the residual stream: 1/√fan_in like every linear layer
/// (`layers::Linear`), shrunk by 1/√(2·layers) so the stream's variance does not grow with depth.
fn residual_std(fan_in: usize, cfg: &Qwen2Config) -> f64 {
    (fan_in as f64).powf(-0.5) / (2.0 * cfg.num_hidden_layers as f64).sqrt()
}

#[derive(Clone, Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    heads: usize,
    kv_heads: usize,
}

impl Attention {
    fn new(p: &ParamStore, cfg: &Qwen2Config) -> Result<Self> {
        let (c, kv) = (cfg.hidden_size, cfg.num_key_value_heads * cfg.head_dim());
        let out_std = residual_std(c, cfg);
        Ok(Self {
            q_proj: Linear::new(&p.pp("q_proj"), c, c, true)?,
            k_proj: Linear::new(&p.pp("k_proj"), c, kv, true)?,
            v_proj: Linear::new(&p.pp("v_proj"), c, kv, true)?,
            o_proj: Linear::with_std(&p.pp("o_proj"), c, c, false, out_std)?,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
        })
    }

    /// `x`: `(N, T, C)`. With `cache`, this layer's earlier keys and values are read from it and
    /// the new ones appended.
    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: Option<&Tensor>,
        cache: Option<&mut (Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Tensor> {
        let q = rotary.apply(&self.q_proj.forward(x)?)?;
        let mut k = rotary.apply(&self.k_proj.forward(x)?)?;
        let mut v = self.v_proj.forward(x)?;
        if let Some((ck, cv)) = cache {
            if let (Some(pk), Some(pv)) = (ck.as_ref(), cv.as_ref()) {
                k = Tensor::cat(&[pk, &k], 1)?;
                v = Tensor::cat(&[pv, &v], 1)?;
            }
            (*ck, *cv) = (Some(k.clone()), Some(v.clone()));
        }
        let y = grouped_attention(&q, &k, &v, self.heads, self.kv_heads, mask)?;
        self.o_proj.forward(&y)
    }
}

#[derive(Clone, Debug)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(p: &ParamStore, cfg: &Qwen2Config) -> Result<Self> {
        let (c, h) = (cfg.hidden_size, cfg.intermediate_size);
        let out_std = residual_std(h, cfg);
        Ok(Self {
            gate_proj: Linear::new(&p.pp("gate_proj"), c, h, false)?,
            up_proj: Linear::new(&p.pp("up_proj"), c, h, false)?,
            down_proj: Linear::with_std(&p.pp("down_proj"), h, c, false, out_std)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = swiglu(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&h)
    }
}

/// The decoder layer's linear layers, by their last name (what LoRA `targets` name).
const LINEARS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// A linear layer's name within its decoder layer: `q_proj` → `self_attn.q_proj`.
fn qualified(linear: &str) -> String {
    let block = if ["gate_proj", "up_proj", "down_proj"].contains(&linear) {
        "mlp"
    } else {
        "self_attn"
    };
    format!("{block}.{linear}")
}

#[derive(Clone, Debug)]
struct DecoderLayer {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    /// One of [`LINEARS`].
    fn linear(&self, name: &str) -> &Linear {
        let (a, m) = (&self.self_attn, &self.mlp);
        match name {
            "q_proj" => &a.q_proj,
            "k_proj" => &a.k_proj,
            "v_proj" => &a.v_proj,
            "o_proj" => &a.o_proj,
            "gate_proj" => &m.gate_proj,
            "up_proj" => &m.up_proj,
            _ => &m.down_proj,
        }
    }

    fn linear_mut(&mut self, name: &str) -> &mut Linear {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        match name {
            "q_proj" => &mut a.q_proj,
            "k_proj" => &mut a.k_proj,
            "v_proj" => &mut a.v_proj,
            "o_proj" => &mut a.o_proj,
            "gate_proj" => &mut m.gate_proj,
            "up_proj" => &mut m.up_proj,
            _ => &mut m.down_proj,
        }
    }

    fn new(p: &ParamStore, cfg: &Qwen2Config) -> Result<Self> {
        let (c, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_layernorm: RmsNorm::new(&p.pp("input_layernorm"), c, eps)?,
            self_attn: Attention::new(&p.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::new(&p.pp("post_attention_layernorm"), c, eps)?,
            mlp: Mlp::new(&p.pp("mlp"), cfg)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rotary: &Rotary,
        mask: Option<&Tensor>,
        cache: Option<&mut (Option<Tensor>, Option<Tensor>)>,
    ) -> Result<Tensor> {
        let h = self.input_layernorm.forward(x)?;
        let x = (x + self.self_attn.forward(&h, rotary, mask, cache)?)?;
        let h = self.post_attention_layernorm.forward(&x)?;
        &x + self.mlp.forward(&h)?
    }
}

/// Keys and values of the positions seen so far, per layer, for incremental decoding.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// Per layer: `(N, S, KV·d)` keys (already rotated) and values.
    layers: Vec<(Option<Tensor>, Option<Tensor>)>,
    left_pad: Vec<usize>,
    len: usize,
}

impl KvCache {
    /// Columns cached so far (pads included).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows in the batch.
    pub fn batch(&self) -> usize {
        self.left_pad.len()
    }

    pub fn left_pad(&self) -> &[usize] {
        &self.left_pad
    }
}

#[derive(Clone, Debug)]
pub struct Qwen2 {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    lm_head: Option<Linear>,
    cfg: Qwen2Config,
}

impl Qwen2 {
    /// Builds the model from `p`: parameters already there (a loaded checkpoint) are used,
    /// missing ones are created at random (normal weights at 1/√fan_in, 1/√(2·layers) smaller on
    /// the residual projections, embeddings at 0.02, zero biases, unit norms).
    pub fn new(p: &ParamStore, cfg: &Qwen2Config) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::Msg)?;
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let m = p.pp("model");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&m.pp("layers").pp(i), cfg))
            .collect::<Result<_>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(&p.pp("lm_head"), c, v, false)?)
        };
        Ok(Self {
            embed_tokens: m.normal("embed_tokens.weight", (v, c), INIT_STD)?,
            layers,
            norm: RmsNorm::new(&m.pp("norm"), c, cfg.rms_norm_eps)?,
            lm_head,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &Qwen2Config {
        &self.cfg
    }

    /// Add LoRA adapters to every decoder layer's linear layers named in `cfg.targets`
    /// (parameters `model.layers.N.<…>.lora_A` / `lora_B` in `p`).
    pub fn attach_lora(&mut self, p: &ParamStore, cfg: &LoraConfig) -> Result<()> {
        if let Some(bad) = cfg.targets.iter().find(|t| !LINEARS.contains(&t.as_str())) {
            candle_core::bail!(
                "lora: unknown target `{bad}`: expected some of {}",
                LINEARS.join(", ")
            );
        }
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for target in &cfg.targets {
                let name = format!("model.layers.{i}.{}", qualified(target));
                layer.linear_mut(target).attach_lora(&p.pp(&name), cfg)?;
            }
        }
        Ok(())
    }

    /// For each layer with LoRA adapters, its weight with the update folded in, under the
    /// weight's Hugging Face name: what replaces the base weights on export.
    pub fn merged_lora_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for target in LINEARS {
                let linear = layer.linear(target);
                if let Some(lora) = &linear.lora {
                    let name = format!("model.layers.{i}.{}.weight", qualified(target));
                    out.push((name, lora.merge(&linear.weight)?));
                }
            }
        }
        Ok(out)
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Every parameter with its Hugging Face name, in the order of `Qwen2Config::tensor_shapes`
    /// (the tensors share storage with the trainable variables: they show current values).
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![
            (
                "model.embed_tokens.weight".to_string(),
                self.embed_tokens.clone(),
            ),
            ("model.norm.weight".to_string(), self.norm.weight.clone()),
        ];
        if let Some(head) = &self.lm_head {
            out.push(("lm_head.weight".into(), head.weight.clone()));
        }
        for (i, l) in self.layers.iter().enumerate() {
            let (a, m) = (&l.self_attn, &l.mlp);
            let norms = [
                ("input_layernorm", &l.input_layernorm),
                ("post_attention_layernorm", &l.post_attention_layernorm),
            ];
            let linears = [
                ("self_attn.q_proj", &a.q_proj),
                ("self_attn.k_proj", &a.k_proj),
                ("self_attn.v_proj", &a.v_proj),
                ("self_attn.o_proj", &a.o_proj),
                ("mlp.gate_proj", &m.gate_proj),
                ("mlp.up_proj", &m.up_proj),
                ("mlp.down_proj", &m.down_proj),
            ];
            let p = format!("model.layers.{i}");
            for (name, norm) in norms {
                out.push((format!("{p}.{name}.weight"), norm.weight.clone()));
            }
            for (name, lin) in linears {
                out.push((format!("{p}.{name}.weight"), lin.weight.clone()));
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{name}.bias"), b.clone()));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Token ids `(N, T)` (u32 or i64) → embeddings `(N, T, C)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?;
        let v = self.cfg.vocab_size as u32;
        if let Some(bad) = flat.to_vec1::<u32>()?.into_iter().find(|&i| i >= v) {
            candle_core::bail!("qwen2: token id {bad} is outside the vocabulary of {v}");
        }
        let embeds = self
            .embed_tokens
            .index_select(&flat.to_device(self.embed_tokens.device())?, 0)?
            .reshape((n, t, self.cfg.hidden_size))?;
        ops::to_compute(&embeds)
    }

    /// Logits `(N, T, vocab)` for token ids `(N, T)`; `left_pad` as in `forward_embeds`.
    pub fn forward_ids(&self, ids: &Tensor, left_pad: Option<&[usize]>) -> Result<Tensor> {
        self.forward_embeds(&self.embed(ids)?, left_pad)
    }

    /// Logits `(N, T, vocab)` for input embeddings `(N, T, C)` (token embeddings from `embed`,
    /// with image embeddings spliced in where wanted). `left_pad`: pads before each row's first
    /// real position (none: every row starts at column 0; right padding needs no mention).
    pub fn forward_embeds(&self, embeds: &Tensor, left_pad: Option<&[usize]>) -> Result<Tensor> {
        self.logits(&self.hidden_states(embeds, left_pad)?)
    }

    /// The last layer's output after the final norm, `(N, T, C)`: `forward_embeds` without the
    /// vocabulary projection.
    pub fn hidden_states(&self, embeds: &Tensor, left_pad: Option<&[usize]>) -> Result<Tensor> {
        let n = embeds.dim(0)?;
        let none = vec![0; n];
        self.run(embeds, left_pad.unwrap_or(&none), 0, None)
    }

    /// Hidden states `(.., C)` → logits `(.., vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => ops::linear(hidden, &self.embed_tokens, None),
        }
    }

    /// An empty cache for a batch whose rows carry `left_pad` pads before their prompts.
    pub fn new_cache(&self, left_pad: &[usize]) -> KvCache {
        KvCache {
            layers: vec![(None, None); self.layers.len()],
            left_pad: left_pad.to_vec(),
            len: 0,
        }
    }

    /// Feeds `embeds` `(N, T, C)`, the columns after those in `cache` (the whole left-padded
    /// prompt first, then one token at a time), and returns the last one's logits, `(N, vocab)`.
    pub fn forward_step(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let left_pad = cache.left_pad.clone();
        let past = cache.len;
        let h = self.run(embeds, &left_pad, past, Some(cache))?;
        let t = h.dim(1)?;
        self.logits(&h.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// The shared forward: `x` holds columns `past..past+T` of rows padded on the left by
    /// `left_pad`; with a cache, it supplies columns `0..past` and receives these.
    fn run(
        &self,
        x: &Tensor,
        left_pad: &[usize],
        past: usize,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let (n, t, c) = x.dims3()?;
        if c != self.cfg.hidden_size {
            candle_core::bail!(
                "qwen2: input embeddings are {c} wide, the model is {}",
                self.cfg.hidden_size
            );
        }
        if t == 0 {
            candle_core::bail!("qwen2: empty input (0 positions)");
        }
        if left_pad.len() != n || left_pad.iter().any(|&p| p >= past + t) {
            candle_core::bail!(
                "qwen2: left padding {left_pad:?} must leave each of {n} rows a real position of {}",
                past + t
            );
        }
        if let Some(cache) = cache.as_ref()
            && (cache.batch() != n || cache.len != past)
        {
            candle_core::bail!(
                "qwen2: cache holds {} rows × {} columns, input is {n} rows",
                cache.batch(),
                cache.len
            );
        }
        let positions: Vec<usize> = left_pad
            .iter()
            .flat_map(|&pad| (past..past + t).map(move |j| j.saturating_sub(pad)))
            .collect();
        let rotary = Rotary::new(
            &positions,
            n,
            t,
            self.cfg.head_dim(),
            self.cfg.rope_theta,
            x.device(),
        )?;
        let mask = attention_mask(left_pad, past, t, x.device())?;
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            let kv = cache.as_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(&x, &rotary, mask.as_ref(), kv)?;
        }
        if let Some(cache) = cache {
            cache.len += t;
        }
        self.norm.forward(&x)
    }
}

/// Additive mask `(N or 1, 1, T, past+T)` for queries at columns `past..past+T`: a query sees
/// the keys at or before its own column, except left pads. `None` when that is every key.
fn attention_mask(
    left_pad: &[usize],
    past: usize,
    t: usize,
    dev: &Device,
) -> Result<Option<Tensor>> {
    let padded = left_pad.iter().any(|&p| p > 0);
    if !padded {
        if t == 1 {
            return Ok(None);
        }
        if past == 0 {
            return Ok(Some(ops::causal_mask(t, dev)?));
        }
    }
    let s = past + t;
    let rows: &[usize] = if padded { left_pad } else { &[0] };
    let m: Vec<f32> = rows
        .iter()
        .flat_map(|&pad| {
            (0..t * s).map(move |k| {
                let (i, j) = (past + k / s, k % s);
                if j > i || j < pad { MASKED } else { 0.0 }
            })
        })
        .collect();
    Ok(Some(Tensor::from_vec(m, (rows.len(), 1, t, s), dev)?))
}

#[cfg(test)]
#[path = "qwen2_tests.rs"]
pub(crate) mod tests;
