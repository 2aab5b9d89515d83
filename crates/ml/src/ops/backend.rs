//! Which implementation an op runs: the one place that chooses, by device and dtype, between a
//! hand-written kernel (`kernels`) and the op's composite form built from candle primitives.
//!
//! Today the only kernels are for f32 on the CPU. A CUDA kernel adds a variant here, and the
//! compiler then points at every op that has to say what it does with it.

use std::cell::Cell;

use candle_core::{DType, Tensor};

thread_local! {
    static USE_KERNELS: Cell<bool> = const { Cell::new(true) };
}

/// Runs `f` with the kernels switched off on this thread (for tests and benches): every op takes
/// its composite form.
pub fn with_composite<R>(f: impl FnOnce() -> R) -> R {
    let before = USE_KERNELS.with(|c| c.replace(false));
    let out = f();
    USE_KERNELS.with(|c| c.set(before));
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The fused kernel from `kernels::cpu`: f32 tensors on the CPU.
    Cpu,
    /// The composite form: any other device or dtype, or inside `with_composite`.
    Composite,
}

/// The implementation an op on `x` (its first input) runs.
pub(crate) fn backend(x: &Tensor) -> Backend {
    let kernels = USE_KERNELS.with(|c| c.get());
    if kernels && x.device().is_cpu() && x.dtype() == DType::F32 {
        Backend::Cpu
    } else {
        Backend::Composite
    }
}
