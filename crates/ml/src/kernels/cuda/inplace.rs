//! Mutable access to CUDA tensors' storage, for a kernel that updates several tensors in place,
//! in safe code.
//!
//! Candle lends a tensor's storage mutably only to an in-place op (`InplaceOp1`), one tensor per
//! op, for the duration of its `cuda_fwd`. `with_storage_mut` wraps a closure in such an op, so
//! nesting it once per tensor gives the innermost closure `&mut` to all of them, each under its
//! own write lock. Writing through the `&CudaStorage` of a shared borrow would also work on the
//! device but would lie to candle's locks and to cudarc's read/write event tracking.

use std::cell::Cell;

use candle_core::{CpuStorage, CudaStorage, InplaceOp1, Layout, Result, Storage, Tensor};

use super::launch::cpu_unsupported;

/// Runs `f` on `t`'s CUDA storage and layout, holding its write lock.
pub(super) fn with_storage_mut(
    t: &Tensor,
    f: impl FnOnce(&mut CudaStorage, &Layout) -> Result<()>,
) -> Result<()> {
    t.inplace_op1(&StorageMut(Cell::new(Some(f))))
}

/// Whether no two tensors share a storage: locking one storage twice would deadlock.
pub(super) fn distinct_storages(tensors: &[&Tensor]) -> bool {
    let addr = |t: &Tensor| {
        let (storage, _) = t.storage_and_layout();
        std::ptr::from_ref::<Storage>(&*storage).addr()
    };
    let mut addrs: Vec<usize> = tensors.iter().map(|t| addr(t)).collect();
    addrs.sort_unstable();
    addrs.windows(2).all(|w| w[0] != w[1])
}

/// An in-place op that runs its closure once (candle calls `cuda_fwd` once per application).
struct StorageMut<F>(Cell<Option<F>>);

impl<F: FnOnce(&mut CudaStorage, &Layout) -> Result<()>> InplaceOp1 for StorageMut<F> {
    fn name(&self) -> &'static str {
        "cuda-storage-mut"
    }

    fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> Result<()> {
        Err(cpu_unsupported(self.name()))
    }

    fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &Layout) -> Result<()> {
        match self.0.take() {
            Some(f) => f(storage, layout),
            None => candle_core::bail!("{}: applied twice", self.name()),
        }
    }
}
