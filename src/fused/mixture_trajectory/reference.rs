//! The f64 oracle of the fused mixture kernel: one trajectory at a time, written for clarity,
//! with libm's elementary functions.

use crate::diffusion::{Grid, SamplerKind};
use crate::rng::{INIT_STEP, Noise};
use crate::score::GaussianMixture;
use crate::simd::reference::box_muller;

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
    sampler: &SamplerKind,
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
            let upd = crate::info::OnlineUpdate::from_transition(&tr);
            for y in 0..k {
                let delta: Vec<f64> = (0..d)
                    .map(|j| e.class_scores[y * d + j] - e.score[j])
                    .collect();
                let dot: f64 = delta.iter().zip(&z).map(|(a, b)| a * b).sum();
                let n2: f64 = delta.iter().map(|a| a * a).sum();
                log_pi[y] += upd.increment(dot, n2);
            }
            crate::info::classifier::normalise_log(&mut log_pi);
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
