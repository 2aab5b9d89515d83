//! The one seeded generator of the ML code: weight init, shuffles, sampling, and the synthetic data.
//!
//! SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state (trivially saved in a checkpoint), passes
//! BigCrush, and any `u64` is a good seed. candle's CPU backend cannot be seeded
//! (`Device::set_seed` bails on CPU), so reproducible runs draw their randomness here.
//! [`Rng::fork`] derives an independent stream from a generator's state and a stream number without
//! advancing it, so `Rng::new(seed).fork(index)` gives each sample its own generator: samples can be
//! made in any order, in parallel, and still come out identical. [`Rng::for_name`] does the same for a
//! parameter's name, so an initial value does not change when another parameter is added.
//!
//! Floats come in two precisions because both are in artifacts: weight init draws f64 (53 bits), the
//! data generators f32 (24 bits). Changing either would change every artifact made with it.

use std::f32::consts::TAU;
use std::ops::Range;

use serde::{Deserialize, Serialize};

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: u64,
}

/// The SplitMix64 output function: a bijective mix of 64 bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// An independent generator for `stream`, derived from this one's state; `self` is unchanged.
    pub fn fork(&self, stream: u64) -> Rng {
        Rng::new(mix64(
            self.state ^ mix64(stream.wrapping_mul(GOLDEN).wrapping_add(1)),
        ))
    }

    /// A generator whose stream depends on both `seed` and `name`, so that a parameter's initial
    /// value does not change when another parameter is added or the build order changes.
    pub fn for_name(seed: u64, name: &str) -> Self {
        // FNV-1a over the name, then mixed with the seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        let mut rng = Self::new(seed ^ h.rotate_left(17));
        rng.next_u64();
        rng
    }

    pub fn state(&self) -> u64 {
        self.state
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)`, with 53 bits of precision.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, 1)`, with 24 bits of precision.
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform in `0..n` without modulo bias (Lemire's multiply-shift with rejection). `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform in `range` (half-open, non-empty).
    pub fn range(&mut self, range: Range<usize>) -> usize {
        assert!(range.start < range.end, "Rng::range on an empty range");
        range.start + self.below((range.end - range.start) as u64) as usize
    }

    /// True with probability `p`.
    pub fn bool(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    /// A standard normal sample from two f64 uniforms (Box–Muller; one of the pair is discarded to
    /// keep no state).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64(); // (0, 1]: ln is finite
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// A standard normal sample from two f32 uniforms, as the data generators draw it.
    pub fn normal_f32(&mut self) -> f32 {
        let u1 = 1.0 - self.f32();
        let u2 = self.f32();
        (-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()
    }

    /// An element of a non-empty slice.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0..items.len())]
    }

    /// Fisher–Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_reference_values() {
        // First outputs of SplitMix64 seeded with 1234567 (from the reference C implementation).
        let mut r = Rng::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(r.next_u64(), 9817491932198370423);
    }

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let a: Vec<u32> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u32()
            })
            .collect();
        let b: Vec<u32> = (0..8)
            .map({
                let mut r = Rng::new(7);
                move |_| r.next_u32()
            })
            .collect();
        assert_eq!(a, b);

        let root = Rng::new(7);
        let (mut f0, mut f1) = (root.fork(0), root.fork(1));
        assert_ne!(f0.next_u64(), f1.next_u64());
        assert_eq!(root, Rng::new(7), "fork leaves the parent unchanged");
        assert_eq!(root.fork(3), Rng::new(7).fork(3));
    }

    #[test]
    fn floats_ranges_and_normals_are_in_bounds() {
        let mut r = Rng::new(42);
        let n = 20_000;
        let mut sum = 0.0f64;
        let mut sq = 0.0f64;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            let x = r.f32();
            assert!((0.0..1.0).contains(&x));
            let k = r.range(3..8);
            assert!((3..8).contains(&k));
            counts[k - 3] += 1;
            let z = f64::from(r.normal_f32());
            assert!(z.is_finite());
            sum += z;
            sq += z * z;
        }
        let mean = sum / n as f64;
        let var = sq / n as f64 - mean * mean;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert!(counts.iter().all(|&c| c > n / 5 - 400), "{counts:?}");
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<usize> = (0..100).collect();
        Rng::new(3).shuffle(&mut v);
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort_unstable();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_stream_and_normal_moments() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let xs: Vec<f64> = (0..20_000).map(|_| a.normal()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        assert_ne!(
            Rng::for_name(1, "a").next_u64(),
            Rng::for_name(1, "b").next_u64()
        );
    }
}
