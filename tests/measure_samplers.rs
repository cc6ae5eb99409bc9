//! The online classifier along the actual transition (src/info/observer.rs): against the Bayes
//! posterior of the path computed by brute force, on multistep and guided paths; exact identities
//! of conditional sampling (calibration, the martingale of the prior); the shuffled-label null;
//! and each stochastic sampler's H(Y | X_t) curve against the quadrature. Entropies in nats.
//!
//! The brute force knows nothing of the observer's formula or of a sampler's coefficients: for
//! every label y it runs a shadow copy of the sampler on the class-y scores s(·|y), fed the
//! actual path's state at every step, so that its output minus its own noise is the class-y
//! chain's mean μ_y given the actual history; p(y | path) ∝ p(y)·Π_steps N(x'; μ_y, var).

use infodiff::diffusion::{
    AncestralVariance, Ddpm, Grid, GridPoint, Observer, Process, Sampler, SamplerKind, ScoreFn,
    StepCtx, StepView, Transition, sample_from,
};
use infodiff::info::{Guidance, GuidedSampler, InfoObserver, InfoSpec, Tracking};
use infodiff::rng::Noise;
use infodiff::score::{Component, GaussianMixture, ScoreCtx, ScoreModel, Scores};

/// Three classes in one dimension, N(−2, 0.05), N(0, 0.05), N(2, 0.05): bounded scores at σ → 0.
fn three_classes() -> GaussianMixture {
    GaussianMixture::new(
        [(-2.0, 0), (0.0, 1), (2.0, 2)]
            .iter()
            .map(|&(m, c)| Component {
                weight: 1.0,
                mean: vec![m],
                var: vec![0.05],
                class: c,
            })
            .collect(),
    )
    .unwrap()
}

/// A made-up multistep sampler with label-free terms in earlier states: on the ancestral step's
/// (a, c, var), x' = (a − e)·x + c·Σ_j w_j·ŝ_{−j} + e·x_{−1} + √var·z, using as many earlier drive
/// scores as it has (weights renormalised to sum 1 on the first steps). Its transition reports
/// a − e, c·w_0 and the earlier c·w_j, but not e·x_{−1}: the observer must not need it.
struct Multistep {
    weights: Vec<f64>,
    e: f64,
    /// Drive scores of the earlier steps, most recent first. (J, B, D)
    past: Vec<Vec<f32>>,
    prev_x: Option<Vec<f32>>,
}

impl Multistep {
    fn new(weights: &[f64]) -> Multistep {
        Multistep {
            weights: weights.to_vec(),
            e: 0.02,
            past: vec![],
            prev_x: None,
        }
    }
}

impl Sampler for Multistep {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> infodiff::Result<Option<Transition>> {
        let base = SamplerKind::Ancestral {
            variance: AncestralVariance::Beta,
        }
        .transition(ctx.from, ctx.to, ctx.last)
        .unwrap();
        let used = self.weights.len().min(1 + self.past.len());
        let norm: f64 = self.weights[..used].iter().sum();
        let w: Vec<f64> = self.weights[..used].iter().map(|v| v / norm).collect();
        let e = if self.prev_x.is_some() { self.e } else { 0.0 };
        let tr = Transition::new(base.a - e, base.c * w[0], base.var)
            .with_earlier(&w[1..].iter().map(|v| base.c * v).collect::<Vec<_>>())?;
        let (d, n) = (ctx.dim, ctx.batch * ctx.dim);
        let sd = base.var.sqrt();
        for (b, row) in z[..n].chunks_mut(d).enumerate() {
            ctx.noise
                .fill_normals(ctx.first_trajectory + b as u64, ctx.step as u32, row);
            if sd == 0.0 {
                row.fill(0.0);
            }
        }
        for i in 0..n {
            let mut m = tr.a * x[i] as f64 + tr.c * scores.uncond[i] as f64;
            for (cj, p) in tr.earlier().iter().zip(&self.past) {
                m += cj * p[i] as f64;
            }
            if let Some(px) = &self.prev_x {
                m += e * px[i] as f64;
            }
            x_next[i] = (m + sd * z[i] as f64) as f32;
        }
        self.past.insert(0, scores.uncond.clone());
        self.past.truncate(self.weights.len() - 1);
        self.prev_x = Some(x.to_vec());
        Ok(Some(tr))
    }
}

/// The model's class-y scores as the unconditional ones: what the class-y chain is driven by.
fn as_class(scores: &Scores, y: usize, out: &mut Scores) {
    out.clone_from(scores);
    for b in 0..scores.batch {
        let d = scores.dim;
        out.uncond[b * d..(b + 1) * d].copy_from_slice(scores.cond_of(b, y));
    }
}

struct ClassFn<'a> {
    model: &'a GaussianMixture,
    y: usize,
}

impl ScoreFn for ClassFn<'_> {
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> infodiff::Result<()> {
        let mut s = Scores::new(out.batch, out.dim, out.classes);
        self.model.scores_at(x, point, ctx, &mut s)?;
        as_class(&s, self.y, out);
        Ok(())
    }
}

/// Shadow samplers, one per label, and the brute-force log-likelihoods of the actual path. (B, K)
struct BruteForce {
    shadows: Vec<Box<dyn Sampler>>,
    ll: Vec<f64>,
}

/// The InfoObserver with checks beside it: the brute-force posterior (when `brute` is set), and
/// per grid point after each step the sums of π_{y*} − Σ_y π_y², (π_{y*} − Σπ²)² and π_y
/// (calibration of conditional sampling).
struct Probe<'a> {
    info: InfoObserver<'a>,
    model: &'a GaussianMixture,
    noise: Noise,
    steps: usize,
    brute: Option<BruteForce>,
    /// Largest |π_observer − π_brute| seen, and where (step, trajectory).
    worst: (f64, usize, u64),
    /// The label y* of each trajectory, for calibration sums.
    label: Option<&'a dyn Fn(u64) -> usize>,
    /// Per point j ≥ 1: [Σ d, Σ d², Σ π_0, …, Σ π_{K−1}] with d = π_{y*} − Σ_y π_y².
    calib: Vec<Vec<f64>>,
}

impl Observer for Probe<'_> {
    fn on_step(&mut self, v: &StepView<'_>) -> infodiff::Result<()> {
        self.info.on_step(v)?;
        let (batch, d, k) = (v.scores.batch, v.scores.dim, v.scores.classes);
        let lp = self.info.log_posterior();
        if let Some(bf) = &mut self.brute {
            let ctx = StepCtx {
                step: v.step,
                from: v.from,
                to: v.to,
                last: v.step + 1 == self.steps,
                noise: self.noise,
                first_trajectory: v.first_trajectory,
                batch,
                dim: d,
            };
            let mut sy = Scores::default();
            let (mut xn, mut z) = (vec![0.0f32; batch * d], vec![0.0f32; batch * d]);
            for (y, sh) in bf.shadows.iter_mut().enumerate() {
                as_class(v.scores, y, &mut sy);
                let f = ClassFn {
                    model: self.model,
                    y,
                };
                let tr = sh.step(&f, &ctx, v.x, &sy, &mut xn, &mut z)?.unwrap();
                if tr.var == 0.0 {
                    continue;
                }
                let sd = tr.var.sqrt();
                for b in 0..batch {
                    let r2: f64 = (0..d)
                        .map(|e| {
                            let i = b * d + e;
                            let mu = xn[i] as f64 - sd * z[i] as f64;
                            (v.x_next[i] as f64 - mu).powi(2)
                        })
                        .sum();
                    bf.ll[b * k + y] -= r2 / (2.0 * tr.var);
                }
            }
            for b in 0..batch {
                let row = &bf.ll[b * k..(b + 1) * k];
                let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let zsum: f64 = row.iter().map(|l| (l - m).exp()).sum();
                for y in 0..k {
                    let brute = (row[y] - m).exp() / zsum;
                    let got = lp[b * k + y].exp();
                    if (got - brute).abs() > self.worst.0 {
                        self.worst = ((got - brute).abs(), v.step, v.first_trajectory + b as u64);
                    }
                }
            }
        }
        if let Some(label) = self.label {
            let row = &mut self.calib[v.step + 1];
            for b in 0..batch {
                let pi: Vec<f64> = lp[b * k..(b + 1) * k].iter().map(|l| l.exp()).collect();
                let dv = pi[label(v.first_trajectory + b as u64)]
                    - pi.iter().map(|p| p * p).sum::<f64>();
                row[0] += dv;
                row[1] += dv * dv;
                for y in 0..k {
                    row[2 + y] += pi[y];
                }
            }
        }
        Ok(())
    }
}

/// Runs `n` trajectories in batches of 64 with `make()`'s sampler (guided by `guidance` where
/// set) and a [`Probe`]; returns the largest |π − π_brute| and the calibration sums.
fn run_probe(
    model: &GaussianMixture,
    grid: &Grid,
    make: &dyn Fn() -> Box<dyn Sampler>,
    guidance: Option<&Guidance>,
    n: usize,
    brute: bool,
    label: Option<&dyn Fn(u64) -> usize>,
) -> (f64, Vec<Vec<f64>>) {
    let spec = InfoSpec::new(model.class_prior(), vec![]).unwrap();
    let (d, k) = (model.dim(), model.num_classes());
    let noise = Noise::new(11);
    let mut worst = (0.0f64, 0, 0);
    let mut calib = vec![vec![0.0; 2 + k]; grid.points.len()];
    for first in (0..n).step_by(64) {
        let b = 64.min(n - first);
        let mut probe = Probe {
            info: InfoObserver::new(&spec, Tracking::Online, b, grid).with_guidance(guidance),
            model,
            noise,
            steps: grid.steps(),
            brute: brute.then(|| BruteForce {
                shadows: (0..k).map(|_| make()).collect(),
                ll: (0..b)
                    .flat_map(|_| spec.prior.iter().map(|p| p.ln()))
                    .collect(),
            }),
            worst: (0.0, 0, 0),
            label,
            calib: std::mem::take(&mut calib),
        };
        let mut x = vec![0.0f32; b * d]; // (B, D)
        for (r, row) in x.chunks_mut(d).enumerate() {
            model.initial_state(&grid.points[0], &noise, (first + r) as u64, row);
        }
        let inner = make();
        let mut guided;
        let mut plain = inner;
        let sampler: &mut dyn Sampler = match guidance {
            Some(g) => {
                guided = GuidedSampler::new(plain, g);
                &mut guided
            }
            None => plain.as_mut(),
        };
        sample_from(model, grid, sampler, noise, first as u64, x, &mut probe).unwrap();
        if probe.worst.0 > worst.0 {
            worst = probe.worst;
        }
        calib = probe.calib;
    }
    eprintln!(
        "largest |π − π_brute| = {:.2e} at step {}, trajectory {}",
        worst.0, worst.1, worst.2
    );
    (worst.0, calib)
}

fn grid(steps: usize) -> Grid {
    Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(steps).unwrap()
}

/// Largest |π − π_brute| allowed: the brute force takes x' − μ_y from f32 states (|x| ≲ 3,
/// rounding 2⁻²⁴·3 ≈ 2e-7 each) over var ≥ 4e-4 on these grids, a few 1e-7 of log-likelihood a
/// step; the observer forms r = √var·z + drift without that rounding. Measured: 6e-7.
const BRUTE_TOL: f64 = 1e-5;

/// A two-term and a three-term multistep transition with a label-free term in an earlier state,
/// unguided: the observer's posterior is the path's Bayes posterior by brute force.
#[test]
fn multistep_online_update_is_the_bayes_posterior_of_the_path() {
    let m = three_classes();
    let g = grid(50);
    for weights in [vec![1.5, -0.5], vec![23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0]] {
        let make = || -> Box<dyn Sampler> { Box::new(Multistep::new(&weights)) };
        let (worst, _) = run_probe(&m, &g, &make, None, 128, true, None);
        assert!(worst < BRUTE_TOL, "{weights:?}: {worst:e}");
    }
    // A one-step sampler through the same path (the ancestral step).
    let make = || {
        SamplerKind::Ancestral {
            variance: AncestralVariance::Beta,
        }
        .build(&g, 64, 1, 3)
        .unwrap()
    };
    let (worst, _) = run_probe(&m, &g, &make, None, 128, true, None);
    assert!(worst < BRUTE_TOL, "ancestral: {worst:e}");
}

/// Guided paths (W = 2 and W = −1, labels cycled): the guidance drift is in the residual x' − μ_u,
/// and the observer's posterior stays the path's Bayes posterior under the class-conditional
/// chains (brute force), multistep included.
#[test]
fn guided_online_update_is_the_bayes_posterior_of_the_path() {
    let m = three_classes();
    let g = grid(50);
    let make = || -> Box<dyn Sampler> { Box::new(Multistep::new(&[1.5, -0.5])) };
    for w in [2.0, -1.0] {
        let guidance = Guidance::new(w, vec![0, 1, 2], 3).unwrap();
        let (worst, _) = run_probe(&m, &g, &make, Some(&guidance), 128, true, None);
        assert!(worst < BRUTE_TOL, "W = {w}: {worst:e}");
    }
}

/// The observer refuses a transition claiming more earlier score terms than steps it has seen.
#[test]
fn earlier_terms_beyond_the_history_are_refused() {
    struct Liar;
    impl Sampler for Liar {
        fn step(
            &mut self,
            _model: &dyn ScoreFn,
            ctx: &StepCtx<'_>,
            x: &[f32],
            _scores: &Scores,
            x_next: &mut [f32],
            z: &mut [f32],
        ) -> infodiff::Result<Option<Transition>> {
            x_next[..x.len()].copy_from_slice(x);
            z.fill(0.0);
            let _ = ctx;
            Ok(Some(Transition::new(1.0, 0.1, 0.01).with_earlier(&[0.1])?))
        }
    }
    let m = three_classes();
    let g = grid(5);
    let spec = InfoSpec::new(m.class_prior(), vec![]).unwrap();
    let mut obs = InfoObserver::new(&spec, Tracking::Online, 2, &g);
    let e = sample_from(&m, &g, &mut Liar, Noise::new(0), 0, vec![0.0; 2], &mut obs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("earlier score terms"), "{e}");
}

/// Per point: the mean of d = π_{y*} − Σ_y π_y² and its standard error, and the means of π_y.
fn calibration(calib: &[Vec<f64>], n: usize) -> Vec<(f64, f64, Vec<f64>)> {
    let n = n as f64;
    calib[1..]
        .iter()
        .map(|row| {
            let mean = row[0] / n;
            let var = (row[1] / n - mean * mean).max(0.0);
            (
                mean,
                (var / (n - 1.0)).sqrt(),
                row[2..].iter().map(|s| s / n).collect(),
            )
        })
        .collect()
}

/// Conditional sampling (W = 1, labels cycled 0, 1, 2 over trajectories, the uniform prior's
/// proportions): (y*, path) is drawn from the model's joint, so the online posterior is the exact
/// Bayes posterior of the chain on any grid, however coarse and whatever its coefficients:
/// E[π_{y*}] = E[Σ_y π_y²] (calibration) at every point, within 4 standard errors of the
/// per-trajectory difference, and E[π_y] = p(y) = 1/3 (the posterior's martingale) within
/// 4 SE ≤ 4·√(p(1−p)/n). On a coarse 20-step grid, for the made-up multistep sampler and
/// ancestral sampling.
#[test]
fn conditional_sampling_is_calibrated_on_any_grid() {
    let m = three_classes();
    let g = grid(20);
    let n = 3000;
    let label = |i: u64| (i % 3) as usize;
    let guidance = Guidance::new(1.0, vec![0, 1, 2], 3).unwrap();
    let ms = || -> Box<dyn Sampler> { Box::new(Multistep::new(&[1.5, -0.5])) };
    let anc = || {
        SamplerKind::Ancestral {
            variance: AncestralVariance::Beta,
        }
        .build(&g, 64, 1, 3)
        .unwrap()
    };
    for (name, make) in [
        ("multistep", &ms as &dyn Fn() -> Box<dyn Sampler>),
        ("ancestral", &anc),
    ] {
        let (_, calib) = run_probe(&m, &g, make, Some(&guidance), n, false, Some(&label));
        let se_p = (2.0f64 / 9.0 / n as f64).sqrt();
        let mut moved = 0.0f64;
        for (j, (mean, se, pis)) in calibration(&calib, n).iter().enumerate() {
            assert!(
                mean.abs() < 4.0 * se + 1e-6,
                "{name} point {}: E[π_y* − Σπ²] = {mean:.2e} ± {se:.1e}",
                j + 1
            );
            for (y, p) in pis.iter().enumerate() {
                assert!(
                    (p - 1.0 / 3.0).abs() < 4.0 * se_p,
                    "{name} point {}: E[π_{y}] = {p}",
                    j + 1
                );
            }
            moved = moved.max(*se);
        }
        // not vacuous: the posterior moves (the SE of d is far from 0 somewhere)
        assert!(
            moved > 1e-3,
            "{name}: the posterior never moved ({moved:e})"
        );
    }
}
