//! The information layer as an [`Observer`]: the online Bayesian classifier per trajectory and
//! the per-grid-point sums of [`InfoSums`], for any [`crate::score::ScoreModel`] and sampler.
//!
//! Online update (Handke et al. 2025; estimators.md I2/I3): for a transition
//! x' = a x + c s(x) + √var z, the class-conditional transition has mean shifted by c Δ_y, so
//! ln π_y += [2 (x' − μ)·(c Δ_y) − c² ‖Δ_y‖²]/(2 var) = (c/√var) z·Δ_y − c²‖Δ_y‖²/(2 var),
//! started at the prior and renormalised by log-sum-exp. Steps with var = 0 carry no update.
//! The update is Bayes only along reverse-SDE paths (see
//! [`crate::sde::Sampler::supports_online_classifier`]).

use super::sums::{InfoSums, Layout, integral_weights};
use super::{InfoSpec, decision_entropy, entropy};
use crate::error::{Error, Result};
use crate::sde::{EndView, Observer, StepView};

/// Which posterior the observer tracks along each trajectory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracking {
    /// The online Bayesian classifier (needs stochastic transitions).
    Online,
    /// The model's exact posterior p(y | x_t) (deterministic samplers on exact models).
    Exact,
}

impl Tracking {
    pub fn name(&self) -> &'static str {
        match self {
            Tracking::Online => "online",
            Tracking::Exact => "exact",
        }
    }
}

/// Accumulates the information sums of one batch of trajectories.
pub struct InfoObserver<'a> {
    spec: &'a InfoSpec,
    tracking: Tracking,
    batch: usize,
    pub sums: InfoSums,
    /// Tracked ln π. (B, K)
    log_pi: Vec<f64>,
    /// Per trajectory and point: h and ‖Δ_y‖², weighted by the final posterior at the end.
    /// (S+1, B, 1+K)
    trail: Vec<f32>,
    /// Quadrature weights of the rate integrals. (S+1, 2)
    weights: Vec<[f64; 2]>,
    /// Each trajectory's Rao–Blackwell integral so far and its last integrand. (B, 2)
    rb_run: Vec<[f64; 2]>,
}

impl<'a> InfoObserver<'a> {
    /// An observer for `batch` trajectories on `grid`.
    pub fn new(
        spec: &'a InfoSpec,
        tracking: Tracking,
        batch: usize,
        grid: &crate::sde::Grid,
    ) -> Self {
        let steps = grid.steps();
        let k = spec.classes();
        let log_prior: Vec<f64> = spec.prior.iter().map(|p| p.ln()).collect();
        InfoObserver {
            spec,
            tracking,
            batch,
            sums: InfoSums::new(Layout::new(spec), steps + 1),
            log_pi: (0..batch).flat_map(|_| log_prior.iter().cloned()).collect(),
            trail: vec![0.0; (steps + 1) * batch * (1 + k)],
            weights: integral_weights(grid),
            rb_run: vec![[0.0; 2]; batch],
        }
    }

    /// Tracked ln π of every trajectory. (B, K)
    pub fn log_posterior(&self) -> &[f64] {
        &self.log_pi
    }

    /// Records the tracked posterior of trajectory `b` at point `j`; returns its entropy.
    fn record_posterior(&mut self, j: usize, b: usize, exact: Option<&[f64]>) -> f64 {
        let (k, lay) = (self.spec.classes(), self.sums.layout);
        let pi: Vec<f64> = self.log_pi[b * k..(b + 1) * k]
            .iter()
            .map(|l| l.exp())
            .collect();
        let h = entropy(&pi);
        let row = self.sums.row_mut(j);
        row[Layout::N] += 1.0;
        row[Layout::H] += h;
        row[Layout::H2] += h * h;
        if let Some(p) = exact {
            let hx = entropy(p);
            row[Layout::HX] += hx;
            row[Layout::HX2] += hx * hx;
            row[Layout::HXN] += 1.0;
        }
        for (i, part) in self.spec.partitions.iter().enumerate() {
            let pa: f64 = part.a.iter().map(|&c| pi[c]).sum();
            let pb: f64 = part.b.iter().map(|&c| pi[c]).sum();
            let w = (pa + pb) / self.spec.partition_mass(i);
            row[lay.part_w(i)] += w;
            row[lay.part_wh(i)] += w * decision_entropy(pa, pb);
        }
        self.trail[(j * self.batch + b) * (1 + k)] = h as f32;
        h
    }

    /// Advances trajectory b's Rao–Blackwell integral to point j with integrand `rb` there.
    fn rb_integral(&mut self, j: usize, b: usize, rb: f64) -> f64 {
        let [run, prev] = self.rb_run[b];
        let [w0, w1] = self.weights[j];
        let run = run + w0 * prev + w1 * rb;
        self.rb_run[b] = [run, rb];
        run
    }

    fn set_exact(&mut self, b: usize, post: &[f64]) {
        let k = self.spec.classes();
        for (l, p) in self.log_pi[b * k..(b + 1) * k].iter_mut().zip(post) {
            *l = p.max(f64::MIN_POSITIVE).ln();
        }
    }
}

impl Observer for InfoObserver<'_> {
    fn on_step(&mut self, v: &StepView<'_>) -> Result<()> {
        let (k, d, j) = (self.spec.classes(), v.scores.dim, v.step);
        if v.scores.classes != k || v.scores.batch != self.batch {
            return Err(Error::shape(
                "InfoObserver::on_step",
                (self.batch, k),
                (v.scores.batch, v.scores.classes),
            ));
        }
        let post = v.scores.posterior.as_deref();
        if self.tracking == Tracking::Exact && post.is_none() {
            return Err(Error::Unsupported {
                op: "InfoObserver",
                reason: "exact posterior tracking needs a model with an exact posterior".into(),
            });
        }
        let mut delta2 = vec![0.0f64; k];
        for b in 0..self.batch {
            let exact = post.map(|p| &p[b * k..(b + 1) * k]);
            if self.tracking == Tracking::Exact {
                self.set_exact(b, exact.unwrap_or_default());
            }
            self.record_posterior(j, b, exact);
            let su = v.scores.uncond_of(b);
            for (y, d2) in delta2.iter_mut().enumerate() {
                *d2 = v
                    .scores
                    .cond_of(b, y)
                    .iter()
                    .zip(su)
                    .map(|(a, u)| (*a as f64 - *u as f64).powi(2))
                    .sum();
            }
            self.record_delta(j, b, &delta2);
            if let Some(div) = &v.scores.divergence {
                let row = self.sums.row_mut(j);
                row[Layout::PROD] += d as f64 / (v.from.sigma * v.from.sigma) + div[b];
                row[Layout::PRODN] += 1.0;
            }
            // Online update from the transition actually taken.
            if self.tracking == Tracking::Online
                && let Some(tr) = v.transition
                && tr.var > 0.0
            {
                let sd = tr.var.sqrt();
                let z = &v.noise[b * d..(b + 1) * d];
                let lp = &mut self.log_pi[b * k..(b + 1) * k];
                for y in 0..k {
                    let dot: f64 = v
                        .scores
                        .cond_of(b, y)
                        .iter()
                        .zip(su)
                        .zip(z)
                        .map(|((a, u), zz)| (*a as f64 - *u as f64) * *zz as f64)
                        .sum();
                    lp[y] += tr.c / sd * dot - tr.kl_coef() * delta2[y];
                }
                let m = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = m + lp.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
                lp.iter_mut().for_each(|l| *l -= lse);
            }
        }
        Ok(())
    }

    fn on_end(&mut self, v: &EndView<'_>) -> Result<()> {
        self.end(v.exact_posterior.as_deref())
    }
}

impl InfoObserver<'_> {
    /// The Rao–Blackwell integrand Σ_y π_y‖Δ_y‖² of trajectory b at point j (π tracked), its
    /// running integral, and ‖Δ_y‖² kept for the final-posterior weighting.
    fn record_delta(&mut self, j: usize, b: usize, delta2: &[f64]) {
        let k = self.spec.classes();
        let pi: Vec<f64> = self.log_pi[b * k..(b + 1) * k]
            .iter()
            .map(|l| l.exp())
            .collect();
        let rb: f64 = pi.iter().zip(delta2).map(|(p, d2)| p * d2).sum();
        let run = self.rb_integral(j, b, rb);
        let row = self.sums.row_mut(j);
        row[Layout::RB] += rb;
        row[Layout::RBN] += 1.0;
        row[Layout::RBC] += run;
        row[Layout::RBC2] += run * run;
        let t0 = (j * self.batch + b) * (1 + k);
        for (o, d2) in self.trail[t0 + 1..t0 + 1 + k].iter_mut().zip(delta2) {
            *o = *d2 as f32;
        }
    }

    /// Trajectory b at point j when its step ran elsewhere (a fused device kernel that updates
    /// the classifier itself): its tracked ln π before the step's update and ‖Δ_y‖² (K each).
    pub fn record_point(
        &mut self,
        j: usize,
        b: usize,
        log_pi: &[f64],
        delta2: &[f64],
    ) -> Result<()> {
        let k = self.spec.classes();
        if log_pi.len() != k || delta2.len() != k || b >= self.batch || j + 1 >= self.sums.points {
            return Err(Error::shape(
                "InfoObserver::record_point: (j < S, b < B, K, K)",
                (self.sums.points - 1, self.batch, k, k),
                (j, b, log_pi.len(), delta2.len()),
            ));
        }
        self.log_pi[b * k..(b + 1) * k].copy_from_slice(log_pi);
        self.record_posterior(j, b, None);
        self.record_delta(j, b, delta2);
        Ok(())
    }

    /// The data end after [`InfoObserver::record_point`]s: the final tracked ln π (B, K).
    pub fn finish(&mut self, final_log_pi: &[f64]) -> Result<()> {
        if final_log_pi.len() != self.log_pi.len() {
            return Err(Error::shape(
                "InfoObserver::finish: ln π (B, K)",
                self.log_pi.len(),
                final_log_pi.len(),
            ));
        }
        self.log_pi.copy_from_slice(final_log_pi);
        self.end(None)
    }

    fn end(&mut self, exact_posterior: Option<&[f64]>) -> Result<()> {
        let k = self.spec.classes();
        let j = self.sums.points - 1;
        let lay = self.sums.layout;
        for b in 0..self.batch {
            let exact = exact_posterior.map(|p| &p[b * k..(b + 1) * k]);
            if self.tracking == Tracking::Exact
                && let Some(p) = exact
            {
                self.set_exact(b, p);
            }
            self.record_posterior(j, b, exact);
            let run = self.rb_integral(j, b, 0.0);
            let row = self.sums.row_mut(j);
            row[Layout::RBC] += run;
            row[Layout::RBC2] += run * run;
            // Weight each point's values by the final posterior of the trajectory.
            let pi: Vec<f64> = self.log_pi[b * k..(b + 1) * k]
                .iter()
                .map(|l| l.exp())
                .collect();
            let (mut g_run, mut g_prev) = (0.0f64, 0.0f64);
            for jj in 0..=j {
                let t0 = (jj * self.batch + b) * (1 + k);
                let h = self.trail[t0] as f64;
                let gir: f64 = (0..k).map(|y| pi[y] * self.trail[t0 + 1 + y] as f64).sum();
                g_run += self.weights[jj][0] * g_prev + self.weights[jj][1] * gir;
                g_prev = gir;
                let row = self.sums.row_mut(jj);
                row[Layout::GIR] += gir;
                row[Layout::GIRC2] += g_run * g_run;
                for (y, p) in pi.iter().enumerate() {
                    row[lay.class_w(y)] += p;
                    row[lay.class_wh(y)] += p * h;
                }
            }
        }
        Ok(())
    }
}

/// Runs `n` trajectories (indices `first..first+n`) of any [`crate::score::ScoreModel`] with
/// `sampler`, in batches of `batch` on rayon's pool, and returns the summed information. Batches
/// are reduced in a fixed order: the result does not depend on the number of threads.
/// `progress` is called with the number of trajectories each finished batch held.
#[allow(clippy::too_many_arguments)]
pub fn measure_trajectories<M: crate::score::ScoreModel + ?Sized>(
    model: &M,
    spec: &InfoSpec,
    grid: &crate::sde::Grid,
    sampler: &crate::sde::Sampler,
    noise: crate::rng::Noise,
    first: u64,
    n: usize,
    batch: usize,
    tracking: Tracking,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<InfoSums> {
    use rayon::prelude::*;
    if tracking == Tracking::Online
        && let Some(reason) = sampler.online_classifier_refusal()
    {
        return Err(Error::Unsupported {
            op: "measure_trajectories",
            reason: format!("{reason} (track the exact posterior instead)"),
        });
    }
    let batch = batch.max(1);
    let batches = n.div_ceil(batch);
    // Groups of batches run in parallel and are merged into the total in batch order as each
    // group ends: memory is O(group × grid), not O(trajectories / batch × grid), and the sum is
    // the same sequential fold over batches 0, 1, 2, … whatever the group size or thread count.
    let group = 2 * rayon::current_num_threads().max(1);
    let mut total = InfoSums::new(Layout::new(spec), grid.steps() + 1);
    for g0 in (0..batches).step_by(group) {
        let parts: Vec<Result<InfoSums>> = (g0..batches.min(g0 + group))
            .into_par_iter()
            .map(|i| {
                let s = i * batch;
                let b = batch.min(n - s);
                let mut obs = InfoObserver::new(spec, tracking, b, grid);
                crate::sde::sample(model, grid, sampler, noise, first + s as u64, b, &mut obs)?;
                if let Some(p) = progress {
                    p(b);
                }
                Ok(obs.sums)
            })
            .collect();
        for p in parts {
            total.merge(&p?);
        }
    }
    Ok(total)
}
