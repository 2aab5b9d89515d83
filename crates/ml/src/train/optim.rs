//! AdamW with parameter groups and a saveable state (candle-nn's has neither).
//!
//! The update is PyTorch's `torch.optim.AdamW`, so that runs compare across the two:
//! `p ← p·(1 − lr·wd)`, then `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
//! Moments are f32 whatever the parameters' dtype.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.05,
        }
    }
}

/// Parameters sharing a learning-rate multiplier and a weight decay.
#[derive(Clone, Debug)]
pub struct ParamGroup {
    pub name: String,
    /// The group's learning rate is `lr_scale ×` the optimizer's (scheduled) learning rate.
    pub lr_scale: f64,
    pub weight_decay: f64,
    pub params: Vec<(String, Var)>,
}

/// Whether a parameter is exempt from weight decay, by its name: norms, biases, embeddings
/// (token, position, class) and the temperature. Decaying them hurts and buys no regularisation.
pub fn no_decay(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "bias"
        || last == "logit_scale"
        || last.contains("embedding")
        || name
            .split('.')
            .any(|seg| seg.starts_with("ln") || seg.contains("norm"))
}

/// Two groups, `decay` and `no_decay` (see `no_decay`), both at learning-rate scale 1.
pub fn default_groups(params: Vec<(String, Var)>, weight_decay: f64) -> Vec<ParamGroup> {
    let (nd, d): (Vec<_>, Vec<_>) = params.into_iter().partition(|(n, _)| no_decay(n));
    let group = |name: &str, wd, params| ParamGroup {
        name: name.into(),
        lr_scale: 1.0,
        weight_decay: wd,
        params,
    };
    vec![group("decay", weight_decay, d), group("no_decay", 0.0, nd)]
}

struct Moments {
    m: Tensor,
    v: Tensor,
}

/// One parameter's update constants at the current step.
struct Hyper {
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    weight_decay: f64,
    /// `1 − β1ᵗ`, `1 − β2ᵗ`.
    bc1: f64,
    bc2: f64,
}

/// The whole update of an f32 parameter on a GPU as one in-place kernel, when the CUDA kernels
/// are on (`ops::backend`); `false` when the composite update below has to run instead.
#[cfg(feature = "cuda")]
fn fused_step(var: &Var, g: &Tensor, st: &Moments, h: &Hyper) -> Result<bool> {
    use crate::kernels::cuda::{AdamWStep, adamw_step};
    let p = var.as_tensor();
    if !(p.device().is_cuda()
        && p.dtype() == DType::F32
        && crate::ops::backend::cuda_kernels_enabled())
    {
        return Ok(false);
    }
    let step = AdamWStep {
        lr: h.lr as f32,
        beta1: h.b1 as f32,
        beta2: h.b2 as f32,
        eps: h.eps as f32,
        weight_decay: h.weight_decay as f32,
        bias_correction1: h.bc1 as f32,
        bias_correction2: h.bc2 as f32,
    };
    adamw_step(var, g, &st.m, &st.v, &step)?;
    Ok(true)
}

#[cfg(not(feature = "cuda"))]
fn fused_step(_var: &Var, _g: &Tensor, _st: &Moments, _h: &Hyper) -> Result<bool> {
    Ok(false)
}

/// The update in candle ops: decoupled weight decay, then the bias-corrected Adam step.
fn composite_step(var: &Var, g: &Tensor, st: &mut Moments, h: &Hyper) -> Result<()> {
    st.m = ((&st.m * h.b1)? + (g * (1.0 - h.b1))?)?;
    st.v = ((&st.v * h.b2)? + (g.sqr()? * (1.0 - h.b2))?)?;
    let denom = ((st.v.sqrt()? / h.bc2.sqrt())? + h.eps)?;
    let update = ((&st.m / &denom)? * (h.lr / h.bc1))?;
    let mut p = var.as_tensor().to_dtype(DType::F32)?;
    if h.weight_decay != 0.0 {
        p = (p * (1.0 - h.lr * h.weight_decay))?;
    }
    var.set(&(p - update)?.to_dtype(var.dtype())?)
}

pub struct AdamW {
    groups: Vec<ParamGroup>,
    cfg: AdamWConfig,
    state: BTreeMap<String, Moments>,
    step: u64,
}

impl AdamW {
    /// `cfg.weight_decay` is unused here: each group carries its own.
    pub fn new(groups: Vec<ParamGroup>, cfg: AdamWConfig) -> Result<Self> {
        let mut state = BTreeMap::new();
        for (name, var) in groups.iter().flat_map(|g| &g.params) {
            let zeros = || Tensor::zeros(var.shape(), DType::F32, var.device());
            let fresh = Moments {
                m: zeros()?,
                v: zeros()?,
            };
            if state.insert(name.clone(), fresh).is_some() {
                candle_core::bail!("adamw: parameter {name} is in two groups");
            }
        }
        Ok(Self {
            groups,
            cfg,
            state,
            step: 0,
        })
    }

    /// The usual setup: `default_groups(params, cfg.weight_decay)`.
    pub fn with_default_groups(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        Self::new(default_groups(params, cfg.weight_decay), cfg)
    }

    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// Every parameter, in group order.
    pub fn params(&self) -> impl Iterator<Item = &(String, Var)> {
        self.groups.iter().flat_map(|g| &g.params)
    }

    pub fn lr(&self) -> f64 {
        self.cfg.lr
    }

    /// Sets the base learning rate (each group applies its `lr_scale`), e.g. from a schedule.
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// One update from `grads`. A parameter without a gradient is left alone (its moments too).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step += 1;
        let AdamWConfig {
            lr,
            beta1: b1,
            beta2: b2,
            eps,
            ..
        } = self.cfg;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for group in &self.groups {
            let lr = lr * group.lr_scale;
            for (name, var) in &group.params {
                let Some(g) = grads.get(var) else { continue };
                let g = g.to_dtype(DType::F32)?;
                let st = self.state.get_mut(name).expect("moments exist");
                let hyper = Hyper {
                    lr,
                    b1,
                    b2,
                    eps,
                    weight_decay: group.weight_decay,
                    bc1,
                    bc2,
                };
                if !fused_step(var, &g, st, &hyper)? {
                    composite_step(var, &g, st, &hyper)?;
                }
            }
        }
        Ok(())
    }

    /// `m.<name>`, `v.<name>` for every parameter, and `step` (one f64: exact to 2⁵³), ready for
    /// `candle_core::safetensors::save`.
    pub fn state_dict(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, st) in &self.state {
            out.insert(format!("m.{name}"), st.m.clone());
            out.insert(format!("v.{name}"), st.v.clone());
        }
        let dev = self.state.values().next().map(|s| s.m.device().clone());
        let dev = dev.unwrap_or(candle_core::Device::Cpu);
        out.insert("step".into(), Tensor::new(&[self.step as f64], &dev)?);
        Ok(out)
    }

    /// Restores what `state_dict` returned; every parameter's moments must be present.
    pub fn load_state(&mut self, mut dict: BTreeMap<String, Tensor>) -> Result<()> {
        let step = dict
            .remove("step")
            .ok_or_else(|| candle_core::Error::Msg("adamw state: no `step`".into()))?;
        for (name, st) in self.state.iter_mut() {
            for (key, slot) in [("m", &mut st.m), ("v", &mut st.v)] {
                let t = dict.remove(&format!("{key}.{name}")).ok_or_else(|| {
                    candle_core::Error::Msg(format!("adamw state: no `{key}.{name}`"))
                })?;
                if t.shape() != slot.shape() {
                    candle_core::bail!("adamw state: {key}.{name} has shape {:?}", t.shape());
                }
                *slot = t.to_dtype(DType::F32)?.to_device(slot.device())?;
            }
        }
        self.step = step.to_dtype(DType::F64)?.to_vec1::<f64>()?[0] as u64;
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let dict: std::collections::HashMap<_, _> = self.state_dict()?.into_iter().collect();
        candle_core::safetensors::save(&dict, path)
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let dev = self.params().next().map(|(_, v)| v.device().clone());
        let dict = candle_core::safetensors::load(path, &dev.unwrap_or(candle_core::Device::Cpu))?;
        self.load_state(dict.into_iter().collect())
    }
}

/// Scales all gradients of `params` so that their global L2 norm is at most `max_norm`.
/// Returns the norm before clipping. Norms are summed in `params` order, so runs repeat exactly.
pub fn clip_grad_norm(
    grads: &mut GradStore,
    params: &[(String, Var)],
    max_norm: f64,
) -> Result<f64> {
    let mut sq = 0f64;
    for (_, var) in params {
        if let Some(g) = grads.get(var) {
            sq += g
                .to_dtype(DType::F32)?
                .sqr()?
                .sum_all()?
                .to_scalar::<f32>()? as f64;
        }
    }
    let norm = sq.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for (_, var) in params {
            if let Some(g) = grads.remove(var) {
                grads.insert(var, (g * scale)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
#[path = "optim_tests.rs"]
mod tests;
