//! Which implementation an op runs: the one place that chooses, by device and dtype, between a
//! hand-written kernel (`kernels`) and the op's composite form built from candle primitives.
//!
//! The CPU kernels take f32 tensors. The CUDA kernels (`kernels::cuda`) run only when asked for
//! with `VLMFLOW_CUDA_KERNELS=1`: they have been checked against their composites in a build
//! without a GPU only, and stay opt-in until `scripts/gpu/run` has checked them on one.

use std::cell::Cell;
use std::sync::OnceLock;

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

/// The variable that switches the CUDA kernels on.
pub const CUDA_KERNELS_VAR: &str = "VLMFLOW_CUDA_KERNELS";

/// Whether this build has the CUDA kernels and `VLMFLOW_CUDA_KERNELS=1` asks for them.
pub fn cuda_kernels_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    cfg!(feature = "cuda")
        && *ON.get_or_init(|| std::env::var(CUDA_KERNELS_VAR).is_ok_and(|v| v == "1"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The fused kernel from `kernels::cpu`: f32 tensors on the CPU.
    Cpu,
    /// The kernel from `kernels::cuda`, where the op has one: tensors on a GPU, kernels enabled.
    Cuda,
    /// The composite form: any other device or dtype, or inside `with_composite`.
    Composite,
}

/// The implementation an op on `x` (its first input) runs.
pub(crate) fn backend(x: &Tensor) -> Backend {
    if !USE_KERNELS.with(|c| c.get()) {
        Backend::Composite
    } else if x.device().is_cpu() && x.dtype() == DType::F32 {
        Backend::Cpu
    } else if x.device().is_cuda() && cuda_kernels_enabled() {
        Backend::Cuda
    } else {
        Backend::Composite
    }
}
