//! Compute kernels below candle's tensors: candle custom ops with a hand-written forward and an
//! analytic backward, where candle's composite of many small ops costs too much.
//!
//! Grouped by the device they run on, each file named by what it computes (`cpu/attention.rs`),
//! so that a CUDA kernel for the same op sits at `cuda/attention.rs`. Models never call a kernel:
//! they call `ops`, whose `backend` picks a kernel or the composite form by device and dtype.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(not(feature = "cuda"))]
#[path = "no_cuda.rs"]
pub mod cuda;
