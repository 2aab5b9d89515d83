//! Resizing a ViT's grid of learned position embeddings, so that a checkpoint trained at one
//! image size runs at another (CLIP ViT-B/16's 224 px on 32-px shards).
//!
//! Bicubic, exactly as Hugging Face's `interpolate_pos_encoding` does it with PyTorch's
//! `interpolate(mode="bicubic", align_corners=False)`: Keys' cubic kernel with a = −0.75, source
//! coordinates `(i + 0.5)·old/new − 0.5`, reads past the border clamped to the edge, no
//! antialiasing when shrinking. Computed in f64.

/// PyTorch's cubic convolution constant.
const A: f64 = -0.75;

/// The four weights of the samples at offsets −1, 0, 1, 2 from `floor(x)`, for `t = x − floor(x)`.
fn weights(t: f64) -> [f64; 4] {
    // |d| ≤ 1 and 1 < |d| < 2 pieces of the kernel.
    let near = |d: f64| ((A + 2.0) * d - (A + 3.0)) * d * d + 1.0;
    let far = |d: f64| ((A * d - 5.0 * A) * d + 8.0 * A) * d - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each output index, the four clamped input indices and their weights.
fn taps(old: usize, new: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = old as f64 / new as f64;
    (0..new)
        .map(|i| {
            let x = (i as f64 + 0.5) * scale - 0.5;
            let base = x.floor();
            let at = |k: i64| (base as i64 + k).clamp(0, old as i64 - 1) as usize;
            ([at(-1), at(0), at(1), at(2)], weights(x - base))
        })
        .collect()
}

/// `grid`: `old × old` rows of `width` values (row-major, as a ViT orders its patches).
/// Returns `new × new` rows of `width`.
pub fn resize_grid(grid: &[f32], old: usize, new: usize, width: usize) -> Vec<f32> {
    assert_eq!(
        grid.len(),
        old * old * width,
        "resize_grid: not an old² grid"
    );
    let taps = taps(old, new);
    // Along x first (old rows × new columns), then along y.
    let mut rows = vec![0f64; old * new * width];
    for y in 0..old {
        for (x, (idx, w)) in taps.iter().enumerate() {
            let out = &mut rows[(y * new + x) * width..][..width];
            for (&i, &wi) in idx.iter().zip(w) {
                let src = &grid[(y * old + i) * width..][..width];
                out.iter_mut()
                    .zip(src)
                    .for_each(|(o, &s)| *o += wi * f64::from(s));
            }
        }
    }
    let mut out = vec![0f64; new * new * width];
    for (y, (idx, w)) in taps.iter().enumerate() {
        for x in 0..new {
            let dst = &mut out[(y * new + x) * width..][..width];
            for (&i, &wi) in idx.iter().zip(w) {
                let src = &rows[(i * new + x) * width..][..width];
                dst.iter_mut().zip(src).for_each(|(o, &s)| *o += wi * s);
            }
        }
    }
    out.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_weights_sum_to_one_and_pick_the_sample_at_zero() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            let w = weights(t);
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{t}: {w:?}");
        }
        assert_eq!(weights(0.0), [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn the_same_size_is_the_identity_and_a_constant_stays_constant() {
        let grid: Vec<f32> = (0..3 * 3 * 2).map(|i| i as f32 * 0.5 - 3.0).collect();
        assert_eq!(resize_grid(&grid, 3, 3, 2), grid);
        let flat = vec![1.25f32; 4 * 4 * 3];
        for new in [2, 7] {
            let out = resize_grid(&flat, 4, new, 3);
            assert_eq!(out.len(), new * new * 3);
            assert!(out.iter().all(|v| (v - 1.25).abs() < 1e-6), "{out:?}");
        }
    }
}
