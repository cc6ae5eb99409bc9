//! Every process with every stochastic sampler, end to end: the exact-posterior entropy at the
//! sampled states against quadrature, and the online classifier against the exact posterior.

use infodiff::app::{self, Config};
use infodiff::info::bits;
use infodiff::info::closed_form::mixture_conditional_entropy_1d;

#[test]
fn every_process_and_stochastic_sampler_matches_the_quadrature() {
    let processes = [
        r#"{"kind": "ddpm"}"#,
        r#"{"kind": "vp", "beta_min": 0.1, "beta_max": 20}"#,
        r#"{"kind": "vp_cosine"}"#,
        r#"{"kind": "subvp", "beta_min": 0.1, "beta_max": 20}"#,
        r#"{"kind": "ve", "sigma_min": 0.01, "sigma_max": 50}"#,
    ];
    let samplers = [
        r#"{"kind": "ancestral", "steps": 500, "variance": "beta"}"#,
        r#"{"kind": "ancestral", "steps": 500, "variance": "beta_tilde"}"#,
        r#"{"kind": "ddim", "steps": 500, "eta": 1.0}"#,
        r#"{"kind": "euler_maruyama", "steps": 500}"#,
    ];
    let mut worst = (0.0f64, String::new());
    for p in processes {
        for s in samplers {
            let text = format!(
                r#"{{"process": {p}, "sampler": {s}, "trajectories": 4000, "seed": 5,
                  "mixture": {{"components": [{{"mean": [-2], "var": 0.1, "class": 0}}, {{"mean": [1], "var": 0, "class": 1}}, {{"mean": [3], "var": 0.05, "class": 1, "weight": 0.5}}]}}}}"#
            );
            let cfg = Config::from_json_str(&text, "test").unwrap();
            let (m, grid) = (cfg.mixture().unwrap(), cfg.grid().unwrap());
            let r = app::run(&cfg, None, None).unwrap();
            let c = &r.curves;
            for j in [100, 200, 300, 400, 450] {
                let pt = &grid.points[j];
                let want = mixture_conditional_entropy_1d(&m, pt.s, pt.sigma);
                let (hx, se) = (c.h_exact[j].unwrap(), c.h_exact_se[j].unwrap());
                let (h, hse) = (c.h_online[j], c.h_online_se[j]);
                // exact posterior at the sampled states: 4 SE + 2e-3 nats for the samplers'
                // discretisation on 500 steps; online: 4 SE + 0.01 bits
                let dev = (hx - want).abs() - 4.0 * se;
                if dev > worst.0 {
                    worst = (dev, format!("{p} {s} j={j}: exact {hx} ± {se} vs {want}"));
                }
                assert!(
                    (hx - want).abs() < 4.0 * se + 2e-3,
                    "{p} {s} j={j} t={}: exact {hx} ± {se} vs quadrature {want}",
                    pt.t
                );
                assert!(
                    bits((h - want).abs()) < bits(4.0 * hse) + 0.01,
                    "{p} {s} j={j}: online {h} ± {hse} vs {want}"
                );
            }
            assert!(
                c.h_online[grid.steps()] < 0.05,
                "{p} {s}: decided at the data end ({})",
                c.h_online[grid.steps()]
            );
        }
    }
    eprintln!("largest deviation beyond 4 SE: {:?}", worst);
}

/// DDIM with 0 < η < 1 is not a reverse-SDE discretisation: the online classifier would be
/// overconfident there, so the job tracks the exact posterior and says why.
#[test]
fn ddim_with_partial_noise_tracks_the_exact_posterior() {
    let cfg = Config::from_json_str(
        r#"{"sampler": {"kind": "ddim", "steps": 200, "eta": 0.5}, "trajectories": 500}"#,
        "test",
    )
    .unwrap();
    let r = app::run(&cfg, None, None).unwrap();
    assert_eq!(r.curves.tracking, infodiff::info::Tracking::Exact);
    assert!(
        r.table().contains("overstates the label information"),
        "{}",
        r.table()
    );
    assert!(
        r.summary()["posterior"]
            .as_str()
            .unwrap()
            .starts_with("exact posterior")
    );
}

/// The job warns where its numbers are compromised: an unstable first Euler–Maruyama step, and
/// information in x_T that the online classifier cannot see; the default job has no warning.
#[test]
fn warnings_flag_unstable_steps_and_informative_noise_ends() {
    let run =
        |text: &str| app::run(&Config::from_json_str(text, "test").unwrap(), None, None).unwrap();
    assert!(run(r#"{"trajectories": 256}"#).warnings().is_empty());
    let em_cosine = run(
        r#"{"process": {"kind": "vp_cosine"}, "sampler": {"kind": "euler_maruyama", "steps": 500}, "trajectories": 256}"#,
    );
    assert!(
        em_cosine.warnings().iter().any(|w| w.contains("overshoot")),
        "{:?}",
        em_cosine.warnings()
    );
    let ve = run(
        r#"{"process": {"kind": "ve", "sigma_min": 0.01, "sigma_max": 20}, "trajectories": 256}"#,
    );
    assert!(
        ve.warnings()
            .iter()
            .any(|w| w.contains("x_T already holds")),
        "{:?}",
        ve.warnings()
    );
    assert_eq!(
        ve.summary()["warnings"].as_array().unwrap().len(),
        ve.warnings().len()
    );
}
