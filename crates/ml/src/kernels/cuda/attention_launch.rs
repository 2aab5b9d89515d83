//! What the attention kernels' launches share: the module, the tile shapes the kernels were
//! compiled with, the sizes of a call, its scalar parameters, and the mask argument.

use candle_core::cuda_backend::CudaDType;
use candle_core::cuda_backend::cudarc::driver::{
    CudaView, DeviceRepr, LaunchArgs, LaunchConfig, PushKernelArg,
};
use candle_core::{DType, Layout, Result, Shape, Storage, WithDType};

use super::launch::{Module, cuda_storage, to_i32, to_u32};

pub(super) const MODULE: Module = Module {
    name: "vlmflow_attention",
    ptx: include_str!(concat!(env!("OUT_DIR"), "/attention.ptx")),
};

/// What the kernels load and store: f32 or bf16.
pub(super) trait Element: CudaDType + DeviceRepr + WithDType {}
impl<T: CudaDType + DeviceRepr + WithDType> Element for T {}

/// Threads per block of every attention kernel (`THREADS` in `attention_tiles.cuh`).
pub(super) const THREADS: u32 = 256;

/// The tile shape the kernels of one head dim were compiled with: `rows` rows of the block's own
/// tile (32·R: queries, or keys in grad_kv), streamed tiles of `cols` rows (8·CJ). Must match
/// `ATTENTION_KERNELS` in `attention.cu`, as must the shared-memory sizes below.
#[derive(Clone, Copy)]
pub(super) struct Tiles {
    d: usize,
    rows: usize,
    cols: usize,
}

impl Tiles {
    pub fn for_head_dim(d: usize) -> Option<Self> {
        let cols = match d {
            32 | 64 => 64,
            128 => 32,
            _ => return None,
        };
        Some(Self { d, rows: 64, cols })
    }

    /// Floats per row of a d-wide tile, and of a score tile.
    fn ld(&self) -> usize {
        self.d + 4
    }

    fn sld(&self) -> usize {
        self.cols + 4
    }

    pub fn fwd_smem(&self) -> usize {
        4 * (self.rows * self.ld() + 2 * self.cols * self.ld() + self.rows * self.sld())
    }

    pub fn grad_q_smem(&self) -> usize {
        4 * (2 * self.rows * self.ld() + 2 * self.cols * self.ld() + self.rows * self.sld())
    }

    pub fn grad_kv_smem(&self) -> usize {
        let tiles = 2 * self.rows * self.ld() + 2 * self.cols * self.ld();
        4 * (tiles + 2 * self.rows * self.sld() + 2 * self.cols)
    }

    /// A block per (row tile of `len` rows, head, sample).
    pub fn grid(&self, len: usize, heads: usize, n: usize, smem: usize) -> Result<LaunchConfig> {
        Ok(LaunchConfig {
            grid_dim: (
                to_u32(len.div_ceil(self.rows), "row tiles")?,
                to_u32(heads, "heads")?,
                to_u32(n, "batch")?,
            ),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: to_u32(smem, "shared memory")?,
        })
    }
}

/// The sizes of one call, read off q `(N, Tq, H·d)` and k `(N, Tk, KV·d)`.
#[derive(Clone, Copy)]
pub(super) struct Dims {
    pub n: usize,
    pub tq: usize,
    pub tk: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
}

impl Dims {
    pub fn new(q: &Shape, k: &Shape, heads: usize, kv_heads: usize) -> Result<Self> {
        let (n, tq, c) = q.dims3()?;
        let (_, tk, _) = k.dims3()?;
        Ok(Self {
            n,
            tq,
            tk,
            heads,
            kv_heads,
            d: c / heads,
        })
    }

    pub fn tiles(&self) -> Result<Tiles> {
        match Tiles::for_head_dim(self.d) {
            Some(t) => Ok(t),
            None => candle_core::bail!("attention: no kernel for head dim {}", self.d),
        }
    }

    /// `attention_{what}_{f32|bf16}_d{d}`.
    pub fn kernel_name<T: WithDType>(&self, what: &str) -> String {
        format!("attention_{what}_{}_d{}", dtype_name::<T>(), self.d)
    }

    pub fn scalars(&self, mask: &MaskArg) -> Result<Scalars> {
        Ok(Scalars {
            tq: to_i32(self.tq, "Tq")?,
            tk: to_i32(self.tk, "Tk")?,
            heads: to_i32(self.heads, "heads")?,
            kv_heads: to_i32(self.kv_heads, "kv heads")?,
            scale: 1.0 / (self.d as f32).sqrt(),
            mask_strides: mask.strides,
        })
    }
}

/// Kernel arguments that must outlive the launch builder that points at them.
pub(super) struct Scalars {
    tq: i32,
    tk: i32,
    heads: i32,
    kv_heads: i32,
    scale: f32,
    mask_strides: [i64; 3],
}

impl Scalars {
    /// The kernels' trailing parameters, in their order: tq, tk, heads, kv_heads, scale, then
    /// the mask's strides.
    pub fn push<'a>(&'a self, args: &mut LaunchArgs<'a>) {
        args.arg(&self.tq).arg(&self.tk).arg(&self.heads);
        args.arg(&self.kv_heads).arg(&self.scale);
        for stride in &self.mask_strides {
            args.arg(stride);
        }
    }
}

pub(super) fn dtype_name<T: WithDType>() -> &'static str {
    match T::DTYPE {
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// The mask as the kernels take it: its elements from its start offset, and its strides over
/// (sample, query, key), 0 where broadcast; or a null pointer.
pub(super) struct MaskArg<'a> {
    view: Option<CudaView<'a, f32>>,
    strides: [i64; 3],
}

/// The kernels test the mask pointer for null.
const NULL: u64 = 0;

impl<'a> MaskArg<'a> {
    /// `locked`: the `(N, 1, Tq, Tk)` broadcast mask's (locked) storage and layout, if any.
    pub fn new(locked: Option<(&'a Storage, &'a Layout)>, dims: &Dims) -> Result<Self> {
        let Some((storage, layout)) = locked else {
            return Ok(Self {
                view: None,
                strides: [0; 3],
            });
        };
        if layout.dims() != [dims.n, 1, dims.tq, dims.tk] {
            candle_core::bail!("attention: mask {:?}", layout.dims());
        }
        let slice = cuda_storage(storage, "attention mask")?.as_cuda_slice::<f32>()?;
        let s = layout.stride();
        Ok(Self {
            view: Some(slice.slice(layout.start_offset()..)),
            strides: [s[0] as i64, s[2] as i64, s[3] as i64],
        })
    }

    pub fn push<'b>(&'b self, args: &mut LaunchArgs<'b>) {
        match &self.view {
            Some(v) => args.arg(v),
            None => args.arg(&NULL),
        };
    }
}
