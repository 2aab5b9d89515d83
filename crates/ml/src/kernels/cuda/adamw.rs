//! One fused AdamW step on CUDA (`adamw.cu`): p, m and v updated in place in one pass, exactly
//! as `train/optim.rs` computes it (PyTorch's AdamW).
//!
//! In place because the optimizer's state tensors must keep their identity (and a step should
//! not allocate three parameter-sized tensors). See `inplace.rs` for how p, m and v are borrowed
//! mutably without unsafe code.

use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{Result, Tensor, Var};

use super::inplace::{distinct_storages, with_storage_mut};
use super::launch::{Kernel, Module, cuda_storage, launch, require_f32, to_u32, view, view_mut};

const MODULE: Module = Module {
    name: "vlmflow_adamw",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/adamw.ptx")),
};

/// The step's scalars. `lr` is the group's (scheduled, scaled) learning rate;
/// `bias_correction1 = 1 − β1ᵗ`, `bias_correction2 = 1 − β2ᵗ` at step t (from 1).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
}

/// `p ← p·(1 − lr·wd)`, `m ← β1 m + (1−β1) g`, `v ← β2 v + (1−β2) g²`,
/// `p ← p − lr/bc1 · m / (√v/√bc2 + ε)`; all f32, same shape, on one CUDA device.
pub fn adamw_step(
    param: &Var,
    grad: &Tensor,
    m: &Tensor,
    v: &Tensor,
    step: &AdamWStep,
) -> Result<()> {
    let p = param.as_tensor();
    require_f32("adamw_step", &[p, grad, m, v])?;
    if [grad, m, v].iter().any(|t| t.shape() != p.shape()) {
        candle_core::bail!(
            "adamw_step: param {:?}, grad {:?}, m {:?}, v {:?}",
            p.shape(),
            grad.shape(),
            m.shape(),
            v.shape()
        );
    }
    if [grad, m, v]
        .iter()
        .any(|t| !t.device().same_device(p.device()))
    {
        candle_core::bail!("adamw_step: param, grad, m and v must be on one device");
    }
    let g = grad.contiguous()?;
    if !distinct_storages(&[p, &g, m, v]) {
        candle_core::bail!("adamw_step: param, grad, m and v must be four separate tensors");
    }
    let n = p.elem_count();
    if n == 0 {
        return Ok(());
    }
    let cfg = LaunchConfig {
        // A grid-stride loop: enough blocks to fill an H200 several times over, no more.
        grid_dim: (to_u32(n.div_ceil(256).min(4096), "blocks")?, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    with_storage_mut(p, |ps, pl| {
        with_storage_mut(m, |ms, ml| {
            with_storage_mut(v, |vs, vl| {
                let (gs, gl) = g.storage_and_layout();
                let gs = cuda_storage(&gs, "adamw_step grad")?;
                let kernel = Kernel::load(&gs.device, &MODULE, "adamw_step")?;
                let grad = view::<f32>(gs, gl, "adamw_step grad")?;
                let mut p = view_mut::<f32>(ps, pl, "adamw_step param")?;
                let mut m = view_mut::<f32>(ms, ml, "adamw_step m")?;
                let mut v = view_mut::<f32>(vs, vl, "adamw_step v")?;
                let len = n as u64;
                let mut args = kernel.builder();
                args.arg(&mut p)
                    .arg(&grad)
                    .arg(&mut m)
                    .arg(&mut v)
                    .arg(&len);
                args.arg(&step.lr)
                    .arg(&step.beta1)
                    .arg(&step.beta2)
                    .arg(&step.eps);
                args.arg(&step.weight_decay);
                args.arg(&step.bias_correction1).arg(&step.bias_correction2);
                launch(args, cfg)
            })
        })
    })
}
