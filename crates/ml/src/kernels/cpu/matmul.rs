//! Matrix products on f32 slices through the `gemm` crate (candle's own CPU kernel), for the
//! fused ops that work below candle's tensors. Views are strided, so one head's columns of a
//! `(T, C)` activation, a block of its rows, or a transpose are read and written in place.

use std::marker::PhantomData;

pub use gemm::Parallelism;

/// Parallelism for a product that has the machine to itself (not inside a rayon task).
pub fn all_threads() -> Parallelism {
    match rayon::current_num_threads() {
        1 => Parallelism::None,
        n => Parallelism::Rayon(n),
    }
}

/// A read-only row-major view: `rows × cols`, row stride `rs`, column stride `cs`. A transpose
/// is the same memory with the strides swapped.
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    ptr: *const f32,
    rows: usize,
    cols: usize,
    rs: isize,
    cs: isize,
    _data: PhantomData<&'a [f32]>,
}

impl<'a> Mat<'a> {
    /// All of `data` as a contiguous `rows × cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matmul: view does not cover its slice"
        );
        Self::strided(data, rows, cols, cols)
    }

    /// `rows × cols` starting at `data[0]`, each row `row_stride` after the last.
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows == 0 || (rows - 1) * row_stride + cols <= data.len(),
            "matmul: view outside its slice"
        );
        Self {
            ptr: data.as_ptr(),
            rows,
            cols,
            rs: row_stride as isize,
            cs: 1,
            _data: PhantomData,
        }
    }

    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// A writable row-major view: `rows × cols`, row stride `rs`, contiguous rows.
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    rs: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * cols,
            "matmul: view does not cover its slice"
        );
        Self::strided(data, rows, cols, cols)
    }

    pub fn strided(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows == 0 || (rows - 1) * row_stride + cols <= data.len(),
            "matmul: view outside its slice"
        );
        Self {
            data,
            rows,
            cols,
            rs: row_stride,
        }
    }
}

/// `dst = scale·a·b`, or `dst += scale·a·b` when `accumulate`.
pub fn matmul_into(dst: MatMut, a: Mat, b: Mat, scale: f32, accumulate: bool, par: Parallelism) {
    assert_eq!(a.cols, b.rows, "matmul: inner dimensions differ");
    assert_eq!(
        (dst.rows, dst.cols),
        (a.rows, b.cols),
        "matmul: wrong output shape"
    );
    if dst.rows == 0 || dst.cols == 0 {
        return;
    }
    // SAFETY: every view lies inside its slice (asserted when it was made); `dst` is a `&mut`
    // slice, so it does not alias the inputs.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.data.as_mut_ptr(),
            1,
            dst.rs as isize,
            accumulate,
            a.ptr,
            a.cs,
            a.rs,
            b.ptr,
            b.cs,
            b.rs,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            par,
        )
    }
}
