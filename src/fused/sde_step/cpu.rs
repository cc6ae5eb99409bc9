//! Fused reverse-SDE step for neural score models, over a batch of trajectories b:
//! s = −ε̂_∅/σ, s_y = −ε̂_y/σ, Δ_y = s_y − s, z = Noise::normal(traj0 + b, step, e),
//! x' = a x + c s + √var z, ln π_y += (c/√var) Σ_e Δ_y z − c²/(2 var) ‖Δ_y‖² (log-sum-exp
//! normalised), and a record per trajectory ([`SdeStepParams::record_width`] = 5 + 3K + P
//! values, offsets `REC_*`), everything at the point before the update (π from ln π as given):
//!
//! | offset | value |
//! |---|---|
//! | 0 | H(π) = −Σ π_y ln π_y (nats) |
//! | 1 | Σ_y π_y ‖Δ_y‖² |
//! | 2 | non-finite flag (1 when a new state is not finite) |
//! | 3 | ‖s‖² |
//! | 4 | Hutchinson ∇·s ≈ (1/N) Σ_n v_nᵀ(s(x + h v_n) − s(x − h v_n))/(2h) (0 without probes) |
//! | 5 .. 5+K | ‖Δ_y‖² |
//! | 5+K .. 5+2K | ln π before the update |
//! | 5+2K .. 5+3K | Δ_k·u, u = Σ_y π_y ln π_y Δ_y |
//! | 5+3K .. 5+3K+P | ‖s(x|a) − s(x|b)‖² per partition, s(x|z) = Σ_{y∈z} π_y s(x|y)/π_z (0 where π_a or π_b is 0) |
//!
//! (what [`crate::info::InfoObserver::record_point`] takes as [`crate::info::PointScores`]).
//! ε̂ holds the network's outputs per state: (B, R, D) with R = [`SdeStepParams::eps_rows`] =
//! K + 1 + 2N, the null label first, then the K classes (the layout of
//! [`crate::score::unet::UNetScore`]'s batched forward), then for each of N Hutchinson probes the
//! null-label outputs at x + h v_n and x − h v_n ([`probe_rows`] builds those inputs; v_n are
//! the Rademacher signs [`Noise::rademacher`] of (traj0 + b, step, n, e)).
//!
//! One pass over the elements, every accumulator updated per element from coefficients fixed
//! per trajectory (w_y = π_y ln π_y, and ±π_y/π_z per partition): u_e = Σ_y w_y Δ_{y,e},
//! cross_k += Δ_{k,e} u_e, part_i += (Σ_y c_{i,y} Δ_{y,e})², s2 += s_e², div += Σ_n v_{n,e}
//! (ε̂⁺_{n,e} − ε̂⁻_{n,e}) (scaled by −1/(2hNσ) at the end).
//!
//! One body for every ISA (lanes over D; the sums in f32 lanes, folded in f64); its oracle is
//! [`crate::fused::sde_step::reference::sde_step`] (f64), its GPU twin `kernels/sde_step.cu`
//! ([`crate::fused::sde_step::cuda`]), which computes x' with the same fused multiply-adds and the same
//! noise, so states agree bit for bit and ln π and the record to the rounding of the reductions.

use rayon::prelude::*;

use super::plan::{
    MAX_CLASSES, MAX_PARTITIONS, REC_DIV, REC_FIXED, REC_FLAG, REC_H, REC_RB, REC_S2, SdeStepParams,
};
use crate::error::{Error, Result};
use crate::rng::{Noise, PROBE_STREAM, probe_sign};
use crate::simd::isa::{Isa, IsaKind};
use crate::simd::math::{box_muller, philox};

impl SdeStepParams {
    /// The per-trajectory coefficients from ln π before the update (f32, as the kernel): w_y =
    /// π_y ln π_y (0 where π_y = 0) and, per partition, π_y/π_a on a, −π_y/π_b on b (all 0
    /// where π_a or π_b is 0).
    pub fn coefficients(
        &self,
        lp: &[f32],
    ) -> ([f32; MAX_CLASSES], [[f32; MAX_CLASSES]; MAX_PARTITIONS]) {
        let k = self.classes as usize;
        let mut w = [0.0f32; MAX_CLASSES];
        let mut c = [[0.0f32; MAX_CLASSES]; MAX_PARTITIONS];
        let pi: Vec<f64> = lp[..k].iter().map(|l| (*l as f64).exp()).collect();
        for y in 0..k {
            if pi[y] > 0.0 {
                w[y] = (pi[y] * lp[y] as f64) as f32;
            }
        }
        for i in 0..self.partitions as usize {
            let (ma, mb) = (self.part_a[i], self.part_b[i]);
            let mass = |m: u32| {
                (0..k)
                    .filter(|y| m >> y & 1 != 0)
                    .map(|y| pi[y])
                    .sum::<f64>()
            };
            let (pa, pb) = (mass(ma), mass(mb));
            if !(pa > 0.0 && pb > 0.0) {
                continue;
            }
            for y in 0..k {
                if ma >> y & 1 != 0 {
                    c[i][y] = (pi[y] / pa) as f32;
                } else if mb >> y & 1 != 0 {
                    c[i][y] = (-pi[y] / pb) as f32;
                }
            }
        }
        (w, c)
    }
}

/// The network inputs of one step, (B, R, D): each state x (B, D) K + 1 times (null label and
/// classes), then x + h v_n and x − h v_n for each probe n (one rounding each: fma(±h, v, x)).
/// Twin of the `sde_probe_rows` kernel.
pub fn probe_rows(p: &SdeStepParams, x: &[f32], y: &mut [f32]) -> Result<()> {
    let (b, k, d, r) = (
        p.batch as usize,
        p.classes as usize,
        p.dim as usize,
        p.eps_rows(),
    );
    if x.len() != b * d || y.len() != b * r * d {
        return Err(Error::shape(
            "sde_step::probe_rows: x (B, D), y (B, K+1+2N, D)",
            (b * d, b * r * d),
            (x.len(), y.len()),
        ));
    }
    let noise = Noise::new(p.key0 as u64 | (p.key1 as u64) << 32);
    y.par_chunks_mut(r * d)
        .zip(x.par_chunks(d))
        .enumerate()
        .for_each(|(bi, (yb, xb))| {
            for row in 0..k + 1 {
                yb[row * d..(row + 1) * d].copy_from_slice(xb);
            }
            let traj = p.traj0 + bi as u64;
            let h = p.probe_h;
            for e in 0..d {
                let w = noise.probe_words(traj, p.step, e);
                for n in 0..p.probes as usize {
                    let v = probe_sign(&w, n);
                    yb[(k + 1 + 2 * n) * d + e] = h.mul_add(v, xb[e]);
                    yb[(k + 2 + 2 * n) * d + e] = (-h).mul_add(v, xb[e]);
                }
            }
        });
    Ok(())
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
        .zip(eps.par_chunks(p.eps_rows() * d))
        .zip(
            log_pi
                .par_chunks_mut(k)
                .zip(rec.par_chunks_mut(p.record_width())),
        )
        .enumerate()
        .for_each(|(b, ((xb, eb), (lp, r)))| {
            let traj = p.traj0 + b as u64;
            let (w, cf) = p.coefficients(lp);
            let mut acc = Acc::default();
            let finite = step_elements(kind, p, traj, noise, xb, eb, &w, &cf, &mut acc);
            classifier(p, lp, &acc, r, finite);
        });
    Ok(())
}

/// One trajectory's reduced sums (f64 totals of the f32 lanes).
#[derive(Clone, Copy, Debug)]
pub struct Acc {
    pub dot: [f64; MAX_CLASSES],
    pub d2: [f64; MAX_CLASSES],
    pub cross: [f64; MAX_CLASSES],
    pub part: [f64; MAX_PARTITIONS],
    pub s2: f64,
    /// Σ_e Σ_n v_{n,e} (ε̂⁺_{n,e} − ε̂⁻_{n,e}), before the scale.
    pub div: f64,
}

impl Default for Acc {
    fn default() -> Self {
        Acc {
            dot: [0.0; MAX_CLASSES],
            d2: [0.0; MAX_CLASSES],
            cross: [0.0; MAX_CLASSES],
            part: [0.0; MAX_PARTITIONS],
            s2: 0.0,
            div: 0.0,
        }
    }
}

crate::isa_dispatch! {
    /// One trajectory's sums (f64 totals) and its state update in one pass over the elements;
    /// false when a new state is not finite.
    fn step_elements(p: &SdeStepParams, traj: u64, noise: Noise, x: &mut [f32], eps: &[f32], w: &[f32; MAX_CLASSES], cf: &[[f32; MAX_CLASSES]; MAX_PARTITIONS], acc: &mut Acc) -> bool => step_elements_kernel
}

#[inline(always)]
unsafe fn fold<I: Isa>(v: I::F) -> f64 {
    let mut lanes = [0.0f32; 16];
    // SAFETY: `lanes` holds 16 ≥ I::LANES values.
    unsafe { I::store(lanes.as_mut_ptr(), v) };
    lanes[..I::LANES].iter().map(|v| *v as f64).sum()
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn step_elements_kernel<I: Isa>(
    p: &SdeStepParams,
    traj: u64,
    noise: Noise,
    x: &mut [f32],
    eps: &[f32],
    w: &[f32; MAX_CLASSES],
    cf: &[[f32; MAX_CLASSES]; MAX_PARTITIONS],
    acc: &mut Acc,
) -> bool {
    let (k, d, l) = (p.classes as usize, p.dim as usize, I::LANES);
    let (np, nprobe) = (p.partitions as usize, p.probes as usize);
    let full = d - d % l;
    let mut finite = true;
    let zero_z = p.sd <= 0.0;
    // The classes each partition's coefficient row touches.
    let members: Vec<Vec<usize>> = (0..np)
        .map(|i| (0..k).filter(|&y| cf[i][y] != 0.0).collect())
        .collect();
    // SAFETY: every vector lies within 0..full ≤ d of x and each (D) row of eps.
    unsafe {
        let (a, c, sd, ni) = (
            I::splat(p.a),
            I::splat(p.c),
            I::splat(p.sd),
            I::splat(p.neg_inv_sigma),
        );
        let zero = I::splat(0.0);
        let (one, minus, half) = (I::splat(1.0), I::splat(-1.0), I::splat(0.5));
        let mut dot = [zero; MAX_CLASSES];
        let mut d2 = [zero; MAX_CLASSES];
        let mut cross = [zero; MAX_CLASSES];
        let mut part = [zero; MAX_PARTITIONS];
        let mut dl = [zero; MAX_CLASSES];
        let (mut s2, mut div) = (zero, zero);
        let wv: Vec<I::F> = w[..k].iter().map(|v| I::splat(*v)).collect();
        let cv: Vec<Vec<I::F>> = (0..np)
            .map(|i| members[i].iter().map(|&y| I::splat(cf[i][y])).collect())
            .collect();
        // The noise of elements e..e+L (Noise::normal on lanes: counter (e, step/4,
        // trajectory), the Box–Muller pair holding this step's quarter).
        let ctr = [
            I::splat_u(p.step >> 2),
            I::splat_u(traj as u32),
            I::splat_u((traj >> 32) as u32),
        ];
        let pair = ((p.step & 3) >> 1) as usize;
        let probe_ctr = I::splat_u(PROBE_STREAM | p.step);
        for e in (0..full).step_by(l) {
            let su = I::mul(I::load(eps.as_ptr().add(e)), ni);
            let c0 = I::u_add(I::splat_u(e as u32), I::iota_u());
            let zz = if zero_z {
                zero
            } else {
                let wd = philox::<I>([c0, ctr[0], ctr[1], ctr[2]], noise.key());
                let (za, zb) = box_muller::<I>(wd[2 * pair], wd[2 * pair + 1]);
                if p.step & 1 == 0 { za } else { zb }
            };
            let mut u = zero;
            for y in 0..k {
                let sy = I::mul(I::load(eps.as_ptr().add((1 + y) * d + e)), ni);
                let dy = I::sub(sy, su);
                dl[y] = dy;
                dot[y] = I::fma(dy, zz, dot[y]);
                d2[y] = I::fma(dy, dy, d2[y]);
                u = I::fma(wv[y], dy, u);
            }
            for y in 0..k {
                cross[y] = I::fma(dl[y], u, cross[y]);
            }
            for i in 0..np {
                let mut q = zero;
                for (cy, &y) in cv[i].iter().zip(&members[i]) {
                    q = I::fma(*cy, dl[y], q);
                }
                part[i] = I::fma(q, q, part[i]);
            }
            s2 = I::fma(su, su, s2);
            if nprobe > 0 {
                let pw = philox::<I>([c0, probe_ctr, ctr[1], ctr[2]], noise.key());
                let mut dv = zero;
                for n in 0..nprobe {
                    let bit = I::u_and(pw[n / 16], I::splat_u(1 << (n % 16)));
                    let v = I::select(I::lt(I::i_to_f(bit), half), one, minus);
                    let ep = I::load(eps.as_ptr().add((k + 1 + 2 * n) * d + e));
                    let em = I::load(eps.as_ptr().add((k + 2 + 2 * n) * d + e));
                    dv = I::fma(v, I::sub(ep, em), dv);
                }
                div = I::add(div, dv);
            }
            let xp = x.as_mut_ptr().add(e);
            let xn = I::fma(a, I::load(xp), I::fma(c, su, I::mul(sd, zz)));
            finite &= I::all_finite(xn);
            I::store(xp, xn);
        }
        for y in 0..k {
            acc.dot[y] = fold::<I>(dot[y]);
            acc.d2[y] = fold::<I>(d2[y]);
            acc.cross[y] = fold::<I>(cross[y]);
        }
        for i in 0..np {
            acc.part[i] = fold::<I>(part[i]);
        }
        acc.s2 = fold::<I>(s2);
        acc.div = fold::<I>(div);
    }
    // The tail, in scalar code with the same fused multiply-adds.
    let mut dl = [0.0f32; MAX_CLASSES];
    for e in full..d {
        let su = eps[e] * p.neg_inv_sigma;
        let zz = if zero_z {
            0.0
        } else {
            noise.normal(traj, p.step, e)
        };
        let mut u = 0.0f32;
        for y in 0..k {
            let dy = eps[(1 + y) * d + e] * p.neg_inv_sigma - su;
            dl[y] = dy;
            acc.dot[y] += (dy * zz) as f64;
            acc.d2[y] += (dy * dy) as f64;
            u = w[y].mul_add(dy, u);
        }
        for y in 0..k {
            acc.cross[y] += (dl[y] * u) as f64;
        }
        for i in 0..np {
            let q = members[i]
                .iter()
                .fold(0.0f32, |q, &y| cf[i][y].mul_add(dl[y], q));
            acc.part[i] += (q * q) as f64;
        }
        acc.s2 += (su * su) as f64;
        if nprobe > 0 {
            let pw = noise.probe_words(traj, p.step, e);
            let mut dv = 0.0f32;
            for n in 0..nprobe {
                let v = probe_sign(&pw, n);
                let diff = eps[(k + 1 + 2 * n) * d + e] - eps[(k + 2 + 2 * n) * d + e];
                dv = v.mul_add(diff, dv);
            }
            acc.div += dv as f64;
        }
        let xn = p.a.mul_add(x[e], p.c.mul_add(su, p.sd * zz));
        finite &= xn.is_finite();
        x[e] = xn;
    }
    finite
}

/// The record and the online update of ln π, in f64.
fn classifier(p: &SdeStepParams, lp: &mut [f32], acc: &Acc, rec: &mut [f32], finite: bool) {
    let k = lp.len();
    let np = p.partitions as usize;
    for y in 0..k {
        rec[REC_FIXED + y] = acc.d2[y] as f32;
        rec[REC_FIXED + k + y] = lp[y];
        rec[REC_FIXED + 2 * k + y] = acc.cross[y] as f32;
    }
    for i in 0..np {
        rec[REC_FIXED + 3 * k + i] = acc.part[i] as f32;
    }
    let (mut h, mut rb) = (0.0f64, 0.0f64);
    for (l, q) in lp.iter().zip(&acc.d2) {
        let pi = (*l as f64).exp();
        if pi > 0.0 {
            h -= pi * *l as f64;
        }
        rb += pi * q;
    }
    if p.sd > 0.0 {
        let new: Vec<f64> = lp
            .iter()
            .zip(acc.dot.iter().zip(&acc.d2))
            .map(|(l, (dt, q))| *l as f64 + p.cs as f64 * dt - p.kl as f64 * q)
            .collect();
        let m = new.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + new.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
        for (l, v) in lp.iter_mut().zip(new) {
            *l = (v - lse) as f32;
        }
    }
    rec[REC_H] = h as f32;
    rec[REC_RB] = rb as f32;
    rec[REC_FLAG] = if finite { 0.0 } else { 1.0 };
    rec[REC_S2] = acc.s2 as f32;
    rec[REC_DIV] = if p.probes > 0 {
        (acc.div * p.div_scale as f64) as f32
    } else {
        0.0
    };
}
