//! The `finetune` kind: continues from a `vlm-pretrain` (or another `finetune`) on
//! question–answer conversations, training what its `train` param names (or LoRA adapters), and
//! reports exact-match accuracy on the held-out images' questions.

use anyhow::bail;
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::inputs::is_data;
use crate::shared::kind_params::{self, part};
use crate::shared::train_rules::{TrainSpec, check_rules, trains};
use crate::shared::vlm_common::{
    Common, VLM_JSON, VlmManifest, is_vlm, sequences, train_vlm, write_vlm,
};
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::data::conversations::{Objective, read_split_records};
use vlmflow_ml::data::tokenizer::Tokenizer;
use vlmflow_ml::infer::vlm_eval::exact_match;
use vlmflow_ml::models::lora::{LoraConfig, is_adapter};
use vlmflow_ml::models::vlm::{VlmConfig, is_lm};
use vlmflow_ml::models::vlm_folder::{self, LmFiles};
use vlmflow_ml::param_store::ParamStore;
use vlmflow_ml::train::train_loop::Hyper;

pub struct Finetune;

fn default_eval_images() -> usize {
    1000
}
fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FinetuneParams {
    #[serde(flatten)]
    own: OwnParams,
    #[serde(flatten)]
    common: Common,
    #[serde(flatten)]
    hyper: Hyper,
}

/// The params only `finetune` reads, flattened with the shared ones into one table.
#[derive(Deserialize)]
struct OwnParams {
    /// What trains: `"all"`, or a list of parts (`vision`, `projector`, `lm`) and parameter-name
    /// patterns (`*` matches any run of characters, e.g. `model.layers.*.mlp.*`). By default the
    /// projector and the LM (with `lora`: the projector and the adapters).
    train: Option<TrainSpec>,
    /// Give each conversation's turns an order of their own, so every question is sometimes
    /// asked first (as a one-question chat does).
    #[serde(default = "default_true")]
    shuffle_turns: bool,
    /// Held-out images whose questions are asked for the exact-match accuracy.
    #[serde(default = "default_eval_images")]
    eval_images: usize,
    /// Train LoRA adapters on the language model's linear layers instead of its weights:
    /// `{ rank = 8, alpha = 16, targets = ["q_proj", "v_proj"] }`. Merged by chat-export.
    lora: Option<LoraConfig>,
}

impl Kind for Finetune {
    fn name(&self) -> &'static str {
        "finetune"
    }

    fn version(&self) -> &'static str {
        "2"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check_flattened::<FinetuneParams>(
            params,
            &[part::<OwnParams>(), part::<Common>(), part::<Hyper>()],
        )
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: FinetuneParams = kind_params::read(ctx)?;
        let data = ctx.find_upstream("preprocess stage", is_data)?;
        let base = ctx.find_upstream("vlm-pretrain stage", is_vlm)?;
        let manifest: VlmManifest = super::read_json(&base.join(VLM_JSON))?;
        let tokenizer_path = base.join("tokenizer.json");
        let tokenizer = Tokenizer::load(&tokenizer_path)?;
        let template = &manifest.template;
        let objective = Objective::Answers {
            shuffle_turns: p.own.shuffle_turns,
        };
        let train_seqs = sequences(
            ctx,
            &data.join("train"),
            &tokenizer,
            template,
            objective,
            p.common.max_len,
            p.hyper.seed,
        )?;

        let device = super::device(ctx)?;
        let with_lora = p.own.lora.is_some();
        let rules = match &p.own.train {
            Some(spec) => spec.rules(),
            None if with_lora => vec!["projector".to_string()],
            None => vec!["projector".to_string(), "lm".to_string()],
        };
        if with_lora && rules.iter().any(|r| r == "lm" || r == "all") {
            bail!(
                "stage `{}`: with `lora`, the language model's weights stay frozen and its adapters \
                 train: drop `lm`/`all` from `train` (e.g. train = [\"projector\"])",
                ctx.stage
            );
        }
        let frozen_rules = rules.clone();
        let params = ParamStore::new(p.hyper.seed, &device).with_frozen(move |n| {
            !trains(&frozen_rules, n) || (with_lora && is_lm(n) && !is_adapter(n))
        });
        let model = VlmConfig {
            lora: p.own.lora.clone(),
            ..manifest.model.clone()
        };
        let cfg = p.common.config(model.clone(), &p.hyper);
        let (trained, hooks) = train_vlm(
            ctx,
            &cfg,
            params,
            data,
            &train_seqs,
            tokenizer.pad_id(),
            |params, hooks| {
                let names: Vec<String> = params.vars().into_iter().map(|(n, _)| n).collect();
                check_rules(ctx, &rules, &names)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                vlm_folder::load_merged(base, &manifest.model, params)?;
                hooks.log(&format!("started from {}", base.display()));
                Ok(())
            },
        )?;
        let validation = data.join("validation");
        let records = read_split_records(&validation)?;
        let result = exact_match(
            &trained.model,
            &tokenizer,
            template,
            &validation,
            &records,
            p.own.eval_images,
            p.hyper.batch_size,
            &device,
        )?;
        ctx.metric("val.exact_match", None, result.accuracy);
        ctx.metric("val.questions", None, result.questions as f64);
        for (kind, (correct, asked)) in &result.per_kind {
            ctx.metric(
                &format!("val.exact_match.{kind}"),
                None,
                *correct as f64 / (*asked).max(1) as f64,
            );
        }
        ctx.log(&format!(
            "exact match {:.4} over {} questions",
            result.accuracy, result.questions
        ));
        for (question, expected, answered) in &result.examples {
            ctx.log(&format!(
                "  {question} → {answered:?} (expected {expected:?})"
            ));
        }
        std::fs::write(
            ctx.out_dir.join("eval.json"),
            serde_json::to_string_pretty(&result)?,
        )?;
        // The LM's files are the base's when its weights neither trained nor took merged adapters.
        let lm_trained = trained
            .params
            .trainable_vars()
            .iter()
            .any(|(n, _)| is_lm(n) && !is_adapter(n));
        let base_lm = base.join(vlm_folder::LM);
        let lm = if lm_trained || manifest.model.lora.is_some() {
            LmFiles::Written
        } else {
            LmFiles::CopyOf(&base_lm)
        };
        let manifest = VlmManifest {
            model,
            template: manifest.template,
        };
        write_vlm(ctx, &trained, &manifest, lm, &tokenizer_path)?;
        hooks.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vlm_pretrain::PretrainParams;

    #[test]
    fn every_level_of_the_params_is_read_and_a_misspelt_one_refused() {
        let ok: FinetuneParams = serde_json::from_value(serde_json::json!({
            "steps": 5, "lr": 0.1, "batch_size": 8, "max_len": 99, "eval_images": 3
        }))
        .unwrap();
        assert_eq!(
            (ok.hyper.batch_size, ok.common.max_len, ok.own.eval_images),
            (8, 99, 3)
        );
        let err = serde_json::from_value::<PretrainParams>(serde_json::json!({
            "steps": 5, "lr": 0.1, "querys": 4
        }))
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("unknown field `querys`"), "{err}");
    }
}
