//! CPU kernels on contiguous f32 data, split over rayon.
//!
//! Every kernel works on a `(rows, cols)` view and makes column reductions (bias or norm-weight
//! gradients) in fixed row blocks summed in block order (`rows.rs`), so results do not depend on
//! the number of threads: resumed runs stay bit-identical. Each is checked against the composite
//! form of its op in `ops` (values and gradients).

pub mod attention;
pub mod cross_entropy;
pub mod decoder;
pub mod fast_math;
pub mod linear;
pub mod matmul;
pub mod rows;
