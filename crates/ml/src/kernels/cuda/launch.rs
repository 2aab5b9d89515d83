//! What the kernels' Rust wrappers share: loading a kernel from its embedded PTX, contiguous
//! views of the inputs, output buffers, and the checks before a launch.

use std::cell::Cell;
use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchArgs,
    LaunchConfig,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, DType, Layout, Result, Storage, Tensor, WithDType};

/// One `.cu` file's PTX, compiled by `build.rs`.
pub(super) struct Module {
    /// Unique among the modules candle caches per device.
    pub name: &'static str,
    pub ptx: &'static str,
}

/// A loaded kernel and the device's stream it launches on.
pub(super) struct Kernel {
    function: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    /// Loads `name` from `module` (the module once per device: candle caches it by name).
    pub fn load(dev: &CudaDevice, module: &Module, name: &str) -> Result<Self> {
        let function = dev.get_or_load_custom_func(name, module.name, module.ptx)?;
        Ok(Self {
            function: function.into_cuda_function(),
            stream: dev.cuda_stream(),
        })
    }

    /// Lets the kernel use `bytes` of dynamic shared memory: above 48 KiB the driver refuses a
    /// launch unless the function's limit was raised first.
    pub fn allow_shared_memory(&self, bytes: usize) -> Result<()> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUfunction_attribute as Attr;
        self.stream.context().bind_to_thread().w()?;
        let bytes = to_i32(bytes, "dynamic shared memory bytes")?;
        self.function
            .set_attribute(Attr::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes)
            .w()
    }

    pub fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.function)
    }
}

/// Launches `args` (returning the driver's error, if any). Kernel launches are unsafe because
/// the driver cannot check the arguments against the kernel's parameters: each caller passes
/// them in the order and with the types of the `extern "C"` signature in its `.cu` file.
pub(super) fn launch(mut args: LaunchArgs<'_>, cfg: LaunchConfig) -> Result<()> {
    // SAFETY: see above; buffers are sized by the caller for the grid it launches.
    unsafe { args.launch(cfg) }.w()?;
    Ok(())
}

/// A block of `threads` threads per row, `rows` rows (the row kernels' grid).
pub(super) fn per_row(rows: usize, threads: u32) -> Result<LaunchConfig> {
    Ok(LaunchConfig {
        grid_dim: (to_u32(rows, "rows")?, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    })
}

/// Threads for a block that reduces one row of `cols`: about four values per thread, a power
/// of two from one warp to 1024.
pub(super) fn row_threads(cols: usize) -> u32 {
    cols.div_ceil(4).next_power_of_two().clamp(32, 1024) as u32
}

pub(super) fn to_i32(x: usize, what: &str) -> Result<i32> {
    i32::try_from(x).map_err(|_| candle_core::Error::Msg(format!("{what} = {x} exceeds i32")))
}

pub(super) fn to_u32(x: usize, what: &str) -> Result<u32> {
    u32::try_from(x).map_err(|_| candle_core::Error::Msg(format!("{what} = {x} exceeds u32")))
}

/// The error of a CUDA-only op's `cpu_fwd`.
pub(super) fn cpu_unsupported(op: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "{op} is a CUDA kernel: its inputs must be on a CUDA device"
    ))
}

/// Fails unless every tensor is f32 (the dtype the kernel reads).
pub(super) fn require_f32(op: &str, tensors: &[&Tensor]) -> Result<()> {
    match tensors.iter().find(|t| t.dtype() != DType::F32) {
        Some(t) => candle_core::bail!("{op}: the CUDA kernel takes f32, got {:?}", t.dtype()),
        None => Ok(()),
    }
}

/// The CUDA storage behind a locked tensor (an op's extra input, held in the op itself).
pub(super) fn cuda_storage<'a>(s: &'a Storage, what: &str) -> Result<&'a CudaStorage> {
    match s {
        Storage::Cuda(s) => Ok(s),
        _ => candle_core::bail!("{what}: not on a CUDA device"),
    }
}

/// The elements of a contiguous input, from its layout's start offset.
pub(super) fn view<'a, T: CudaDType>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaView<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: input must be contiguous (call .contiguous() first)");
    };
    Ok(s.as_cuda_slice::<T>()?.slice(start..end))
}

/// The elements of a contiguous tensor written in place, from its layout's start offset.
pub(super) fn view_mut<'a, T: CudaDType>(
    s: &'a mut CudaStorage,
    l: &Layout,
    what: &str,
) -> Result<CudaViewMut<'a, T>> {
    let Some((start, end)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: tensor written in place must be contiguous");
    };
    Ok(s.as_cuda_slice_mut::<T>()?.slice_mut(start..end))
}

thread_local! {
    static POISON: Cell<bool> = const { Cell::new(false) };
}

/// While alive, every buffer the kernels write on this thread starts out NaN, so that an
/// element a kernel forgets to write shows in `check_all`. Candle runs a custom op, its
/// backward included, on the thread that applies it.
pub(super) struct PoisonOutputs {
    before: bool,
}

impl PoisonOutputs {
    pub fn new() -> Self {
        Self {
            before: POISON.with(|p| p.replace(true)),
        }
    }
}

impl Drop for PoisonOutputs {
    fn drop(&mut self) {
        POISON.with(|p| p.set(self.before));
    }
}

/// A buffer of `len` elements for a kernel to fill.
pub(super) fn output<T: DeviceRepr + WithDType>(
    dev: &CudaDevice,
    len: usize,
) -> Result<CudaSlice<T>> {
    if len == 0 {
        candle_core::bail!("cuda kernels: an empty buffer (some dim is 0)");
    }
    if POISON.with(|p| p.get()) {
        return dev.clone_htod(&vec![T::from_f64(f64::NAN); len]);
    }
    // SAFETY: uninitialised device memory; the kernel it is passed to writes every element
    // before anything reads it.
    unsafe { dev.alloc::<T>(len) }
}
