//! The `lm-train` kind: a small Qwen2-architecture language model trained from scratch on the
//! text of a `preprocess` stage (captions and question–answer turns in the chat template), so
//! that the LM knows the language before the VLM stages freeze it. The artifact is a Hugging
//! Face model folder (`config.json`, `model.safetensors`, `tokenizer.json`): the VLM stages
//! read it exactly as they read a downloaded Qwen2.5.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::inputs::is_data;
use crate::shared::kind_params::{self, part};
use crate::shared::training::{StageHooks, check_finished};
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::data::chat::ChatTemplate;
use vlmflow_ml::data::conversations::{Objective, build, read_split_records};
use vlmflow_ml::data::tokenizer::Tokenizer;
use vlmflow_ml::models::qwen2_config::Qwen2Config;
use vlmflow_ml::models::qwen2_load::save_hf_folder;
use vlmflow_ml::train::lm::{LmTrainConfig, evaluate, train};
use vlmflow_ml::train::train_loop::Hyper;

pub struct LmTrain;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LmTrainParams {
    #[serde(flatten)]
    own: OwnParams,
    #[serde(flatten)]
    train: Hyper,
}

/// The params only `lm-train` reads, flattened with `Hyper` into one table.
#[derive(Deserialize)]
struct OwnParams {
    /// `small` (2 layers, 128 wide: the offline default).
    #[serde(default = "default_model")]
    model: String,
    /// Sequences longer than this many tokens are left out (and counted).
    #[serde(default = "default_max_len")]
    max_len: usize,
}

fn default_model() -> String {
    "small".into()
}
fn default_max_len() -> usize {
    128
}

impl Kind for LmTrain {
    fn name(&self) -> &'static str {
        "lm-train"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check_flattened::<LmTrainParams>(
            params,
            &[part::<OwnParams>(), part::<Hyper>()],
        )
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: LmTrainParams = kind_params::read(ctx)?;
        let data = ctx.find_upstream("preprocess stage", is_data)?;
        let tokenizer_path = data.join("tokenizer.json");
        let tokenizer = Tokenizer::load(&tokenizer_path)?;
        let Some(mut model) = Qwen2Config::named(&p.own.model, tokenizer.vocab_size()) else {
            bail!(
                "stage `{}`: unknown model `{}`: expected `small`",
                ctx.stage,
                p.own.model
            );
        };
        // No image here, so the template's image size does not matter.
        let template = ChatTemplate::new(&tokenizer, 0, None)?;
        model.eos_token_id = vec![template.im_end, tokenizer.eos_id()];
        let sequences = |split: &str| -> anyhow::Result<_> {
            let records = read_split_records(&data.join(split))?;
            let seqs = build(
                &records,
                &tokenizer,
                &template,
                Objective::Text,
                p.own.max_len,
                p.train.seed,
            )?;
            ctx.metric(&format!("{split}.too_long"), None, seqs.too_long as f64);
            if split == "train" && seqs.usable() < p.train.batch_size {
                bail!(
                    "stage `{}`: {} training sequences fit max_len = {} ({} are longer), fewer than \
                     one batch of {}: raise max_len or lower batch_size",
                    ctx.stage,
                    seqs.usable(),
                    p.own.max_len,
                    seqs.too_long,
                    p.train.batch_size
                );
            }
            Ok(seqs)
        };
        let (train_seqs, val_seqs) = (sequences("train")?, sequences("validation")?);
        let (steps, batch_size) = (p.train.steps, p.train.batch_size);
        let cfg = LmTrainConfig {
            model,
            hyper: p.train,
        };
        let device = super::device(ctx)?;
        let mut hooks = StageHooks::new(ctx, steps);
        let trained = train(
            &cfg,
            &train_seqs,
            tokenizer.pad_id(),
            ctx.checkpoint_dir,
            &device,
            &mut hooks,
        )?;
        check_finished(trained.finish, steps)?;
        let val_loss = evaluate(
            &trained.model,
            &val_seqs,
            tokenizer.pad_id(),
            batch_size,
            &device,
        )?;
        ctx.metric("val.loss", None, val_loss);
        ctx.log(&format!("validation loss {val_loss:.4}"));
        save_hf_folder(ctx.out_dir, &trained.model)?;
        std::fs::copy(&tokenizer_path, ctx.out_dir.join("tokenizer.json"))
            .context("copying the tokenizer")?;
        hooks.finish()
    }
}
