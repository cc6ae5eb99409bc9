//! Schedules and processes against closed forms.

use infodiff::diffusion::{Ddpm, Process, SubVp, Ve, Vp, VpCosine, ddpm_alpha_bar, ddpm_beta};

fn all() -> Vec<Box<dyn Process>> {
    vec![
        Box::new(Ddpm::new(1e-4, 0.02, 1000).unwrap()),
        Box::new(Vp::new(0.1, 20.0).unwrap()),
        Box::new(VpCosine::new(0.008, 0.999).unwrap()),
        Box::new(SubVp::new(0.1, 20.0).unwrap()),
        Box::new(Ve::new(0.01, 50.0).unwrap()),
    ]
}

#[test]
fn ddpm_alpha_bar_is_the_product_of_one_minus_beta() {
    let ab = ddpm_alpha_bar(1e-4, 0.02, 1000);
    assert_eq!(ab.len(), 1001);
    assert_eq!(ab[0], 1.0);
    let mut prod = 1.0f64;
    for i in 1..=1000 {
        let beta = 1e-4 + (0.02 - 1e-4) * (i - 1) as f64 / 999.0;
        prod *= 1.0 - beta;
        // relative 1e-12: the schedule sums logs, the check multiplies
        assert!(
            (ab[i] - prod).abs() <= 1e-12 * prod,
            "i={i}: {} vs {prod}",
            ab[i]
        );
    }
    // ᾱ_1000 ≈ 4.04e-5 (the known value of the DDPM linear schedule)
    assert!((ab[1000] - 4.0358e-5).abs() < 1e-8, "{}", ab[1000]);
}

#[test]
fn ddpm_matches_vp_at_t_equals_i_over_n() {
    // estimators.md: DDPM linear β matches VP(0.1, 20) with t = i/1000 (to O(β²) per step).
    let ddpm = Ddpm::new(1e-4, 0.02, 1000).unwrap();
    let vp = Vp::new(0.1, 20.0).unwrap();
    let mut sum_b2 = 0.0f64; // Σ_{j≤i} β_j²
    let mut j = 0usize;
    for i in [1usize, 100, 250, 500, 750, 1000] {
        while j < i {
            j += 1;
            sum_b2 += ddpm_beta(1e-4, 0.02, 1000, j).powi(2);
        }
        let (s1, _) = ddpm.marginal(i as f64);
        let (s2, _) = vp.marginal(i as f64 / 1000.0);
        // ln ∏(1 − β_j) = −Σβ_j − Σβ_j²/2 − …: the second-order term (up to 6.8% of ᾱ at
        // i = 1000) is taken out, and what is left (the Riemann sum Σβ_j against ∫β dt, and
        // Σβ³/3) must be within 1% relative in ᾱ (it is at most 0.25%)
        let ratio = (s1 * s1) / (s2 * s2 * (-sum_b2 / 2.0).exp());
        assert!(
            (ratio - 1.0).abs() < 1e-2,
            "i={i}: {} vs {} (second-order corrected ratio {ratio})",
            s1 * s1,
            s2 * s2
        );
    }
    // and the uncorrected ᾱ differs by more than that at the end: the correction is needed
    let (s1, _) = ddpm.marginal(1000.0);
    let (s2, _) = vp.marginal(1.0);
    assert!(((s1 * s1) / (s2 * s2) - 1.0).abs() > 5e-2);
}

#[test]
fn vp_family_marginals_in_closed_form() {
    let vp = Vp::new(0.1, 20.0).unwrap();
    for t in [0.0, 0.1, 0.259, 0.5, 1.0] {
        let ab: f64 = (-0.1 * t - 0.5 * 19.9 * t * t as f64).exp();
        let (s, sig) = vp.marginal(t);
        assert!((s * s - ab).abs() < 1e-14 && (sig * sig - (1.0 - ab)).abs() < 1e-14);
        let (s2, sig2) = SubVp::new(0.1, 20.0).unwrap().marginal(t);
        assert!((s2 - s).abs() < 1e-15 && (sig2 - (1.0 - ab)).abs() < 1e-14);
    }
    let cos = VpCosine::new(0.008, 0.999).unwrap();
    assert!((cos.alpha_bar(0.0) - 1.0).abs() < 1e-15);
    let (s, sig) = cos.marginal(0.5);
    assert!((s * s + sig * sig - 1.0).abs() < 1e-14);
    let ve = Ve::new(0.01, 50.0).unwrap();
    assert!((ve.marginal(0.0).1 - 0.01).abs() < 1e-15 && (ve.marginal(1.0).1 - 50.0).abs() < 1e-12);
    assert_eq!(ve.marginal(0.3).0, 1.0);
}

/// The SDE identities ds/dt = f s and dσ²/dt = 2 f σ² + g², by central differences (relative 1e-5).
#[test]
fn drift_and_diffusion_are_consistent_with_the_marginals() {
    for p in all() {
        let tm = p.t_max();
        for frac in [0.05, 0.2, 0.37, 0.5, 0.8, 0.95] {
            let t = tm * frac;
            let h = tm * 1e-6;
            // DDPM's continuous extension is piecewise: stay inside one index interval.
            let t = if p.name() == "ddpm" {
                t.floor() + 0.5
            } else {
                t
            };
            let (sp, gp) = p.marginal(t + h);
            let (sm, gm) = p.marginal(t - h);
            let (s, g) = p.marginal(t);
            let ds = (sp - sm) / (2.0 * h);
            let dv = (gp * gp - gm * gm) / (2.0 * h);
            assert!(
                (ds - p.drift(t) * s).abs() < 1e-5 * (ds.abs() + 1e-3),
                "{} t={t}: ds/dt {ds} vs f s {}",
                p.name(),
                p.drift(t) * s
            );
            let want = 2.0 * p.drift(t) * g * g + p.g2(t);
            assert!(
                (dv - want).abs() < 1e-5 * want.abs(),
                "{} t={t}: dσ²/dt {dv} vs {want}",
                p.name()
            );
        }
    }
}

#[test]
fn grids_run_from_noise_to_data_with_monotone_snr() {
    for p in all() {
        let g = p.grid(100).unwrap();
        assert_eq!(g.points.len(), 101);
        assert_eq!(g.points[0].t, p.t_max(), "{}", p.name());
        assert_eq!(g.points[100].t, 0.0, "{}", p.name());
        for w in g.points.windows(2) {
            assert!(w[1].t < w[0].t);
            assert!(
                w[1].log_snr() > w[0].log_snr(),
                "{}: SNR must grow towards the data",
                p.name()
            );
        }
        assert!(p.grid(0).is_err());
    }
    // DDPM grid uses state indices; the full grid is every index.
    let d = Ddpm::new(1e-4, 0.02, 1000).unwrap();
    let g = d.grid(1000).unwrap();
    assert!(
        g.points
            .iter()
            .enumerate()
            .all(|(j, p)| p.index == 1000 - j && p.t == (1000 - j) as f64)
    );
    assert_eq!(
        d.grid(10)
            .unwrap()
            .points
            .iter()
            .map(|p| p.index)
            .collect::<Vec<_>>(),
        vec![1000, 900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    );
    assert!(d.grid(1001).is_err());
    // endpoints: DDPM data end is clean, noise end nearly pure noise
    assert_eq!(g.points[1000].sigma, 0.0);
    assert!(g.points[0].s < 0.007);
}

#[test]
fn invalid_process_parameters_are_refused_by_name() {
    let e = Vp::new(-1.0, 20.0).unwrap_err().to_string();
    assert!(e.contains("process.beta_min"), "{e}");
    let e = Ve::new(5.0, 1.0).unwrap_err().to_string();
    assert!(e.contains("process.sigma_max"), "{e}");
    let e = Ddpm::new(1e-4, 0.02, 0).unwrap_err().to_string();
    assert!(e.contains("process.steps"), "{e}");
}

/// The step view's x̂₀ is Tweedie's E[x₀ | x_t]: for point masses m_y it is Σ_y p(y | x_t) m_y,
/// on every process and for every sampler (the driver computes it, not the sampler).
#[test]
fn step_view_x0_hat_is_the_posterior_mean_of_the_data() {
    use infodiff::diffusion::{AncestralVariance, Observer, SamplerKind, StepView, sample};
    use infodiff::rng::Noise;
    use infodiff::score::{Component, GaussianMixture};
    let means = [-2.0f64, 1.0, 3.0];
    let comps = means
        .iter()
        .enumerate()
        .map(|(c, &m)| Component {
            weight: 1.0 + c as f64,
            mean: vec![m],
            var: vec![0.0],
            class: c,
        })
        .collect();
    let model = GaussianMixture::new(comps).unwrap();
    struct Check<'a>(&'a [f64], usize);
    impl Observer for Check<'_> {
        fn on_step(&mut self, v: &StepView<'_>) -> infodiff::Result<()> {
            let post = v.scores.posterior.as_ref().expect("exact model");
            let k = self.0.len();
            for (b, &x0) in v.x0_hat.iter().enumerate() {
                let want: f64 = (0..k).map(|y| post[b * k + y] * self.0[y]).sum();
                // f32 scores and states, amplified by σ²/s at the noise end: 1e-3 relative to
                // the data's scale (3) plus σ_t²/s_t times f32's epsilon on the score.
                let tol = 3e-3 + 1e-5 * v.from.sigma.powi(2) / v.from.s;
                assert!(
                    (x0 as f64 - want).abs() <= tol,
                    "step {}: {x0} vs {want}",
                    v.step
                );
            }
            self.1 += 1;
            Ok(())
        }
    }
    for p in all() {
        let grid = p.grid(20).unwrap();
        for s in [
            SamplerKind::Ancestral {
                variance: AncestralVariance::Beta,
            },
            SamplerKind::HeunOde,
        ] {
            let mut obs = Check(&means, 0);
            sample(&model, &grid, &s, Noise::new(3), 0, 16, &mut obs).unwrap();
            assert_eq!(obs.1, 20, "{} {}", p.name(), s.name());
        }
    }
}
