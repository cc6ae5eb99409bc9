//! `Scheduler::from_json` and `Scheduler::plan` against diffusers 0.42.1: every grid point of
//! every case in tests/fixtures/scheduler/grids.json (made by make_scheduler_fixtures.py beside
//! it: DDIM, DDPM, EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete, DPMSolverMultistep ×
//! beta schedules, trained_betas, spacings, steps_offset, zero-terminal-SNR rescale, predictions,
//! Karras and log-SNR σ × 1…1000 steps), and the refusals of bad input.
//!
//! Tolerances. diffusers holds float32 numbers; the fixture writes each as the shortest decimal
//! that reads back as that float32, so a value here is compared as the float32 it names:
//! - ᾱ (DDIM/DDPM points, lands, the full tables) equal as float32 (the cumulative product is
//!   reproduced operation for operation), so s = √ᾱ and σ_t = √(1 − ᾱ) agree to 1e-12 relative;
//! - σ (σ-space classes) within 1 float32 ulp: diffusers' σ table is torch's float32 `sqrt`, which
//!   is not correctly rounded on every machine (infodiff's is); s = 1/√(1 + σ²) and σ_t = σ·s are
//!   then checked to 1e-12 relative against the fixture's σ where σ is equal, and to 2.5e-7
//!   (two float32 ulps) where it is one ulp off; the test prints how many are;
//! - integer timesteps equal; fractional ones (Karras, log-SNR) within 1.3e-4 absolute (two
//!   float32 ulps at t ≈ 1000): they come from numpy's SIMD float32 `log`, which is not correctly
//!   rounded (infodiff's is), through `_sigma_to_t` (measured: 50 of 5245 fractional timesteps
//!   differ at all, by at most 6.1e-5, one ulp);
//! - `init_noise_sigma` like σ;
//! - after `rescale_betas_zero_snr`, whose √ᾱ is torch's float32 `sqrt` too, ᾱ and σ agree to
//!   1e-6 relative (≤ 4 float32 ulps, 3.8e-7, measured on the fixture's machine), and s, σ_t with
//!   them.

use infodiff::diffusion::scheduler::{SchedulerClass, diffusers_class};
use infodiff::diffusion::{
    Ddpm, Grid, Plan, Prediction, Process, SamplerKind, Scheduler, SigmaGrid,
};
use infodiff::error::Error;
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/scheduler/grids.json")).expect("fixture is JSON")
}

fn sampler(name: &str) -> SamplerKind {
    match name {
        "ddim" => SamplerKind::Ddim {
            eta: 0.0,
            clip: None,
        },
        "ddpm" => SamplerKind::Ddpm { clip: None },
        "euler" => SamplerKind::Euler,
        "euler_ancestral" => SamplerKind::EulerAncestral,
        "heun" => SamplerKind::Heun,
        "dpmpp_2m" => SamplerKind::Dpmpp2m,
        "dpmpp_2m_sde" => SamplerKind::Dpmpp2mSde,
        "dpmpp_3m_sde" => SamplerKind::Dpmpp3mSde,
        other => panic!("unknown sampler {other}"),
    }
}

/// The float32 a fixture number names, as f64.
fn f32v(v: &Value) -> f64 {
    v.as_f64().expect("a number") as f32 as f64
}

fn list(v: &Value) -> Vec<f64> {
    v.as_array().expect("a list").iter().map(f32v).collect()
}

fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// Distance in float32 ulps between two float32 values held as f64.
fn ulps(a: f64, b: f64) -> u32 {
    let (a, b) = (a as f32, b as f32);
    (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
}

/// Fractional timesteps: absolute tolerance (module doc).
const T_ABS: f64 = 1.3e-4;

#[derive(Default, Debug)]
struct Tally {
    points: usize,
    sigma_ulp1: usize,
    t_frac: usize,
    t_ulp: usize,
    t_max_abs: f64,
}

/// Checks a plan's grid against one fixture case; returns what it compared.
fn check_case(c: &Value, plan: &Plan, tally: &mut Tally) {
    // Rescaled to zero terminal SNR (HeunDiscrete refuses it): tolerances of the module doc.
    let rescaled = plan_is_rescaled(c);
    let loose = if rescaled { 1e-6 } else { 0.0 };
    let name = format!(
        "{} {} {} steps={}",
        c["class"].as_str().unwrap(),
        c["name"].as_str().unwrap(),
        c["grid"].as_str().unwrap(),
        c["steps"]
    );
    let steps = c["steps"].as_u64().unwrap() as usize;
    let pts = &plan.grid.points;
    assert_eq!(pts.len(), steps + 1, "{name}: S + 1 points");
    let ts = c["timesteps"].as_array().unwrap();
    assert_eq!(ts.len(), steps, "{name}: timesteps");
    for (j, (p, t)) in pts.iter().zip(ts).enumerate() {
        tally.points += 1;
        // index counted from the data end; t on the DDPM index scale.
        assert_eq!(p.index, steps - j, "{name}: index of point {j}");
        assert_eq!(p.t, p.timestep + 1.0, "{name}: t of point {j}");
        if t.is_u64() || t.is_i64() {
            assert_eq!(
                p.timestep,
                t.as_i64().unwrap() as f64,
                "{name}: timestep {j}"
            );
        } else {
            let want = f32v(t);
            let d = (p.timestep - want).abs();
            tally.t_frac += 1;
            tally.t_max_abs = tally.t_max_abs.max(d);
            let u = ulps(p.timestep, want);
            if u > 0 {
                tally.t_ulp += 1;
            }
            // 2 float32 ulps of the timestep (numpy's float32 log; module doc).
            assert!(
                d <= T_ABS,
                "{name}: timestep {j}: {} vs diffusers {want} ({u} float32 ulps)",
                p.timestep
            );
        }
    }
    let last = pts[steps];
    assert_eq!(
        last.timestep, -1.0,
        "{name}: the data end is never evaluated"
    );
    if let Some(sig) = c.get("sigmas") {
        let sig = list(sig);
        assert_eq!(sig.len(), steps + 1, "{name}: sigmas");
        assert_eq!(sig[steps], 0.0, "{name}: final σ");
        assert_eq!((last.s, last.sigma), (1.0, 0.0), "{name}: final point");
        for (j, p) in pts[..steps].iter().enumerate() {
            let ours = p.sigma / p.s; // σ = σ_t/s_t (f64 rounding only)
            let u = ulps(ours, sig[j]);
            assert!(
                (u <= 1 && rel(ours, sig[j]) < 2.5e-7) || rel(ours, sig[j]) < loose,
                "{name}: σ {j}: {ours} vs diffusers {} ({u} float32 ulps)",
                sig[j]
            );
            let tol = if u == 0 { 1e-12 } else { 2.5e-7f64.max(loose) };
            if u > 0 {
                tally.sigma_ulp1 += 1;
            }
            let s = 1.0 / (1.0 + sig[j] * sig[j]).sqrt();
            assert!(rel(p.s, s) < tol, "{name}: s {j}: {} vs {s}", p.s);
            assert!(
                rel(p.sigma, sig[j] * s) < tol,
                "{name}: σ_t {j}: {} vs {}",
                p.sigma,
                sig[j] * s
            );
        }
        assert!(
            plan.grid.lands.is_none(),
            "{name}: σ-space steps land on the next point"
        );
        let ins = f32v(&c["init_noise_sigma"]);
        if c["class"] == "DPMSolverMultistepScheduler" {
            // DPM-Solver's state is already the VP one.
            assert_eq!(
                (ins, plan.init_scale),
                (1.0, 1.0),
                "{name}: init_noise_sigma"
            );
            return;
        }
        // The σ-space state is the VP one × √(1 + σ_0²) = VP / s_0.
        let ours = plan.init_scale / pts[0].s;
        assert!(
            (ulps(ours, ins) <= 1 && rel(ours, ins) < 2.5e-7) || rel(ours, ins) < loose,
            "{name}: init_noise_sigma {ours} vs diffusers {ins}"
        );
        assert!(
            rel(plan.init_scale, ins * pts[0].s) < 2.5e-7f64.max(loose),
            "{name}: init_scale = init_noise_sigma × s_0"
        );
    } else {
        let ab = list(&c["alphas_cumprod"]);
        let prev = list(&c["alphas_cumprod_prev"]);
        let vp_ok = |p: &infodiff::diffusion::GridPoint, a: f64, what: &str| {
            // ᾱ equal as float32, so 1e-12 relative on s and σ_t (1e-6 after a rescale).
            let tol = if rescaled { 1e-6 } else { 1e-12 };
            assert!(
                rel(p.s, a.sqrt()) < tol,
                "{name}: {what}: s {} vs √ᾱ {}",
                p.s,
                a.sqrt()
            );
            assert!(
                rel(p.sigma, (1.0 - a).sqrt()) < tol,
                "{name}: {what}: σ_t {} vs √(1 − ᾱ) {}",
                p.sigma,
                (1.0 - a).sqrt()
            );
        };
        for j in 0..steps {
            vp_ok(&pts[j], ab[j], &format!("point {j}"));
            vp_ok(
                plan.grid.target(j),
                prev[j],
                &format!("landing of step {j}"),
            );
        }
        assert_eq!(plan.init_scale, 1.0, "{name}: init_noise_sigma 1");
        assert_eq!(f32v(&c["init_noise_sigma"]), 1.0);
        if let Some(fa) = c.get("final_alpha_cumprod") {
            vp_ok(&last, f32v(fa), "final point");
            assert!(plan.grid.lands.is_some(), "{name}: DDIM lands at t − T/S");
        } else {
            assert_eq!((last.s, last.sigma), (1.0, 0.0), "{name}: DDPM's data end");
            assert!(
                plan.grid.lands.is_none(),
                "{name}: DDPM lands on the next listed timestep"
            );
        }
    }
}

fn plan_is_rescaled(c: &Value) -> bool {
    c["config"].as_str().unwrap().contains("zero_snr")
}

fn config_text<'a>(fx: &'a Value, c: &Value) -> &'a str {
    fx["configs"][c["config"].as_str().unwrap()]
        .as_str()
        .unwrap()
}

fn grid_of(c: &Value) -> SigmaGrid {
    match c["grid"].as_str().unwrap() {
        "scheduler" => SigmaGrid::Scheduler,
        "log_snr" => SigmaGrid::UniformLogSnr,
        g => panic!("grid {g}"),
    }
}

/// Every fixture case: the plan equals diffusers' grid point by point.
#[test]
fn plans_match_diffusers() {
    let fx = fixture();
    let cases = fx["cases"].as_array().unwrap();
    let mut tally = Tally::default();
    for c in cases {
        let sch = Scheduler::from_json(config_text(&fx, c), c["config"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", c["config"]));
        let steps = c["steps"].as_u64().unwrap() as usize;
        let kind = sampler(c["sampler"].as_str().unwrap());
        let plan = sch
            .plan(&kind, steps, grid_of(c))
            .unwrap_or_else(|e| panic!("{} at {steps}: {e}", c["config"]));
        check_case(c, &plan, &mut tally);
    }
    eprintln!("{} cases: {tally:?}", cases.len());
    assert!(cases.len() > 400, "the fixture's cases are all read");
}

/// The other two DPM-Solver++ samplers step over the same DPMSolverMultistep grid; a Karras
/// config equals the plain config with `--karras`; the classes without the option take the
/// Euler construction.
#[test]
fn grid_options_agree_across_samplers_and_flags() {
    let fx = fixture();
    let mut karras_checked = 0;
    for c in fx["cases"].as_array().unwrap() {
        let text = config_text(&fx, c);
        let sch = Scheduler::from_json(text, "case").unwrap();
        let steps = c["steps"].as_u64().unwrap() as usize;
        let kind = sampler(c["sampler"].as_str().unwrap());
        let plan = sch.plan(&kind, steps, grid_of(c)).unwrap();
        if kind == SamplerKind::Dpmpp2m {
            for other in [SamplerKind::Dpmpp2mSde, SamplerKind::Dpmpp3mSde] {
                let p = sch.plan(&other, steps, grid_of(c)).unwrap();
                assert_eq!(p.grid, plan.grid, "{other:?} on {}", c["config"]);
                assert_eq!(p.sampler, other);
            }
        }
        if sch.use_karras_sigmas && kind != SamplerKind::EulerAncestral {
            let mut v: Value = serde_json::from_str(&text.replace("-Infinity", "null")).unwrap();
            v.as_object_mut().unwrap().remove("use_karras_sigmas");
            let plain = Scheduler::from_json(&v.to_string(), "case").unwrap();
            let p = plain.plan(&kind, steps, SigmaGrid::Karras).unwrap();
            assert_eq!(p, plan, "--karras on {}", c["config"]);
            karras_checked += 1;
            // Euler ancestral takes Euler's Karras construction.
            if kind == SamplerKind::Euler {
                let a = plain
                    .plan(&SamplerKind::EulerAncestral, steps, SigmaGrid::Karras)
                    .unwrap();
                assert_eq!(a.grid, plan.grid);
                assert_eq!(a.init_scale, plan.init_scale);
            }
        }
        if grid_of(c) == SigmaGrid::UniformLogSnr {
            for other in [SamplerKind::EulerAncestral, SamplerKind::Heun] {
                let mut v: Value = serde_json::from_str(text).unwrap();
                v["_class_name"] = Value::String(diffusers_class(&other).unwrap().into());
                let s2 = Scheduler::from_json(&v.to_string(), "case").unwrap();
                let p = s2.plan(&other, steps, SigmaGrid::UniformLogSnr).unwrap();
                if other == SamplerKind::EulerAncestral || text.contains("beta_start") {
                    // (Heun's beta defaults differ where the config leaves them out.)
                    assert_eq!(p.grid, plan.grid, "{other:?} log-SNR on {}", c["config"]);
                }
            }
        }
    }
    assert!(karras_checked > 50, "{karras_checked}");
}

/// Predictions and clipping are read from the config.
#[test]
fn predictions_and_clipping_from_the_config() {
    let fx = fixture();
    for c in fx["cases"].as_array().unwrap() {
        let text = config_text(&fx, c);
        let sch = Scheduler::from_json(text, "case").unwrap();
        let want = if text.contains("\"v_prediction\"") {
            Prediction::VPrediction
        } else if text.contains("\"sample\"") {
            Prediction::Sample
        } else {
            Prediction::Epsilon
        };
        assert_eq!(sch.prediction, want, "{}", c["config"]);
        let steps = c["steps"].as_u64().unwrap() as usize;
        let kind = sampler(c["sampler"].as_str().unwrap());
        let plan = sch.plan(&kind, steps, grid_of(c)).unwrap();
        let clip = if text.contains("\"clip_sample\": false") {
            None
        } else if text.contains("\"clip_sample_range\": 2.5") {
            Some(2.5)
        } else {
            Some(1.0)
        };
        match plan.sampler {
            SamplerKind::Ddim { eta, clip: c2 } => {
                assert_eq!((eta, c2), (0.0, clip), "{}", c["config"]);
            }
            SamplerKind::Ddpm { clip: c2 } => assert_eq!(c2, clip, "{}", c["config"]),
            other => assert_eq!(other, kind),
        }
    }
}

/// The full ᾱ tables equal diffusers' as float32 (β by torch's float32 linspace, the cumulative
/// product, the cosine schedule, trained_betas, the zero-SNR rescale).
#[test]
fn alphas_cumprod_tables_match_bit_for_bit() {
    let fx = fixture();
    for (name, t) in fx["tables"].as_object().unwrap() {
        let sch = Scheduler::from_json(&t["config"].to_string(), name).unwrap();
        let want = list(&t["alphas_cumprod"]);
        assert_eq!(sch.alphas_cumprod.len(), want.len(), "{name}");
        for (i, (&a, &b)) in sch.alphas_cumprod.iter().zip(&want).enumerate() {
            if name == "zero_snr" {
                // torch's float32 sqrt inside the rescale (module doc): 1e-6 relative.
                assert!(rel(a, b) < 1e-6, "{name}: ᾱ[{i}] {a} vs {b}");
            } else {
                assert_eq!(a as f32, b as f32, "{name}: ᾱ[{i}]");
            }
        }
    }
}

/// `Scheduler::ddpm_default()` is `DDPMScheduler()`: the fixture's DDPM default config gives the
/// same scheduler, tables and grids.
#[test]
fn ddpm_default_is_ddpmscheduler_defaults() {
    let fx = fixture();
    let d = Scheduler::ddpm_default();
    assert_eq!(d.num_train_timesteps, 1000);
    assert_eq!(d.prediction, Prediction::Epsilon);
    assert_eq!(d.spacing, None);
    assert_eq!(d.clip_sample, None);
    assert_eq!(d.steps_offset, 0);
    assert!(!d.rescale_betas_zero_snr);
    let want = list(&fx["tables"]["default"]["alphas_cumprod"]);
    for (a, b) in d.alphas_cumprod.iter().zip(&want) {
        assert_eq!(*a as f32, *b as f32);
    }
    let mut n = 0;
    for c in fx["cases"].as_array().unwrap() {
        if c["config"] == "DDPMScheduler/default" {
            let steps = c["steps"].as_u64().unwrap() as usize;
            let plan = d
                .plan(
                    &SamplerKind::Ddpm { clip: None },
                    steps,
                    SigmaGrid::Scheduler,
                )
                .unwrap();
            check_case(c, &plan, &mut Tally::default());
            assert_eq!(plan.sampler, SamplerKind::Ddpm { clip: Some(1.0) });
            n += 1;
        }
    }
    assert_eq!(n, 6);
    assert_eq!(d.default_sampler(), SamplerKind::Ddpm { clip: None });
}

/// infodiff's own samplers step over the DDPM process of the β table.
#[test]
fn own_samplers_get_the_ddpm_grid() {
    let sch = Scheduler::from_json(
        r#"{"_class_name": "DDIMScheduler", "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}"#,
        "x",
    )
    .unwrap();
    let ddpm = Ddpm::from_betas(&sch.betas).unwrap();
    for kind in [
        SamplerKind::Ancestral {
            variance: Default::default(),
        },
        SamplerKind::EulerMaruyama,
        SamplerKind::HeunOde,
    ] {
        assert_eq!(diffusers_class(&kind), None);
        let p = sch.plan(&kind, 20, SigmaGrid::Scheduler).unwrap();
        let g: Grid = ddpm.grid(20).unwrap();
        assert_eq!(p.grid, g);
        assert_eq!((p.init_scale, p.sampler), (1.0, kind));
        let e = sch.plan(&kind, 20, SigmaGrid::Karras).unwrap_err();
        assert!(
            matches!(e, Error::Unsupported { op: "--karras", .. }),
            "{e}"
        );
    }
    assert_eq!(sch.process().unwrap(), ddpm);
}

/// f and g² at grid points are the DDPM process's at t = timestep + 1.
#[test]
fn grid_points_carry_the_process_rates() {
    let sch = Scheduler::from_json(
        r#"{"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true}"#,
        "x",
    )
    .unwrap();
    let ddpm = sch.process().unwrap();
    let p = sch
        .plan(&SamplerKind::Euler, 10, SigmaGrid::Scheduler)
        .unwrap();
    for q in &p.grid.points {
        assert_eq!(q.t, q.timestep + 1.0);
        assert_eq!((q.f, q.g2), (ddpm.drift(q.t), ddpm.g2(q.t)));
    }
    assert!(
        p.grid.points[3].timestep.fract() != 0.0,
        "Karras timesteps are fractional"
    );
}

#[test]
fn class_names_and_default_samplers() {
    let cases = [
        (
            "DDIMScheduler",
            SamplerKind::Ddim {
                eta: 0.0,
                clip: None,
            },
            "{}",
        ),
        ("DDPMScheduler", SamplerKind::Ddpm { clip: None }, "{}"),
        ("EulerDiscreteScheduler", SamplerKind::Euler, "{}"),
        (
            "EulerAncestralDiscreteScheduler",
            SamplerKind::EulerAncestral,
            "{}",
        ),
        ("HeunDiscreteScheduler", SamplerKind::Heun, "{}"),
        ("DPMSolverMultistepScheduler", SamplerKind::Dpmpp2m, "{}"),
        (
            "DPMSolverMultistepScheduler",
            SamplerKind::Dpmpp2mSde,
            r#"{"algorithm_type": "sde-dpmsolver++"}"#,
        ),
        (
            "DPMSolverMultistepScheduler",
            SamplerKind::Dpmpp3mSde,
            r#"{"algorithm_type": "sde-dpmsolver++", "solver_order": 3}"#,
        ),
        ("PNDMScheduler", SamplerKind::Dpmpp2m, "{}"),
    ];
    for (class, kind, extra) in cases {
        let mut v: Value = serde_json::from_str(extra).unwrap();
        v["_class_name"] = Value::String(class.into());
        let sch = Scheduler::from_json(&v.to_string(), "x").unwrap();
        assert_eq!(sch.default_sampler(), kind, "{class} {extra}");
        if class != "PNDMScheduler" {
            assert_eq!(diffusers_class(&kind), Some(class));
            assert_eq!(
                SchedulerClass::from_name(class).map(|c| c.name()),
                Some(class)
            );
        }
    }
    let none = Scheduler::from_json("{}", "x").unwrap();
    assert_eq!(none.default_sampler(), SamplerKind::Ddpm { clip: None });
}

/// The error's Display names the key (or option) and the value found.
fn refused(text: &str, kind: SamplerKind, steps: usize, grid: SigmaGrid) -> String {
    let r = Scheduler::from_json(text, "sched.json").and_then(|s| s.plan(&kind, steps, grid));
    match r {
        Ok(_) => panic!("accepted: {text} with {kind:?} at {steps}"),
        Err(e) => e.to_string(),
    }
}

fn assert_names(msg: &str, key: &str, value: &str) {
    assert!(msg.contains(key), "the error names {key}: {msg}");
    assert!(
        msg.contains(value),
        "the error names the value {value}: {msg}"
    );
}

#[test]
fn bad_values_are_refused_naming_key_and_value() {
    let s = SigmaGrid::Scheduler;
    let ddim = SamplerKind::Ddim {
        eta: 0.0,
        clip: None,
    };
    let cases: &[(&str, SamplerKind, &str, &str)] = &[
        (
            r#"{"beta_schedule": "sigmoid"}"#,
            ddim,
            "beta_schedule",
            "sigmoid",
        ),
        (r#"{"beta_schedule": 3}"#, ddim, "beta_schedule", "3"),
        (
            r#"{"timestep_spacing": "uniform"}"#,
            ddim,
            "timestep_spacing",
            "uniform",
        ),
        (
            r#"{"prediction_type": "flow_prediction"}"#,
            ddim,
            "prediction_type",
            "flow_prediction",
        ),
        (r#"{"thresholding": true}"#, ddim, "thresholding", "true"),
        (r#"{"beta_start": "0.001"}"#, ddim, "beta_start", "0.001"),
        (r#"{"beta_end": 1.5}"#, ddim, "beta_end", "1.5"),
        (r#"{"beta_start": NaN}"#, ddim, "beta_start", "NaN"),
        (
            r#"{"num_train_timesteps": 1000.5}"#,
            ddim,
            "num_train_timesteps",
            "1000.5",
        ),
        (
            r#"{"num_train_timesteps": 0}"#,
            ddim,
            "num_train_timesteps",
            "0",
        ),
        (r#"{"steps_offset": -1}"#, ddim, "steps_offset", "-1"),
        (r#"{"clip_sample": "yes"}"#, ddim, "clip_sample", "yes"),
        (
            r#"{"clip_sample_range": 0}"#,
            ddim,
            "clip_sample_range",
            "0",
        ),
        (
            r#"{"rescale_betas_zero_snr": 1}"#,
            ddim,
            "rescale_betas_zero_snr",
            "1",
        ),
        (
            r#"{"num_train_timesteps": 3, "trained_betas": [0.1, 0.2]}"#,
            ddim,
            "trained_betas",
            "a list of 2",
        ),
        (
            r#"{"num_train_timesteps": 2, "trained_betas": [0.1, "x"]}"#,
            ddim,
            "trained_betas[1]",
            "x",
        ),
        (
            r#"{"num_train_timesteps": 2, "trained_betas": [0.1, 1.5]}"#,
            ddim,
            "trained_betas[1]",
            "1.5",
        ),
        (r#"{"trained_betas": {"a": 1}}"#, ddim, "trained_betas", "{"),
        (r#"{"_class_name": 4}"#, ddim, "_class_name", "4"),
        (
            r#"{"variance_type": "fixed_large"}"#,
            SamplerKind::Ddpm { clip: None },
            "variance_type",
            "fixed_large",
        ),
        (
            r#"{"solver_type": "heun"}"#,
            SamplerKind::Dpmpp2m,
            "solver_type",
            "heun",
        ),
        (
            r#"{"final_sigmas_type": "sigma_min"}"#,
            SamplerKind::Dpmpp2m,
            "final_sigmas_type",
            "sigma_min",
        ),
        (
            r#"{"final_sigmas_type": "sigma_min"}"#,
            SamplerKind::Euler,
            "final_sigmas_type",
            "sigma_min",
        ),
        (
            r#"{"lambda_min_clipped": -5.1}"#,
            SamplerKind::Dpmpp2mSde,
            "lambda_min_clipped",
            "-5.1",
        ),
        (
            r#"{"variance_type": "learned_range"}"#,
            SamplerKind::Dpmpp2m,
            "variance_type",
            "learned_range",
        ),
        (
            r#"{"use_flow_sigmas": true}"#,
            SamplerKind::Dpmpp2m,
            "use_flow_sigmas",
            "true",
        ),
        (
            r#"{"use_exponential_sigmas": true}"#,
            SamplerKind::Dpmpp2m,
            "use_exponential_sigmas",
            "true",
        ),
        (
            r#"{"use_beta_sigmas": true}"#,
            SamplerKind::Euler,
            "use_beta_sigmas",
            "true",
        ),
        (
            r#"{"use_exponential_sigmas": true}"#,
            SamplerKind::Heun,
            "use_exponential_sigmas",
            "true",
        ),
        (
            r#"{"use_lu_lambdas": "yes"}"#,
            SamplerKind::Dpmpp2m,
            "use_lu_lambdas",
            "yes",
        ),
        (
            r#"{"lower_order_final": false}"#,
            SamplerKind::Dpmpp3mSde,
            "lower_order_final",
            "false",
        ),
        (
            r#"{"solver_order": 5}"#,
            SamplerKind::Dpmpp2m,
            "solver_order",
            "5",
        ),
        (
            r#"{"interpolation_type": "log_linear"}"#,
            SamplerKind::Euler,
            "interpolation_type",
            "log_linear",
        ),
        (
            r#"{"timestep_type": "continuous", "prediction_type": "v_prediction"}"#,
            SamplerKind::Euler,
            "timestep_type",
            "continuous",
        ),
        (
            r#"{"use_karras_sigmas": true, "sigma_min": 0.1}"#,
            SamplerKind::Euler,
            "sigma_min",
            "0.1",
        ),
        (
            r#"{"clip_sample": true}"#,
            SamplerKind::Heun,
            "clip_sample",
            "true",
        ),
        (
            r#"{"rescale_betas_zero_snr": true}"#,
            SamplerKind::Heun,
            "rescale_betas_zero_snr",
            "true",
        ),
        (r#"{"steps_offset": 500}"#, ddim, "steps_offset", "500"),
    ];
    for (text, kind, key, value) in cases {
        let msg = refused(text, *kind, 10, s);
        assert_names(&msg, key, value);
        assert!(
            msg.contains("sched.json"),
            "the error names the file: {msg}"
        );
    }
}

/// Keys only other classes read are ignored, as diffusers' from_config ignores them; keys whose
/// value changes nothing are accepted.
#[test]
fn keys_the_class_does_not_read_are_ignored() {
    let ok = |text: &str, kind: SamplerKind| {
        let s = Scheduler::from_json(text, "x").unwrap();
        s.plan(&kind, 10, SigmaGrid::Scheduler)
            .unwrap_or_else(|e| panic!("{text} with {kind:?}: {e}"));
    };
    let ddim = SamplerKind::Ddim {
        eta: 0.0,
        clip: None,
    };
    ok(
        r#"{"variance_type": "fixed_large", "solver_type": "heun"}"#,
        ddim,
    );
    ok(
        r#"{"variance_type": "fixed_large", "final_sigmas_type": "sigma_min"}"#,
        SamplerKind::EulerAncestral,
    );
    ok(
        r#"{"lambda_min_clipped": -Infinity, "euler_at_final": true, "lower_order_final": false}"#,
        SamplerKind::Dpmpp2m,
    );
    ok(r#"{"sigma_min": 0.1, "sigma_max": 10}"#, SamplerKind::Euler);
    ok(r#"{"timestep_type": "continuous"}"#, SamplerKind::Euler);
    ok(
        r#"{"dynamic_thresholding_ratio": 0.9, "sample_max_value": 2.0, "thresholding": false}"#,
        ddim,
    );
    ok(
        r#"{"clip_sample": true, "rescale_betas_zero_snr": true}"#,
        SamplerKind::Euler,
    );
    ok(
        r#"{"solver_type": "bh2", "use_dynamic_shifting": true, "flow_shift": 3.0}"#,
        SamplerKind::Dpmpp2m,
    );
    ok(
        r#"{"some_future_key": [1, 2], "_diffusers_version": "0.42.1"}"#,
        SamplerKind::Heun,
    );
    ok(
        r#"{"trained_betas": null, "use_karras_sigmas": null}"#,
        SamplerKind::Euler,
    );
}

#[test]
fn bad_steps_and_grids_are_refused_naming_the_option() {
    let sch = Scheduler::from_json(r#"{"num_train_timesteps": 50}"#, "x").unwrap();
    for kind in [
        SamplerKind::Euler,
        SamplerKind::Ddpm { clip: None },
        SamplerKind::HeunOde,
    ] {
        for steps in [0, 51] {
            let e = sch.plan(&kind, steps, SigmaGrid::Scheduler).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e}");
            assert_names(&e.to_string(), "--steps", &steps.to_string());
        }
    }
    let d = Scheduler::ddpm_default();
    for (kind, grid, flag) in [
        (
            SamplerKind::Ddim {
                eta: 0.0,
                clip: None,
            },
            SigmaGrid::Karras,
            "--karras",
        ),
        (
            SamplerKind::Ddpm { clip: None },
            SigmaGrid::UniformLogSnr,
            "--log-snr",
        ),
        (
            SamplerKind::EulerMaruyama,
            SigmaGrid::UniformLogSnr,
            "--log-snr",
        ),
    ] {
        let e = d.plan(&kind, 10, grid).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Unsupported { .. }), "{msg}");
        assert_names(&msg, flag, kind.name());
    }
    // diffusers' trailing spacing makes 62 timesteps at 61 steps (np.arange rounding), the last −1.
    let t = Scheduler::from_json(r#"{"timestep_spacing": "trailing"}"#, "x").unwrap();
    for kind in [
        SamplerKind::Ddim {
            eta: 0.0,
            clip: None,
        },
        SamplerKind::Euler,
        SamplerKind::Dpmpp2m,
    ] {
        let msg = t
            .plan(&kind, 61, SigmaGrid::Scheduler)
            .unwrap_err()
            .to_string();
        assert_names(&msg, "--steps", "61");
        assert!(msg.contains("62"), "{msg}");
        t.plan(&kind, 60, SigmaGrid::Scheduler).unwrap();
    }
    // Not JSON: names the file.
    let e = Scheduler::from_json("{", "dir/scheduler_config.json").unwrap_err();
    assert!(
        matches!(e, Error::Json { .. }) && e.to_string().contains("dir/scheduler_config.json"),
        "{e}"
    );
    let e = Scheduler::from_json("[1]", "f.json").unwrap_err();
    assert!(e.is_bad_input(), "{e}");
}

/// DDIM's set_alpha_to_one and the t − T//S landing where the spacing does not step by T//S.
#[test]
fn ddim_lands_at_t_minus_ratio() {
    let s = Scheduler::from_json(
        r#"{"_class_name": "DDIMScheduler", "timestep_spacing": "trailing", "set_alpha_to_one": false}"#,
        "x",
    )
    .unwrap();
    let p = s
        .plan(
            &SamplerKind::Ddim {
                eta: 0.5,
                clip: None,
            },
            7,
            SigmaGrid::Scheduler,
        )
        .unwrap();
    let ts: Vec<f64> = p.grid.points.iter().map(|q| q.timestep).collect();
    assert_eq!(ts, vec![999., 856., 713., 570., 428., 285., 142., -1.]);
    let lands: Vec<f64> = p
        .grid
        .lands
        .as_ref()
        .unwrap()
        .iter()
        .map(|q| q.timestep)
        .collect();
    // T//S = 142: the last step lands on timestep 0 (ᾱ_0), not the final ᾱ.
    assert_eq!(lands, vec![857., 714., 571., 428., 286., 143., 0.]);
    let a0 = s.alphas_cumprod[0];
    assert!(
        (p.grid.points[7].s - a0.sqrt()).abs() < 1e-15,
        "final ᾱ = ᾱ_0"
    );
    assert_eq!(
        p.sampler,
        SamplerKind::Ddim {
            eta: 0.5,
            clip: Some(1.0)
        }
    );
}
