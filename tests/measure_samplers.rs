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
/// per grid point j < S, with π the online posterior at x_j and y* the trajectory's label, the
/// sums of d = π_{y*} − Σ_y π_y², d², e = π_{y*} − p(y* | x_j) (the exact posterior), e², and π_y.
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
    /// Per point j < S: [Σ d, Σ d², Σ e, Σ e², Σ π_0, …, Σ π_{K−1}].
    calib: Vec<Vec<f64>>,
}

impl Observer for Probe<'_> {
    fn on_step(&mut self, v: &StepView<'_>) -> infodiff::Result<()> {
        let (batch, d, k) = (v.scores.batch, v.scores.dim, v.scores.classes);
        if let Some(label) = self.label {
            // π at point j: the posterior given the path down to x_j, before step j's update.
            let lp = self.info.log_posterior();
            let exact = v.scores.posterior.as_ref().unwrap();
            let row = &mut self.calib[v.step];
            for b in 0..batch {
                let pi: Vec<f64> = lp[b * k..(b + 1) * k].iter().map(|l| l.exp()).collect();
                let y = label(v.first_trajectory + b as u64);
                let dv = pi[y] - pi.iter().map(|p| p * p).sum::<f64>();
                let ev = pi[y] - exact[b * k + y];
                row[0] += dv;
                row[1] += dv * dv;
                row[2] += ev;
                row[3] += ev * ev;
                for (acc, p) in row[4..].iter_mut().zip(&pi) {
                    *acc += p;
                }
            }
        }
        self.info.on_step(v)?;
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
    let mut calib = vec![vec![0.0; 4 + k]; grid.steps()];
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

/// A per-point mean and its standard error from a sum and a sum of squares over n trajectories.
fn mean_se(sum: f64, sum2: f64, n: usize) -> (f64, f64) {
    let n = n as f64;
    let mean = sum / n;
    (mean, ((sum2 / n - mean * mean).max(0.0) / (n - 1.0)).sqrt())
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
        for (j, row) in calib.iter().enumerate() {
            let (mean, se) = mean_se(row[0], row[1], n);
            assert!(
                mean.abs() < 4.0 * se + 1e-6,
                "{name} point {j}: E[π_y* − Σπ²] = {mean:.2e} ± {se:.1e}"
            );
            for (y, s) in row[4..].iter().enumerate() {
                let p = s / n as f64;
                assert!(
                    (p - 1.0 / 3.0).abs() < 4.0 * se_p,
                    "{name} point {j}: E[π_{y}] = {p}"
                );
            }
            moved = moved.max(se);
        }
        // not vacuous: the posterior moves (the SE of d is far from 0 somewhere)
        assert!(
            moved > 1e-3,
            "{name}: the posterior never moved ({moved:e})"
        );
    }
}

/// Every stochastic sampler with the online classifier.
fn stochastic_kinds() -> [SamplerKind; 7] {
    [
        SamplerKind::Ancestral {
            variance: AncestralVariance::Beta,
        },
        SamplerKind::Ddim {
            eta: 1.0,
            clip: None,
        },
        SamplerKind::EulerMaruyama,
        SamplerKind::Ddpm { clip: None },
        SamplerKind::EulerAncestral,
        SamplerKind::Dpmpp2mSde,
        SamplerKind::Dpmpp3mSde,
    ]
}

fn builder(kind: SamplerKind, g: &Grid) -> impl Fn() -> Box<dyn Sampler> + '_ {
    move || kind.build(g, 64, 1, 3).unwrap()
}

/// Each stochastic sampler, on the DDPM and the VE process's own 50-step grids, unguided, and the
/// DPM-Solver++ SDEs (whose transitions carry earlier score terms) also guided with W = 2: the
/// observer's posterior is the path's Bayes posterior by brute force (within [`BRUTE_TOL`]).
#[test]
fn every_stochastic_sampler_tracks_the_bayes_posterior_of_its_path() {
    use infodiff::diffusion::Ve;
    let m = three_classes();
    let guidance = Guidance::new(2.0, vec![0, 1, 2], 3).unwrap();
    for g in [grid(50), Ve::new(0.01, 50.0).unwrap().grid(50).unwrap()] {
        for kind in stochastic_kinds() {
            assert!(kind.supports_online_classifier(), "{}", kind.name());
            let (worst, _) = run_probe(&m, &g, &builder(kind, &g), None, 64, true, None);
            assert!(worst < BRUTE_TOL, "{}: {worst:e}", kind.name());
        }
        for kind in [SamplerKind::Dpmpp2mSde, SamplerKind::Dpmpp3mSde] {
            let (worst, _) = run_probe(&m, &g, &builder(kind, &g), Some(&guidance), 64, true, None);
            assert!(worst < BRUTE_TOL, "{} W = 2: {worst:e}", kind.name());
        }
    }
}

/// The default mixture (points −8, −4, 6, 8, one class each).
fn four_points() -> GaussianMixture {
    GaussianMixture::new(
        [(-8.0, 0), (-4.0, 1), (6.0, 2), (8.0, 3)]
            .iter()
            .map(|&(m, c)| Component {
                weight: 1.0,
                mean: vec![m],
                var: vec![0.0],
                class: c,
            })
            .collect(),
    )
    .unwrap()
}

/// The online H(Y | X_t) of `kind` on `g` (8000 trajectories, seed 1, guided where set) against
/// the quadrature: every point with 0 < t < T within 4 SE + `point_bits`, the mean absolute
/// error within `mae_bits`, and (first-order and Euler–Maruyama filters) overestimating H on
/// average. Returns the mean absolute error in bits.
fn h_curve_check(
    kind: SamplerKind,
    g: &Grid,
    guidance: Option<&Guidance>,
    point_bits: f64,
    mae_bits: f64,
) -> f64 {
    use infodiff::info::closed_form::mixture_conditional_entropy_1d;
    use infodiff::info::{Curves, MeasureOptions, bits, measure_run};
    let m = four_points();
    let spec = InfoSpec::new(m.class_prior(), vec![]).unwrap();
    let opts = MeasureOptions {
        guidance,
        ..MeasureOptions::default()
    };
    let sums = measure_run(
        &m,
        &spec,
        g,
        &kind,
        Noise::new(1),
        0,
        8000,
        256,
        Tracking::Online,
        &opts,
    )
    .unwrap();
    let c = Curves::from_sums(&sums, &spec, g, Tracking::Online);
    let steps = g.steps();
    let (mut mae, mut signed) = (0.0, 0.0);
    for j in 1..steps {
        let p = &g.points[j];
        let want = mixture_conditional_entropy_1d(&m, p.s, p.sigma);
        let e = c.h_online[j] - want;
        assert!(
            bits(e.abs()) < 4.0 * bits(c.h_online_se[j]) + point_bits,
            "{} t = {}: H_online {} ± {} bits, quadrature {} bits",
            kind.name(),
            p.t,
            bits(c.h_online[j]),
            bits(c.h_online_se[j]),
            bits(want)
        );
        mae += bits(e.abs());
        signed += bits(e);
    }
    let n = (steps - 1) as f64;
    let (mae, signed) = (mae / n, signed / n);
    eprintln!(
        "{} ({steps} steps): MAE {mae:.4} bits, mean signed error {signed:+.4} bits",
        kind.name()
    );
    assert!(
        mae < mae_bits,
        "{}: MAE {mae} bits ≥ {mae_bits}",
        kind.name()
    );
    assert!(
        signed > 0.0,
        "{}: a coarse filter overestimates H",
        kind.name()
    );
    mae
}

/// The coarse-grid error of each stochastic sampler's online filter at 100 steps (bits; from
/// runs of 8000 trajectories, seed 1, on the four points, measured MAE in brackets): per point,
/// the largest error beyond 4 SE allowed; on average, 1.5× the measured MAE. The first-order
/// samplers that are DDIM with η = 1 on the same points (ddim, ddpm = β̃ ancestral,
/// euler_ancestral) coincide; β-ancestral and Euler–Maruyama err more; the DPM-Solver++ SDEs'
/// higher-order means halve the error.
const H_BOUNDS_DDPM_100: [(f64, f64); 7] = [
    (0.03, 0.013),  // ancestral (0.0087)
    (0.025, 0.010), // ddim η = 1 (0.0067)
    (0.04, 0.022),  // euler_maruyama (0.0148)
    (0.025, 0.010), // ddpm (0.0067)
    (0.025, 0.010), // euler_ancestral (0.0067)
    (0.015, 0.006), // dpmpp_2m_sde (0.0035)
    (0.015, 0.006), // dpmpp_3m_sde (0.0033)
];

/// Each stochastic sampler on the DDPM process's own 100-step grid: the online H(Y | X_t) agrees
/// with the quadrature within the SE plus the documented coarse-grid error
/// ([`H_BOUNDS_DDPM_100`]).
#[test]
fn stochastic_samplers_h_curves_match_the_quadrature_on_ddpm() {
    let g = grid(100);
    for (kind, (point, mae)) in stochastic_kinds().into_iter().zip(H_BOUNDS_DDPM_100) {
        h_curve_check(kind, &g, None, point, mae);
    }
}

/// The new samplers on the VE process's own 100-step grid (σ 0.01…50; measured MAE in bits:
/// ddpm and euler_ancestral 0.0081, dpmpp_2m_sde 0.0048, dpmpp_3m_sde 0.0043): within 4 SE +
/// 0.035 (first order) or 0.02 bits per point, 1.5× the measured MAE on average.
#[test]
fn new_samplers_h_curves_match_the_quadrature_on_ve() {
    use infodiff::diffusion::Ve;
    let g = Ve::new(0.01, 50.0).unwrap().grid(100).unwrap();
    for (kind, point, mae) in [
        (SamplerKind::Ddpm { clip: None }, 0.035, 0.012),
        (SamplerKind::EulerAncestral, 0.035, 0.012),
        (SamplerKind::Dpmpp2mSde, 0.02, 0.0075),
        (SamplerKind::Dpmpp3mSde, 0.02, 0.0075),
    ] {
        h_curve_check(kind, &g, None, point, mae);
    }
}

/// DPM-Solver++(2M) SDE with conditional sampling (W = 1, labels cycled over the four classes,
/// the uniform prior's proportions): (y*, path) is the model's joint, so
/// - the H(Y | X_t) curve is the unguided one's: the quadrature within the same bounds;
/// - the online posterior concentrates on the true label as the exact one does:
///   E[π_{y*}(path to x_t)] − E[p(y* | x_t)], paired over the same trajectories, within 4 SE of
///   the per-trajectory difference + 0.01 (the filter's coarse-grid lag, the same order as its
///   H error);
/// - and it is calibrated, E[π_{y*}] = E[Σ_y π_y²] within 4 SE, on a coarse 20-step grid too.
#[test]
fn dpmpp_2m_sde_conditional_sampling_is_the_models_joint() {
    let kind = SamplerKind::Dpmpp2mSde;
    let g = grid(100);
    let all = Guidance::new(1.0, vec![0, 1, 2, 3], 4).unwrap();
    h_curve_check(kind, &g, Some(&all), 0.015, 0.006);
    let m = four_points();
    let label = |i: u64| (i % 4) as usize;
    let n = 4000;
    for steps in [100, 20] {
        let g = grid(steps);
        let make = move || kind.build(&grid(steps), 64, 1, 4).unwrap();
        let (_, calib) = run_probe(&m, &g, &make, Some(&all), n, false, Some(&label));
        let mut moved = 0.0f64;
        for (j, row) in calib.iter().enumerate() {
            let (d, se_d) = mean_se(row[0], row[1], n);
            assert!(
                d.abs() < 4.0 * se_d + 1e-6,
                "{steps} steps, point {j}: E[π_y* − Σπ²] = {d:.2e} ± {se_d:.1e}"
            );
            if steps == 100 {
                let (e, se_e) = mean_se(row[2], row[3], n);
                assert!(
                    e.abs() < 4.0 * se_e + 0.01,
                    "point {j}: E[π_y*] − E[p(y*|x_t)] = {e:.2e} ± {se_e:.1e}"
                );
            }
            moved = moved.max(se_d);
        }
        assert!(moved > 1e-3, "{steps} steps: the posterior never moved");
    }
}

/// The shuffled-label null on guided multistep paths: every point carries both labels equally,
/// so s(x | y) = s(x), guidance changes nothing and every information estimate vanishes
/// (f32 scores: 1e-4 nats), for DPM-Solver++(2M/3M) SDE at W = 2.
#[test]
fn shuffled_label_null_on_guided_multistep_paths() {
    use infodiff::info::{Curves, MeasureOptions, measure_run};
    let comps = [-8.0, -4.0, 6.0, 8.0]
        .iter()
        .flat_map(|&m| {
            (0..2).map(move |c| Component {
                weight: 1.0,
                mean: vec![m],
                var: vec![0.0],
                class: c,
            })
        })
        .collect();
    let m = GaussianMixture::new(comps).unwrap();
    let spec = InfoSpec::new(m.class_prior(), vec![]).unwrap();
    let g = grid(100);
    let guidance = Guidance::new(2.0, vec![0, 1], 2).unwrap();
    for kind in [SamplerKind::Dpmpp2mSde, SamplerKind::Dpmpp3mSde] {
        let opts = MeasureOptions {
            guidance: Some(&guidance),
            ..MeasureOptions::default()
        };
        let sums = measure_run(
            &m,
            &spec,
            &g,
            &kind,
            Noise::new(2),
            0,
            1000,
            128,
            Tracking::Online,
            &opts,
        )
        .unwrap();
        let c = Curves::from_sums(&sums, &spec, &g, Tracking::Online);
        for j in 0..c.t.len() {
            assert!(
                c.mi_entropy[j].abs() < 1e-4 && c.mi_girsanov[j].abs() < 1e-4,
                "{} t = {}: I = {}, Girsanov {}",
                kind.name(),
                c.t[j],
                c.mi_entropy[j],
                c.mi_girsanov[j]
            );
        }
    }
}

// ---- the samplers in `measure` (app::run) --------------------------------------------------

fn job(text: &str) -> infodiff::app::Config {
    infodiff::app::Config::from_json_str(text, "test").unwrap()
}

/// A multistep sampler and a guided job run on the generic engine, saying why in the summary's
/// notes; the fused engine asked for explicitly refuses them; neither has a GPU path
/// (`gpu_limit` names the reason for `--device auto`).
#[test]
fn multistep_and_guided_jobs_route_to_the_generic_engine() {
    use infodiff::app::{self, Engine};
    let fused = Engine::Fused(infodiff::simd::detected());
    for (text, why) in [
        (
            r#"{"sampler": {"kind": "dpmpp_2m_sde", "steps": 50}, "trajectories": 300}"#,
            "multistep",
        ),
        (
            r#"{"sampler": {"kind": "ddpm", "steps": 50}, "guidance": 2, "classes": [0, 3], "trajectories": 300}"#,
            "guided",
        ),
    ] {
        let cfg = job(text);
        let r = app::run(&cfg, None, None).unwrap();
        assert_eq!(r.engine, Engine::Generic, "{text}");
        assert_eq!(r.curves.tracking, Tracking::Online);
        let notes = r.summary()["notes"].to_string();
        assert!(
            notes.contains("generic engine") && notes.contains(why),
            "{notes}"
        );
        assert!(r.table().contains(why), "{}", r.table());
        let e = match app::run(&cfg, Some(fused), None) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{text}: the fused engine ran"),
        };
        assert!(e.contains(why), "{e}");
        assert!(!app::runner::has_gpu_path(&cfg));
        assert!(app::gpu_limit(&cfg).is_some_and(|w| w.contains(why)));
    }
    // guidance recorded in the config and explained
    let r = app::run(
        &job(r#"{"sampler": {"kind": "ddpm", "steps": 20}, "guidance": 2, "trajectories": 40}"#),
        None,
        None,
    )
    .unwrap();
    let s = r.summary();
    assert_eq!(s["config"]["guidance"], 2.0);
    assert_eq!(s["config"]["classes"], serde_json::json!([0, 1, 2, 3]));
    assert!(
        s["notes"].to_string().contains("not the model's"),
        "{}",
        s["notes"]
    );
    assert!(
        s["posterior"]
            .as_str()
            .unwrap()
            .contains("transition actually taken")
    );
}

/// The one-step new samplers (ddpm = β̃ ancestral, euler_ancestral) run on the fused kernel by
/// default, and it agrees with the generic observer path on the same noise (1e-3 nats: f32 state
/// rounding), as today's samplers do.
#[test]
fn one_step_new_samplers_run_fused_and_agree_with_the_generic_path() {
    use infodiff::app::{self, Engine};
    for kind in ["ddpm", "euler_ancestral"] {
        let cfg = job(&format!(
            r#"{{"sampler": {{"kind": "{kind}", "steps": 100}}, "trajectories": 1000}}"#
        ));
        assert!(infodiff::app::runner::has_gpu_path(&cfg) && app::gpu_limit(&cfg).is_none());
        let a = app::run(&cfg, None, None).unwrap();
        assert!(
            matches!(a.engine, Engine::Fused(_)),
            "{kind}: {:?}",
            a.engine
        );
        let b = app::run(&cfg, Some(Engine::Generic), None).unwrap();
        for j in 0..a.curves.t.len() {
            assert!(
                (a.curves.h_online[j] - b.curves.h_online[j]).abs() < 1e-3,
                "{kind} j={j}: fused {} vs generic {}",
                a.curves.h_online[j],
                b.curves.h_online[j]
            );
        }
    }
}

/// The deterministic new samplers (euler, heun, dpmpp_2m) track the exact posterior, say why
/// (no transition density: the Bayes update is degenerate), and their H(Y | X_t) is the
/// quadrature's within 4 SE + 0.01 bits (ODE paths follow the marginals up to the integrator's
/// error) on the default mixture's DDPM process (200 steps).
#[test]
fn deterministic_new_samplers_track_the_exact_posterior_and_say_why() {
    use infodiff::app;
    use infodiff::info::bits;
    use infodiff::info::closed_form::mixture_conditional_entropy_1d;
    let m = four_points();
    for kind in ["euler", "heun", "dpmpp_2m"] {
        let cfg = job(&format!(
            r#"{{"sampler": {{"kind": "{kind}", "steps": 200}}, "trajectories": 3000}}"#
        ));
        assert!(!infodiff::app::runner::has_gpu_path(&cfg));
        let r = app::run(&cfg, None, None).unwrap();
        let c = &r.curves;
        assert_eq!(c.tracking, Tracking::Exact, "{kind}");
        let post = r.summary()["posterior"].as_str().unwrap().to_string();
        assert!(
            post.starts_with("exact posterior")
                && post.contains("deterministic")
                && post.contains("no transition density")
                && post.contains(kind),
            "{post}"
        );
        assert!(r.table().contains("degenerate"), "{}", r.table());
        let g = cfg.grid().unwrap();
        for j in (20..200).step_by(20) {
            let p = &g.points[j];
            let want = bits(mixture_conditional_entropy_1d(&m, p.s, p.sigma));
            let h = bits(c.h_online[j]);
            assert!(
                (h - want).abs() < 4.0 * bits(c.h_online_se[j]) + 0.01,
                "{kind} t={}: {h} vs {want}",
                p.t
            );
        }
    }
}

// ---- `measure --model` -------------------------------------------------------------------

fn tiny_class() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/tiny-class")
}

/// A diffusers pipeline folder around the tiny-class UNet with `scheduler` as its
/// scheduler_config.json.
fn pipeline(name: &str, scheduler: &serde_json::Value) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "infodiff-measure-samplers-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("unet")).unwrap();
    std::fs::create_dir_all(dir.join("scheduler")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(tiny_class().join(f), dir.join("unet").join(f)).unwrap();
    }
    let index = serde_json::json!({
        "_class_name": "DDPMPipeline",
        "unet": ["diffusers", "UNet2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
    });
    std::fs::write(dir.join("model_index.json"), index.to_string()).unwrap();
    std::fs::write(
        dir.join("scheduler/scheduler_config.json"),
        scheduler.to_string(),
    )
    .unwrap();
    dir
}

fn model_job(dir: &std::path::Path, rest: &str) -> infodiff::Result<infodiff::app::Config> {
    infodiff::app::Config::from_json_str(
        &format!(r#"{{"model": {:?}, {rest}}}"#, dir.display().to_string()),
        "test",
    )
}

/// `measure` on a model folder uses its scheduler: the process (here scaled-linear β, not the
/// default linear), the prediction type (the same network read as ε and as v gives different
/// curves) and, for a diffusers sampler, that class's timesteps; guided and multistep jobs run
/// on the CPU sampler loop, saying so.
#[test]
fn measure_model_uses_the_folders_scheduler_and_prediction() {
    use infodiff::app;
    use infodiff::diffusion::{Prediction, SigmaGrid};
    let sched = |pred: &str| {
        serde_json::json!({
            "_class_name": "DDPMScheduler", "num_train_timesteps": 1000,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
            "prediction_type": pred, "clip_sample": false,
        })
    };
    let (v_dir, eps_dir) = (
        pipeline("v", &sched("v_prediction")),
        pipeline("eps", &sched("epsilon")),
    );
    let rest = r#""sampler": {"kind": "dpmpp_2m_sde", "steps": 4}, "trajectories": 2, "probes": 0"#;
    let (cv, ce) = (
        model_job(&v_dir, rest).unwrap(),
        model_job(&eps_dir, rest).unwrap(),
    );
    let md = cv.model_dir.as_ref().unwrap();
    assert_eq!(md.scheduler.prediction, Prediction::VPrediction);
    let want = md
        .scheduler
        .plan(&SamplerKind::Dpmpp2mSde, 4, SigmaGrid::Scheduler)
        .unwrap()
        .grid;
    assert_eq!(cv.grid().unwrap(), want);
    // scaled-linear ᾱ at the first timestep, not the linear one's
    let p0 = cv.grid().unwrap().points[0];
    let linear = infodiff::diffusion::Scheduler::ddpm_default()
        .plan(&SamplerKind::Dpmpp2mSde, 4, SigmaGrid::Scheduler)
        .unwrap()
        .grid
        .points[0];
    assert!((p0.s - linear.s).abs() > 1e-3, "{} vs {}", p0.s, linear.s);
    let (rv, re) = (
        app::run(&cv, None, None).unwrap(),
        app::run(&ce, None, None).unwrap(),
    );
    let notes = rv.summary()["notes"].to_string();
    assert!(
        notes.contains("VPrediction") && notes.contains("scheduler_config.json"),
        "{notes}"
    );
    assert!(notes.contains("multistep"), "{notes}");
    // the online classifier starts at the uniform prior over 10 classes
    assert!((rv.curves.h_online[0] - 10f64.ln()).abs() < 1e-9);
    assert!(
        (1..rv.curves.t.len())
            .any(|j| (rv.curves.h_online[j] - re.curves.h_online[j]).abs() > 1e-6),
        "ε and v readings of one network gave the same curves"
    );
    // guided, on the folder's process (ε: the device loop's only refusal is the guidance)
    let g = model_job(
        &eps_dir,
        r#""sampler": {"kind": "euler_ancestral", "steps": 3}, "guidance": 3, "classes": [2], "trajectories": 2, "probes": 0"#,
    )
    .unwrap();
    let r = app::run(&g, None, None).unwrap();
    assert!(r.summary()["notes"].to_string().contains("W = 3"));
    assert!(app::gpu_limit(&g).is_some_and(|w| w.contains("guided")));
    let _ = std::fs::remove_dir_all(&v_dir);
    let _ = std::fs::remove_dir_all(&eps_dir);
}

/// Bad model jobs are refused naming the key: a `process` beside a `model`, a sampler the
/// scheduler makes nonlinear (DDPMScheduler's default clip_sample clamps x̂₀), steps beyond
/// num_train_timesteps, a guidance label the model does not have.
#[test]
fn bad_model_jobs_are_refused_naming_the_key() {
    let dir = tiny_class();
    for (rest, field, found) in [
        (r#""process": {"kind": "vp"}"#, "`process`", "vp"),
        (
            r#""sampler": {"kind": "ddpm", "steps": 5}"#,
            "`sampler.kind`",
            "clip",
        ),
        (
            r#""sampler": {"kind": "ancestral", "steps": 1001}"#,
            "`sampler.steps`",
            "1001",
        ),
        (r#""classes": [10]"#, "`classes[0]`", "10"),
    ] {
        let e = model_job(&dir, rest).unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(found), "{rest}: {e}");
    }
    // a bare folder's default (DDPM linear β, ε, the process's own grid for ancestral) runs
    let cfg = model_job(
        &dir,
        r#""trajectories": 1, "probes": 0, "sampler": {"kind": "ancestral", "steps": 3}"#,
    )
    .unwrap();
    let r = infodiff::app::run(&cfg, None, None).unwrap();
    assert!(
        r.summary()["notes"]
            .to_string()
            .contains("default DDPMScheduler")
    );
}

/// Every sampler on every process's own grid (100 steps, the default mixture): the job runs
/// (its numbers pass the result checks: finite, entropies in [0, ln K]), on the engine the
/// routing says, and the exact posterior at the sampled states gives the quadrature's
/// H(Y | X_t) at the grid's midpoint within 4 SE + 0.02 bits (the sampled marginal is right up
/// to the sampler's 100-step error).
#[test]
fn every_sampler_runs_on_every_process_grid() {
    use infodiff::app::config::{PROCESS_KINDS, SAMPLER_KINDS};
    use infodiff::app::{self, Engine};
    use infodiff::info::bits;
    use infodiff::info::closed_form::mixture_conditional_entropy_1d;
    let m = four_points();
    let mut worst = (0.0f64, String::new());
    for p in PROCESS_KINDS {
        for s in SAMPLER_KINDS {
            let cfg = job(&format!(
                r#"{{"process": {{"kind": "{p}"}}, "sampler": {{"kind": "{s}", "steps": 100}}, "trajectories": 400}}"#
            ));
            let r = app::run(&cfg, None, None).unwrap_or_else(|e| panic!("{p}/{s}: {e}"));
            let fused = app::runner::fused_refusal(&cfg).is_none();
            assert_eq!(matches!(r.engine, Engine::Fused(_)), fused, "{p}/{s}");
            let g = cfg.grid().unwrap();
            let j = 50;
            let c = &r.curves;
            let want = bits(mixture_conditional_entropy_1d(
                &m,
                g.points[j].s,
                g.points[j].sigma,
            ));
            let (h, se) = (bits(c.h_exact[j].unwrap()), bits(c.h_exact_se[j].unwrap()));
            let excess = (h - want).abs() - 4.0 * se;
            if excess > worst.0 {
                worst = (excess, format!("{p}/{s}: {h} ± {se} vs {want}"));
            }
            assert!(
                excess < 0.02,
                "{p}/{s} t = {}: {h} ± {se} bits vs {want}",
                g.points[j].t
            );
        }
    }
    eprintln!(
        "largest excess beyond 4 SE: {:.4} bits ({})",
        worst.0, worst.1
    );
}
