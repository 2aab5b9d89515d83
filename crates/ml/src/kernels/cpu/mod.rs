//! CPU kernels on contiguous f32 data, split over rayon, one file per thing computed.
//!
//! Why: candle composes LayerNorm, softmax, GELU, attention and the rest from many elementwise
//! ops, each allocating a full tensor, and their backward passes go through a generic
//! broadcast-reduction loop. One pass per direction here is ~1.5× faster end to end
//! (CANDLE-NOTES.md). Every kernel works on `(rows, cols)` views and makes column reductions in
//! fixed row blocks (`rows.rs`), so results do not depend on the number of threads. Each is
//! checked against the composite form of its op in `ops` (values and gradients).

pub mod activation;
pub mod attention;
pub mod bias_add;
pub mod cross_entropy;
pub mod fast_math;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod rows;
pub mod softmax;
