//! The training loop the language-model and VLM stages share: nanoGPT's train.py loop with the
//! data and the loss behind an [`Objective`], and progress, metrics and interrupts behind
//! [`Hooks`]. Resumable: a checkpoint every `checkpoint_every` steps and when asked to stop.

use std::path::Path;
use std::time::Instant;

use candle_core::{Error, Result, Tensor};

use serde::{Deserialize, Serialize};

use super::checkpoint::{Checkpoint, Found, TrainState};
use super::optim::{AdamW, AdamWConfig};
use super::schedule::WarmupCosine;
use super::step::{StepStats, train_step};
use crate::ops::{self, Precision};
use crate::param_store::ParamStore;
use crate::rng::Rng;

/// The hyperparameters every trainer shares; a training stage's params hold them flattened,
/// with these defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Optimizer steps.
    pub steps: u64,
    /// Samples per step.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Gradient accumulation: each step's batch runs as this many micro-batches.
    #[serde(default = "one")]
    pub micro_batches: usize,
    /// Peak learning rate (after linear warmup, before cosine decay to `min_lr`).
    pub lr: f64,
    #[serde(default)]
    pub min_lr: f64,
    #[serde(default)]
    pub warmup_steps: u64,
    /// AdamW's decoupled decay (never on norms, biases, embeddings).
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// The global gradient norm is clipped to this.
    #[serde(default = "one_f64")]
    pub max_grad_norm: f64,
    /// Initial weights and data order.
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
    /// `bf16`: mixed precision (`ops::precision`). Recorded only when not the default, so that
    /// f32 runs' artifacts are what they were before the option existed.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

fn default_batch_size() -> usize {
    64
}
fn one() -> usize {
    1
}
fn one_f64() -> f64 {
    1.0
}
fn default_weight_decay() -> f64 {
    0.05
}
fn default_checkpoint_every() -> u64 {
    100
}

impl Hyper {
    pub fn loop_config(&self) -> LoopConfig {
        LoopConfig {
            steps: self.steps,
            micro_batches: self.micro_batches,
            schedule: WarmupCosine {
                peak_lr: self.lr,
                min_lr: self.min_lr,
                warmup_steps: self.warmup_steps,
                total_steps: self.steps,
            },
            max_grad_norm: self.max_grad_norm,
            checkpoint_every: self.checkpoint_every,
            seed: self.seed,
            precision: self.precision,
        }
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            lr: self.lr,
            weight_decay: self.weight_decay,
            ..AdamWConfig::default()
        }
    }
}

/// The loop's settings.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub steps: u64,
    /// Gradient accumulation: each step's batch runs as this many micro-batches.
    pub micro_batches: usize,
    pub schedule: WarmupCosine,
    pub max_grad_norm: f64,
    pub checkpoint_every: u64,
    pub seed: u64,
    pub precision: Precision,
}

/// What is trained on and how it is scored, one step at a time.
pub trait Objective {
    /// Prepare step `step`'s batch (0-based); returns how many samples it holds.
    fn load_batch(&mut self, step: u64) -> Result<usize>;
    /// The mean loss of micro-batch `i` of `n` of the loaded batch.
    fn micro_loss(&self, i: usize, n: usize) -> Result<Tensor>;
    /// Values worth reporting after a step besides the loss (CLIP's temperature).
    fn report(&self) -> Vec<(&'static str, f64)> {
        vec![]
    }
}

/// One step, as reported to the hooks.
#[derive(Clone, Debug)]
pub struct StepReport {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
    /// The objective's own values ([`Objective::report`]).
    pub extra: Vec<(&'static str, f64)>,
}

pub trait Hooks {
    /// Called once when the run resumes from a checkpoint, with the (step, loss) of every step
    /// before it.
    fn resumed(&mut self, losses: &[(u64, f64)]) {
        let _ = losses;
    }
    fn step(&mut self, report: &StepReport);
    /// Asked between steps: true to save a checkpoint and stop.
    fn stop_requested(&self) -> bool;
    fn log(&mut self, line: &str);
}

/// What a trainer hands back: the parameters, the model built on them, how the run ended.
pub struct Trained<M> {
    pub params: ParamStore,
    pub model: M,
    pub finish: Finish,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Done,
    /// Stopped on request after this many steps; the checkpoint holds them.
    Stopped(u64),
}

/// The part every trainer shares, around what differs between them (the model, its optimizer
/// groups, its objective).
pub struct Trainer<'a, C: Serialize> {
    /// The trainer's whole configuration, recorded in each checkpoint.
    pub config: &'a C,
    pub hyper: &'a Hyper,
    pub checkpoint_dir: &'a Path,
    pub hooks: &'a mut dyn Hooks,
}

impl<C: Serialize> Trainer<'_, C> {
    /// Resume from the checkpoint or start with `init` ([`resume_or_init`]), report the number of
    /// parameters, then run the loop on the objective `objective(start)` makes for the first step.
    pub fn fit<O: Objective>(
        self,
        params: &ParamStore,
        mut opt: AdamW,
        init: impl FnOnce(&mut dyn Hooks) -> Result<()>,
        objective: impl FnOnce(u64) -> Result<O>,
    ) -> Result<Finish> {
        let done = resume_or_init(params, &mut opt, self.checkpoint_dir, self.hooks, init)?;
        let total = params.num_params();
        if params.has_frozen_rule() {
            let trained: usize = opt.params().map(|(_, v)| v.elem_count()).sum();
            self.hooks
                .log(&format!("{total} parameters, {trained} of them trained"));
        } else {
            self.hooks.log(&format!("{total} parameters"));
        }
        let loop_cfg = self.hyper.loop_config();
        let mut objective = objective(done.step)?;
        run(
            &loop_cfg,
            &mut opt,
            done,
            self.checkpoint_dir,
            self.config,
            &mut objective,
            self.hooks,
        )
    }
}

/// Call `init` (load pretrained weights), then resume from the checkpoint in `checkpoint_dir` if
/// there is a whole one (a damaged one is deleted, with a log line), returning its step (else 0)
/// and the losses of the steps before it. `init` runs on
/// resume too: a checkpoint holds only what the optimizer trains, so frozen weights (a VLM's
/// language model) come from their source.
fn resume_or_init(
    params: &ParamStore,
    opt: &mut AdamW,
    checkpoint_dir: &Path,
    hooks: &mut dyn Hooks,
    init: impl FnOnce(&mut dyn Hooks) -> Result<()>,
) -> Result<Progress> {
    init(hooks)?;
    match Checkpoint::inspect(checkpoint_dir) {
        Found::Nothing => Ok(Progress::default()),
        Found::Damaged(why) => {
            // Checked before anything was loaded: the parameters are still `init`'s.
            hooks.log(&format!(
                "the checkpoint cannot be used ({why}): deleted it, training from step 0"
            ));
            Checkpoint::discard(checkpoint_dir)?;
            Ok(Progress::default())
        }
        Found::Whole(_) => {
            let state = Checkpoint::load(checkpoint_dir, params, opt)?;
            hooks.log(&format!(
                "resumed from the checkpoint at step {}",
                state.step
            ));
            hooks.resumed(&state.losses);
            Ok(Progress {
                step: state.step,
                losses: state.losses,
            })
        }
    }
}

/// How far a run has come: steps done and the loss of each.
#[derive(Debug, Default, PartialEq)]
struct Progress {
    step: u64,
    losses: Vec<(u64, f64)>,
}

/// Train from step `start` to `cfg.steps`. `config` (the trainer's whole configuration) is
/// recorded in each checkpoint.
fn run(
    cfg: &LoopConfig,
    opt: &mut AdamW,
    done: Progress,
    checkpoint_dir: &Path,
    config: &impl Serialize,
    objective: &mut dyn Objective,
    hooks: &mut dyn Hooks,
) -> Result<Finish> {
    let config = serde_json::to_value(config).map_err(candle_core::Error::wrap)?;
    let save = |opt: &AdamW, step: u64, losses: &[(u64, f64)]| {
        let state = TrainState {
            step,
            config: config.clone(),
            // The data order is a function of (seed, step): the stream needs no state of its own.
            rng: Rng::new(cfg.seed),
            data_position: step,
            losses: losses.to_vec(),
        };
        Checkpoint::save(checkpoint_dir, opt, &state)
    };
    let (start, mut losses) = (done.step, done.losses);
    let micro = cfg.micro_batches.max(1);
    // The step of the newest checkpoint on disk, named when training diverges.
    let mut saved = (start > 0).then_some(start);
    for step in start..cfg.steps {
        if hooks.stop_requested() {
            save(opt, step, &losses)?;
            return Ok(Finish::Stopped(step));
        }
        let samples = objective.load_batch(step)?;
        let started = Instant::now();
        let lr = cfg.schedule.lr(step);
        let stats = train_step(opt, lr, micro, Some(cfg.max_grad_norm), |i| {
            ops::with_precision(cfg.precision, || objective.micro_loss(i, micro))
        })?;
        if !(stats.loss.is_finite() && stats.grad_norm.is_finite()) {
            return Err(diverged(step + 1, &stats, saved, checkpoint_dir));
        }
        losses.push((step + 1, stats.loss));
        hooks.step(&StepReport {
            step: step + 1,
            loss: stats.loss,
            lr,
            grad_norm: stats.grad_norm,
            samples_per_s: samples as f64 / started.elapsed().as_secs_f64(),
            extra: objective.report(),
        });
        let due = cfg.checkpoint_every > 0 && (step + 1).is_multiple_of(cfg.checkpoint_every);
        if due && step + 1 < cfg.steps {
            save(opt, step + 1, &losses)?;
            saved = Some(step + 1);
        }
    }
    Ok(Finish::Done)
}

/// A NaN or infinite loss or gradient norm: the run stops at once, saying where and what is left.
fn diverged(step: u64, stats: &StepStats, saved: Option<u64>, checkpoint_dir: &Path) -> Error {
    let kept = match saved {
        Some(at) => format!(
            "the last checkpoint, of step {at}, is in {}",
            checkpoint_dir.display()
        ),
        None => "no checkpoint was written before it".to_string(),
    };
    Error::Msg(format!(
        "training diverged at step {step}: loss {}, gradient norm {} at learning rate {:e}; \
         stopped there ({kept}). Lower `lr` or raise `warmup_steps`",
        stats.loss, stats.grad_norm, stats.lr
    ))
}

/// Rows `i` of `n` equal slices of a batch of `rows` (the last takes the remainder):
/// `(start, len)`.
pub fn micro_rows(rows: usize, i: usize, n: usize) -> (usize, usize) {
    let size = rows.div_ceil(n.max(1));
    let start = (i * size).min(rows);
    (start, size.min(rows - start))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    struct Quiet;

    impl Hooks for Quiet {
        fn step(&mut self, _: &StepReport) {}
        fn stop_requested(&self) -> bool {
            false
        }
        fn log(&mut self, _: &str) {}
    }

    /// The state of a run that has taken no step.
    fn step_0() -> TrainState {
        TrainState {
            step: 0,
            config: serde_json::Value::Null,
            rng: Rng::new(0),
            data_position: 0,
            losses: vec![],
        }
    }

    /// Hooks that keep the log lines.
    #[derive(Default)]
    struct Logged(Vec<String>);

    impl Hooks for Logged {
        fn step(&mut self, _: &StepReport) {}
        fn stop_requested(&self) -> bool {
            false
        }
        fn log(&mut self, line: &str) {
            self.0.push(line.to_string());
        }
    }

    #[test]
    fn a_damaged_checkpoint_is_deleted_and_training_starts_from_step_0() -> Result<()> {
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let ckpt = dir.path().join("ckpt");
        let p = ParamStore::new(0, &Device::Cpu);
        p.normal("w", 4, 1.0)?;
        let mut opt = AdamW::with_default_groups(p.trainable_vars(), AdamWConfig::default())?;
        Checkpoint::save(&ckpt, &opt, &step_0())?;
        let model = ckpt.join("model.safetensors");
        let len = std::fs::metadata(&model)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&model)?
            .set_len(len - 1)?;

        let mut hooks = Logged::default();
        let progress = resume_or_init(&p, &mut opt, &ckpt, &mut hooks, |_| Ok(()))?;
        assert_eq!(progress, Progress::default());
        assert!(!ckpt.exists(), "the damaged checkpoint is gone");
        assert!(
            hooks.0.iter().any(|l| l.contains("cannot be used")
                && l.contains("model.safetensors does not match its checksum")),
            "{:?}",
            hooks.0
        );
        Ok(())
    }

    fn value(p: &ParamStore, name: &str) -> Result<f32> {
        let vars: std::collections::BTreeMap<_, _> = p.vars().into_iter().collect();
        vars[name].as_tensor().sum_all()?.to_scalar::<f32>()
    }

    #[test]
    fn a_resume_takes_frozen_weights_from_init_and_trained_ones_from_the_checkpoint() -> Result<()>
    {
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let ckpt = dir.path().join("ckpt");
        let build = || -> Result<(ParamStore, AdamW)> {
            let p = ParamStore::new(0, &Device::Cpu).with_frozen(|n| n.starts_with("frozen."));
            p.pp("frozen").normal("w", 4, 1.0)?;
            p.pp("trained").normal("w", 4, 1.0)?;
            let opt = AdamW::with_default_groups(p.trainable_vars(), AdamWConfig::default())?;
            Ok((p, opt))
        };
        let set = |p: &ParamStore, name: &str, v: f32| -> Result<()> {
            let vars: std::collections::BTreeMap<_, _> = p.vars().into_iter().collect();
            vars[name].set(&Tensor::full(v, 4, &Device::Cpu)?.to_dtype(DType::F32)?)
        };
        let (first, opt) = build()?;
        set(&first, "trained.w", 2.0)?;
        Checkpoint::save(&ckpt, &opt, &step_0())?;

        let (again, mut opt) = build()?;
        let start = resume_or_init(&again, &mut opt, &ckpt, &mut Quiet, |_| {
            set(&again, "frozen.w", 3.0)
        })?;
        assert_eq!(start, Progress::default());
        assert_eq!(value(&again, "frozen.w")?, 12.0, "init ran on resume");
        assert_eq!(
            value(&again, "trained.w")?,
            8.0,
            "the checkpoint's trained weights"
        );
        Ok(())
    }
}
