//! Training a CLIP from shards: the loop of nanoGPT's train.py, for the contrastive objective.
//! Deterministic from its seed on CPU, resumable from the checkpoint folder it keeps, and silent
//! about everything else: progress, metrics and interrupts go through `Hooks`.

use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

use super::data::batch::Batch;
use super::data::image::normalize_into;
use super::data::stream::TrainStream;
use super::models::clip::{Clip, ClipConfig};
use super::optim::{AdamW, AdamWConfig};
use super::params::Params;
use super::rng::Rng;
use super::schedule::WarmupCosine;
use super::train::{Checkpoint, TrainState, train_step};

/// Everything that shapes a training run (the stage's params, resolved).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ClipConfig,
    pub steps: u64,
    pub batch_size: usize,
    /// Gradient accumulation: each step's batch runs as this many micro-batches.
    pub micro_batches: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub weight_decay: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    pub shuffle_buffer: usize,
}

/// One step, as reported to the hooks.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub temperature: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
}

pub trait Hooks {
    fn step(&mut self, report: &StepReport);
    /// Asked between steps: true to save a checkpoint and stop.
    fn stop_requested(&self) -> bool;
    fn log(&mut self, line: &str);
}

pub enum Finish {
    Done,
    /// Stopped on request after this many steps; the checkpoint holds them.
    Stopped(u64),
}

pub struct Trained {
    pub params: Params,
    pub model: Clip,
    pub finish: Finish,
}

/// Train on the shards in `train_dir`, keeping checkpoints in `checkpoint_dir` (resuming from the
/// one there, if any). `init_from` is a `model.safetensors` to start from instead of random weights.
pub fn train(
    cfg: &TrainConfig,
    train_dir: &Path,
    checkpoint_dir: &Path,
    init_from: Option<&Path>,
    device: &Device,
    hooks: &mut dyn Hooks,
) -> Result<Trained> {
    let params = Params::new(cfg.seed, device);
    let model = Clip::new(&params, &cfg.model)?;
    let adamw = AdamWConfig {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::with_default_groups(params.vars(), adamw)?;
    let mut start = 0;
    if Checkpoint::read_state(checkpoint_dir).is_ok() {
        let state = Checkpoint::load(checkpoint_dir, &params, &mut opt)?;
        start = state.step;
        hooks.log(&format!("resumed from the checkpoint at step {start}"));
    } else if let Some(path) = init_from {
        params.load(path)?;
        hooks.log(&format!("initialised from {}", path.display()));
    }
    hooks.log(&format!("{} parameters", params.num_params()));

    let schedule = WarmupCosine {
        peak_lr: cfg.lr,
        min_lr: cfg.min_lr,
        warmup_steps: cfg.warmup_steps,
        total_steps: cfg.steps,
    };
    let data_err = |e: super::data::DataError| candle_core::Error::Msg(e.to_string());
    let mut stream = TrainStream::open(
        train_dir,
        cfg.batch_size,
        cfg.seed,
        cfg.shuffle_buffer,
        start,
    )
    .map_err(data_err)?;
    let micro = cfg.micro_batches.max(1);
    for step in start..cfg.steps {
        if hooks.stop_requested() {
            save(checkpoint_dir, &params, &opt, cfg, step)?;
            return Ok(Trained {
                params,
                model,
                finish: Finish::Stopped(step),
            });
        }
        let batch = stream
            .next()
            .ok_or_else(|| candle_core::Error::Msg("the data stream ended".into()))?
            .map_err(data_err)?;
        let inputs = BatchTensors::new(&batch, cfg.model.vision.image_size, device)?;
        let started = Instant::now();
        let lr = schedule.lr(step);
        let stats = train_step(&mut opt, lr, micro, Some(cfg.max_grad_norm), |i| {
            let (images, tokens, lengths) = inputs.micro_batch(i, micro)?;
            model.loss(&images, &tokens, &lengths)
        })?;
        hooks.step(&StepReport {
            step: step + 1,
            loss: stats.loss,
            lr,
            temperature: model.temperature()?.to_scalar::<f32>()? as f64,
            grad_norm: stats.grad_norm,
            samples_per_s: batch.size as f64 / started.elapsed().as_secs_f64(),
        });
        if cfg.checkpoint_every > 0
            && (step + 1) % cfg.checkpoint_every == 0
            && step + 1 < cfg.steps
        {
            save(checkpoint_dir, &params, &opt, cfg, step + 1)?;
        }
    }
    Ok(Trained {
        params,
        model,
        finish: Finish::Done,
    })
}

fn save(dir: &Path, params: &Params, opt: &AdamW, cfg: &TrainConfig, step: u64) -> Result<()> {
    let state = TrainState {
        step,
        config: serde_json::to_value(cfg).map_err(|e| candle_core::Error::Msg(e.to_string()))?,
        // The data order is a function of (seed, step): the stream needs no state of its own.
        rng: Rng::new(cfg.seed),
        data_position: step * cfg.batch_size as u64,
    };
    Checkpoint::save(dir, params, opt, &state)
}

/// A batch as tensors: images normalised with the CLIP mean/std, tokens and their lengths.
pub struct BatchTensors {
    pub images: Tensor,
    pub tokens: Tensor,
    pub lengths: Tensor,
}

impl BatchTensors {
    pub fn new(batch: &Batch, image_size: usize, device: &Device) -> Result<BatchTensors> {
        let mut pixels = vec![0f32; batch.images.len()];
        normalize_into(&batch.images, &mut pixels);
        Ok(BatchTensors {
            images: Tensor::from_vec(pixels, (batch.size, 3, image_size, image_size), device)?,
            tokens: Tensor::from_vec(batch.tokens.clone(), (batch.size, batch.seq_len), device)?,
            lengths: Tensor::from_vec(batch.lengths.clone(), batch.size, device)?,
        })
    }

    /// Rows of micro-batch `i` of `n` (equal slices; the last takes the remainder).
    pub fn micro_batch(&self, i: usize, n: usize) -> Result<(Tensor, Tensor, Tensor)> {
        if n == 1 {
            return Ok((
                self.images.clone(),
                self.tokens.clone(),
                self.lengths.clone(),
            ));
        }
        let rows = self.images.dim(0)?;
        let size = rows.div_ceil(n);
        let start = (i * size).min(rows);
        let len = size.min(rows - start);
        Ok((
            self.images.narrow(0, start, len)?,
            self.tokens.narrow(0, start, len)?,
            self.lengths.narrow(0, start, len)?,
        ))
    }
}
