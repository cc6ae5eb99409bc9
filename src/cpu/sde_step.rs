//! Fused reverse-SDE step for neural score models, over a batch of trajectories b:
//! s = −ε̂_∅/σ, s_y = −ε̂_y/σ, Δ_y = s_y − s, z = Noise::normal(traj0 + b, step, e),
//! x' = a x + c s + √var z, ln π_y += (c/√var) Σ_e Δ_y z − c²/(2 var) ‖Δ_y‖² (log-sum-exp
//! normalised), and a record per trajectory (3 + 2K values): H(π) = −Σ π_y ln π_y before the
//! update (nats), Σ_y π_y ‖Δ_y‖², a non-finite flag, ‖Δ_y‖² (K) and ln π before the update (K)
//! (what [`crate::info::InfoObserver::record_point`] takes). ε̂ holds the network's K + 1 outputs per state, null
//! label first: (B, K+1, D), the layout of [`crate::score::unet::UNetScore`]'s batched forward.
//!
//! One body for every ISA (lanes over D; the dot products in f32 lanes, folded in f64); its
//! oracle is [`crate::cpu::reference::sde_step`] (f64), its GPU twin `kernels/sde_step.cu`
//! ([`crate::cuda::sde_step`]), which computes x' with the same fused multiply-adds and the same
//! noise, so states agree bit for bit and ln π to the rounding of the reductions.

use rayon::prelude::*;

use super::isa::{Isa, IsaKind};
use super::math::{box_muller, philox};
use crate::error::{Error, Result};
use crate::rng::Noise;

/// Most classes the fused step takes (the GPU kernel keeps 2K partial sums per thread).
pub const MAX_CLASSES: usize = 32;

/// The step's coefficients and addresses; mirrored field for field by `SdeStepParams` in
/// `kernels/sde_step.cu` (`#[repr(C)]`, 56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdeStepParams {
    /// x' = a x + c s + sd z.
    pub a: f32,
    pub c: f32,
    /// √var (0 for a deterministic step: no noise, no classifier update).
    pub sd: f32,
    /// c/√var and c²/(2 var).
    pub cs: f32,
    pub kl: f32,
    /// −1/σ_t: s = −ε̂/σ_t.
    pub neg_inv_sigma: f32,
    /// Philox key (the seed's two halves).
    pub key0: u32,
    pub key1: u32,
    /// Trajectory index of batch row 0.
    pub traj0: u64,
    pub step: u32,
    pub dim: u32,
    pub classes: u32,
    pub batch: u32,
}

impl SdeStepParams {
    /// Parameters for the transition x' = a x + c s + √var z of `step`, scores from ε̂ at σ.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (a, c, var): (f64, f64, f64),
        sigma: f64,
        noise: Noise,
        traj0: u64,
        step: u32,
        (batch, classes, dim): (usize, usize, usize),
    ) -> Result<SdeStepParams> {
        if !(sigma > 0.0) || !(var >= 0.0) || !a.is_finite() || !c.is_finite() {
            return Err(Error::Unsupported {
                op: "sde_step",
                reason: format!("coefficients a = {a}, c = {c}, var = {var}, σ = {sigma}"),
            });
        }
        if classes == 0 || classes > MAX_CLASSES || dim == 0 || dim > u32::MAX as usize {
            return Err(Error::shape(
                "sde_step: classes in 1..=32, dim ≥ 1",
                (MAX_CLASSES, 1),
                (classes, dim),
            ));
        }
        let sd = var.sqrt();
        let (cs, kl) = if sd > 0.0 {
            (c / sd, c * c / (2.0 * var))
        } else {
            (0.0, 0.0)
        };
        let [key0, key1] = noise.key();
        Ok(SdeStepParams {
            a: a as f32,
            c: c as f32,
            sd: sd as f32,
            cs: cs as f32,
            kl: kl as f32,
            neg_inv_sigma: (-1.0 / sigma) as f32,
            key0,
            key1,
            traj0,
            step,
            dim: dim as u32,
            classes: classes as u32,
            batch: batch as u32,
        })
    }

    /// Checks buffer lengths: x (B, D), ε̂ (B, K+1, D), ln π (B, K), record (B, 3 + 2K).
    pub fn check(&self, x: usize, eps: usize, log_pi: usize, rec: usize) -> Result<()> {
        let (b, k, d) = (
            self.batch as usize,
            self.classes as usize,
            self.dim as usize,
        );
        let want = (b * d, b * (k + 1) * d, b * k, b * (3 + 2 * k));
        if (x, eps, log_pi, rec) != want {
            return Err(Error::shape(
                "sde_step: x (B, D), eps (B, K+1, D), log_pi (B, K), record (B, 3 + 2K)",
                want,
                (x, eps, log_pi, rec),
            ));
        }
        Ok(())
    }
}

/// One step for the whole batch, trajectories in parallel.
pub fn sde_step(
    kind: IsaKind,
    p: &SdeStepParams,
    x: &mut [f32],
    eps: &[f32],
    log_pi: &mut [f32],
    rec: &mut [f32],
) -> Result<()> {
    p.check(x.len(), eps.len(), log_pi.len(), rec.len())?;
    let (k, d) = (p.classes as usize, p.dim as usize);
    let noise = Noise::new(p.key0 as u64 | (p.key1 as u64) << 32);
    x.par_chunks_mut(d)
        .zip(eps.par_chunks((k + 1) * d))
        .zip(log_pi.par_chunks_mut(k).zip(rec.par_chunks_mut(3 + 2 * k)))
        .enumerate()
        .for_each_init(
            || vec![0.0f32; d],
            |z, (b, ((xb, eb), (lp, r)))| {
                let traj = p.traj0 + b as u64;
                let mut dot = [0.0f64; MAX_CLASSES];
                let mut d2 = [0.0f64; MAX_CLASSES];
                let finite = step_elements(kind, p, traj, noise, xb, eb, z, &mut dot, &mut d2);
                classifier(p, lp, &dot[..k], &d2[..k], r, finite);
            },
        );
    Ok(())
}

crate::isa_dispatch! {
    /// Δ_y·z and ‖Δ_y‖² of one trajectory (f64 totals) and its state update, the noise drawn
    /// into `z` on lanes; false when a new state is not finite.
    fn step_elements(p: &SdeStepParams, traj: u64, noise: Noise, x: &mut [f32], eps: &[f32], z: &mut [f32], dot: &mut [f64; MAX_CLASSES], d2: &mut [f64; MAX_CLASSES]) -> bool => step_elements_kernel
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step_elements_kernel<I: Isa>(
    p: &SdeStepParams,
    traj: u64,
    noise: Noise,
    x: &mut [f32],
    eps: &[f32],
    z: &mut [f32],
    dot: &mut [f64; MAX_CLASSES],
    d2: &mut [f64; MAX_CLASSES],
) -> bool {
    let (k, d, l) = (p.classes as usize, p.dim as usize, I::LANES);
    let full = d - d % l;
    let mut finite = true;
    let mut lanes = [0.0f32; 16];
    let zero_z = p.sd <= 0.0;
    // SAFETY: every vector lies within 0..full ≤ d of x, z and each (D) row of eps.
    unsafe {
        let (a, c, sd, ni) = (
            I::splat(p.a),
            I::splat(p.c),
            I::splat(p.sd),
            I::splat(p.neg_inv_sigma),
        );
        let zero = I::splat(0.0);
        // Pass 1: the noise of elements e..e+L (Noise::normal on lanes: counter (e, step/4,
        // trajectory), the Box–Muller pair holding this step's quarter), then the state update.
        let ctr = [
            I::splat_u(p.step >> 2),
            I::splat_u(traj as u32),
            I::splat_u((traj >> 32) as u32),
        ];
        let pair = ((p.step & 3) >> 1) as usize;
        for e in (0..full).step_by(l) {
            let su = I::mul(I::load(eps.as_ptr().add(e)), ni);
            let zz = if zero_z {
                zero
            } else {
                let c0 = I::u_add(I::splat_u(e as u32), I::iota_u());
                let w = philox::<I>([c0, ctr[0], ctr[1], ctr[2]], noise.key());
                let (za, zb) = box_muller::<I>(w[2 * pair], w[2 * pair + 1]);
                let zz = if p.step & 1 == 0 { za } else { zb };
                I::store(z.as_mut_ptr().add(e), zz);
                zz
            };
            let xp = x.as_mut_ptr().add(e);
            let xn = I::fma(a, I::load(xp), I::fma(c, su, I::mul(sd, zz)));
            finite &= I::all_finite(xn);
            I::store(xp, xn);
        }
        // Pass 2: per class, Δ_y·z and ‖Δ_y‖² in lanes (ε̂ of the null label re-read from cache).
        for y in 0..k {
            let (mut acc_dot, mut acc_d2) = (zero, zero);
            for e in (0..full).step_by(l) {
                let su = I::mul(I::load(eps.as_ptr().add(e)), ni);
                let sy = I::mul(I::load(eps.as_ptr().add((1 + y) * d + e)), ni);
                let dy = I::sub(sy, su);
                let zz = if zero_z {
                    zero
                } else {
                    I::load(z.as_ptr().add(e))
                };
                acc_dot = I::fma(dy, zz, acc_dot);
                acc_d2 = I::fma(dy, dy, acc_d2);
            }
            I::store(lanes.as_mut_ptr(), acc_dot);
            dot[y] = lanes[..l].iter().map(|v| *v as f64).sum();
            I::store(lanes.as_mut_ptr(), acc_d2);
            d2[y] = lanes[..l].iter().map(|v| *v as f64).sum();
        }
    }
    // The tail, in scalar code with the same fused multiply-adds.
    for e in full..d {
        let su = eps[e] * p.neg_inv_sigma;
        let zz = if zero_z {
            0.0
        } else {
            noise.normal(traj, p.step, e)
        };
        for y in 0..k {
            let dy = eps[(1 + y) * d + e] * p.neg_inv_sigma - su;
            dot[y] += (dy * zz) as f64;
            d2[y] += (dy * dy) as f64;
        }
        let xn = p.a.mul_add(x[e], p.c.mul_add(su, p.sd * zz));
        finite &= xn.is_finite();
        x[e] = xn;
    }
    finite
}

/// The record (H(π), Σ π_y‖Δ_y‖², non-finite flag) and the online update of ln π, in f64.
fn classifier(
    p: &SdeStepParams,
    lp: &mut [f32],
    dot: &[f64],
    d2: &[f64],
    rec: &mut [f32],
    finite: bool,
) {
    let k = lp.len();
    for y in 0..k {
        rec[3 + y] = d2[y] as f32;
        rec[3 + k + y] = lp[y];
    }
    let (mut h, mut rb) = (0.0f64, 0.0f64);
    for (l, q) in lp.iter().zip(d2) {
        let pi = (*l as f64).exp();
        h -= pi * *l as f64;
        rb += pi * q;
    }
    if p.sd > 0.0 {
        let new: Vec<f64> = lp
            .iter()
            .zip(dot.iter().zip(d2))
            .map(|(l, (dt, q))| *l as f64 + p.cs as f64 * dt - p.kl as f64 * q)
            .collect();
        let m = new.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + new.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for (l, v) in lp.iter_mut().zip(new) {
            *l = (v - lse) as f32;
        }
    }
    rec[0] = h as f32;
    rec[1] = rb as f32;
    rec[2] = if finite { 0.0 } else { 1.0 };
}
