//! The `infodiff` binary: the default job, overrides, and refusals that name the field and write
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_infodiff"))
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infodiff-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn measure_writes_curves_summary_and_plot() {
    let dir = tempdir("run");
    let out = dir.join("out");
    let o = bin()
        .args([
            "measure",
            "--trajectories",
            "2000",
            "--steps",
            "200",
            "--seed",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("trajectory-steps/s") && stdout.contains("rate_left_right"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("step,t,log_snr,h_online,h_online_se,h_exact,rate_rb,rate_fd,mi_entropy,mi_girsanov,h_left_right,h_m8_m4,h_p6_p8,rate_left_right,rate_m8_m4,rate_p6_p8,h_class_0,h_class_1,h_class_2,h_class_3"), "{header}");
    assert_eq!(lines.count(), 201, "one row per grid point");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["trajectories"], 2000);
    assert_eq!(summary["config"]["seed"], 4);
    assert!(summary["trajectory_steps_per_s"].as_f64().unwrap() > 0.0);
    assert!((summary["prior_entropy_bits"].as_f64().unwrap() - 2.0).abs() < 1e-12);
    assert!(summary["peaks"]["rate_m8_m4"][0]["t"].as_f64().is_some());
    // the Rao–Blackwell decision and class rates, their finite-difference twins, both forms of
    // entropy production and the paired SEs are columns, and their peaks (with a fitted t) are
    // in the summary
    for col in [
        "rate_left_right_se",
        "rate_fd_left_right",
        "rate_class_3",
        "rate_class_3_se",
        "hx0_rate_ibp",
        "hx0_gap_se",
        "mi_girsanov_diff_se",
        "mi_rb_diff_se",
    ] {
        assert!(header.split(',').any(|h| h == col), "{col} in {header}");
    }
    for name in ["rate_fd_p6_p8", "rate_class_0", "hx0_rate_ibp"] {
        assert!(
            summary["peaks"][name][0]["t_fit"].as_f64().is_some(),
            "{name}"
        );
    }
    assert_eq!(
        summary["engine"].as_str().unwrap().split(' ').next(),
        Some("fused")
    );
    let svg = std::fs::read_to_string(out.join("entropy.svg")).unwrap();
    // an SVG document that draws lines (plotters writes them as <polyline> or <path>)
    assert!(
        svg.starts_with("<svg") && (svg.contains("<polyline") || svg.contains("<path")),
        "{}",
        &svg[..svg.len().min(200)]
    );
    // no temporary files are left behind
    assert!(
        std::fs::read_dir(&out).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("tmp"))
    );
}

#[test]
fn default_config_round_trips() {
    let dir = tempdir("roundtrip");
    let o = bin()
        .args(["measure", "--print-default-config"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let cfg = dir.join("default.json");
    std::fs::write(&cfg, &o.stdout).unwrap();
    let parsed =
        infodiff::app::Config::from_json_str(&String::from_utf8_lossy(&o.stdout), "stdout")
            .unwrap();
    assert_eq!(parsed, infodiff::app::default_config());
    let o = bin()
        .args(["measure", "--trajectories", "256", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn refused(json: &str, field: &str) {
    let dir = tempdir(&format!("bad-{}", field.replace(['.', '[', ']'], "_")));
    let cfg = dir.join("c.json");
    std::fs::write(&cfg, json).unwrap();
    let out = dir.join("out");
    let o = bin()
        .args(["measure", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "accepted: {json}");
    assert!(
        err.contains(field),
        "error for {json} should name `{field}`: {err}"
    );
    assert!(
        !Path::new(&out).exists(),
        "nothing is written on a refused config"
    );
}

#[test]
fn invalid_configs_are_refused_naming_the_field() {
    let mix = |c: &str| format!(r#"{{"mixture": {{"components": [{c}]}}}}"#);
    refused(r#"{"trajectories": 10, "colour": "red"}"#, "colour");
    refused(
        &mix(r#"{"weight": -1, "mean": [0], "var": 0, "class": 0}"#),
        "mixture.components[0].weight",
    );
    refused(
        &mix(r#"{"mean": [0], "class": 0}, {"mean": [1, 2], "class": 1}"#),
        "mixture.components[1].mean",
    );
    refused(r#"{"mixture": {"components": []}}"#, "mixture.components");
    refused(r#"{"process": {"kind": "vpp"}}"#, "process.kind");
    refused(
        r#"{"sampler": {"kind": "ancestral", "steps": 0}}"#,
        "sampler.steps",
    );
    refused(
        r#"{"process": {"kind": "ddpm", "steps": 0}}"#,
        "process.steps",
    );
    refused(
        r#"{"partitions": [{"name": "x", "a": [0], "b": [7]}]}"#,
        "partitions[0].b",
    );
    refused(
        r#"{"partitions": [{"name": "x", "a": [0, 0], "b": [1]}]}"#,
        "partitions[0].a[1]",
    );
    refused(
        r#"{"partitions": [{"name": "x", "a": [0], "b": [1]}, {"name": "x", "a": [2], "b": [3]}]}"#,
        "partitions[1].name",
    );
    refused(
        r#"{"process": {"kind": "ve", "sigma_min": 1, "sigma_max": 0.5}}"#,
        "process.sigma_max",
    );
    refused(
        &mix(r#"{"mean": [0], "var": -0.1, "class": 0}"#),
        "mixture.components[0].var",
    );
    refused(&mix(r#"{"mean": [0], "class": 1}"#), "class");
    refused(r#"{"sampler": {"kind": "ddim", "eta": 2}}"#, "sampler.eta");
    refused(r#"{"trajectories": 0}"#, "trajectories");
    refused(r#"{"trajectories": -5}"#, "trajectories");
    refused("{not json", "not valid JSON");
}

#[test]
fn overrides_are_validated_like_the_file() {
    let dir = tempdir("override");
    let o = bin()
        .args(["measure", "--steps", "5000", "--out"])
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("sampler.steps"));
    assert!(!dir.join("o").exists());
}

// ---- bad input, fuzzed (issue 8, item 6): refusals found by the fuzzer, one each ----------

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/tiny-ddpm")
}

fn no_temporaries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().contains("infodiff-tmp"))
}

#[test]
fn model_and_text_errors_exit_2() {
    let dir = tempdir("exit2");
    // a config file that is not UTF-8
    let cfg = dir.join("bad.json");
    std::fs::write(&cfg, b"{\"seed\": \"\xff\"}").unwrap();
    let o = bin()
        .args(["measure", "--config", cfg.to_str().unwrap(), "--out"])
        .arg(dir.join("o"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("UTF-8"));
    // an input without `sample`, and one whose `sample` has a dtype the engine does not read
    let model = tiny_model();
    for (name, header) in [
        (
            "missing",
            r#"{"timestep":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
        ),
        (
            // F16 and BF16 read as f32; unsigned bytes are refused
            "dtype",
            r#"{"sample":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#,
        ),
    ] {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0u8; 4]);
        let input = dir.join(format!("{name}.safetensors"));
        std::fs::write(&input, bytes).unwrap();
        let out = dir.join(format!("{name}-out.safetensors"));
        let o = bin()
            .args(["denoise", "--device", "cpu", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains("`sample`"), "{name}: {err}");
        assert!(!out.exists() && no_temporaries(&dir), "{name}");
    }
}

#[test]
fn denoise_refuses_to_replace_a_symlink_or_device() {
    let dir = tempdir("symlink");
    let target = dir.join("precious");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let model = tiny_model();
    for out in [link.as_path(), Path::new("/dev/null")] {
        let o = bin()
            .args(["denoise", "--device", "cpu", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(model.join("io.safetensors"))
            .arg("--output")
            .arg(out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("`--output`"), "{err}");
    }
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_noise_end_without_noise_is_refused_not_plotted_forever() {
    let dir = tempdir("sigma0");
    let cfg = dir.join("c.json");
    std::fs::write(
        &cfg,
        r#"{"process": {"kind": "ddpm", "beta_start": 1e-300, "beta_end": 1e-300, "steps": 10}, "trajectories": 10}"#,
    )
    .unwrap();
    let out = dir.join("o");
    let o = bin()
        .args(["measure", "--config", cfg.to_str().unwrap(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`process.beta_end`") && err.contains("σ_T") && err.contains("log-SNR range"),
        "{err}"
    );
    assert!(!out.exists());
    // the plot itself never gets a non-finite axis: every log-SNR infinite still draws
    let mut c = infodiff::app::run(
        &infodiff::app::Config::from_json_str(
            r#"{"trajectories": 64, "sampler": {"kind": "ancestral", "steps": 10}}"#,
            "inline",
        )
        .unwrap(),
        None,
        None,
    )
    .unwrap()
    .curves;
    c.log_snr.iter_mut().for_each(|l| *l = f64::INFINITY);
    assert!(
        infodiff::app::plot::entropy_svg(&c)
            .unwrap()
            .starts_with("<svg")
    );
}

#[test]
fn unwritable_out_is_refused_before_the_run_and_sets_replace_sets() {
    let dir = tempdir("outset");
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let o = bin()
        .args(["measure", "--trajectories", "64", "--steps", "10", "--out"])
        .arg(&file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`--out`") && !err.contains("trajectory-steps/s"),
        "{err}"
    );
    // a second run replaces the first set; progress lines come when stderr is not a terminal
    let out = dir.join("o");
    for seed in ["1", "2"] {
        let o = bin()
            .env("INFODIFF_PROGRESS_INTERVAL", "0")
            .args([
                "measure",
                "--trajectories",
                "4096",
                "--steps",
                "50",
                "--seed",
                seed,
                "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(
            err.contains("estimate:") && err.contains("peak memory"),
            "{err}"
        );
        assert!(
            err.contains("infodiff: progress:") && err.contains("done in"),
            "{err}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        assert_eq!(summary["config"]["seed"].to_string(), seed);
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["curves.csv", "entropy.svg", "summary.json"]);
    assert!(no_temporaries(&dir));
}

#[test]
fn sigterm_during_a_run_leaves_no_temporaries() {
    let dir = tempdir("sigterm");
    let out = dir.join("o");
    let mut child = bin()
        .args([
            "measure",
            "--trajectories",
            "2000000",
            "--steps",
            "1000",
            "--threads",
            "1",
            "--out",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // wait for the temporary folder (made before the run), then terminate
    let start = std::time::Instant::now();
    while no_temporaries(&dir) && start.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert!(!no_temporaries(&dir), "no temporary folder appeared");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(no_temporaries(&dir), "temporaries left after SIGTERM");
    assert!(!out.exists());
}

/// Partition names whose columns would collide (`x` and `x_se` both give `rate_x_se`) are
/// refused before anything runs, naming the column (exit 2).
#[test]
fn partition_names_with_colliding_columns_are_refused() {
    let dir = std::env::temp_dir().join(format!("infodiff-collide-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("c.json");
    std::fs::write(
        &cfg,
        r#"{"partitions": [{"name": "x", "a": [0], "b": [1]}, {"name": "x_se", "a": [2], "b": [3]}], "trajectories": 10}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
        .args(["measure", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rate_x_se") && err.contains("partitions[1].name"),
        "{err}"
    );
    assert!(!dir.join("out").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
