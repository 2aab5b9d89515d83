//! The pieces of a training step that every training stage shares.
//!
//! A step: run the loss on each micro-batch and backpropagate, sum the parameters' gradients and
//! scale them by 1/micro-batches (one big batch, in pieces that fit memory), clip the global
//! norm, and take an AdamW step. The loop around it (data, schedule, logging) is the caller's.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

use super::optim::{AdamW, clip_grad_norm};

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

#[cfg(test)]
#[path = "step_tests.rs"]
mod tests;
