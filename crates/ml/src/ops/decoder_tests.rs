//! Decoder ops: fused against composite (values and gradients), and each against its definition.

use candle_core::{Device, IndexOp, Result, Tensor};

use super::*;
use crate::ops::tests::{check, randn};
use crate::rng::Rng;

#[test]
fn fused_rms_norm_matches_composite_and_definition() -> Result<()> {
    let mut rng = Rng::new(1);
    // 70·3 rows: several row blocks, and the parallel path.
    let x = (randn(&mut rng, &[70, 3, 128], 1.0)? + 0.3)?;
    let w = (randn(&mut rng, &[128], 0.1)? + 1.0)?;
    check(&[x.clone(), w.clone()], |t| rms_norm(&t[0], &t[1], 1e-6))?;
    check(
        &[randn(&mut rng, &[3, 5], 1.0)?, randn(&mut rng, &[5], 1.0)?],
        |t| rms_norm(&t[0], &t[1], 1e-5),
    )?;
    // Row 0 by hand.
    let row = x.i((0, 0))?.to_vec1::<f32>()?;
    let ms = row.iter().map(|v| v * v).sum::<f32>() / 128.0;
    let w = w.to_vec1::<f32>()?;
    let want: Vec<f32> = (0..128)
        .map(|j| row[j] / (ms + 1e-6).sqrt() * w[j])
        .collect();
    let got = rms_norm(&x, &Tensor::new(w.as_slice(), &Device::Cpu)?, 1e-6)?;
    let got = got.i((0, 0))?.to_vec1::<f32>()?;
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "{worst}");
    Ok(())
}

#[test]
fn fused_swiglu_matches_composite() -> Result<()> {
    let mut rng = Rng::new(2);
    let (a, b) = (
        randn(&mut rng, &[40, 600], 2.0)?,
        randn(&mut rng, &[40, 600], 1.0)?,
    );
    check(&[a, b], |t| swiglu(&t[0], &t[1]))?;
    let (a, b) = (
        randn(&mut rng, &[3, 7], 2.0)?,
        randn(&mut rng, &[3, 7], 1.0)?,
    );
    check(&[a, b], |t| swiglu(&t[0], &t[1]))
}

#[test]
fn fused_rope_matches_composite() -> Result<()> {
    let mut rng = Rng::new(3);
    let dev = Device::Cpu;
    let (n, t, heads, d): (usize, usize, usize, usize) = (3, 45, 4, 16);
    // Left-padded positions: row 1 starts two columns late.
    let positions: Vec<usize> = (0..n)
        .flat_map(|r| (0..t).map(move |j| if r == 1 { j.saturating_sub(2) } else { j + r }))
        .collect();
    let rot = Rotary::new(&positions, n, t, d, 10_000.0, &dev)?;
    check(&[randn(&mut rng, &[n, t, heads * d], 1.0)?], |x| {
        rot.apply(&x[0])
    })?;
    let small = Rotary::new(&[0, 1, 2], 1, 3, 4, 1e6, &dev)?;
    check(&[randn(&mut rng, &[1, 3, 8], 1.0)?], |x| small.apply(&x[0]))
}

#[test]
fn rope_rotates_each_half_pair_by_position_times_frequency() -> Result<()> {
    // One head of 4: pairs (x0, x2) at frequency 1 and (x1, x3) at θ^(-1/2) = 0.01.
    let dev = Device::Cpu;
    let rot = Rotary::new(&[0, 3], 1, 2, 4, 10_000.0, &dev)?;
    let x = Tensor::new(&[[[1f32, 2., 3., 4.], [1., 2., 3., 4.]]], &dev)?;
    let y = rot.apply(&x)?.i((0, 1))?.to_vec1::<f32>()?;
    let (c1, s1, c2, s2) = (3f32.cos(), 3f32.sin(), 0.03f32.cos(), 0.03f32.sin());
    let want = [
        1. * c1 - 3. * s1,
        2. * c2 - 4. * s2,
        3. * c1 + 1. * s1,
        4. * c2 + 2. * s2,
    ];
    for (g, w) in y.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{y:?} vs {want:?}");
    }
    // Position 0 is the identity.
    let y0 = rot.apply(&x)?.i((0, 0))?.to_vec1::<f32>()?;
    assert_eq!(y0, [1., 2., 3., 4.]);
    Ok(())
}
