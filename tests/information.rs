//! The information layer against closed forms, quadratures and identities (estimators.md).
//! Entropies in nats inside, compared in bits where the reference values are in bits.

use infodiff::app::{self, Config, Engine};
use infodiff::diffusion::{AncestralVariance, Ddpm, Process, SamplerKind, Vp};
use infodiff::info::closed_form::{
    bpsk_mutual_information, mixture_class_entropy_1d, mixture_conditional_entropy_1d,
    mixture_decision_entropy_1d,
};
use infodiff::info::{
    Curves, InfoSpec, Tracking, bits, hutchinson_divergence, measure_trajectories, peaks,
};
use infodiff::rng::Noise;
use infodiff::score::{Component, GaussianMixture, ScoreModel, Scores};

fn points(ps: &[(f64, usize)]) -> GaussianMixture {
    GaussianMixture::new(
        ps.iter()
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

fn default_report() -> app::Report {
    app::run(&app::default_config(), None, None).unwrap()
}

/// estimators.md: exact H(Y | X_t) of the four points under DDPM, in bits.
const QUADRATURE_BITS: [(usize, f64); 6] = [
    (200, 0.1505),
    (300, 0.4163),
    (400, 0.6979),
    (500, 1.0193),
    (600, 1.4514),
    (1000, 1.9987),
];

#[test]
fn our_quadrature_reproduces_the_reference_values() {
    let m = points(&[(-8.0, 0), (-4.0, 1), (6.0, 2), (8.0, 3)]);
    let ddpm = Ddpm::new(1e-4, 0.02, 1000).unwrap();
    for (t, want) in QUADRATURE_BITS {
        let (s, sigma) = ddpm.marginal(t as f64);
        let got = bits(mixture_conditional_entropy_1d(&m, s, sigma));
        // the reference values are rounded to 4 decimals
        assert!((got - want).abs() < 6e-5, "t={t}: {got} vs {want}");
    }
}

#[test]
fn default_job_entropies_match_the_quadrature() {
    let r = default_report();
    let c = &r.curves;
    assert_eq!(c.t.len(), 1001);
    assert_eq!(c.tracking, Tracking::Online);
    for (t, want) in QUADRATURE_BITS {
        let j = c.nearest(t as f64);
        assert_eq!(c.t[j], t as f64);
        let (hx, se_x) = (bits(c.h_exact[j].unwrap()), bits(c.h_exact_se[j].unwrap()));
        // exact posterior at sampled states: within 4 standard errors (+1e-4 for the rounding of
        // the reference to 4 decimals)
        assert!(
            (hx - want).abs() < 4.0 * se_x + 1e-4,
            "exact t={t}: {hx} ± {se_x} vs {want}"
        );
        let (h, se) = (bits(c.h_online[j]), bits(c.h_online_se[j]));
        // online classifier: within 4 SE + 0.01 bits
        assert!(
            (h - want).abs() < 4.0 * se + 0.01,
            "online t={t}: {h} ± {se} vs {want}"
        );
    }
    // the data end is decided, the noise end holds the prior
    assert!(c.h_online[1000] < 1e-6 && (c.h_online[0] - 4f64.ln()).abs() < 1e-6);
}

/// I(Y; X_t) two ways: H(Y) − Ĥ_online(t) against the Girsanov integral ∫_t^T (g²/2) E‖Δ_Y‖²
/// (Y the class each trajectory ends in). Both come from the same trajectories, so the tolerance
/// is 4 standard errors of the per-trajectory paired difference H(Y) − h_i(t) − G_i(t) plus
/// 0.002 nats (the trapezoid rule on 1000 points, and x_T's 0.0009 nats about Y that the online
/// filter, started at the prior, does not see).
#[test]
fn entropy_drop_equals_the_girsanov_integral() {
    let r = default_report();
    let c = &r.curves;
    for j in (0..c.t.len()).step_by(50) {
        let (a, b) = (c.mi_entropy[j], c.mi_girsanov[j]);
        let se = c.mi_girsanov_diff_se[j];
        assert!(j == 0 || se > 0.0, "paired SE at step {j}");
        assert!(
            (a - b).abs() < 4.0 * se + 2e-3,
            "t={}: H(Y)−H = {a}, Girsanov = {b} ± {se} nats",
            c.t[j]
        );
    }
    let last = c.t.len() - 1;
    let se = c.mi_girsanov_se[last];
    assert!(se > 0.0 && se < 0.05, "SE of the Girsanov integral {se}");
    assert!(
        (c.mi_girsanov[last] - 4f64.ln()).abs() < 4.0 * se + 2e-3,
        "all of H(Y) is produced: {} ± {se}",
        c.mi_girsanov[last]
    );
}

/// ∫_t^T rate_rb du (the Rao–Blackwell integral, `mi_rb`) against H(T) − H(t), within 4 standard
/// errors of the per-trajectory paired difference h_i(T) − h_i(t) − R_i(t) + 0.002 nats; and the
/// finite-difference rate against the Rao–Blackwell one at its peak (10%).
#[test]
fn rao_blackwell_rate_integrates_to_the_entropy_change() {
    let r = default_report();
    let c = &r.curves;
    let mut integral = 0.0;
    for j in 1..c.t.len() {
        let dt = c.t[j - 1] - c.t[j];
        integral += match c.rate_rb[j] {
            Some(v) => 0.5 * dt * (c.rate_rb[j - 1].unwrap() + v),
            None => dt * c.rate_rb[j - 1].unwrap(),
        };
        // the curve's own integral is the mean of the per-trajectory integrals
        assert!(
            (integral - c.mi_rb[j]).abs() < 1e-4 * (1.0 + integral),
            "j={j}: {integral} vs {}",
            c.mi_rb[j]
        );
        let change = c.h_online[0] - c.h_online[j];
        let se = c.mi_rb_diff_se[j];
        assert!(se > 0.0, "paired SE at step {j}");
        assert!(
            (integral - change).abs() < 4.0 * se + 2e-3,
            "t={}: ∫rate = {integral} ± {se}, ΔH = {change}",
            c.t[j]
        );
    }
    let rb = c
        .rate_rb
        .iter()
        .map(|v| v.unwrap_or(0.0))
        .fold(0.0, f64::max);
    let fd = c.rate_fd.iter().cloned().fold(0.0, f64::max);
    assert!((rb - fd).abs() < 0.1 * rb, "peak rates: RB {rb}, FD {fd}");
}

/// Two classes ±1 under VP: the exact-posterior estimate of I(Y; X_t) against the closed form
/// I(snr) = snr − E ln cosh(snr + √snr Z), snr = s_t²/σ_t².
#[test]
fn two_class_mutual_information_matches_the_closed_form() {
    // the closed form itself against estimators.md (5 decimals)
    for (snr, want) in [
        (0.1, 0.04765),
        (0.5, 0.20135),
        (1.0, 0.33683),
        (2.0, 0.50007),
        (4.0, 0.63272),
    ] {
        assert!(
            (bpsk_mutual_information(snr) - want).abs() < 1e-5,
            "I({snr})"
        );
    }
    let text = r#"{"process": {"kind": "vp", "beta_min": 0.1, "beta_max": 20},
        "mixture": {"components": [{"mean": [-1], "var": 0, "class": 0}, {"mean": [1], "var": 0, "class": 1}]},
        "sampler": {"kind": "euler_maruyama", "steps": 1000}, "trajectories": 20000, "seed": 3}"#;
    let cfg = Config::from_json_str(text, "test").unwrap();
    let r = app::run(&cfg, None, None).unwrap();
    let c = &r.curves;
    let vp = Vp::new(0.1, 20.0).unwrap();
    for t in [0.1, 0.2, 0.3, 0.4, 0.5, 0.7] {
        let j = c.nearest(t);
        let (s, sigma) = vp.marginal(c.t[j]);
        let want = bpsk_mutual_information(s * s / (sigma * sigma));
        let got = c.prior_entropy - c.h_exact[j].unwrap();
        // 4 SE of the exact-posterior mean (+2e-3 nats for Euler–Maruyama's discretisation)
        assert!(
            (got - want).abs() < 4.0 * c.h_exact_se[j].unwrap() + 2e-3,
            "t={t}: {got} vs {want}"
        );
        let got_online = c.mi_entropy[j];
        assert!(
            (got_online - want).abs() < 4.0 * c.h_online_se[j] + 7e-3,
            "online t={t}: {got_online} vs {want}"
        );
    }
    // estimators.md: H(Y|X_t) bits at t = 0.3 is 0.6404 and at 0.5 is 0.9406
    for (t, want) in [(0.3, 0.6404), (0.5, 0.9406)] {
        let j = c.nearest(t);
        assert!(
            (bits(c.h_exact[j].unwrap()) - want).abs()
                < 4.0 * bits(c.h_exact_se[j].unwrap()) + 2e-3
        );
    }
}

/// Hutchinson (Rademacher probes, central differences) against the exact divergence, D = 5.
#[test]
fn hutchinson_divergence_matches_the_exact_divergence() {
    let comps = (0..4)
        .map(|i| Component {
            weight: 1.0 + i as f64,
            mean: (0..5)
                .map(|j| ((i * 5 + j) as f64 * 0.7).sin() * 2.0)
                .collect(),
            var: (0..5).map(|j| 0.1 * ((i + j) % 3) as f64).collect(),
            class: i % 2,
        })
        .collect();
    let m = GaussianMixture::new(comps).unwrap();
    let vp = Vp::new(0.1, 20.0).unwrap();
    let grid = vp.grid(10).unwrap();
    let p = grid.points[6]; // t = 0.4
    let noise = Noise::new(5);
    let b = 16;
    let mut x = vec![0.0f32; b * 5];
    for (i, row) in x.chunks_mut(5).enumerate() {
        m.initial_state(&p, &noise, i as u64, row);
    }
    let mut sc = Scores::new(b, 5, 2);
    m.scores(&x, &p, &mut sc).unwrap();
    let exact = sc.divergence.clone().unwrap();
    let probes = 4000;
    let hut = hutchinson_divergence(&m, &x, &p, probes, 1e-2 * p.sigma, &Noise::new(77)).unwrap();
    for i in 0..b {
        // per-probe spread is 2 Σ_{i≠j} J_ij²; with 4000 probes 4 SE is well under 5% of d/σ²
        let tol = 0.05 * 5.0 / (p.sigma * p.sigma);
        assert!(
            (hut[i] - exact[i]).abs() < tol,
            "state {i}: Hutchinson {} vs exact {}",
            hut[i],
            exact[i]
        );
    }
    // identity I8 vs the Hutchinson mean over states
    let mean_h: f64 = hut.iter().sum::<f64>() / b as f64;
    let mean_e: f64 = exact.iter().sum::<f64>() / b as f64;
    assert!((mean_h - mean_e).abs() < 0.02 * mean_e.abs().max(1.0));
}

/// Point-mass data with Y indexing the points (I7): d/σ² + ∇·s = Σ_k w_k ‖s_k − s‖², so the
/// entropy production equals the label-information rate.
#[test]
fn entropy_production_equals_label_rate_for_point_masses() {
    let m = points(&[(-8.0, 0), (-4.0, 1), (6.0, 2), (8.0, 3)]);
    for (x, s, sigma) in [(0.3, 0.2, 0.98), (-5.0, 0.7, 0.71), (7.1, 0.95, 0.3)] {
        let e = m.eval(&[x], s, sigma);
        let lhs = 1.0 / (sigma * sigma) + e.divergence;
        let rhs: f64 = (0..4)
            .map(|y| e.posterior[y] * (e.class_scores[y] - e.score[0]).powi(2))
            .sum();
        assert!(
            (lhs - rhs).abs() < 1e-9 * (1.0 + rhs.abs()),
            "x={x}: {lhs} vs {rhs}"
        );
    }
    let r = default_report();
    let c = &r.curves;
    for j in (100..1000).step_by(100) {
        let (a, b) = (c.hx0_rate[j].unwrap(), c.rate_rb[j].unwrap());
        // per-trajectory values agree exactly; the means differ by the online vs exact posterior
        assert!(
            (a - b).abs() < 0.05 * a.abs().max(1e-4),
            "t={}: production {a} vs label rate {b}",
            c.t[j]
        );
    }
    // Near the data end both are exponentially small: the production is computed without the
    // cancellation of d/σ² against tr Σ⁻¹ (≈ 1e4 at t = 1), so it stays ≥ 0 and tiny.
    for j in 990..1000 {
        let a = c.hx0_rate[j].unwrap();
        assert!((0.0..1e-9).contains(&a), "t={}: production {a}", c.t[j]);
    }
}

/// The fused kernel refuses samplers along which the online classifier is not Bayes.
#[test]
fn fused_kernel_refuses_non_sde_samplers() {
    use infodiff::fused::mixture_trajectory::MixturePlan;
    let cfg = app::default_config();
    let (m, spec, grid) = (
        cfg.mixture().unwrap(),
        cfg.spec().unwrap(),
        cfg.grid().unwrap(),
    );
    for s in [
        SamplerKind::Ddim {
            eta: 0.5,
            clip: None,
        },
        SamplerKind::Ddim {
            eta: 0.0,
            clip: None,
        },
        SamplerKind::HeunOde,
    ] {
        let e = MixturePlan::new(&m, &spec, &grid, &s, Noise::new(0)).unwrap_err();
        assert!(
            matches!(e, infodiff::Error::Unsupported { .. }),
            "{s:?}: {e}"
        );
    }
    let eta1 = SamplerKind::Ddim {
        eta: 1.0,
        clip: None,
    };
    assert!(MixturePlan::new(&m, &spec, &grid, &eta1, Noise::new(0)).is_ok());
    // a prior that is not a distribution is refused
    assert!(InfoSpec::new(vec![0.5, 0.6], vec![]).is_err());
    assert!(InfoSpec::new(vec![1.0, 0.0], vec![]).is_err());
}

/// A shuffled-label null: every point carries both labels with equal weight, so Y is independent
/// of X and every information estimate must vanish.
#[test]
fn shuffled_label_null_gives_zero_information() {
    let pts = [-8.0, -4.0, 6.0, 8.0];
    let comps = pts
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
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(200).unwrap();
    let sampler = SamplerKind::Ancestral {
        variance: AncestralVariance::Beta,
    };
    for engine in [Engine::Generic, Engine::Fused(infodiff::simd::detected())] {
        let sums = match engine {
            Engine::Generic => measure_trajectories(
                &m,
                &spec,
                &grid,
                &sampler,
                Noise::new(1),
                0,
                2000,
                128,
                Tracking::Online,
                None,
            )
            .unwrap(),
            Engine::Fused(k) => {
                let plan = infodiff::fused::mixture_trajectory::MixturePlan::new(
                    &m,
                    &spec,
                    &grid,
                    &sampler,
                    Noise::new(1),
                )
                .unwrap();
                infodiff::fused::mixture_trajectory::run(&plan, k, 0, 2000, None).unwrap()
            }
            Engine::FusedCuda | Engine::NeuralCuda => unreachable!("not in this list"),
        };
        let c = Curves::from_sums(&sums, &spec, &grid, Tracking::Online);
        for j in 0..c.t.len() {
            // nats; f32 scores make s(x|y) − s(x) a rounding residue
            assert!(
                c.mi_entropy[j].abs() < 1e-4,
                "{engine:?} t={}: I = {}",
                c.t[j],
                c.mi_entropy[j]
            );
            assert!(
                c.mi_girsanov[j].abs() < 1e-4,
                "{engine:?} t={}: Girsanov {}",
                c.t[j],
                c.mi_girsanov[j]
            );
            // exact posterior stays at 1/2 (f32 kernel: 1e-6 nats)
            assert!(
                c.h_exact[j]
                    .map(|h| (h - 2f64.ln()).abs() < 1e-6)
                    .unwrap_or(true)
            );
        }
    }
}

/// Deterministic samplers use the exact posterior: Heun ODE and DDIM(η = 0) on the default
/// mixture reproduce the quadrature (4 SE + 0.01 bits: ODE trajectories follow the marginals
/// up to the integrator's error).
#[test]
fn deterministic_samplers_track_the_exact_posterior() {
    for sampler in [
        r#"{"kind": "heun_ode", "steps": 500}"#,
        r#"{"kind": "ddim", "steps": 1000, "eta": 0}"#,
    ] {
        let text = format!(r#"{{"sampler": {sampler}, "trajectories": 4000}}"#);
        let cfg = Config::from_json_str(&text, "test").unwrap();
        let r = app::run(&cfg, None, None).unwrap();
        assert_eq!(r.engine, Engine::Generic);
        let c = &r.curves;
        assert_eq!(c.tracking, Tracking::Exact);
        for (t, want) in QUADRATURE_BITS {
            let j = c.nearest(t as f64);
            let h = bits(c.h_online[j]);
            assert!(
                (h - want).abs() < 4.0 * bits(c.h_online_se[j]) + 0.01,
                "{sampler} t={t}: {h} vs {want}"
            );
        }
    }
}

/// The fused kernel and the generic observer path see the same noise: their curves agree to
/// float rounding of the states (1e-3 nats), not just statistically.
#[test]
fn fused_and_generic_paths_agree() {
    let mut cfg = app::default_config();
    cfg.trajectories = 1000;
    cfg.steps = 250;
    let a = app::run(&cfg, Some(Engine::Generic), None).unwrap().curves;
    let b = app::run(&cfg, Some(Engine::Fused(infodiff::simd::detected())), None)
        .unwrap()
        .curves;
    for j in 0..a.t.len() {
        assert!(
            (a.h_online[j] - b.h_online[j]).abs() < 1e-3,
            "j={j}: {} vs {}",
            a.h_online[j],
            b.h_online[j]
        );
        assert!((a.h_exact[j].unwrap() - b.h_exact[j].unwrap()).abs() < 1e-3);
        assert!((a.mi_girsanov[j] - b.mi_girsanov[j]).abs() < 1e-3 * (1.0 + a.mi_girsanov[j]));
        for (pa, pb) in a.partitions.iter().zip(&b.partitions) {
            assert!((pa.h[j] - pb.h[j]).abs() < 1e-3, "{} j={j}", pa.name);
        }
        for (ca, cb) in a.class_h.iter().zip(&b.class_h) {
            assert!((ca[j] - cb[j]).abs() < 1e-3);
        }
        if let (Some(x), Some(y)) = (a.rate_rb[j], b.rate_rb[j]) {
            assert!((x - y).abs() < 1e-3 * x.abs().max(1e-3));
        }
    }
}

/// Decision problems: −8 vs −4 is decided late (small t), left vs right early; the per-class
/// curves of classes that end apart separate. The Rao–Blackwell decision rates peak (the fitted
/// vertex, `Peak::t_fit`) within 5 states of the quadrature's peaks (590, 357, 199, found here
/// again by quadrature).
#[test]
fn decision_problems_peak_where_the_quadrature_does() {
    let r = default_report();
    let c = &r.curves;
    let m = points(&[(-8.0, 0), (-4.0, 1), (6.0, 2), (8.0, 3)]);
    let ddpm = Ddpm::new(1e-4, 0.02, 1000).unwrap();
    let exact_rate = |a: &[usize], b: &[usize], t: usize| {
        let h = |t: usize| {
            let (s, sigma) = ddpm.marginal(t as f64);
            mixture_decision_entropy_1d(&m, a, b, s, sigma)
        };
        (h(t + 1) - h(t - 1)) / 2.0
    };
    let mut peaks_t = vec![];
    for (name, truth) in [("left_right", 590), ("m8_m4", 357), ("p6_p8", 199)] {
        let i = c.partitions.iter().position(|p| p.name == name).unwrap();
        let (a, b) = (
            r.config.partitions[i].a.clone(),
            r.config.partitions[i].b.clone(),
        );
        // the quadrature's own peak (±12 states around the stated one)
        let quad = (truth - 12..=truth + 12)
            .max_by(|&x, &y| exact_rate(&a, &b, x).total_cmp(&exact_rate(&a, &b, y)))
            .unwrap();
        assert_eq!(quad, truth, "{name}: quadrature peak");
        let pk = &peaks(&c.t, &c.log_snr, &c.partitions[i].rate)[0];
        let t_fit = pk.t_fit.unwrap();
        assert!(
            (t_fit - truth as f64).abs() <= 5.0,
            "{name}: Rao–Blackwell rate peaks at t = {t_fit} (grid {}), quadrature at {truth}",
            pk.t
        );
        peaks_t.push(t_fit);
    }
    // left/right (gap 10) before −8/−4 (gap 4) before 6/8 (gap 2)
    assert!(
        peaks_t[0] > peaks_t[1] && peaks_t[1] > peaks_t[2],
        "{peaks_t:?}"
    );
    // H(Z) of left/right starts at 1 bit and ends at 0
    let p = &c.partitions[0];
    assert!((bits(p.h[0]) - 1.0).abs() < 1e-6 && p.h[1000] < 1e-6);
}

/// The Rao–Blackwell rates of the decision problems and of the classes against the derivative of
/// their quadrature entropies (central difference over ±1 state), every 100 states: within 4
/// standard errors + 2% of the curve's largest exact value (the online classifier's lag at the
/// noise end, where it misses what x_T holds, is a few 1e-5 nats per state there). And the
/// identity Σ_k P̂(k)·rate_class_k = rate_rb, P̂(k) the final-posterior mass (1e-3 relative:
/// f32 lane sums).
#[test]
fn decision_and_class_rates_match_the_quadrature() {
    let r = default_report();
    let c = &r.curves;
    let m = points(&[(-8.0, 0), (-4.0, 1), (6.0, 2), (8.0, 3)]);
    let ddpm = Ddpm::new(1e-4, 0.02, 1000).unwrap();
    let deriv = |h: &dyn Fn(f64, f64) -> f64, t: usize| {
        let (s1, g1) = ddpm.marginal(t as f64 + 1.0);
        let (s0, g0) = ddpm.marginal(t as f64 - 1.0);
        (h(s1, g1) - h(s0, g0)) / 2.0
    };
    let ts: Vec<usize> = (100..1000).step_by(100).collect();
    let check =
        |name: &str, rate: &[Option<f64>], se: &[Option<f64>], h: &dyn Fn(f64, f64) -> f64| {
            let exact: Vec<f64> = ts.iter().map(|&t| deriv(h, t)).collect();
            let top = exact.iter().cloned().fold(0.0, f64::max);
            for (&t, want) in ts.iter().zip(&exact) {
                let j = c.nearest(t as f64);
                let (got, se) = (rate[j].unwrap(), se[j].unwrap());
                assert!(
                    (got - want).abs() < 4.0 * se + 0.02 * top,
                    "{name} at t={t}: {got} ± {se} vs quadrature {want} nats/state"
                );
            }
        };
    for (i, p) in r.config.partitions.iter().enumerate() {
        let h = |s: f64, sg: f64| mixture_decision_entropy_1d(&m, &p.a, &p.b, s, sg);
        check(&p.name, &c.partitions[i].rate, &c.partitions[i].rate_se, &h);
    }
    for k in 0..4 {
        let h = |s: f64, sg: f64| mixture_class_entropy_1d(&m, k, s, sg);
        check(
            &format!("class {k}"),
            &c.class_rate[k],
            &c.class_rate_se[k],
            &h,
        );
    }
    // With the exact posterior tracked (a deterministic sampler: Σ_y π_y Δ_y = 0 exactly) the
    // class rates add up to the label rate: Σ_k P̂(k)·rate_class_k = rate_rb (1e-6 relative: f64
    // sums of f32 scores, so Σ_y π_y Δ_y vanishes to f32 precision).
    let mut cfg = app::default_config();
    cfg.sampler = SamplerKind::Ddim {
        eta: 0.0,
        clip: None,
    };
    cfg.steps = 100;
    cfg.trajectories = 500;
    let ex = app::run(&cfg, None, None).unwrap();
    let c = &ex.curves;
    assert_eq!(c.tracking, Tracking::Exact);
    for j in 0..c.t.len() - 1 {
        let rb = c.rate_rb[j].unwrap();
        let total: f64 = (0..4)
            .map(|k| c.class_mass[k] * c.class_rate[k][j].unwrap())
            .sum();
        assert!(
            (total - rb).abs() <= 1e-6 * rb.abs() + 1e-300,
            "step {j}: Σ P̂(k) rate_class_k = {total}, rate_rb = {rb}"
        );
    }
}

/// Entropy production two ways on exact scores: (g²/2)(d/σ² + E∇·s) and the integration-by-parts
/// form (g²/2)(d/σ² − E‖s‖²) agree within 4 paired standard errors (from the per-trajectory gap
/// ∇·s + ‖s‖², same trajectories) + 1e-6 nats per state, every 50 states.
#[test]
fn entropy_production_two_ways_agree_for_exact_scores() {
    let r = default_report();
    let c = &r.curves;
    for j in (0..1000).step_by(50) {
        let (a, b, se) = (
            c.hx0_rate[j].unwrap(),
            c.hx0_rate_ibp[j].unwrap(),
            c.hx0_gap_se[j].unwrap(),
        );
        assert!(se > 0.0 && se.is_finite(), "step {j}: gap SE {se}");
        assert!(
            (a - b).abs() < 4.0 * se + 1e-6,
            "step {j}: hx0_rate {a}, hx0_rate_ibp {b}, paired SE {se}"
        );
    }
}

/// A score model that returns NaN from step 3 on: sampling stops with an error naming the step.
#[test]
fn non_finite_values_are_reported_with_their_step() {
    struct Broken(GaussianMixture);
    impl ScoreModel for Broken {
        fn dim(&self) -> usize {
            1
        }
        fn num_classes(&self) -> usize {
            2
        }
        fn class_prior(&self) -> Vec<f64> {
            vec![0.5, 0.5]
        }
        fn scores(
            &self,
            x: &[f32],
            p: &infodiff::diffusion::GridPoint,
            out: &mut Scores,
        ) -> infodiff::Result<()> {
            self.0.scores(x, p, out)?;
            if p.index <= 96 {
                out.uncond[0] = f32::NAN;
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "broken".into()
        }
    }
    let m = Broken(points(&[(-1.0, 0), (1.0, 1)]));
    let grid = Vp::new(0.1, 20.0).unwrap().grid(100).unwrap();
    let spec = InfoSpec::new(m.class_prior(), vec![]).unwrap();
    let e = measure_trajectories(
        &m,
        &spec,
        &grid,
        &SamplerKind::EulerMaruyama,
        Noise::new(0),
        0,
        8,
        8,
        Tracking::Online,
        None,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, infodiff::Error::NonFinite { step: 4, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("step 4") && msg.contains("trajectory 0"),
        "{msg}"
    );
    // and a deterministic sampler without an exact posterior is refused, saying why
    let e = measure_trajectories(
        &m,
        &spec,
        &grid,
        &SamplerKind::HeunOde,
        Noise::new(0),
        0,
        8,
        8,
        Tracking::Online,
        None,
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("needs stochastic transitions"),
        "{e}"
    );
}

/// estimators.md: with exact scores and 20,000 ancestral trajectories, the online estimate's mean
/// absolute error is about 0.001 bits at 1000 steps, 0.007 at 100, 0.012 at 50, 0.03 at 20, and
/// coarse filters overestimate H. Ours must do as well, within 1.5× (errors against the quadrature,
/// averaged over the grid points with 0 < t < T).
#[test]
fn online_filter_error_grows_gracefully_on_coarse_grids() {
    let m = points(&[(-8.0, 0), (-4.0, 1), (6.0, 2), (8.0, 3)]);
    for (steps, bound) in [(1000usize, 0.001), (100, 0.007), (50, 0.012), (20, 0.03)] {
        let mut cfg = app::default_config();
        cfg.steps = steps;
        let r = app::run(&cfg, None, None).unwrap();
        let c = &r.curves;
        let grid = cfg.grid().unwrap();
        let (mut mae, mut signed, mut n) = (0.0, 0.0, 0.0);
        for j in 1..steps {
            let p = &grid.points[j];
            let e = bits(c.h_online[j] - mixture_conditional_entropy_1d(&m, p.s, p.sigma));
            mae += e.abs();
            signed += e;
            n += 1.0;
        }
        let (mae, signed) = (mae / n, signed / n);
        eprintln!("{steps} steps: MAE {mae:.4} bits, mean signed error {signed:.4} bits");
        // "about": 1.5× the reference figure (Monte Carlo noise alone is ~0.001 bits here)
        assert!(
            mae <= 1.5 * bound,
            "{steps} steps: MAE {mae} bits > 1.5 × {bound}"
        );
        if steps <= 50 {
            assert!(
                signed > 0.0,
                "{steps} steps: a coarse filter overestimates H ({signed})"
            );
        }
    }
}

/// Entropy production (I5) two ways for data with spread (not point masses): from the exact
/// divergence, (g²/2)(d/σ² + E∇·s), and from the denoising error, (g² s²/(2σ⁴)) E‖x₀ − E[x₀|x_t]‖²
/// with Tweedie's E[x₀|x_t] = (x + σ² s(x))/s_t, by Monte Carlo over the forward process
/// (200,000 samples, 4 standard errors).
#[test]
fn entropy_production_equals_the_denoising_error() {
    let m = GaussianMixture::new(vec![
        Component {
            weight: 1.0,
            mean: vec![-2.0, 1.0],
            var: vec![0.3, 0.1],
            class: 0,
        },
        Component {
            weight: 2.0,
            mean: vec![1.5, -0.5],
            var: vec![0.05, 0.4],
            class: 1,
        },
        Component {
            weight: 1.0,
            mean: vec![0.5, 2.0],
            var: vec![0.0, 0.0],
            class: 1,
        },
    ])
    .unwrap();
    let vp = Vp::new(0.1, 20.0).unwrap();
    let noise = Noise::new(21);
    let weights = m.weights();
    for t in [0.15, 0.3, 0.5] {
        let (s, sigma) = vp.marginal(t);
        let n = 200_000u64;
        let (mut a, mut a2, mut b, mut b2) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for i in 0..n {
            // x₀ ~ data (component by weight), x_t = s x₀ + σ ε
            let u = noise.init_uniform(i) as f64;
            let mut acc = 0.0;
            let k = weights.iter().position(|w| {
                acc += w;
                u < acc
            });
            let c = &m.components()[k.unwrap_or(2)];
            let x0: Vec<f64> = (0..2)
                .map(|j| c.mean[j] + c.var[j].sqrt() * noise.normal(i, 0, j) as f64)
                .collect();
            let x: Vec<f64> = (0..2)
                .map(|j| s * x0[j] + sigma * noise.normal(i, 1, j) as f64)
                .collect();
            let e = m.eval(&x, s, sigma);
            let prod = 2.0 / (sigma * sigma) + e.divergence;
            let err2: f64 = (0..2)
                .map(|j| (x0[j] - (x[j] + sigma * sigma * e.score[j]) / s).powi(2))
                .sum();
            let den = s * s / sigma.powi(4) * err2;
            a += prod;
            a2 += prod * prod;
            b += den;
            b2 += den * den;
        }
        let nf = n as f64;
        let (ma, mb) = (a / nf, b / nf);
        let se = ((a2 / nf - ma * ma) / nf + (b2 / nf - mb * mb) / nf).sqrt();
        assert!(
            (ma - mb).abs() < 4.0 * se,
            "t={t}: d/σ² + E∇·s = {ma}, s²/σ⁴ mmse = {mb} (SE {se})"
        );
        assert!(ma > 0.0);
    }
}

/// `--device auto` falls back to the CPU for a job past a GPU kernel's shape limits: the limit is
/// named (a 16-D mixture: the kernel keeps at most 8 dimensions per thread), the default job has
/// none, and a sampler without a GPU path is not the GPU's to refuse.
#[test]
fn gpu_shape_limits_are_named_for_the_cpu_fallback() {
    let mean: Vec<String> = (0..16).map(|i| format!("{}", i % 3)).collect();
    let text = format!(
        r#"{{"mixture": {{"components": [{{"weight": 1, "mean": [{m}], "var": 0, "class": 0}},
            {{"weight": 1, "mean": [{m}], "var": 1, "class": 1}}]}}, "trajectories": 10}}"#,
        m = mean.join(",")
    );
    let cfg = Config::from_json_str(&text, "test").unwrap();
    let why = app::gpu_limit(&cfg).expect("a 16-D mixture exceeds the GPU kernel");
    assert!(why.contains("dimension") && why.contains("16"), "{why}");
    assert_eq!(app::gpu_limit(&app::default_config()), None);
    let mut det = app::default_config();
    det.sampler = SamplerKind::Ddim {
        eta: 0.0,
        clip: None,
    };
    assert_eq!(app::gpu_limit(&det), None);
    // A network job with more decision problems than the fused neural step records.
    let model =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/tiny-class");
    let parts: Vec<String> = (0..9)
        .map(|i| format!(r#"{{"name": "p{i}", "a": [{i}], "b": [9]}}"#))
        .collect();
    let text = format!(
        r#"{{"model": {:?}, "partitions": [{}], "trajectories": 2}}"#,
        model.display().to_string(),
        parts.join(",")
    );
    let cfg = Config::from_json_str(&text, "test").unwrap();
    let why = app::gpu_limit(&cfg).expect("9 decision problems exceed the neural step");
    assert!(
        why.contains("decision problems") && why.contains('9'),
        "{why}"
    );
}
