//! Hutchinson divergence for networks (`score::Hutchinson`), checked on exact mixtures, whose
//! divergence is known in closed form: the estimator itself (scale of h, unbiasedness, batch
//! independence) and entropy production through the generic observer.

use infodiff::diffusion::{AncestralVariance, Ddpm, Process, SamplerKind};
use infodiff::info::{Curves, InfoSpec, Tracking, measure_trajectories};
use infodiff::rng::Noise;
use infodiff::score::hutchinson::probe_step;
use infodiff::score::{Component, GaussianMixture, Hutchinson, ScoreCtx, ScoreModel, Scores};

/// Two classes in D = 3, two components each with different diagonal variances: a score whose
/// Jacobian has off-diagonal entries (through the posterior over components), so that the
/// probes' variance is not zero.
fn mixture() -> GaussianMixture {
    let c = |mean: [f64; 3], var: [f64; 3], class| Component {
        weight: 1.0,
        mean: mean.to_vec(),
        var: var.to_vec(),
        class,
    };
    GaussianMixture::new(vec![
        c([-1.5, 0.5, 0.0], [0.05, 0.2, 0.1], 0),
        c([-0.5, -1.0, 1.0], [0.1, 0.05, 0.3], 0),
        c([1.0, 1.0, -0.5], [0.2, 0.1, 0.05], 1),
        c([1.5, -0.5, 0.5], [0.05, 0.3, 0.1], 1),
    ])
    .unwrap()
}

fn ctx(first: u64, step: u32) -> ScoreCtx {
    ScoreCtx {
        noise: Noise::new(11),
        first_trajectory: first,
        step,
        corrector: false,
    }
}

/// In one dimension v² = 1, so the estimate is the central difference itself: equal to the exact
/// divergence up to the f32 rounding of the two scores divided by 2h (bound computed below) plus
/// the O(h²) truncation (≤ 1e-4 relative at h = 1e-3 σ). A step off by any factor fails.
#[test]
fn in_one_dimension_the_estimate_is_the_exact_divergence() {
    let m = GaussianMixture::new(vec![
        Component {
            weight: 1.0,
            mean: vec![-1.0],
            var: vec![0.1],
            class: 0,
        },
        Component {
            weight: 2.0,
            mean: vec![1.5],
            var: vec![0.0],
            class: 1,
        },
    ])
    .unwrap();
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(20).unwrap();
    let hut = Hutchinson::new(&m, 3).unwrap();
    let xs = [-2.0f32, -0.7, 0.1, 0.9, 1.6, 3.0];
    for (j, p) in grid
        .points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.sigma > 0.0)
    {
        let mut exact = Scores::new(xs.len(), 1, 2);
        m.scores(&xs, p, &mut exact).unwrap();
        let mut est = Scores::new(xs.len(), 1, 2);
        hut.scores_at(&xs, p, &ctx(0, j as u32), &mut est).unwrap();
        let h = probe_step(p) as f64;
        for (b, x) in xs.iter().enumerate() {
            let (want, got) = (
                exact.divergence.as_ref().unwrap()[b],
                est.divergence.as_ref().unwrap()[b],
            );
            let mut s = [0.0f32; 2];
            m.uncond_scores(&[x + probe_step(p), x - probe_step(p)], p, &mut s)
                .unwrap();
            // each f32 score rounded once (2⁻²⁴ relative, twice for the mixture's own f32
            // arithmetic), the difference divided by 2h; truncation 1e-4 relative
            let tol = 4.0 * 2f64.powi(-24) * (s[0].abs() + s[1].abs()) as f64 / (2.0 * h)
                + 1e-4 * want.abs();
            assert!(
                (got - want).abs() <= tol,
                "point {j} (σ {}), x {x}: {got} vs {want} (tolerance {tol:e})",
                p.sigma
            );
        }
    }
}

/// In D = 3 the estimate is random; over 64 probes × 100 steps (independent probe draws) its
/// mean is the exact divergence within 4 standard errors, its spread is not zero, and a
/// trajectory's estimate is the same whatever its batch (keyed by its index, not its row).
#[test]
fn the_estimate_is_unbiased_and_independent_of_the_batch() {
    let m = mixture();
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap();
    let p = grid.points[7];
    let x = [0.3f32, -0.2, 0.4, -0.8, 0.6, 0.1, 1.1, 0.2, -0.3];
    let mut exact = Scores::new(3, 3, 2);
    m.scores(&x, &p, &mut exact).unwrap();
    let hut = Hutchinson::new(&m, 64).unwrap();
    let steps = 100;
    let mut est = vec![vec![]; 3];
    for step in 0..steps {
        let mut s = Scores::new(3, 3, 2);
        hut.scores_at(&x, &p, &ctx(10, step), &mut s).unwrap();
        for b in 0..3 {
            est[b].push(s.divergence.as_ref().unwrap()[b]);
        }
        // trajectory 11 alone in its batch: the same probes, the same estimate
        let mut one = Scores::new(1, 3, 2);
        hut.scores_at(&x[3..6], &p, &ctx(11, step), &mut one)
            .unwrap();
        assert_eq!(
            one.divergence.unwrap()[0],
            est[1][step as usize],
            "batch independence"
        );
    }
    for b in 0..3 {
        let n = est[b].len() as f64;
        let mean = est[b].iter().sum::<f64>() / n;
        let var = est[b].iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let se = (var / n).sqrt();
        let want = exact.divergence.as_ref().unwrap()[b];
        assert!(
            se > 1e-6 * want.abs(),
            "state {b}: probe variance is not zero (se {se:e})"
        );
        assert!(
            (mean - want).abs() < 4.0 * se,
            "state {b}: {mean} ± {se} vs exact {want}"
        );
    }
    // the wrapper replaces any divergence: none outside a sampler run, none for Heun's corrector
    let mut s = Scores::new(3, 3, 2);
    hut.scores(&x, &p, &mut s).unwrap();
    assert!(s.divergence.is_none());
    let corr = ScoreCtx {
        corrector: true,
        ..ctx(10, 0)
    };
    hut.scores_at(&x, &p, &corr, &mut s).unwrap();
    assert!(s.divergence.is_none());
    assert!(Hutchinson::new(&m, 0).is_err() && Hutchinson::new(&m, 65).is_err());
}

/// Entropy production through the generic observer: with one probe per state and step the
/// Hutchinson `hx0_rate` matches the exact-divergence one on the same trajectories within 4 of
/// its standard errors at every point (whose SE `hx0_rate_se` includes the probes' variance:
/// larger than the exact one's), the mean squared z-score is below 2, and a divergence 5% off
/// would be caught (some point beyond 6 SEs). The integration-by-parts form is the same curve
/// in both runs (it needs no divergence).
#[test]
fn hutchinson_entropy_production_matches_the_exact_divergence() {
    let m = mixture();
    let spec = InfoSpec::new(m.class_prior(), vec![]).unwrap();
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(50).unwrap();
    let sampler = SamplerKind::Ancestral {
        variance: AncestralVariance::Beta,
    };
    let noise = Noise::new(2024);
    let n = 4000;
    let run = |model: &dyn ScoreModel| {
        let sums = measure_trajectories(
            model,
            &spec,
            &grid,
            &sampler,
            noise,
            0,
            n,
            250,
            Tracking::Online,
            None,
        )
        .unwrap();
        Curves::from_sums(&sums, &spec, &grid, Tracking::Online)
    };
    let exact = run(&m);
    let hut = run(&Hutchinson::new(&m, 1).unwrap());
    assert_eq!(hut.hx0_rate_ibp, exact.hx0_rate_ibp, "same trajectories");
    let (mut z2, mut count, mut zalt_max) = (0.0, 0.0, 0.0f64);
    for (j, p) in grid.points.iter().enumerate() {
        let (Some(e), Some(h), Some(se), Some(se_exact)) = (
            exact.hx0_rate[j],
            hut.hx0_rate[j],
            hut.hx0_rate_se[j],
            exact.hx0_rate_se[j],
        ) else {
            continue;
        };
        assert!(
            se >= se_exact * 0.95,
            "point {j}: SE {se} well below the exact one's {se_exact}"
        );
        let z = (h - e) / se;
        assert!(
            z.abs() < 4.0,
            "point {j}: Hutchinson {h} vs exact {e} (SE {se}): z = {z}"
        );
        z2 += z * z;
        count += 1.0;
        // the same curve with E∇·s 5% off
        let half_g2_d_over_s2 = 0.5 * p.g2 * 3.0 / (p.sigma * p.sigma);
        let alt = h + 0.05 * (h - half_g2_d_over_s2);
        zalt_max = zalt_max.max(((alt - e) / se).abs());
    }
    assert!(count >= 45.0, "hx0_rate at {count} points");
    assert!(z2 / count < 2.0, "mean z² {}", z2 / count);
    assert!(
        zalt_max > 6.0,
        "a 5% error in ∇·s would go unseen (max z {zalt_max})"
    );
}
