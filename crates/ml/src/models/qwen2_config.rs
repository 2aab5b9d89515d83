//! The Qwen2 hyperparameters, read from and written as Hugging Face's `config.json`.
//!
//! Field names are Hugging Face's; fields this model has no use for (`torch_dtype`,
//! `use_cache`, …) are ignored on reading. Settings that would change the computation in a way
//! this implementation does not follow (another `hidden_act`, `rope_scaling`, sliding-window
//! attention) are refused with an error rather than silently computed differently.

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: key/value heads, each shared by `heads / kv_heads` query heads.
    /// Hugging Face's default (absent) is `num_attention_heads`.
    #[serde(default)]
    pub num_key_value_heads: usize,
    /// Informational: rotary positions have no learned table, so longer inputs still run.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Logits by the embedding matrix; no `lm_head.weight`.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// One id or a list in `config.json`; generation stops at any of them.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub eos_token_id: Vec<u32>,
}

fn default_max_positions() -> usize {
    32_768
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Ids {
        One(u32),
        Many(Vec<u32>),
        None(()),
    }
    Ok(match Ids::deserialize(d)? {
        Ids::One(id) => vec![id],
        Ids::Many(ids) => ids,
        Ids::None(()) => vec![],
    })
}

impl Qwen2Config {
    /// The offline default (CALIBRATION.md): 2 layers, 128 wide, 4 query heads sharing 2
    /// key/value heads, SwiGLU width 512, tied embeddings; ~0.5M parameters plus 128 per token.
    pub fn small(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 128,
            intermediate_size: 512,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            max_position_embeddings: 1024,
            rope_theta: 10_000.0,
            rms_norm_eps: 1e-6,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: vec![],
        }
    }

    /// A named config: `small`.
    pub fn named(name: &str, vocab_size: usize) -> Option<Self> {
        match name {
            "small" => Some(Self::small(vocab_size)),
            _ => None,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Reads a `config.json` text, checking that it describes a model this code computes exactly.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        // transformers ≥ 5 writes `rope_parameters: {rope_type, rope_theta}` instead of `rope_theta`.
        if let Some(rope) = value
            .get("rope_parameters")
            .filter(|v| !v.is_null())
            .cloned()
        {
            let kind = rope
                .get("rope_type")
                .and_then(|v| v.as_str())
                .unwrap_or("default");
            if kind != "default" {
                return Err(format!(
                    "rope_parameters.rope_type is \"{kind}\"; only \"default\" rotary embeddings are implemented"
                ));
            }
            if value.get("rope_theta").is_none()
                && let (Some(theta), Some(map)) = (rope.get("rope_theta"), value.as_object_mut())
            {
                map.insert("rope_theta".into(), theta.clone());
            }
        }
        let field = |k: &str| value.get(k).filter(|v| !v.is_null());
        if let Some(t) = field("model_type").and_then(|v| v.as_str())
            && t != "qwen2"
        {
            return Err(format!(
                "model_type is \"{t}\", this loader reads \"qwen2\" (Qwen2, Qwen2.5)"
            ));
        }
        if let Some(act) = field("hidden_act").and_then(|v| v.as_str())
            && act != "silu"
        {
            return Err(format!("hidden_act is \"{act}\"; Qwen2 uses \"silu\""));
        }
        if field("rope_scaling").is_some() {
            return Err(concat!(
                "rope_scaling is set; only plain rotary embeddings are implemented ",
                "(set it to null to run inputs within max_position_embeddings)"
            )
            .into());
        }
        if field("use_sliding_window").and_then(|v| v.as_bool()) == Some(true) {
            return Err("use_sliding_window is true; only full attention is implemented".into());
        }
        let mut cfg: Self = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
        if cfg.num_key_value_heads == 0 {
            cfg.num_key_value_heads = cfg.num_attention_heads;
        }
        if let Some(d) = field("head_dim").and_then(|v| v.as_u64())
            && d as usize != cfg.head_dim()
        {
            return Err(format!(
                "head_dim {d} differs from hidden_size / num_attention_heads = {}",
                cfg.head_dim()
            ));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// `config.json` as Hugging Face writes it for `Qwen2ForCausalLM` (f32 weights).
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let extra = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"],
            "model_type": "qwen2",
            "hidden_act": "silu",
            "attention_dropout": 0.0,
            "use_sliding_window": false,
            "torch_dtype": "float32",
        });
        if let (Some(map), serde_json::Value::Object(extra)) = (v.as_object_mut(), extra) {
            map.extend(extra);
        }
        serde_json::to_string_pretty(&v).expect("json") + "\n"
    }

    /// The sizes must fit together.
    pub fn validate(&self) -> Result<(), String> {
        let (h, kv) = (self.num_attention_heads, self.num_key_value_heads);
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", h),
            ("num_key_value_heads", kv),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(h) || !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "hidden_size {} must split into {h} heads of an even size",
                self.hidden_size
            ));
        }
        if !h.is_multiple_of(kv) {
            return Err(format!(
                "{h} attention heads cannot share {kv} key/value heads"
            ));
        }
        if !(self.rope_theta > 0.0 && self.rms_norm_eps >= 0.0) {
            return Err("rope_theta must be positive and rms_norm_eps not negative".into());
        }
        Ok(())
    }

    /// Every tensor of a checkpoint, Hugging Face names and shapes, in name order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (v, c, i) = (self.vocab_size, self.hidden_size, self.intermediate_size);
        let kv = self.num_key_value_heads * self.head_dim();
        let mut out = vec![
            ("model.embed_tokens.weight".to_string(), vec![v, c]),
            ("model.norm.weight".to_string(), vec![c]),
        ];
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![v, c]));
        }
        for l in 0..self.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let layer = [
                ("input_layernorm.weight", vec![c]),
                ("post_attention_layernorm.weight", vec![c]),
                ("self_attn.q_proj.weight", vec![c, c]),
                ("self_attn.q_proj.bias", vec![c]),
                ("self_attn.k_proj.weight", vec![kv, c]),
                ("self_attn.k_proj.bias", vec![kv]),
                ("self_attn.v_proj.weight", vec![kv, c]),
                ("self_attn.v_proj.bias", vec![kv]),
                ("self_attn.o_proj.weight", vec![c, c]),
                ("mlp.gate_proj.weight", vec![i, c]),
                ("mlp.up_proj.weight", vec![i, c]),
                ("mlp.down_proj.weight", vec![c, i]),
            ];
            out.extend(layer.into_iter().map(|(n, s)| (format!("{p}.{n}"), s)));
        }
        out.sort();
        out
    }
}
