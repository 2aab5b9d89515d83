//! The `clip-train` kind: train a CLIP from scratch (or from another stage's weights) on the
//! shards of a `preprocess` stage. Per-step loss, learning rate, temperature and samples/s become
//! the run's metrics; the artifact holds the weights, the config, the tokenizer and a loss curve.
//! Checkpoints go to the run's checkpoint folder, so a killed build resumes where it stopped.

use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::training::{StageHooks, check_finished};
use super::{Kind, StageContext, params};
use crate::ml::clip_train::{TrainConfig, train};
use crate::ml::models::clip::ClipConfig;

pub struct ClipTrain;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClipTrainParams {
    /// `small` (32 px, sized for 2 CPU cores) or `vit-b16` (the seed's 150M-parameter shape).
    #[serde(default = "default_model")]
    model: String,
    steps: u64,
    #[serde(default = "default_batch_size")]
    batch_size: usize,
    #[serde(default = "one")]
    micro_batches: usize,
    lr: f64,
    #[serde(default)]
    min_lr: f64,
    #[serde(default)]
    warmup_steps: u64,
    #[serde(default = "default_weight_decay")]
    weight_decay: f64,
    #[serde(default = "default_max_grad_norm")]
    max_grad_norm: f64,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_checkpoint_every")]
    checkpoint_every: u64,
    #[serde(default = "default_shuffle_buffer")]
    shuffle_buffer: usize,
    /// A needed stage whose `model.safetensors` to start from, instead of random weights.
    init_from: Option<String>,
}

fn default_model() -> String {
    "small".into()
}
fn default_batch_size() -> usize {
    64
}
fn one() -> usize {
    1
}
fn default_weight_decay() -> f64 {
    0.05
}
fn default_max_grad_norm() -> f64 {
    1.0
}
fn default_checkpoint_every() -> u64 {
    100
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

    fn run(&self, ctx: &StageContext<'_>) -> anyhow::Result<()> {
        let p: ClipTrainParams = params::read(ctx)?;
        let init_from = match &p.init_from {
            Some(stage) => Some(ctx.upstream(stage)?.join("model.safetensors")),
            None => None,
        };
        let data = data_upstream(ctx, p.init_from.as_deref())?;
        let tokenizer = data.join("tokenizer.json");
        let vocab = crate::ml::data::tokenizer::Tokenizer::load(&tokenizer)?.vocab_size();
        let model = match p.model.as_str() {
            "small" => ClipConfig::small(vocab),
            "vit-b16" => ClipConfig::vit_b16(vocab),
            other => bail!(
                "stage `{}`: unknown model `{other}`: expected `small` or `vit-b16`",
                ctx.stage
            ),
        };
        let cfg = TrainConfig {
            model,
            steps: p.steps,
            batch_size: p.batch_size,
            micro_batches: p.micro_batches,
            lr: p.lr,
            min_lr: p.min_lr,
            warmup_steps: p.warmup_steps,
            weight_decay: p.weight_decay,
            max_grad_norm: p.max_grad_norm,
            seed: p.seed,
            checkpoint_every: p.checkpoint_every,
            shuffle_buffer: p.shuffle_buffer,
        };
        let device = super::device(ctx)?;
        let mut hooks = StageHooks::new(ctx, p.steps);
        let trained = train(
            &cfg,
            &data.join("train"),
            ctx.checkpoint_dir,
            init_from.as_deref(),
            &device,
            &mut hooks,
        )?;
        check_finished(trained.finish, p.steps)?;
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

/// The needed stage holding training shards (the one that is not `init_from`).
fn data_upstream<'c>(
    ctx: &'c StageContext<'_>,
    init_from: Option<&str>,
) -> anyhow::Result<&'c Path> {
    let candidates: Vec<&Path> = ctx
        .upstream
        .iter()
        .filter(|(name, path)| Some(name.as_str()) != init_from && path.join("train").is_dir())
        .map(|(_, path)| path.as_path())
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => bail!(
            "stage `{}` needs a preprocess stage (with train/ shards): add it to `needs`",
            ctx.stage
        ),
        _ => bail!(
            "stage `{}` needs exactly one preprocess stage; it has {}",
            ctx.stage,
            candidates.len()
        ),
    }
}
