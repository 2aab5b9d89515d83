//! The `clip-train` kind: train a CLIP from scratch (or from another stage's weights) on the
//! shards of a `preprocess` stage. Per-step loss, learning rate, temperature and samples/s become
//! the run's metrics; the artifact holds the weights, the config, the tokenizer and a loss curve.
//! Checkpoints go to the run's checkpoint folder, so a killed build resumes where it stopped.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use super::{Kind, StageContext};
use crate::shared::kind_params::{self, part};
use crate::shared::training::{StageHooks, check_finished};
use vlmflow_engine::kind::ParamProblem;
use vlmflow_ml::models::clip::ClipConfig;
use vlmflow_ml::train::clip::{TrainConfig, train};
use vlmflow_ml::train::train_loop::Hyper;

pub struct ClipTrain;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClipTrainParams {
    #[serde(flatten)]
    own: OwnParams,
    #[serde(flatten)]
    train: Hyper,
}

/// The params only `clip-train` reads, flattened with `Hyper` into one table.
#[derive(Deserialize)]
struct OwnParams {
    /// `small` (32 px, sized for 2 CPU cores) or `vit-b16` (the seed's 150M-parameter shape).
    #[serde(default = "default_model")]
    model: String,
    /// Records in the shuffle buffer.
    #[serde(default = "default_shuffle_buffer")]
    shuffle_buffer: usize,
    /// A needed stage whose `model.safetensors` to start from, instead of random weights.
    init_from: Option<String>,
}

fn default_model() -> String {
    "small".into()
}
fn default_shuffle_buffer() -> usize {
    4096
}

impl Kind for ClipTrain {
    fn name(&self) -> &'static str {
        "clip-train"
    }

    fn version(&self) -> &'static str {
        "1"
    }

    fn uses_device(&self) -> bool {
        true
    }

    fn check_params(&self, params: &Value) -> Vec<ParamProblem> {
        kind_params::check_flattened::<ClipTrainParams>(
            params,
            &[part::<OwnParams>(), part::<Hyper>()],
        )
    }

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: ClipTrainParams = kind_params::read(ctx)?;
        let init_stage = match &p.own.init_from {
            Some(stage) => Some(ctx.upstream(stage)?),
            None => None,
        };
        let init_from = init_stage.map(|dir| dir.join("model.safetensors"));
        // The stage holding training shards: the one that is not `init_from`.
        let data = ctx.find_upstream("preprocess stage (with train/ shards)", |dir| {
            Some(dir) != init_stage && dir.join("train").is_dir()
        })?;
        let tokenizer = data.join("tokenizer.json");
        let vocab = vlmflow_ml::data::tokenizer::Tokenizer::load(&tokenizer)?.vocab_size();
        let model = match p.own.model.as_str() {
            "small" => ClipConfig::small(vocab),
            "vit-b16" => ClipConfig::vit_b16(vocab),
            other => bail!(
                "stage `{}`: unknown model `{other}`: expected `small` or `vit-b16`",
                ctx.stage
            ),
        };
        let steps = p.train.steps;
        let cfg = TrainConfig {
            model,
            hyper: p.train,
            shuffle_buffer: p.own.shuffle_buffer,
        };
        let device = super::device(ctx)?;
        let mut hooks = StageHooks::new(ctx, steps);
        let trained = train(
            &cfg,
            &data.join("train"),
            ctx.checkpoint_dir,
            init_from.as_deref(),
            &device,
            &mut hooks,
        )?;
        check_finished(trained.finish, steps)?;
        trained
            .params
            .save(&ctx.out_dir.join("model.safetensors"))?;
        std::fs::write(
            ctx.out_dir.join("config.json"),
            serde_json::to_string_pretty(&cfg)?,
        )?;
        std::fs::copy(&tokenizer, ctx.out_dir.join("tokenizer.json"))
            .context("copying the tokenizer")?;
        hooks.finish()?;
        Ok(())
    }
}
