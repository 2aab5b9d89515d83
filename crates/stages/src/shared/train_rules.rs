//! Which parameters a training stage trains: its `train` param — `"all"`, parts (`vision`,
//! `projector`, `lm`) and name patterns with `*` — plus LoRA adapters, which always train.

use anyhow::bail;
use serde::Deserialize;

use crate::StageContext;
use vlmflow_ml::models::lora::is_adapter;
use vlmflow_ml::models::vlm::{is_lm, is_projector, is_vision};

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum TrainSpec {
    One(String),
    Many(Vec<String>),
}

impl TrainSpec {
    pub(crate) fn rules(&self) -> Vec<String> {
        match self {
            TrainSpec::One(s) => vec![s.clone()],
            TrainSpec::Many(v) => v.clone(),
        }
    }
}

/// Whether parameter `name` trains under `rules` (parts, `all`, or `*` patterns). LoRA adapters
/// always train; with them, the language model's own weights never do.
pub(crate) fn trains(rules: &[String], name: &str) -> bool {
    if is_adapter(name) {
        return true;
    }
    rules.iter().any(|rule| match rule.as_str() {
        "all" => true,
        "vision" => is_vision(name),
        "projector" => is_projector(name),
        "lm" => is_lm(name),
        pattern => glob(pattern, name),
    })
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Every rule must match some parameter, or it is a mistake worth stopping for.
pub(crate) fn check_rules(
    ctx: &StageContext<'_>,
    rules: &[String],
    names: &[String],
) -> anyhow::Result<()> {
    for rule in rules {
        if !names.iter().any(|n| trains(std::slice::from_ref(rule), n)) {
            bail!(
                "stage `{}`: `train` entry `{rule}` matches no parameter: use all, vision, projector, lm \
                 or a pattern such as model.layers.*.mlp.*",
                ctx.stage
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_rules_cover_parts_and_patterns() {
        let rules = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mlp = "model.layers.1.mlp.up_proj.weight";
        assert!(trains(&rules(&["all"]), "vision.ln_post.weight"));
        assert!(trains(&rules(&["lm"]), mlp));
        assert!(trains(&rules(&["lm"]), "lm_head.weight"));
        assert!(!trains(&rules(&["projector"]), mlp));
        assert!(trains(&rules(&["model.layers.*.mlp.*"]), mlp));
        assert!(!trains(
            &rules(&["model.layers.*.mlp.*"]),
            "model.layers.1.self_attn.q_proj.weight"
        ));
        assert!(trains(&rules(&["*.bias"]), "projector.fc1.bias"));
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b*c", "axxbyy") && glob("abc", "abc"));
        assert!(!glob("a*a", "a"), "the ends may not overlap");
    }
}
