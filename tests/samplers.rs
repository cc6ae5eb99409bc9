//! The diffusers samplers against diffusers' own scheduler loops (fixtures made by
//! tests/fixtures/sampler/make_sampler_fixtures.py), the stochastic ones' marginals on an exact
//! mixture, their noise keyed by (seed, trajectory, step), and their reported transitions.

use infodiff::Result;
use infodiff::diffusion::{
    AncestralVariance, Ddpm, Grid, GridPoint, NoObserver, Prediction, Process, Sampler,
    SamplerKind, ScoreFn, StepCtx, Transition, Ve, Vp, sample, sample_from,
};
use infodiff::rng::Noise;
use infodiff::score::{Component, GaussianMixture, ScoreCtx, ScoreModel, Scores};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// 1, 2a: against diffusers step for step

/// The fixture script's "network", out(x_in, t) = tanh(0.7 x_in)(1 + t/1000) + 0.05 cos(3 x_in),
/// read as `pred`, at the state itself (the network input) and the point's timestep.
struct AnalyticNet {
    dim: usize,
    pred: Prediction,
    /// Added to every timestep (0; 1 in the check that timesteps matter).
    t_shift: f64,
}

impl ScoreModel for AnalyticNet {
    fn dim(&self) -> usize {
        self.dim
    }
    fn num_classes(&self) -> usize {
        1
    }
    fn class_prior(&self) -> Vec<f64> {
        vec![1.0]
    }
    fn scores(&self, x: &[f32], p: &GridPoint, out: &mut Scores) -> Result<()> {
        let t = p.timestep + self.t_shift;
        for (i, &xv) in x.iter().enumerate() {
            let xv = xv as f64;
            let o = (0.7 * xv).tanh() * (1.0 + t / 1000.0) + 0.05 * (3.0 * xv).cos();
            out.uncond[i] = self.pred.to_score(p, xv, o) as f32;
        }
        out.cond.copy_from_slice(&out.uncond);
        Ok(())
    }
    fn describe(&self) -> String {
        "analytic test network".into()
    }
}

fn point(j: usize, v: &Value) -> GridPoint {
    let timestep = v["timestep"].as_f64().unwrap();
    let (s, sigma) = if let Some(ab) = v["alpha_bar"].as_f64() {
        (ab.sqrt(), (1.0 - ab).sqrt())
    } else {
        let st = v["sigma_tilde"].as_f64().unwrap();
        let s = 1.0 / (1.0 + st * st).sqrt();
        (s, st * s)
    };
    GridPoint {
        index: j,
        t: timestep,
        s,
        sigma,
        f: 0.0,
        g2: 0.0,
        timestep,
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn kind_of(case: &Value) -> SamplerKind {
    let clip = case["clip"].as_f64();
    match case["sampler"].as_str().unwrap() {
        "ddim" => SamplerKind::Ddim {
            eta: case["eta"].as_f64().unwrap(),
            clip,
        },
        "ddpm" => SamplerKind::Ddpm { clip },
        "euler" => SamplerKind::Euler,
        "euler_ancestral" => SamplerKind::EulerAncestral,
        "heun" => SamplerKind::Heun,
        "dpmpp_2m" => SamplerKind::Dpmpp2m,
        "dpmpp_2m_sde" => SamplerKind::Dpmpp2mSde,
        "dpmpp_3m_sde" => SamplerKind::Dpmpp3mSde,
        other => panic!("fixture sampler {other}"),
    }
}

fn rel_l2(a: &[f32], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// What a fixture case's run changes, to show that the comparison would see it.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    AsIs,
    /// The network's timestep one later.
    TimestepPlusOne,
    /// Euler (first order, one evaluation) in place of Heun or DPM-Solver++(2M).
    FirstOrder,
}

/// Runs every fixture case whose `mean_path` flag is `mean_path`; returns (name, rel L2).
fn run_fixture_cases(mean_path: bool, variant: Variant) -> Vec<(String, f64)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sampler/cases.json"
    ))
    .unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let shape = floats(&fx["shape"]);
    let (batch, dim) = (shape[0] as usize, shape[1] as usize);
    let mut out = vec![];
    for case in fx["cases"].as_array().unwrap() {
        if case["mean_path"].as_bool().unwrap() != mean_path {
            continue;
        }
        let name = case["name"].as_str().unwrap().to_string();
        let pts: Vec<GridPoint> = case["points"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(j, v)| point(j, v))
            .collect();
        let lands = case["lands"].as_array().map(|l| {
            l.iter()
                .enumerate()
                .map(|(j, v)| point(j + 1, v))
                .collect::<Vec<_>>()
        });
        let grid = Grid { points: pts, lands };
        let pred = match case["prediction"].as_str().unwrap() {
            "epsilon" => Prediction::Epsilon,
            "v_prediction" => Prediction::VPrediction,
            "sample" => Prediction::Sample,
            other => panic!("fixture prediction {other}"),
        };
        let t_shift = if variant == Variant::TimestepPlusOne {
            1.0
        } else {
            0.0
        };
        let net = AnalyticNet { dim, pred, t_shift };
        // diffusers' x = noise · init_noise_sigma; in σ-space classes that is x̃ = x/s₀
        let ins = case["init_noise_sigma"].as_f64().unwrap();
        let scale = match case["space"].as_str().unwrap() {
            "sigma" => ins * grid.points[0].s,
            _ => ins,
        };
        let x0: Vec<f32> = floats(&case["noise"])
            .iter()
            .map(|z| (z * scale) as f32)
            .collect();
        let mut kind = kind_of(case);
        if variant == Variant::FirstOrder {
            if !matches!(kind, SamplerKind::Heun | SamplerKind::Dpmpp2m) {
                continue;
            }
            kind = SamplerKind::Euler;
        }
        let mut sampler = if mean_path {
            kind.build_mean_path(&grid, batch, dim, 1).unwrap()
        } else {
            kind.build(&grid, batch, dim, 1).unwrap()
        };
        let x = sample_from(
            &net,
            &grid,
            sampler.as_mut(),
            Noise::new(7),
            0,
            x0,
            &mut NoObserver,
        )
        .unwrap();
        out.push((name, rel_l2(&x, &floats(&case["final"]))));
    }
    out
}

fn assert_cases(results: &[(String, f64)], expect: usize) {
    for (name, e) in results {
        eprintln!("{name}: relative L2 {e:.2e}");
    }
    assert_eq!(results.len(), expect, "fixture cases run");
    for (name, e) in results {
        // The state is f32 (rounded once per step) and diffusers' loop f64 except its own
        // float32 cast of the sample in the σ-space and DPM steps: relative L2 ≤ 1e-5.
        assert!(*e <= 1e-5, "{name}: relative L2 {e:.3e} > 1e-5");
    }
}

#[test]
fn deterministic_samplers_match_diffusers_loops() {
    // ddim (η = 0, with and without clip_sample, set_alpha_to_one false), euler, heun, dpmpp_2m
    // at 10 and 25 steps, each spacing, ε / v / x̂₀, Karras for euler and dpmpp_2m.
    let r = run_fixture_cases(false, Variant::AsIs);
    assert_cases(&r, 19);
    // The comparison sees the timestep and the order: each changes the result by far more.
    for (name, e) in run_fixture_cases(false, Variant::TimestepPlusOne) {
        eprintln!("{name} with timestep + 1: relative L2 {e:.2e}");
        assert!(
            e > 1e-4,
            "{name}: timestep + 1 changes the sample by only {e:.2e}"
        );
    }
    for (name, e) in run_fixture_cases(false, Variant::FirstOrder) {
        eprintln!("{name} as Euler: relative L2 {e:.2e}");
        assert!(
            e > 1e-3,
            "{name}: Euler in its place is off by only {e:.2e}"
        );
    }
}

#[test]
fn stochastic_samplers_mean_paths_match_diffusers_with_zero_noise() {
    // ddpm (with and without clip), ddim η = 1, euler_ancestral, dpmpp_2m_sde: diffusers with
    // randn_tensor patched to zeros; dpmpp_3m_sde: k-diffusion's algorithm with zero noise.
    let r = run_fixture_cases(true, Variant::AsIs);
    assert_cases(&r, 12);
    for (name, e) in run_fixture_cases(true, Variant::TimestepPlusOne) {
        eprintln!("{name} with timestep + 1: relative L2 {e:.2e}");
        assert!(
            e > 1e-4,
            "{name}: timestep + 1 changes the sample by only {e:.2e}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2b: marginals on an exact mixture

/// erfc(x) (Numerical Recipes' Chebyshev fit; fractional error < 1.2e-7, far below the KS
/// resolution 0.03 used here).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807
                            + t * (-1.13520398
                                + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

fn mixture_cdf(x: f64, comps: &[(f64, f64, f64)]) -> f64 {
    // Σ π_k Φ((x − m_k)/sd_k)
    comps
        .iter()
        .map(|&(w, m, sd)| w * 0.5 * erfc(-(x - m) / (sd * std::f64::consts::SQRT_2)))
        .sum()
}

/// One-sample KS statistic D = sup |F_N − F|.
fn ks(samples: &[f32], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut xs: Vec<f64> = samples.iter().map(|&v| v as f64).collect();
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = xs.len() as f64;
    xs.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).abs().max(((i + 1) as f64 / n - f).abs())
        })
        .fold(0.0, f64::max)
}

/// Weights (0.3, 0.7), means −2 and 1.5, variance 0.25: seven standard deviations apart, so the
/// CDF has a plateau at the first weight, where a wrong weight shows in full.
const MIX: [(f64, f64, f64); 2] = [(0.3, -2.0, 0.5), (0.7, 1.5, 0.5)];

fn mixture() -> GaussianMixture {
    GaussianMixture::new(
        MIX.iter()
            .enumerate()
            .map(|(k, &(w, m, sd))| Component {
                weight: w,
                mean: vec![m],
                var: vec![sd * sd],
                class: k,
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn stochastic_samplers_sample_the_exact_mixture_marginal() {
    // N = 4000 trajectories; one-sample KS against the exact CDF at significance α = 0.001:
    // reject when D > 1.949/√N = 0.0308 (Kolmogorov's limit law). Power: weights off by 0.05
    // move the CDF by 0.05 on the plateau between the modes; the empirical CDF there has
    // sd √(0.3·0.7/N) = 0.0072, so D against such a CDF exceeds 0.0308 with probability
    // ≥ 0.995 — checked below on every run against the weights (0.35, 0.65) and (0.25, 0.75).
    // Grids of 200–250 steps: their discretisation error in the CDF is below 0.008, under the
    // resolution 0.031 — measured once at N = 40000 on the same grids (every case still passes
    // at α = 0.001 there, D ≤ 0.0079 against the critical 0.0097).
    const N: usize = 4000;
    let d_crit = 1.949 / (N as f64).sqrt();
    let model = mixture();
    let ddpm = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(250).unwrap();
    let vp = Vp::new(0.1, 20.0).unwrap().grid(200).unwrap();
    let ve = Ve::new(0.01, 50.0).unwrap().grid(200).unwrap();
    let cases: Vec<(&str, SamplerKind, &Grid)> = vec![
        ("ddpm/ddpm", SamplerKind::Ddpm { clip: None }, &ddpm),
        (
            "ddim eta 1/ddpm",
            SamplerKind::Ddim {
                eta: 1.0,
                clip: None,
            },
            &ddpm,
        ),
        ("euler_ancestral/ddpm", SamplerKind::EulerAncestral, &ddpm),
        ("euler_ancestral/ve", SamplerKind::EulerAncestral, &ve),
        ("dpmpp_2m_sde/ddpm", SamplerKind::Dpmpp2mSde, &ddpm),
        ("dpmpp_2m_sde/vp", SamplerKind::Dpmpp2mSde, &vp),
        ("dpmpp_3m_sde/ddpm", SamplerKind::Dpmpp3mSde, &ddpm),
        ("dpmpp_3m_sde/ve", SamplerKind::Dpmpp3mSde, &ve),
    ];
    let wrong = |w0: f64| {
        let comps = [(w0, MIX[0].1, MIX[0].2), (1.0 - w0, MIX[1].1, MIX[1].2)];
        move |x: f64| mixture_cdf(x, &comps)
    };
    for (i, (name, kind, grid)) in cases.iter().enumerate() {
        let x = sample(
            &model,
            grid,
            kind,
            Noise::new(100 + i as u64),
            0,
            N,
            &mut NoObserver,
        )
        .unwrap();
        let d = ks(&x, |v| mixture_cdf(v, &MIX));
        let (d_hi, d_lo) = (ks(&x, wrong(0.35)), ks(&x, wrong(0.25)));
        eprintln!(
            "{name}: D = {d:.4} (critical {d_crit:.4}); against weights ±0.05: {d_hi:.4}, {d_lo:.4}"
        );
        assert!(
            d <= d_crit,
            "{name}: KS D = {d:.4} > {d_crit:.4} (α = 0.001)"
        );
        assert!(
            d_hi > d_crit && d_lo > d_crit,
            "{name}: the test lacks power: D against weights off by 0.05 = {d_hi:.4}, {d_lo:.4}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3: noise keyed by (seed, trajectory, step)

#[test]
fn a_trajectory_is_the_same_in_any_batch() {
    let model = GaussianMixture::new(vec![
        Component {
            weight: 0.4,
            mean: vec![-1.0, 0.5, 2.0],
            var: vec![0.2, 0.1, 0.3],
            class: 0,
        },
        Component {
            weight: 0.6,
            mean: vec![1.0, -0.5, 0.0],
            var: vec![0.1, 0.2, 0.05],
            class: 1,
        },
    ])
    .unwrap();
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(20).unwrap();
    let d = 3;
    for kind in [
        SamplerKind::Ddpm { clip: None },
        SamplerKind::Ddpm { clip: Some(1.0) },
        SamplerKind::Ddim {
            eta: 1.0,
            clip: None,
        },
        SamplerKind::Ddim {
            eta: 0.5,
            clip: Some(1.0),
        },
        SamplerKind::EulerAncestral,
        SamplerKind::Dpmpp2mSde,
        SamplerKind::Dpmpp3mSde,
        SamplerKind::Heun,
        SamplerKind::Dpmpp2m,
    ] {
        let noise = Noise::new(42);
        let seven = sample(&model, &grid, &kind, noise, 0, 7, &mut NoObserver).unwrap();
        let one = sample(&model, &grid, &kind, noise, 3, 1, &mut NoObserver).unwrap();
        // bit-identical: trajectory 3 is row 3 of the batch of 7 and the only row of the batch of 1
        assert_eq!(&seven[3 * d..4 * d], &one[..], "{kind:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// 4: the reported transitions

/// No second evaluation: the stochastic samplers here take none.
struct NoModel;
impl ScoreFn for NoModel {
    fn scores_at(&self, _: &[f32], _: &GridPoint, _: &ScoreCtx, _: &mut Scores) -> Result<()> {
        panic!("no sampler under test evaluates the model inside its step")
    }
}

/// Deterministic "random" values in about [−2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let noise = Noise::new(seed);
    (0..n).map(|i| noise.normal(0, 0, i)).collect()
}

/// Runs steps 0..=`upto` of `kind` on `grid` with the given states and scores per step
/// (perturbed where `tweak` says: (step, what: 0 = x, 1 = s, value added)), returning the last
/// step's (x_next, z, transition).
#[allow(clippy::too_many_arguments)]
fn run_steps(
    kind: &SamplerKind,
    grid: &Grid,
    xs: &[Vec<f32>],
    ss: &[Vec<f32>],
    upto: usize,
    tweak: Option<(usize, usize, f32)>,
    batch: usize,
    dim: usize,
) -> (Vec<f32>, Vec<f32>, Option<Transition>) {
    let mut sampler: Box<dyn Sampler> = kind.build(grid, batch, dim, 1).unwrap();
    let mut x_next = vec![0.0f32; batch * dim]; // (B, D)
    let mut z = vec![0.0f32; batch * dim]; // (B, D)
    let mut tr = None;
    for step in 0..=upto {
        let mut x = xs[step].clone();
        let mut scores = Scores::new(batch, dim, 1);
        scores.uncond.copy_from_slice(&ss[step]);
        if let Some((j, what, v)) = tweak
            && j == step
        {
            let buf = if what == 0 {
                &mut x
            } else {
                &mut scores.uncond
            };
            buf.iter_mut().for_each(|e| *e += v);
        }
        let ctx = StepCtx {
            step,
            from: &grid.points[step],
            to: grid.target(step),
            last: step + 1 == grid.steps(),
            noise: Noise::new(5),
            first_trajectory: 0,
            batch,
            dim,
        };
        tr = sampler
            .step(&NoModel, &ctx, &x, &scores, &mut x_next, &mut z)
            .unwrap();
    }
    (x_next, z, tr)
}

#[test]
fn transitions_reproduce_the_steps_taken() {
    let (batch, dim) = (3, 4);
    let n = batch * dim;
    let grids = [
        Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap(),
        Vp::new(0.1, 20.0).unwrap().grid(8).unwrap(),
        Ve::new(0.01, 50.0).unwrap().grid(8).unwrap(),
    ];
    let kinds = [
        SamplerKind::Ddpm { clip: None },
        SamplerKind::Ddim {
            eta: 1.0,
            clip: None,
        },
        SamplerKind::EulerAncestral,
        SamplerKind::Dpmpp2mSde,
        SamplerKind::Dpmpp3mSde,
    ];
    for grid in &grids {
        let xs: Vec<Vec<f32>> = (0..grid.steps())
            .map(|j| values(n, 10 + j as u64))
            .collect();
        let ss: Vec<Vec<f32>> = (0..grid.steps())
            .map(|j| values(n, 50 + j as u64))
            .collect();
        for kind in &kinds {
            // steps 0 (first order), 1 (second), 2 and 3 (third for 3M), and the last (to the data)
            for k in [0, 1, 2, 3, grid.steps() - 1] {
                let (x1, z, tr) = run_steps(kind, grid, &xs, &ss, k, None, batch, dim);
                let tr = tr.unwrap_or_else(|| panic!("{kind:?} step {k}: no transition"));
                let sd = tr.var.sqrt();
                let scale = |i: usize| {
                    (tr.a * xs[k][i] as f64).abs()
                        + (tr.c * ss[k][i] as f64).abs()
                        + (sd * z[i] as f64).abs()
                        + 1.0
                };
                if let Some((a, c, var)) = tr.one_term() {
                    // x' = a x + c s + √var z, to the f32 rounding of x' (2⁻²³ relative, ×4)
                    for i in 0..n {
                        let want =
                            a * xs[k][i] as f64 + c * ss[k][i] as f64 + var.sqrt() * z[i] as f64;
                        let tol = 5e-7 * scale(i);
                        assert!(
                            (x1[i] as f64 - want).abs() <= tol,
                            "{kind:?} step {k}: x' {} vs a x + c s + √var z = {want}",
                            x1[i]
                        );
                    }
                }
                // The coefficients are the step's derivatives: x' is affine in the state, the
                // scores and z, so moving x or s_j by δ moves x' by a δ or c_j δ (f32 rounding:
                // 5e-7 relative to each side's magnitude).
                let delta = 0.25f32;
                let mut coefs = vec![(k, 0usize, tr.a), (k, 1, tr.c)];
                for (j, &cj) in tr.earlier().iter().enumerate() {
                    coefs.push((k - 1 - j, 1, cj));
                }
                for (step, what, coef) in coefs {
                    let (x2, z2, _) = run_steps(
                        kind,
                        grid,
                        &xs,
                        &ss,
                        k,
                        Some((step, what, delta)),
                        batch,
                        dim,
                    );
                    assert_eq!(z, z2);
                    for i in 0..n {
                        let got = x2[i] as f64 - x1[i] as f64;
                        let want = coef * delta as f64;
                        let tol = 5e-7 * (scale(i) + x1[i].abs() as f64 + want.abs());
                        assert!(
                            (got - want).abs() <= tol,
                            "{kind:?} step {k}: moving {} at step {step} by {delta} moved x' by \
                             {got}, the coefficient says {want}",
                            if what == 0 { "x" } else { "s" }
                        );
                    }
                }
                // a multistep mean's remaining terms are in the earlier states: moving an
                // earlier score changes nothing but c_j δ, moving an earlier x does move x'
                // (not reported: it does not depend on the label)
                if !tr.earlier().is_empty() {
                    let (x3, _, _) =
                        run_steps(kind, grid, &xs, &ss, k, Some((k - 1, 0, delta)), batch, dim);
                    assert!(
                        x3 != x1,
                        "{kind:?} step {k}: the earlier state plays no part"
                    );
                }
            }
        }
    }
}

#[test]
fn first_order_stochastic_steps_are_ddim_eta_one() {
    // DDPM (β̃), Euler ancestral and the first-order DPM-Solver++ SDE steps are DDIM η = 1 on the
    // same points: (a, c, var) equal to 1e-12 relative (f64 evaluation of different formulas).
    let ddim1 = SamplerKind::Ddim {
        eta: 1.0,
        clip: None,
    };
    let ddim0 = SamplerKind::Ddim {
        eta: 0.0,
        clip: None,
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs().max(b.abs()));
    let same = |t: &Transition, u: &Transition| {
        close(t.a, u.a) && close(t.c, u.c) && close(t.var, u.var) && t.earlier().is_empty()
    };
    let grids = [
        Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap(),
        Vp::new(0.1, 20.0).unwrap().grid(8).unwrap(),
        Ve::new(0.01, 50.0).unwrap().grid(8).unwrap(),
    ];
    let (batch, dim) = (2, 3);
    let n = batch * dim;
    for grid in &grids {
        let last = grid.steps() - 1;
        let xs: Vec<Vec<f32>> = (0..grid.steps())
            .map(|j| values(n, 10 + j as u64))
            .collect();
        let ss: Vec<Vec<f32>> = (0..grid.steps())
            .map(|j| values(n, 50 + j as u64))
            .collect();
        for j in 0..grid.steps() {
            let (p, q) = (&grid.points[j], grid.target(j));
            let want = ddim1.transition(p, q, j == last).unwrap();
            for kind in [
                SamplerKind::Ddpm { clip: None },
                SamplerKind::EulerAncestral,
            ] {
                let tr = kind.transition(p, q, j == last).unwrap();
                assert!(
                    same(&tr, &want),
                    "{kind:?} step {j}: {tr:?} vs DDIM η=1 {want:?}"
                );
            }
            // Euler is DDIM η = 0
            let e = SamplerKind::Euler.transition(p, q, j == last).unwrap();
            let e0 = ddim0.transition(p, q, j == last).unwrap();
            assert!(same(&e, &e0), "euler step {j}: {e:?} vs DDIM η=0 {e0:?}");
        }
        // The SDE solvers' first step, and their last (first order into the data end).
        for kind in [SamplerKind::Dpmpp2mSde, SamplerKind::Dpmpp3mSde] {
            for k in [0, last] {
                let (p, q) = (&grid.points[k], grid.target(k));
                let want = ddim1.transition(p, q, k == last).unwrap();
                let (_, _, tr) = run_steps(&kind, grid, &xs, &ss, k, None, batch, dim);
                let tr = tr.unwrap();
                if q.sigma == 0.0 || k == 0 {
                    assert!(
                        same(&tr, &want),
                        "{kind:?} step {k}: {tr:?} vs DDIM η=1 {want:?}"
                    );
                }
            }
        }
    }
    // and ancestral β̃ (today's sampler) is the DDPM step
    let g = &grids[0];
    for j in 0..g.steps() {
        let (p, q) = (&g.points[j], &g.points[j + 1]);
        let anc = SamplerKind::Ancestral {
            variance: AncestralVariance::BetaTilde,
        }
        .transition(p, q, false)
        .unwrap();
        let ddpm = SamplerKind::Ddpm { clip: None }
            .transition(p, q, false)
            .unwrap();
        assert!(same(&anc, &ddpm) || q.sigma == 0.0, "step {j}");
    }
}
