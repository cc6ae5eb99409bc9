//! `infodiff sample` against diffusers' own scheduler loops (issue 10, item 6): for `ddim`,
//! `euler`, `heun` and `dpmpp_2m` (deterministic) at 10, 20 and 50 steps, with and without
//! classifier-free guidance, for ε-, v- and x̂₀-prediction, for each spacing, with the Karras and
//! uniform log-SNR σ grids, on an unconditional pipeline and on a bare UNet2DModel folder,
//! `samples` equals diffusers' loop from the same `--init` noise to relative L2 ≤ 1e-4, or,
//! where diffusers' own float32 loop is further than that from its float64 one (`f32_loop`,
//! two ill-conditioned Heun cases on the cosine schedule), at most as far as that loop.
//!
//! The 96 cases are tests/fixtures/sample/cases.json, made by
//! tests/fixtures/make_sample_fixtures.py (diffusers 0.42.1): four small pipeline folders
//! (pipe-epsilon, pipe-v_prediction, pipe-sample: class-conditional with a null label; pipe-cosine:
//! unconditional v-prediction on squaredcos_cap_v2; pipe-cosine/unet alone is the bare folder) and
//! per case the init noise and diffusers' result, computed in float64 (network in float64, the
//! schedulers' tables as diffusers keeps them) and stored as f32. infodiff runs in f32, so the
//! bound compares an f32 state against an f64 reference: the script checked that the float64
//! loop with the network alone in float32 stays within 1e-5 of the reference in every case, and
//! that every option a case sets (guidance, spacing, Karras / log-SNR grid, prediction type, step
//! count) moves the result by more than 1e-3, so a sampler that ignored one fails here
//! (tests/fixtures/sample/README.md has the numbers per case).

mod common;
use common::rel_l2;
use std::path::{Path, PathBuf};
use std::process::Command;

use infodiff::nn::Weights;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sample")
}

/// The cases of cases.json, in file order.
fn cases() -> Vec<Value> {
    let path = fixtures().join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let cases: Value = serde_json::from_str(&text).unwrap();
    cases.as_array().expect("cases.json is a list").clone()
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "infodiff-sample-diffusers-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The `infodiff sample` arguments of `case`, writing into `out`.
fn args(case: &Value, out: &Path) -> Vec<String> {
    let root = fixtures();
    let s = |k: &str| case[k].as_str().unwrap_or_else(|| panic!("{k} in {case}"));
    let mut a: Vec<String> = vec![
        "sample".into(),
        "--model".into(),
        root.join(s("model")).display().to_string(),
        "--sampler".into(),
        s("sampler").into(),
        "--steps".into(),
        case["steps"].as_u64().unwrap().to_string(),
    ];
    if let Some(spacing) = case["spacing"].as_str() {
        a.extend(["--spacing".into(), spacing.into()]);
    }
    if case["karras"].as_bool().unwrap() {
        a.push("--karras".into());
    }
    if case["log_snr"].as_bool().unwrap() {
        a.push("--log-snr".into());
    }
    if let Some(w) = case["guidance"].as_f64() {
        let classes: Vec<String> = case["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap().to_string())
            .collect();
        a.extend([
            "--guidance".into(),
            w.to_string(),
            "--classes".into(),
            classes.join(","),
        ]);
    }
    a.extend([
        "--init".into(),
        root.join(s("init")).display().to_string(),
        "--num".into(),
        case["num"].as_u64().unwrap().to_string(),
        "--no-images".into(),
        "--device".into(),
        "cpu".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    a
}

/// Runs every case whose sampler is `sampler` and checks `samples` against diffusers'.
fn check_sampler(sampler: &str) {
    let cases: Vec<Value> = cases()
        .into_iter()
        .filter(|c| c["sampler"] == sampler)
        .collect();
    assert!(!cases.is_empty(), "cases.json has {sampler} cases");
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let out = tempdir(name);
        let args = args(case, &out);
        let run = Command::new(env!("CARGO_BIN_EXE_infodiff"))
            .args(&args)
            .output()
            .unwrap();
        if !run.status.success() {
            let _ = std::fs::remove_dir_all(&out);
            failures.push(format!(
                "{name}: infodiff {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&run.stderr)
            ));
            continue;
        }
        let got = Weights::load(&out.join("samples.safetensors")).unwrap();
        let want = Weights::load(&fixtures().join(case["reference"].as_str().unwrap())).unwrap();
        let (got, want) = (&got.tensors["samples"], &want.tensors["samples"]);
        let _ = std::fs::remove_dir_all(&out);
        if got.shape != want.shape {
            failures.push(format!(
                "{name}: samples shape {:?}, diffusers {:?}",
                got.shape, want.shape
            ));
            continue;
        }
        let rel = rel_l2(got, want);
        eprintln!("{name}: relative L2 {rel:.3e}");
        // issue 10: ≤ 1e-4 relative L2 (infodiff's f32 state against diffusers' f64 loop);
        // NaN fails too. Where diffusers' own float32 loop lands further than 1e-4 from its
        // float64 one (`f32_loop`: two Heun cases on the cosine schedule, whose first step
        // spans σ̃ 20291 → 12.8 and amplifies any f32 rounding of the state ~10³-fold), no f32
        // engine can meet 1e-4, and infodiff must land at least as close as diffusers' f32 loop.
        let bound = case["f32_loop"].as_f64().unwrap_or(0.0).max(1e-4);
        if !(rel <= bound) {
            failures.push(format!("{name}: relative L2 {rel:e} > {bound:e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {sampler} cases disagree with diffusers:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn ddim_matches_diffusers() {
    check_sampler("ddim");
}

#[test]
fn euler_matches_diffusers() {
    check_sampler("euler");
}

#[test]
fn heun_matches_diffusers() {
    check_sampler("heun");
}

#[test]
fn dpmpp_2m_matches_diffusers() {
    check_sampler("dpmpp_2m");
}

/// The prediction type `case` runs with: its pipeline's scheduler config's, or ε for a bare
/// UNet2DModel folder (the default DDPMScheduler).
fn prediction(case: &Value) -> String {
    let model = fixtures().join(case["model"].as_str().unwrap());
    let config = model.join("scheduler/scheduler_config.json");
    if !model.join("model_index.json").exists() {
        return "epsilon".into();
    }
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    config["prediction_type"].as_str().unwrap().into()
}

/// Whether `case`'s network is class-conditional (num_class_embeds in its unet config).
fn conditional(case: &Value) -> bool {
    let model = fixtures().join(case["model"].as_str().unwrap());
    let unet = if model.join("model_index.json").exists() {
        model.join("unet/config.json")
    } else {
        model.join("config.json")
    };
    let config: Value = serde_json::from_str(&std::fs::read_to_string(&unet).unwrap()).unwrap();
    config["num_class_embeds"].is_u64()
}

/// cases.json covers what the issue asks: each sampler × spacing × prediction, with and without
/// guidance, each of 10, 20, 50 steps per sampler, the Karras and log-SNR grids, an
/// unconditional model and a bare UNet folder; every file a case names exists. (Runs without
/// the command.)
#[test]
fn fixture_cases_cover_the_issue() {
    let cases = cases();
    for sampler in ["ddim", "euler", "heun", "dpmpp_2m"] {
        for spacing in ["linspace", "leading", "trailing"] {
            for p in ["epsilon", "v_prediction", "sample"] {
                for guided in [false, true] {
                    assert!(
                        cases.iter().any(|c| c["sampler"] == sampler
                            && c["spacing"] == spacing
                            && prediction(c) == p
                            && c["guidance"].is_f64() == guided),
                        "{sampler} {spacing} {p} guided={guided}"
                    );
                }
            }
            assert!(
                cases
                    .iter()
                    .any(|c| c["sampler"] == sampler && c["spacing"] == spacing && !conditional(c)),
                "{sampler} {spacing} unconditional"
            );
        }
        for steps in [10, 20, 50] {
            assert!(
                cases
                    .iter()
                    .any(|c| c["sampler"] == sampler && c["steps"] == steps),
                "{sampler} at {steps} steps"
            );
        }
    }
    for (sampler, flag) in [
        ("euler", "karras"),
        ("dpmpp_2m", "karras"),
        ("dpmpp_2m", "log_snr"),
    ] {
        assert!(
            cases
                .iter()
                .any(|c| c["sampler"] == sampler && c[flag] == true),
            "{sampler} {flag}"
        );
    }
    assert!(
        cases.iter().any(|c| !fixtures()
            .join(c["model"].as_str().unwrap())
            .join("model_index.json")
            .exists()),
        "a bare UNet2DModel folder"
    );
    for c in &cases {
        assert_eq!(c["guidance"].is_f64(), c["classes"].is_array(), "{c}");
        for k in ["init", "reference"] {
            let p = fixtures().join(c[k].as_str().unwrap());
            assert!(p.exists(), "{}", p.display());
        }
    }
}
