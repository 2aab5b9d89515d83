//! `check_all`: every kernel here, forward and backward, against the op's composite form.
//!
//! Inputs are fresh `randn` draws on the device (never zeros, which hide unwritten outputs and
//! wrong indexing); every buffer a kernel writes starts out NaN (`PoisonOutputs`); references
//! are the composite forms, written here with candle primitives (so that this does not depend
//! on `ops`), run in f64 on the CPU on the same inputs. The error of a result is
//! ‖out − ref‖ / ‖ref‖; NaN never passes.

use candle_core::backprop::GradStore;
use candle_core::{D, DType, Device, Result, Tensor, Var};

use super::check_attention::check_attention;
use super::launch::PoisonOutputs;
use super::{AdamWStep, adamw_step, cross_entropy, layer_norm, rms_norm};

pub(super) const F32_TOLERANCE: f64 = 1e-4;
pub(super) const F32_ATTENTION_TOLERANCE: f64 = 1e-3;
pub(super) const BF16_TOLERANCE: f64 = 2e-2;

/// One compared result.
#[derive(Clone, Debug)]
pub struct KernelCheck {
    pub name: String,
    pub rel_err: f64,
    pub tolerance: f64,
}

impl KernelCheck {
    /// Within tolerance; false for NaN.
    pub fn passed(&self) -> bool {
        self.rel_err <= self.tolerance
    }
}

/// Every check, passed or not (see `KernelCheck::passed`). `device` must be a CUDA device.
pub fn check_all(device: &Device) -> Result<Vec<KernelCheck>> {
    if !device.is_cuda() {
        candle_core::bail!("check_all: the kernels run on a CUDA device, not {device:?}");
    }
    let _poison = PoisonOutputs::new();
    let mut checks = Vec::new();
    check_norms(device, &mut checks)?;
    check_cross_entropy(device, &mut checks)?;
    check_attention(device, &mut checks)?;
    check_adamw(device, &mut checks)?;
    Ok(checks)
}

/// ‖out − reference‖ / ‖reference‖ in f64 on the CPU.
pub(super) fn rel_err(out: &Tensor, reference: &Tensor) -> Result<f64> {
    let flat = |t: &Tensor| -> Result<Vec<f64>> {
        t.to_device(&Device::Cpu)?
            .to_dtype(DType::F64)?
            .flatten_all()?
            .to_vec1()
    };
    let (out, reference) = (flat(out)?, flat(reference)?);
    if out.len() != reference.len() {
        candle_core::bail!("check: {} values against {}", out.len(), reference.len());
    }
    let diff: f64 = out
        .iter()
        .zip(&reference)
        .map(|(o, r)| (o - r) * (o - r))
        .sum();
    let norm: f64 = reference.iter().map(|r| r * r).sum();
    Ok((diff / norm).sqrt())
}

/// The inputs as f64 tensors on the CPU, for the reference.
pub(super) fn to_reference(inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    inputs
        .iter()
        .map(|t| t.to_device(&Device::Cpu)?.to_dtype(DType::F64))
        .collect()
}

/// `f(inputs)` and the gradients of Σ f(inputs)·upstream with respect to each input.
pub(super) fn value_and_grads(
    inputs: &[Tensor],
    upstream: &Tensor,
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let vars = inputs
        .iter()
        .map(Var::from_tensor)
        .collect::<Result<Vec<_>>>()?;
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let out = f(&tensors)?;
    let grads: GradStore = (&out * upstream)?.sum_all()?.backward()?;
    let grads = vars
        .iter()
        .map(|v| match grads.get(v.as_tensor()) {
            Some(g) => Ok(g.clone()),
            None => candle_core::bail!("check: an input got no gradient"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, grads))
}

/// Compares a kernel's value and gradients with the reference's (same inputs, in f64 on the
/// CPU), one check per output: `names[0]` the value, then one per input.
pub(super) fn compare(
    checks: &mut Vec<KernelCheck>,
    names: &[String],
    tolerance: f64,
    inputs: &[Tensor],
    upstream: &Tensor,
    kernel: impl Fn(&[Tensor]) -> Result<Tensor>,
    reference: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<()> {
    let (out, grads) = value_and_grads(inputs, upstream, kernel)?;
    let ref_inputs = to_reference(inputs)?;
    let ref_upstream = &to_reference(std::slice::from_ref(upstream))?[0];
    let (ref_out, ref_grads) = value_and_grads(&ref_inputs, ref_upstream, reference)?;
    let pairs = std::iter::once((&out, &ref_out)).chain(grads.iter().zip(&ref_grads));
    for (name, (o, r)) in names.iter().zip(pairs) {
        checks.push(KernelCheck {
            name: name.clone(),
            rel_err: rel_err(o, r)?,
            tolerance,
        });
    }
    Ok(())
}

fn randn(shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::randn(0f32, 1f32, shape, device)
}

fn layer_norm_reference(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let xhat = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    xhat.broadcast_mul(w)?.broadcast_add(b)
}

fn rms_norm_reference(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

fn check_norms(device: &Device, checks: &mut Vec<KernelCheck>) -> Result<()> {
    // Rows narrower than a block, wider than 1024 threads, and more rows than backward blocks.
    let shapes: [&[usize]; 3] = [&[37, 896], &[2, 19, 1000], &[300, 4099]];
    for shape in shapes {
        let cols = shape[shape.len() - 1];
        let (x, upstream) = (randn(shape, device)?, randn(shape, device)?);
        let w = randn(&[cols], device)?.affine(0.5, 1.0)?;
        let b = randn(&[cols], device)?;
        let eps = 1e-5;
        let names = ["y", "dx", "dw", "db"].map(|o| format!("layer_norm {shape:?} {o}"));
        compare(
            checks,
            &names,
            F32_TOLERANCE,
            &[x.clone(), w.clone(), b],
            &upstream,
            |t| layer_norm(&t[0], &t[1], &t[2], eps as f32),
            |t| layer_norm_reference(&t[0], &t[1], &t[2], eps),
        )?;
        let eps = 1e-6;
        let names = ["y", "dx", "dw"].map(|o| format!("rms_norm {shape:?} {o}"));
        compare(
            checks,
            &names,
            F32_TOLERANCE,
            &[x, w],
            &upstream,
            |t| rms_norm(&t[0], &t[1], eps as f32),
            |t| rms_norm_reference(&t[0], &t[1], eps),
        )?;
    }
    Ok(())
}

fn cross_entropy_reference(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    (log_z - shifted.gather(&targets.unsqueeze(1)?, 1)?)?.squeeze(1)
}

fn check_cross_entropy(device: &Device, checks: &mut Vec<KernelCheck>) -> Result<()> {
    // Qwen2.5's vocabulary; a small one; one smaller than a block.
    for (rows, vocab) in [(5, 151_936), (33, 1000), (7, 37)] {
        let logits = (randn(&[rows, vocab], device)? * 3.0)?;
        let upstream = randn(&[rows], device)?;
        let targets = Tensor::rand(0f32, vocab as f32, rows, device)?
            .floor()?
            .clamp(0f32, (vocab - 1) as f32)?
            .to_dtype(DType::U32)?;
        let ref_targets = targets.to_device(&Device::Cpu)?;
        let names = ["loss", "dlogits"].map(|o| format!("cross_entropy ({rows}, {vocab}) {o}"));
        compare(
            checks,
            &names,
            F32_TOLERANCE,
            &[logits],
            &upstream,
            |t| cross_entropy(&t[0], &targets),
            |t| cross_entropy_reference(&t[0], &ref_targets),
        )?;
    }
    Ok(())
}

/// p, m, v after `steps` AdamW steps from the same state and gradients, the kernel's against
/// `train/optim.rs`'s formula in f64; p compared by its change, which the rounding of p would
/// otherwise hide.
fn check_adamw(device: &Device, checks: &mut Vec<KernelCheck>) -> Result<()> {
    let (shape, steps) = (&[1000, 37][..], 3);
    let (lr, beta1, beta2, eps, weight_decay) = (1e-3, 0.9, 0.98, 1e-6, 0.05);
    let p0 = randn(shape, device)?;
    let m = (randn(shape, device)? * 0.1)?;
    let v = (randn(shape, device)?.sqr()? * 0.01)?;
    let grads = (0..steps)
        .map(|_| randn(shape, device))
        .collect::<Result<Vec<_>>>()?;
    let mut reference = to_reference(&[p0.clone(), m.clone(), v.clone()])?;
    // A copy of p0 (which stays as it is); m and v are updated in place.
    let param = Var::from_tensor(&p0)?;
    for (t, g) in (1..=steps).zip(&grads) {
        let (bc1, bc2) = (1.0 - f64::powi(beta1, t), 1.0 - f64::powi(beta2, t));
        let step = AdamWStep {
            lr: lr as f32,
            beta1: beta1 as f32,
            beta2: beta2 as f32,
            eps: eps as f32,
            weight_decay: weight_decay as f32,
            bias_correction1: bc1 as f32,
            bias_correction2: bc2 as f32,
        };
        adamw_step(&param, g, &m, &v, &step)?;
        let g = &to_reference(std::slice::from_ref(g))?[0];
        let [rp, rm, rv] = [&reference[0], &reference[1], &reference[2]];
        let rm = ((rm * beta1)? + (g * (1.0 - beta1))?)?;
        let rv = ((rv * beta2)? + (g.sqr()? * (1.0 - beta2))?)?;
        let denom = ((rv.sqrt()? / bc2.sqrt())? + eps)?;
        let rp = ((rp * (1.0 - lr * weight_decay))? - ((&rm / &denom)? * (lr / bc1))?)?;
        reference = vec![rp, rm, rv];
    }
    let ref_p0 = &to_reference(std::slice::from_ref(&p0))?[0];
    let moved = (param.as_tensor() - &p0)?;
    let ref_moved = (&reference[0] - ref_p0)?;
    let results = [
        ("p − p0", rel_err(&moved, &ref_moved)?),
        ("m", rel_err(&m, &reference[1])?),
        ("v", rel_err(&v, &reference[2])?),
    ];
    for (what, rel_err) in results {
        checks.push(KernelCheck {
            name: format!("adamw {shape:?} {steps} steps {what}"),
            rel_err,
            tolerance: F32_TOLERANCE,
        });
    }
    Ok(())
}
