//! Branch-free approximations of `tanh` and `exp` for the fused CPU kernels: libm's scalar calls
//! stop the loops around them from vectorising (`tanhf` made GELU ~20% of a step), and `expf` on
//! a masked score (−1e9) takes glibc's slow underflow path.
//! (Plain `*` and `+`: `mul_add` without a target FMA feature becomes a slow libm call.)

/// tanh as a rational function (Eigen's `generic_fast_tanh_float`), within 4e-7 of the true
/// value (5e-7 without FMA). Branch-free, so the loops below vectorise; libm's `tanhf` made GELU ~20% of a step.
/// (Plain `*` and `+`: `mul_add` without a target FMA feature becomes a slow libm call.)
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, kept as written
pub fn fast_tanh(x: f32) -> f32 {
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = -2.760_768_5e-16_f32;
    let p = p * x2 + 2.000_187_9e-13;
    let p = p * x2 + -8.604_671_5e-11;
    let p = p * x2 + 5.122_297e-8;
    let p = p * x2 + 1.485_722_4e-5;
    let p = p * x2 + 6.372_619_3e-4;
    let p = (p * x2 + 4.893_524_6e-3) * x;
    let q = 1.198_258_4e-6_f32;
    let q = q * x2 + 1.185_347_1e-4;
    let q = q * x2 + 2.268_434_6e-3;
    let q = q * x2 + 4.893_525e-3;
    p / q
}

/// eˣ within 2 ulp for x ≤ 88 (Cephes' `expf`: x = n·ln 2 + r, |r| ≤ ln 2 / 2, a degree-6
/// polynomial for eʳ, 2ⁿ built in the exponent bits). Below −87 it returns 0: no subnormals.
#[inline(always)]
#[allow(clippy::excessive_precision)] // the published coefficients, kept as written
pub fn fast_exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_375;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in two plain additions.
    const ROUND: f32 = 12_582_912.0;
    let c = x.clamp(-87.0, 88.0);
    let n = (c * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = c - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_15e-4_f32;
    let p = p * r + 1.398_199_95e-3;
    let p = p * r + 8.333_451_9e-3;
    let p = p * r + 4.166_579_59e-2;
    let p = p * r + 1.666_666_55e-1;
    let p = p * r + 5.000_000_12e-1;
    let er = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { er * two_n }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_tanh_is_within_5e_7() {
        let worst = (-900_000..=900_000)
            .map(|i| i as f32 * 1e-5)
            .map(|x| (fast_tanh(x) as f64 - (x as f64).tanh()).abs())
            .fold(0f64, f64::max);
        assert!(worst < 5e-7, "{worst}");
    }

    #[test]
    fn fast_exp_is_within_3e_7_relative_and_flushes_below_minus_87() {
        let worst = (-870_000..=880_000)
            .map(|i| i as f32 * 1e-4)
            .map(|x| {
                let want = (x as f64).exp();
                (fast_exp(x) as f64 - want).abs() / want
            })
            .fold(0f64, f64::max);
        assert!(worst < 3e-7, "{worst}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(-1e9), 0.0);
        assert!(fast_exp(f32::NAN).is_nan());
    }
}
