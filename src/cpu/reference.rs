//! Scalar f64 reference implementations: the oracles the SIMD kernels are tested against.
//! Written for clarity, one trajectory at a time, with libm's elementary functions.

use crate::rng::{INIT_STEP, Noise};
use crate::score::GaussianMixture;
use crate::sde::{Grid, Sampler};

/// Box–Muller in f64 from the same Philox words as [`crate::cpu::math::box_muller`].
pub fn box_muller(w0: u32, w1: u32) -> (f64, f64) {
    let u1 = ((w0 >> 8) as f64 + 0.5) / 16_777_216.0;
    let u2 = (w1 >> 8) as f64 / 16_777_216.0;
    let r = (-2.0 * u1.ln()).sqrt();
    let th = std::f64::consts::TAU * u2;
    (r * th.cos(), r * th.sin())
}

/// One trajectory of the fused mixture computation.
#[derive(Clone, Debug)]
pub struct RefTrajectory {
    /// Final state. (D)
    pub x: Vec<f64>,
    /// Final tracked ln π. (K)
    pub log_pi: Vec<f64>,
    /// Tracked posterior entropy per grid point. (S+1)
    pub h: Vec<f64>,
    /// Exact posterior entropy per grid point. (S+1)
    pub h_exact: Vec<f64>,
}

/// Runs trajectory `traj` of `mixture` with the stochastic `sampler` on `grid`, in f64: exact
/// scores, x' = a x + c s + √var z, and the online classifier from the prior.
pub fn mixture_trajectory(
    mixture: &GaussianMixture,
    grid: &Grid,
    sampler: &Sampler,
    noise: &Noise,
    traj: u64,
) -> RefTrajectory {
    let comps = mixture.components();
    let d = comps[0].mean.len();
    let prior = crate::score::ScoreModel::class_prior(mixture);
    let k = prior.len();
    let normals = |step: u32| -> Vec<f64> {
        (0..d)
            .map(|e| {
                // counter (element, step ≫ 2, trajectory); pair (step & 3) ≫ 1, member step & 1
                let w = noise.words(traj, e as u32, step >> 2);
                let pair = ((step & 3) >> 1) as usize;
                let (z0, z1) = box_muller(w[2 * pair], w[2 * pair + 1]);
                if step & 1 == 0 { z0 } else { z1 }
            })
            .collect()
    };
    // x_T from the exact marginal.
    let p0 = &grid.points[0];
    let u = noise.init_uniform(traj);
    let c = &comps[GaussianMixture::pick_component(&mixture.cumulative_weights_f32(), u)];
    let z = normals(INIT_STEP);
    let mut x: Vec<f64> = (0..d)
        .map(|j| p0.s * c.mean[j] + (p0.s * p0.s * c.var[j] + p0.sigma * p0.sigma).sqrt() * z[j])
        .collect();
    let mut log_pi: Vec<f64> = prior.iter().map(|p| p.ln()).collect();
    let entropy_of = |lp: &[f64]| -lp.iter().map(|l| l.exp() * l).sum::<f64>();
    let (mut h, mut h_exact) = (vec![], vec![]);
    let steps = grid.steps();
    for step in 0..steps {
        let (p, q) = (&grid.points[step], &grid.points[step + 1]);
        let e = mixture.eval(&x, p.s, p.sigma);
        h.push(entropy_of(&log_pi));
        h_exact.push(crate::info::entropy(&e.posterior));
        let tr = sampler
            .transition(p, q, step + 1 == steps)
            .expect("stochastic sampler");
        let sd = tr.var.sqrt();
        let z = if sd > 0.0 {
            normals(step as u32)
        } else {
            vec![0.0; d]
        };
        for j in 0..d {
            x[j] = tr.a * x[j] + tr.c * e.score[j] + sd * z[j];
        }
        if sd > 0.0 {
            for y in 0..k {
                let delta: Vec<f64> = (0..d)
                    .map(|j| e.class_scores[y * d + j] - e.score[j])
                    .collect();
                let dot: f64 = delta.iter().zip(&z).map(|(a, b)| a * b).sum();
                let n2: f64 = delta.iter().map(|a| a * a).sum();
                log_pi[y] += tr.c / sd * dot - tr.kl_coef() * n2;
            }
            let m = log_pi.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = m + log_pi.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
            log_pi.iter_mut().for_each(|l| *l -= lse);
        }
    }
    let end = &grid.points[steps];
    h.push(entropy_of(&log_pi));
    h_exact.push(crate::info::entropy(
        &mixture.eval(&x, end.s, end.sigma).posterior,
    ));
    RefTrajectory {
        x,
        log_pi,
        h,
        h_exact,
    }
}

/// C = A·B (+ C when `accumulate`) with f64 accumulation: the oracle of [`crate::cpu::gemm`].
pub fn gemm(
    a: crate::cpu::gemm::MatRef<'_>,
    b: crate::cpu::gemm::MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut s = if accumulate {
                c[i * ldc + j] as f64
            } else {
                0.0
            };
            for p in 0..a.cols {
                s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            c[i * ldc + j] = s as f32;
        }
    }
}

/// GroupNorm (+ SiLU) of one (batch, group) slice in f64: the oracle of
/// [`crate::cpu::group_norm`]. x: channels × spatial.
pub fn group_norm(
    x: &[f32],
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i / spatial;
            let z = (*v as f64 - mean) * inv * gamma[c] as f64 + beta[c] as f64;
            (if silu { z / (1.0 + (-z).exp()) } else { z }) as f32
        })
        .collect()
}

/// Row softmax of `x` (rows of `cols`) after scaling, in f64: the oracle of
/// [`crate::cpu::softmax::softmax_rows`].
pub fn softmax_rows(x: &[f32], cols: usize, scale: f32) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| {
            let m = row
                .iter()
                .map(|v| *v as f64 * scale as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row
                .iter()
                .map(|v| (*v as f64 * scale as f64 - m).exp())
                .collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / z) as f32)
        })
        .collect()
}

/// SiLU x·σ(x) in f64: the oracle of [`crate::cpu::softmax::silu`].
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|v| (*v as f64 / (1.0 + (-*v as f64).exp())) as f32)
        .collect()
}

/// y = a + b, element by element (twin of [`crate::cpu::elementwise::add`]).
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// x + v for every element (twin of [`crate::cpu::elementwise::add_scalar`]).
pub fn add_scalar(x: &[f32], v: f32) -> Vec<f32> {
    x.iter().map(|e| e + v).collect()
}

/// One fused reverse-SDE step of one trajectory `b` in f64 (oracle of
/// [`crate::cpu::sde_step::sde_step`] and its GPU twin): returns x', ln π' and the record in
/// the layout of [`crate::cpu::sde_step`] (5 + 3K + P values: H(π), Σ π‖Δ‖², flag 0, ‖s‖², the
/// Hutchinson ∇·s, ‖Δ_y‖², ln π, Δ_k·u, partition gaps), everything from π before the update
/// and the coefficients in f64. `eps` is (K+1+2N, D), null label first.
pub fn sde_step(
    p: &crate::cpu::sde_step::SdeStepParams,
    b: usize,
    x: &[f32],
    eps: &[f32],
    log_pi: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (k, d) = (p.classes as usize, p.dim as usize);
    let (np, nprobe) = (p.partitions as usize, p.probes as usize);
    let traj = p.traj0 + b as u64;
    let noise = crate::rng::Noise::new(p.key0 as u64 | (p.key1 as u64) << 32);
    let ni = p.neg_inv_sigma as f64;
    let z: Vec<f64> = (0..d)
        .map(|e| {
            if p.sd > 0.0 {
                noise.normal(traj, p.step, e) as f64
            } else {
                0.0
            }
        })
        .collect();
    let su: Vec<f64> = eps[..d].iter().map(|v| *v as f64 * ni).collect();
    let xn = (0..d)
        .map(|e| p.a as f64 * x[e] as f64 + p.c as f64 * su[e] + p.sd as f64 * z[e])
        .collect();
    let mut lp: Vec<f64> = log_pi.iter().map(|v| *v as f64).collect();
    let pi: Vec<f64> = lp.iter().map(|l| l.exp()).collect();
    let delta: Vec<Vec<f64>> = (0..k)
        .map(|y| {
            (0..d)
                .map(|e| eps[(1 + y) * d + e] as f64 * ni - su[e])
                .collect()
        })
        .collect();
    let mut rec = vec![0.0; 5 + 3 * k + np];
    let mut upd = vec![0.0; k];
    for y in 0..k {
        let dot: f64 = delta[y].iter().zip(&z).map(|(a, b)| a * b).sum();
        let d2: f64 = delta[y].iter().map(|a| a * a).sum();
        if pi[y] > 0.0 {
            rec[0] -= pi[y] * lp[y];
        }
        rec[1] += pi[y] * d2;
        rec[5 + y] = d2;
        rec[5 + k + y] = lp[y];
        upd[y] = p.cs as f64 * dot - p.kl as f64 * d2;
    }
    rec[3] = su.iter().map(|v| v * v).sum();
    let u: Vec<f64> = (0..d)
        .map(|e| {
            (0..k)
                .map(|y| {
                    if pi[y] > 0.0 {
                        pi[y] * lp[y] * delta[y][e]
                    } else {
                        0.0
                    }
                })
                .sum()
        })
        .collect();
    for y in 0..k {
        rec[5 + 2 * k + y] = delta[y].iter().zip(&u).map(|(a, b)| a * b).sum();
    }
    for i in 0..np {
        let (ma, mb) = (p.part_a[i], p.part_b[i]);
        let mass = |m: u32| {
            (0..k)
                .filter(|y| m >> y & 1 != 0)
                .map(|y| pi[y])
                .sum::<f64>()
        };
        let (pa, pb) = (mass(ma), mass(mb));
        if pa > 0.0 && pb > 0.0 {
            rec[5 + 3 * k + i] = (0..d)
                .map(|e| {
                    let g: f64 = (0..k)
                        .map(|y| {
                            let c = if ma >> y & 1 != 0 {
                                pi[y] / pa
                            } else if mb >> y & 1 != 0 {
                                -pi[y] / pb
                            } else {
                                0.0
                            };
                            c * delta[y][e]
                        })
                        .sum();
                    g * g
                })
                .sum();
        }
    }
    if nprobe > 0 {
        // (1/N) Σ_n v_nᵀ(s(x + h v_n) − s(x − h v_n))/(2h), s = −ε̂/σ
        let mut acc = 0.0;
        for n in 0..nprobe {
            for e in 0..d {
                let v = noise.rademacher(traj, p.step, n, e) as f64;
                let diff =
                    eps[(k + 1 + 2 * n) * d + e] as f64 - eps[(k + 2 + 2 * n) * d + e] as f64;
                acc += v * diff * ni;
            }
        }
        rec[4] = acc / (2.0 * p.probe_h as f64 * nprobe as f64);
    }
    if p.sd > 0.0 {
        lp.iter_mut().zip(&upd).for_each(|(l, u)| *l += u);
        let m = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + lp.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        lp.iter_mut().for_each(|l| *l -= lse);
    }
    (xn, lp, rec)
}
