//! The pieces of a training step that every training stage shares, and checkpoints.
//!
//! A step: run the loss on each micro-batch and backpropagate, sum the parameters' gradients and
//! scale them by 1/micro-batches (one big batch, in pieces that fit memory), clip the global
//! norm, and take an AdamW step. The loop around it (data, schedule, logging) is the caller's.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{Error, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::optim::{AdamW, clip_grad_norm};
use crate::param_store::{ParamStore, load_vars, save_vars};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean loss over the micro-batches.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// Runs `loss_fn(i)` for micro-batches `i = 0..micro_batches`, backpropagates each, and returns
/// the mean loss and the mean gradient of each of `params` (intermediate tensors' gradients are
/// dropped as soon as each backward pass ends, so memory holds one graph at a time).
pub fn accumulate_grads(
    params: &[(String, Var)],
    micro_batches: usize,
    mut loss_fn: impl FnMut(usize) -> Result<Tensor>,
) -> Result<(f64, GradStore)> {
    if micro_batches == 0 {
        candle_core::bail!("accumulate_grads: zero micro-batches");
    }
    let mut total = GradStore::default();
    let mut loss_sum = 0f64;
    for i in 0..micro_batches {
        let loss = loss_fn(i)?;
        loss_sum += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        let mut grads = loss.backward()?;
        for (_, var) in params {
            if let Some(g) = grads.remove(var) {
                let g = match total.remove(var) {
                    Some(acc) => (acc + g)?,
                    None => g,
                };
                total.insert(var, g);
            }
        }
    }
    if micro_batches > 1 {
        let scale = 1.0 / micro_batches as f64;
        for (_, var) in params {
            if let Some(g) = total.remove(var) {
                total.insert(var, (g * scale)?);
            }
        }
    }
    Ok((loss_sum / micro_batches as f64, total))
}

/// One optimizer step at learning rate `lr`: accumulate, clip to `max_grad_norm` (if any), step.
pub fn train_step(
    opt: &mut AdamW,
    lr: f64,
    micro_batches: usize,
    max_grad_norm: Option<f64>,
    loss_fn: impl FnMut(usize) -> Result<Tensor>,
) -> Result<StepStats> {
    let params: Vec<(String, Var)> = opt.params().cloned().collect();
    let (loss, mut grads) = accumulate_grads(&params, micro_batches, loss_fn)?;
    let max = max_grad_norm.unwrap_or(f64::INFINITY);
    let grad_norm = clip_grad_norm(&mut grads, &params, max)?;
    opt.set_lr(lr);
    opt.step(&grads)?;
    Ok(StepStats {
        loss,
        grad_norm,
        lr,
    })
}

/// Everything besides tensors needed to resume a run exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// The model config, as the stage wrote it (e.g. a serialised `ClipConfig`).
    pub config: serde_json::Value,
    /// The data-order generator, as it stands after `step` steps.
    pub rng: Rng,
    /// Samples consumed (or whatever position the data pipeline needs to resume).
    pub data_position: u64,
    /// (step, loss) of every step so far: a resumed run's loss curve is whole, not only the part
    /// after the resume. Absent in checkpoints written before it was kept.
    #[serde(default)]
    pub losses: Vec<(u64, f64)>,
}

/// A checkpoint folder: `model.safetensors` (the parameters the optimizer trains; frozen ones
/// never change, so they are not copied), `optimizer.safetensors`, `state.json`.
pub struct Checkpoint;

const MODEL: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const STATE: &str = "state.json";

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

fn fsync(path: &Path) -> Result<()> {
    fs::File::open(path)?.sync_all()?;
    Ok(())
}

impl Checkpoint {
    /// Writes the checkpoint to `dir` atomically: into `<dir>.tmp`, fsynced, then renamed over
    /// `dir`. A crash leaves either the old checkpoint or the new one, never a mix.
    pub fn save(dir: &Path, opt: &AdamW, state: &TrainState) -> Result<()> {
        let tmp = sibling(dir, ".tmp");
        let old = sibling(dir, ".old");
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let trained: Vec<(String, Var)> = opt.params().cloned().collect();
        save_vars(&trained, &tmp.join(MODEL))?;
        opt.save(&tmp.join(OPTIMIZER))?;
        let mut f = fs::File::create(tmp.join(STATE))?;
        f.write_all(&serde_json::to_vec_pretty(state).map_err(Error::wrap)?)?;
        f.sync_all()?;
        fsync(&tmp.join(MODEL))?;
        fsync(&tmp.join(OPTIMIZER))?;
        fsync(&tmp)?;
        // A directory cannot be renamed over a non-empty one: move the old one aside first.
        if dir.exists() {
            if old.exists() {
                fs::remove_dir_all(&old)?;
            }
            fs::rename(dir, &old)?;
        }
        fs::rename(&tmp, dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync(parent)?;
        }
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        Ok(())
    }

    /// The folder to read: `dir`, or `<dir>.old` when a crash struck between the two renames.
    fn resolve(dir: &Path) -> Result<PathBuf> {
        let old = sibling(dir, ".old");
        if dir.join(STATE).exists() {
            Ok(dir.to_path_buf())
        } else if old.join(STATE).exists() {
            Ok(old)
        } else {
            Err(Error::Msg(format!(
                "{}: no checkpoint here ({STATE} missing)",
                dir.display()
            )))
        }
    }

    /// Reads only `state.json`: enough to rebuild the model from its config before `load`.
    pub fn read_state(dir: &Path) -> Result<TrainState> {
        let path = Self::resolve(dir)?.join(STATE);
        let bytes = fs::read(&path)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
    }

    /// Overwrites `params` and `opt` from the checkpoint and returns its state.
    pub fn load(dir: &Path, params: &ParamStore, opt: &mut AdamW) -> Result<TrainState> {
        let state = Self::read_state(dir)?;
        let dir = Self::resolve(dir)?;
        let trained: Vec<(String, Var)> = opt.params().cloned().collect();
        load_vars(&trained, &dir.join(MODEL), params.device())?;
        opt.load(&dir.join(OPTIMIZER))?;
        if opt.step_count() != state.step {
            candle_core::bail!(
                "{}: optimizer is at step {}, state.json says {}",
                dir.display(),
                opt.step_count(),
                state.step
            );
        }
        Ok(state)
    }
}

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
