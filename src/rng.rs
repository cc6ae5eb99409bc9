//! Counter-based noise: z = BoxMuller(Philox4x32-10(counter, key)).
//!
//! The key is the 64-bit seed. The normal of (trajectory, step, element) comes from the Philox
//! call with counter `(element, step ≫ 2, trajectory_lo, trajectory_hi)`: its four 32-bit words
//! are two Box–Muller pairs, giving the normals of steps 4⌊step/4⌋ … 4⌊step/4⌋+3 of that element
//! (step & 3 picks one). One call thus serves four consecutive steps, which for the small
//! dimensions of exact mixtures is four times fewer calls than one per step. The noise of a
//! trajectory depends on nothing but (seed, trajectory, step, element): not on the batch, the
//! thread, the ISA or the device. Step [`INIT_STEP`] draws the initial state x_T; the counter
//! `(u32::MAX, u32::MAX, trajectory)` (never reached by a step) gives the uniform that picks x_T's
//! mixture component.
//!
//! Hutchinson probes (Rademacher signs for divergence estimates, [`Noise::rademacher`]) come
//! from a stream of their own: counter `(element, PROBE_STREAM | step, trajectory)`, whose second
//! word has the top bit set, which no sampler step reaches (step ≫ 2 < 2³⁰) and which differs
//! from the initial-state uniform's `u32::MAX` for every step below 2³¹ − 1. Probe n is bit
//! n mod 16 of word ⌊n/16⌋ (set: −1, clear: +1), so one Philox call serves 64 probes.
//!
//! ```
//! use infodiff::rng::{philox4x32_10, Noise};
//! // Random123 known-answer vector.
//! assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
//! let noise = Noise::new(7);
//! let z = noise.normal(3, 10, 5); // trajectory 3, step 10, element 5
//! assert_eq!(z, noise.normals4(3, 10 / 4, 5)[10 % 4]);
//! ```

use crate::simd::isa::Scalar;
use crate::simd::math;

/// The step index reserved for drawing the initial state.
pub const INIT_STEP: u32 = u32::MAX;

/// The top bit of the second counter word: the Hutchinson probe stream (see the module docs).
pub const PROBE_STREAM: u32 = 1 << 31;

/// Most Hutchinson probes one (trajectory, step, element) counter serves (16 bits of 4 words).
pub const MAX_PROBES: usize = 64;

/// The sign of probe `probe` (< [`MAX_PROBES`]) in the probe-stream words of one address: bit
/// probe mod 16 of word ⌊probe/16⌋, set → −1, clear → +1.
#[inline]
pub fn probe_sign(words: &[u32; 4], probe: usize) -> f32 {
    if words[probe / 16] & (1 << (probe % 16)) != 0 {
        -1.0
    } else {
        1.0
    }
}

/// Philox4x32-10 of Salmon, Moraes, Dror & Shaw (2011): ten rounds on a 128-bit counter with a
/// 64-bit key.
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    // SAFETY: the scalar instantiation needs no target feature.
    unsafe { math::philox::<Scalar>(ctr, key) }
}

/// A seeded noise source: standard normals and uniforms addressed by
/// (trajectory, step, element).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Noise {
    pub seed: u64,
}

impl Noise {
    pub fn new(seed: u64) -> Self {
        Noise { seed }
    }

    pub fn key(&self) -> [u32; 2] {
        [self.seed as u32, (self.seed >> 32) as u32]
    }

    /// The four Philox words of counter (c0, c1, trajectory).
    pub fn words(&self, trajectory: u64, c0: u32, c1: u32) -> [u32; 4] {
        philox4x32_10(
            [c0, c1, trajectory as u32, (trajectory >> 32) as u32],
            self.key(),
        )
    }

    /// The normals of steps 4·step_block … 4·step_block+3 of one element.
    pub fn normals4(&self, trajectory: u64, step_block: u32, element: u32) -> [f32; 4] {
        let w = self.words(trajectory, element, step_block);
        // SAFETY: the scalar instantiation needs no target feature.
        unsafe {
            let (z0, z1) = math::box_muller::<Scalar>(w[0], w[1]);
            let (z2, z3) = math::box_muller::<Scalar>(w[2], w[3]);
            [z0, z1, z2, z3]
        }
    }

    /// The standard normal of one (trajectory, step, element).
    pub fn normal(&self, trajectory: u64, step: u32, element: usize) -> f32 {
        self.normals4(trajectory, step >> 2, element as u32)[(step & 3) as usize]
    }

    /// Fills `out` (D elements) with the normals of (trajectory, step): element e is
    /// [`Noise::normal`]`(trajectory, step, e)`, computed on SIMD lanes (one Philox call per
    /// element, L lanes at a time; bit-identical to [`Noise::fill_normals_scalar`], tested on
    /// every ISA the machine has).
    pub fn fill_normals(&self, trajectory: u64, step: u32, out: &mut [f32]) {
        fill_normals_on(crate::simd::detected(), self.key(), trajectory, step, out)
    }

    /// [`Noise::fill_normals`] one element at a time through [`Noise::normal`]: the reference
    /// twin of the lane kernel.
    pub fn fill_normals_scalar(&self, trajectory: u64, step: u32, out: &mut [f32]) {
        for (e, v) in out.iter_mut().enumerate() {
            *v = self.normal(trajectory, step, e);
        }
    }

    /// The Philox words of the probe stream at (trajectory, step, element); `step` < 2³¹ − 1.
    pub fn probe_words(&self, trajectory: u64, step: u32, element: usize) -> [u32; 4] {
        self.words(trajectory, element as u32, PROBE_STREAM | step)
    }

    /// Rademacher sign ±1 of Hutchinson probe `probe` (< [`MAX_PROBES`]) at (trajectory, step,
    /// element), independent of the sampler's normals (a distinct counter range).
    pub fn rademacher(&self, trajectory: u64, step: u32, probe: usize, element: usize) -> f32 {
        probe_sign(&self.probe_words(trajectory, step, element), probe)
    }

    /// The uniform in [0, 1) (24 bits) that picks the mixture component of x_T.
    pub fn init_uniform(&self, trajectory: u64) -> f32 {
        (self.words(trajectory, u32::MAX, u32::MAX)[0] >> 8) as f32 * (1.0 / 16_777_216.0)
    }
}

crate::isa_dispatch! {
    fn fill_normals_on(key: [u32; 2], trajectory: u64, step: u32, out: &mut [f32]) -> () => fill_normals_kernel
}

/// The lane body of [`Noise::fill_normals`]: counter (element, step/4, trajectory), the
/// Box–Muller pair holding this step's quarter, exactly rounded like the scalar twin.
#[inline(always)]
unsafe fn fill_normals_kernel<I: crate::simd::isa::Isa>(
    key: [u32; 2],
    trajectory: u64,
    step: u32,
    out: &mut [f32],
) {
    use crate::simd::math::{box_muller, philox};
    let l = I::LANES;
    let mut buf = [0.0f32; 16];
    // SAFETY: `buf` holds 16 ≥ LANES values; full chunks hold LANES.
    unsafe {
        // Counter (element, step/4, trajectory): the Box–Muller pair holding this step's quarter.
        let (c1, c2, c3) = (
            I::splat_u(step >> 2),
            I::splat_u(trajectory as u32),
            I::splat_u((trajectory >> 32) as u32),
        );
        let pair = ((step & 3) >> 1) as usize;
        for (i, chunk) in out.chunks_mut(l).enumerate() {
            let c0 = I::u_add(I::splat_u((i * l) as u32), I::iota_u());
            let w = philox::<I>([c0, c1, c2, c3], key);
            let (za, zb) = box_muller::<I>(w[2 * pair], w[2 * pair + 1]);
            let z = if step & 1 == 0 { za } else { zb };
            if chunk.len() == l {
                I::store(chunk.as_mut_ptr(), z);
            } else {
                I::store(buf.as_mut_ptr(), z);
                chunk.copy_from_slice(&buf[..chunk.len()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_normals_are_the_scalar_ones_bit_for_bit() {
        let noise = Noise::new(0x1234_5678_9abc);
        for step in [0, 1, 2, 3, 7, 1001, crate::rng::INIT_STEP] {
            for traj in [0u64, 5, 1 << 33] {
                let mut want = vec![0.0f32; 77]; // not a multiple of any lane count
                noise.fill_normals_scalar(traj, step, &mut want);
                for kind in crate::simd::IsaKind::all_available() {
                    let mut got = vec![0.0f32; 77];
                    fill_normals_on(kind, noise.key(), traj, step, &mut got);
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "{kind:?}, step {step}, trajectory {traj}"
                    );
                }
            }
        }
    }

    /// Random123's kat_vectors for philox4x32_10.
    #[test]
    fn philox_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    /// Moments of 400,000 normals: mean 0 ± 4 SE, variance 1 ± 4 SE, kurtosis 3 ± 4 SE.
    #[test]
    fn normals_have_standard_moments() {
        let noise = Noise::new(12345);
        let n = 100_000u64;
        let (mut s1, mut s2, mut s4) = (0.0f64, 0.0f64, 0.0f64);
        for t in 0..n {
            for z in noise.normals4(t, 3, 0) {
                let z = z as f64;
                s1 += z;
                s2 += z * z;
                s4 += z * z * z * z;
            }
        }
        let m = (4 * n) as f64;
        let mean = s1 / m;
        let var = s2 / m - mean * mean;
        let kurt = s4 / m;
        assert!(mean.abs() < 4.0 / m.sqrt(), "mean {mean}");
        assert!((var - 1.0).abs() < 4.0 * (2.0 / m).sqrt(), "var {var}");
        assert!(
            (kurt - 3.0).abs() < 4.0 * (96.0 / m).sqrt(),
            "kurtosis {kurt}"
        );
    }

    #[test]
    fn normal_addresses_elements() {
        let noise = Noise::new(1);
        let mut v = [0.0f32; 7];
        noise.fill_normals(9, 4, &mut v);
        for (e, z) in v.iter().enumerate() {
            assert_eq!(*z, noise.normal(9, 4, e));
        }
        assert_eq!(noise.normal(9, 5, 2), noise.normals4(9, 1, 2)[1]);
        assert_ne!(noise.normal(9, 4, 0), noise.normal(9, 5, 0));
        assert_ne!(noise.normal(9, 4, 0), noise.normal(9, 8, 0));
        assert_ne!(noise.normal(9, 4, 0), noise.normal(10, 4, 0));
        assert_ne!(noise.normal(9, 4, 0), Noise::new(2).normal(9, 4, 0));
    }

    /// Probe signs: ±1, balanced (mean 0 ± 4 SE over 64 probes × 4000 elements), uncorrelated
    /// with the sampler's normal of the same address (|corr| < 4 SE), and a function of the
    /// address only.
    #[test]
    fn rademacher_probes_are_balanced_and_apart_from_the_noise() {
        let noise = Noise::new(77);
        let (mut s, mut sz, mut n) = (0.0f64, 0.0f64, 0.0f64);
        for e in 0..4000 {
            let z = noise.normal(3, 5, e) as f64;
            for p in 0..MAX_PROBES {
                let v = noise.rademacher(3, 5, p, e);
                assert!(v == 1.0 || v == -1.0);
                s += v as f64;
                sz += v as f64 * z;
                n += 1.0;
            }
        }
        assert!((s / n).abs() < 4.0 / n.sqrt(), "mean {}", s / n);
        assert!((sz / n).abs() < 4.0 / n.sqrt(), "corr {}", sz / n);
        assert_eq!(noise.rademacher(3, 5, 7, 11), noise.rademacher(3, 5, 7, 11));
        let w = noise.probe_words(3, 5, 11);
        assert_ne!(w, noise.words(3, 11, 5 >> 2));
        assert_ne!(w, noise.probe_words(3, 6, 11));
        assert_ne!(w, noise.probe_words(4, 5, 11));
    }
}
