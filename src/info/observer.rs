//! The information layer as an [`Observer`]: the online Bayesian classifier per trajectory and
//! the per-grid-point sums of [`InfoSums`], for any [`crate::score::ScoreModel`] and sampler,
//! guided or not, one-step or multistep.
//!
//! # The online update, from the transition actually taken
//!
//! For every label y the sampler run on the class-conditional scores s(·|y) is a chain whose
//! step, given everything before it (the states x_T, …, x and the scores taken at them), is
//! Gaussian, x' ~ N(μ_y, var·I), with
//!
//! μ_y = a·x + c·s(x|y) + Σ_{j=1..J} c_j·s_{−j}(x_{−j}|y) + b,
//!
//! s_{−j}(x_{−j}|·) the score taken j grid steps back and b the label-free terms in earlier
//! states; a, c, c_j, var and b are the same for every label (the [`crate::diffusion::Transition`]
//! the sampler returns, `earlier()` holding the c_j; J ≤ [`MAX_EARLIER_TERMS`]). The unconditional
//! chain is the same with s(·) (a network's null label, an exact model's Σ_y p(y|·) s(·|y)):
//! μ_u = μ_y − Δμ_y, Δμ_y = c·Δ_y + Σ_j c_j·Δ_{y,−j}, Δ_y = s(x|y) − s(x). The model's joint law of
//! label and path is p(y)·P_y(path), P_y the class-y chain's law from the label-free x_T, so by
//! Bayes and the chain rule the posterior given the path so far, π_y = p(y | x_T, …, x'), moves
//! by the step's likelihood: ln π_y += ln N(x'; μ_y, var) − ln N(x'; μ_u, var) (then ln π is
//! renormalised by log-sum-exp), that is
//!
//! ln π_y += (r·Δμ_y − ½‖Δμ_y‖²)/var, r = x' − μ_u.
//!
//! The reference μ_u cancels in the normalisation: the update is a function of the path, Bayes
//! whatever drew it. The observer keeps, per trajectory, the last [`MAX_EARLIER_TERMS`] steps'
//! Δ_y (B, K, D each) to form Δμ_y.
//!
//! What r is. The sampler draws the step with a drive score ŝ in place of s:
//! x' = μ_u + c·(ŝ − s) + Σ_j c_j·(ŝ_{−j} − s_{−j}) + √var·z, z the step's normals
//! ([`StepView::noise`]). Unguided (ŝ = s), r = √var·z. With classifier-free guidance towards y*
//! at scale W ([`crate::info::Guidance`]: ŝ = s + W·Δ_{y*} at every point),
//! r = √var·z + W·Δμ_{y*}: x' − μ_u carries the guidance drift, and the update must see it
//! (with √var·z alone a guided path would be scored as if it had been drawn unconditionally).
//! The observer forms r this way from z, W and its Δ history, not as x' − μ_u from the f32
//! states (the label-free b is not in the transition, and the subtraction would cancel).
//!
//! What is tracked, then, is p(y | path) under the model's class-conditional path laws:
//! - unguided (W = 0): the path is drawn from the unconditional chain. In the continuum that is
//!   the mixture Σ_y p(y) P_y (the reverse SDE of the mixture is the mixture of the reverse
//!   SDEs), the filter property p(y | x_{t..T}) = p(y | x_t) holds (estimators.md I1–I3), and
//!   E[H(π_t)] = H(Y | X_t), which `h_online` estimates up to the grid's error (coarse filters
//!   overestimate H);
//! - conditional sampling (W = 1, y* cycled over the classes): (y*, path) is drawn from the
//!   model's joint itself when the cycle follows the prior (every class once per K trajectories
//!   for a uniform prior), so π is the exact Bayes posterior of the discrete chain:
//!   E[H(π_t)] = H(Y | X_T, …, X_t) of the chain and E[π_{y*}] = E[Σ_y π_y²] (calibration), no
//!   continuum limit needed; as the grid refines both go to the exact H(Y | X_t), E[p(y*|X_t)];
//! - guided (W ∉ {0, 1}): the guided path law is not the model's, so the curve is
//!   E_guided[H(p(y | path))], the model's uncertainty about the label of guided paths (how
//!   recognisably guidance has made them class y*), not an entropy of the model's joint.
//!
//! A deterministic sampler (var = 0 on every step) has no transition density: the path is a
//! function of x_T, p(y | x_T, …, x_t) = p(y | x_T) at every t, and the Bayes update is
//! degenerate (no step carries evidence). There the model's exact posterior p(y | x_t) is
//! tracked instead ([`Tracking::Exact`], models that have one): the probability-flow ODE carries
//! p_T to p_t, so E[H(p(y | X_t))] along its paths is H(Y | X_t). Steps with var = 0 inside a
//! stochastic sampler (a last step to σ = 0) carry no update. The online classifier is also
//! refused where the sampler's stochastic path is not a discretised reverse SDE (see
//! [`crate::diffusion::SamplerKind::supports_online_classifier`]).

use super::sums::{InfoSums, Layout, integral_weights};
use super::{Guidance, InfoSpec, decision_entropy, entropy};
use crate::diffusion::sampler::MAX_EARLIER_TERMS;
use crate::diffusion::{EndView, Observer, StepView};
use crate::error::{Error, Result};

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
    /// Each trajectory's tracked entropy at the noise end, h_i(0). (B)
    h0: Vec<f64>,
    /// σ_t of each grid point. (S+1)
    sigmas: Vec<f64>,
    /// Δ_y of one trajectory at one point, in f64. (K, D)
    delta: Vec<f64>,
    /// Guidance of the path (None: drawn with the unconditional score).
    guidance: Option<&'a Guidance>,
    /// The last [`MAX_EARLIER_TERMS`] steps' Δ_y, step j in slot j mod J (online tracking
    /// only). (J, B, K, D)
    history: Vec<f64>,
    /// Steps recorded in `history` so far.
    history_steps: usize,
    /// Δμ_y of one trajectory's step. (K, D)
    dmu: Vec<f64>,
}

/// What one trajectory's scores at one grid point contribute beyond its posterior (Δ_y =
/// s(x|y) − s(x), π the tracked posterior at the point, before the step's update).
#[derive(Clone, Copy, Debug)]
pub struct PointScores<'a> {
    /// ‖Δ_y‖². (K)
    pub delta2: &'a [f64],
    /// Δ_k·u with u = Σ_y π_y ln π_y Δ_y. (K)
    pub cross: &'a [f64],
    /// ‖s(x|a) − s(x|b)‖² of each partition, s(x|z) = Σ_{y∈z} π_y s(x|y)/π_z (0 where π_a or
    /// π_b is 0). (P)
    pub part_d2: &'a [f64],
    /// ‖s(x)‖².
    pub s2: f64,
    /// ∇·s(x), where known (exactly, or estimated by Hutchinson probes).
    pub div: Option<f64>,
}

/// The [`PointScores`] of one trajectory from its Δ_y (K, D) and tracked ln π (K): writes ‖Δ_y‖²
/// into `delta2`, Δ_k·u into `cross` and the partitions' ‖s(x|a) − s(x|b)‖² into `part_d2`.
/// `scratch` holds one D-vector.
pub fn point_terms(
    spec: &InfoSpec,
    log_pi: &[f64],
    delta: &[f64],
    delta2: &mut [f64],
    cross: &mut [f64],
    part_d2: &mut [f64],
    scratch: &mut Vec<f64>,
) {
    let k = spec.classes();
    let d = delta.len() / k.max(1);
    let dy = |y: usize| &delta[y * d..(y + 1) * d];
    for y in 0..k {
        delta2[y] = dy(y).iter().map(|v| v * v).sum();
    }
    // u = Σ_y π_y ln π_y Δ_y
    scratch.clear();
    scratch.resize(d, 0.0);
    for (y, &l) in log_pi.iter().enumerate() {
        let w = if l > f64::NEG_INFINITY {
            l.exp() * l
        } else {
            0.0
        };
        for (u, v) in scratch.iter_mut().zip(dy(y)) {
            *u += w * v;
        }
    }
    for y in 0..k {
        cross[y] = dy(y).iter().zip(scratch.iter()).map(|(a, b)| a * b).sum();
    }
    // s(x|a) − s(x|b) = Σ_{y∈a} (π_y/π_a) Δ_y − Σ_{y∈b} (π_y/π_b) Δ_y
    for (i, part) in spec.partitions.iter().enumerate() {
        let mass = |set: &[usize]| set.iter().map(|&c| log_pi[c].exp()).sum::<f64>();
        let (pa, pb) = (mass(&part.a), mass(&part.b));
        if !(pa > 0.0 && pb > 0.0) {
            part_d2[i] = 0.0;
            continue;
        }
        scratch.iter_mut().for_each(|v| *v = 0.0);
        // π_y/π_z ≤ 1 as one division (1/π_z alone overflows for a subnormal π_z).
        for (set, mass, sign) in [(&part.a, pa, 1.0), (&part.b, pb, -1.0)] {
            for &c in set.iter() {
                let w = sign * (log_pi[c].exp() / mass);
                for (u, v) in scratch.iter_mut().zip(dy(c)) {
                    *u += w * v;
                }
            }
        }
        part_d2[i] = scratch.iter().map(|v| v * v).sum();
    }
}

impl<'a> InfoObserver<'a> {
    /// An observer for `batch` trajectories on `grid`.
    pub fn new(
        spec: &'a InfoSpec,
        tracking: Tracking,
        batch: usize,
        grid: &crate::diffusion::Grid,
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
            h0: vec![0.0; batch],
            sigmas: grid.points.iter().map(|p| p.sigma).collect(),
            delta: vec![],
            guidance: None,
            history: vec![],
            history_steps: 0,
            dmu: vec![],
        }
    }

    /// This observer for paths drawn with `guidance` (the residual of each online update then
    /// carries the guidance drift; module docs).
    pub fn with_guidance(mut self, guidance: Option<&'a Guidance>) -> Self {
        self.guidance = guidance;
        self
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
        if j == 0 {
            self.h0[b] = h;
        }
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
        let online = self.tracking == Tracking::Online;
        let update = v.transition.filter(|tr| online && tr.var > 0.0);
        if let Some(tr) = update
            && tr.earlier().len() > self.history_steps.min(MAX_EARLIER_TERMS)
        {
            return Err(Error::Shape {
                op: "InfoObserver::on_step: the transition's earlier score terms",
                expected: format!(
                    "at most the {} earlier steps seen",
                    self.history_steps.min(MAX_EARLIER_TERMS)
                ),
                found: format!("{} terms at step {j}", tr.earlier().len()),
            });
        }
        if online && self.history.is_empty() {
            self.history = vec![0.0; MAX_EARLIER_TERMS * self.batch * k * d];
        }
        let np = self.spec.partitions.len();
        let (mut delta2, mut cross, mut part_d2) =
            (vec![0.0f64; k], vec![0.0f64; k], vec![0.0f64; np]);
        let mut scratch = Vec::with_capacity(d);
        let mut delta = std::mem::take(&mut self.delta);
        delta.resize(k * d, 0.0);
        for b in 0..self.batch {
            let exact = post.map(|p| &p[b * k..(b + 1) * k]);
            if self.tracking == Tracking::Exact {
                self.set_exact(b, exact.unwrap_or_default());
            }
            let h = self.record_posterior(j, b, exact);
            let su = v.scores.uncond_of(b);
            for y in 0..k {
                for ((o, a), u) in delta[y * d..(y + 1) * d]
                    .iter_mut()
                    .zip(v.scores.cond_of(b, y))
                    .zip(su)
                {
                    *o = *a as f64 - *u as f64;
                }
            }
            point_terms(
                self.spec,
                &self.log_pi[b * k..(b + 1) * k],
                &delta,
                &mut delta2,
                &mut cross,
                &mut part_d2,
                &mut scratch,
            );
            let s2: f64 = su.iter().map(|v| (*v as f64).powi(2)).sum();
            let ps = PointScores {
                delta2: &delta2,
                cross: &cross,
                part_d2: &part_d2,
                s2,
                div: v.scores.divergence.as_ref().map(|dv| dv[b]),
            };
            self.record_scores(j, b, h, (d, v.from.sigma), &ps);
            // Online update from the transition actually taken (module docs).
            if let Some(tr) = update {
                self.online_update(
                    &tr,
                    j,
                    b,
                    &delta,
                    &v.noise[b * d..(b + 1) * d],
                    v.first_trajectory,
                );
            }
            if online {
                let slot = (j % MAX_EARLIER_TERMS) * self.batch + b;
                self.history[slot * k * d..(slot + 1) * k * d].copy_from_slice(&delta);
            }
        }
        self.delta = delta;
        if online {
            self.history_steps += 1;
        }
        Ok(())
    }

    fn on_end(&mut self, v: &EndView<'_>) -> Result<()> {
        self.end(v.exact_posterior.as_deref())
    }
}

impl InfoObserver<'_> {
    /// ln π_b += (r·Δμ_y − ½‖Δμ_y‖²)/var for the step `tr` from point j, with Δμ_y from `delta`
    /// (this step's Δ_y, (K, D)) and the history, r = √var·z + W·Δμ_{y*} (module docs).
    fn online_update(
        &mut self,
        tr: &crate::diffusion::Transition,
        j: usize,
        b: usize,
        delta: &[f64],
        z: &[f32],
        first_trajectory: u64,
    ) {
        let k = self.spec.classes();
        let d = z.len();
        self.dmu.resize(k * d, 0.0);
        // Δμ_y = c·Δ_y + Σ_j c_j·Δ_{y,−j}. (K, D)
        for (o, dv) in self.dmu.iter_mut().zip(delta) {
            *o = tr.c * dv;
        }
        for (back, cj) in (1..).zip(tr.earlier()) {
            let slot = ((j - back) % MAX_EARLIER_TERMS) * self.batch + b;
            let past = &self.history[slot * k * d..(slot + 1) * k * d];
            for (o, dv) in self.dmu.iter_mut().zip(past) {
                *o += cj * dv;
            }
        }
        let sd = tr.var.sqrt();
        let drift = self
            .guidance
            .filter(|g| g.scale != 0.0)
            .map(|g| (g.scale, g.label(first_trajectory + b as u64)));
        let lp = &mut self.log_pi[b * k..(b + 1) * k];
        for (y, l) in lp.iter_mut().enumerate() {
            let dm = &self.dmu[y * d..(y + 1) * d];
            let (mut r_dot, mut dm2) = (0.0f64, 0.0f64);
            match drift {
                None => {
                    for (m, zz) in dm.iter().zip(z) {
                        r_dot += sd * *zz as f64 * m;
                        dm2 += m * m;
                    }
                }
                Some((w, ys)) => {
                    let dms = &self.dmu[ys * d..(ys + 1) * d];
                    for ((m, zz), g) in dm.iter().zip(z).zip(dms) {
                        r_dot += (sd * *zz as f64 + w * g) * m;
                        dm2 += m * m;
                    }
                }
            }
            *l += (r_dot - 0.5 * dm2) / tr.var;
        }
        crate::info::classifier::normalise_log(lp);
    }

    /// Trajectory b's scores at point j (D dimensions, σ_t = `sigma`): the Rao–Blackwell integrand
    /// Σ_y π_y‖Δ_y‖² (π tracked) and its running integral, the decision and per-class rate
    /// integrands, entropy production in both forms, and ‖Δ_y‖² kept for the final-posterior
    /// weighting.
    fn record_scores(
        &mut self,
        j: usize,
        b: usize,
        h: f64,
        (d, sigma): (usize, f64),
        ps: &PointScores<'_>,
    ) {
        let k = self.spec.classes();
        let lay = self.sums.layout;
        let pi: Vec<f64> = self.log_pi[b * k..(b + 1) * k]
            .iter()
            .map(|l| l.exp())
            .collect();
        let rb: f64 = pi.iter().zip(ps.delta2).map(|(p, d2)| p * d2).sum();
        let run = self.rb_integral(j, b, rb);
        let h0 = self.h0[b];
        let d_over_s2 = d as f64 / (sigma * sigma);
        let ibp = d_over_s2 - ps.s2;
        let row = self.sums.row_mut(j);
        row[Layout::RB] += rb;
        row[Layout::RBN] += 1.0;
        row[Layout::RBC] += run;
        row[Layout::RBC2] += run * run;
        row[Layout::RBD2] += (h0 - h - run).powi(2);
        row[Layout::IBP] += ibp;
        row[Layout::IBP2] += ibp * ibp;
        if let Some(div) = ps.div {
            let prod = d_over_s2 + div;
            row[Layout::PROD] += prod;
            row[Layout::PROD2] += prod * prod;
            row[Layout::PRODN] += 1.0;
            row[Layout::IBPD2] += (prod - ibp).powi(2);
        }
        for (i, part) in self.spec.partitions.iter().enumerate() {
            let pa: f64 = part.a.iter().map(|&c| pi[c]).sum();
            let pb: f64 = part.b.iter().map(|&c| pi[c]).sum();
            let pab = pa + pb;
            // w·q_a q_b = (P(a∪b|x)/P(a∪b)) · π_a π_b / π_ab², as (π_a/π_ab)(π_b/P(a∪b)): no
            // product of two small masses underflows into 0/0.
            let v = if pab > 0.0 {
                (pa / pab) * (pb / self.spec.partition_mass(i)) * ps.part_d2[i]
            } else {
                0.0
            };
            row[lay.part_rate(i)] += v;
            row[lay.part_rate2(i)] += v * v;
        }
        for y in 0..k {
            let v = pi[y] * (rb + 2.0 * ps.cross[y]);
            row[lay.class_rate(y)] += v;
            row[lay.class_rate2(y)] += v * v;
        }
        let t0 = (j * self.batch + b) * (1 + k);
        for (o, d2) in self.trail[t0 + 1..t0 + 1 + k].iter_mut().zip(ps.delta2) {
            *o = *d2 as f32;
        }
    }

    /// Trajectory b at point j when its step ran elsewhere (a fused device kernel that updates
    /// the classifier itself): its tracked ln π before the step's update (K) and its
    /// [`PointScores`] on a state of `dim` elements.
    pub fn record_point(
        &mut self,
        j: usize,
        b: usize,
        dim: usize,
        log_pi: &[f64],
        ps: &PointScores<'_>,
    ) -> Result<()> {
        let (k, np) = (self.spec.classes(), self.spec.partitions.len());
        if log_pi.len() != k
            || ps.delta2.len() != k
            || ps.cross.len() != k
            || ps.part_d2.len() != np
            || b >= self.batch
            || j + 1 >= self.sums.points
        {
            return Err(Error::shape(
                "InfoObserver::record_point: (j < S, b < B, ln π K, ‖Δ‖² K, cross K, partitions P)",
                (self.sums.points - 1, self.batch, k, k, k, np),
                (
                    j,
                    b,
                    log_pi.len(),
                    ps.delta2.len(),
                    ps.cross.len(),
                    ps.part_d2.len(),
                ),
            ));
        }
        self.log_pi[b * k..(b + 1) * k].copy_from_slice(log_pi);
        let h = self.record_posterior(j, b, None);
        let sigma = self.sigmas[j];
        self.record_scores(j, b, h, (dim, sigma), ps);
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
            let h = self.record_posterior(j, b, exact);
            let run = self.rb_integral(j, b, 0.0);
            let h0 = self.h0[b];
            let row = self.sums.row_mut(j);
            row[Layout::RBC] += run;
            row[Layout::RBC2] += run * run;
            row[Layout::RBD2] += (h0 - h - run).powi(2);
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
                row[Layout::HG2] += (h + g_run).powi(2);
                for (y, p) in pi.iter().enumerate() {
                    row[lay.class_w(y)] += p;
                    row[lay.class_wh(y)] += p * h;
                }
            }
        }
        Ok(())
    }
}

/// How [`measure_run`] draws its paths beyond the sampler: guidance, the initial scale, and a
/// progress callback.
#[derive(Clone, Copy, Default)]
pub struct MeasureOptions<'a> {
    /// Draw each path with the guided score (None: the unconditional one).
    pub guidance: Option<&'a Guidance>,
    /// x_T = `init_scale`·z with z the run's initial normals (a diffusers sampler's start,
    /// [`crate::diffusion::Plan::init_scale`]); None: the model's
    /// [`crate::score::ScoreModel::initial_state`].
    pub init_scale: Option<f64>,
    /// Called with the number of trajectories each finished batch held.
    pub progress: Option<&'a (dyn Fn(usize) + Sync)>,
}

/// Runs `n` trajectories (indices `first..first+n`) of any [`crate::score::ScoreModel`] with
/// `sampler`, in batches of `batch` on rayon's pool, and returns the summed information. Batches
/// are reduced in a fixed order: the result does not depend on the number of threads.
/// `progress` is called with the number of trajectories each finished batch held.
#[allow(clippy::too_many_arguments)]
pub fn measure_trajectories<M: crate::score::ScoreModel + ?Sized>(
    model: &M,
    spec: &InfoSpec,
    grid: &crate::diffusion::Grid,
    sampler: &crate::diffusion::SamplerKind,
    noise: crate::rng::Noise,
    first: u64,
    n: usize,
    batch: usize,
    tracking: Tracking,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<InfoSums> {
    let opts = MeasureOptions {
        progress,
        ..MeasureOptions::default()
    };
    measure_run(
        model, spec, grid, sampler, noise, first, n, batch, tracking, &opts,
    )
}

/// [`measure_trajectories`] with guidance and a given initial scale ([`MeasureOptions`]).
#[allow(clippy::too_many_arguments)]
pub fn measure_run<M: crate::score::ScoreModel + ?Sized>(
    model: &M,
    spec: &InfoSpec,
    grid: &crate::diffusion::Grid,
    sampler: &crate::diffusion::SamplerKind,
    noise: crate::rng::Noise,
    first: u64,
    n: usize,
    batch: usize,
    tracking: Tracking,
    opts: &MeasureOptions<'_>,
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
    if let Some(g) = opts.guidance
        && let Some(c) = g.classes.iter().find(|c| **c >= spec.classes())
    {
        return Err(Error::config(
            "classes",
            format!("guidance labels in 0..{}", spec.classes()),
            c,
        ));
    }
    let batch = batch.max(1);
    let batches = n.div_ceil(batch);
    let (d, k) = (model.dim(), model.num_classes());
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
                let traj0 = first + s as u64;
                let mut obs =
                    InfoObserver::new(spec, tracking, b, grid).with_guidance(opts.guidance);
                let mut x = vec![0.0f32; b * d]; // (B, D)
                for (r, row) in x.chunks_mut(d.max(1)).enumerate() {
                    match opts.init_scale {
                        Some(scale) => {
                            noise.fill_normals(traj0 + r as u64, crate::rng::INIT_STEP, row);
                            row.iter_mut().for_each(|v| *v = (*v as f64 * scale) as f32);
                        }
                        None => model.initial_state(&grid.points[0], &noise, traj0 + r as u64, row),
                    }
                }
                let inner = sampler.build(grid, b, d, k)?;
                let mut guided;
                let mut plain = inner;
                let run: &mut dyn crate::diffusion::Sampler = match opts.guidance {
                    Some(g) => {
                        guided = super::GuidedSampler::new(plain, g);
                        &mut guided
                    }
                    None => plain.as_mut(),
                };
                crate::diffusion::sample_from(model, grid, run, noise, traj0, x, &mut obs)?;
                if let Some(p) = opts.progress {
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
