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
        infodiff::measure::Config::from_json_str(&String::from_utf8_lossy(&o.stdout), "stdout")
            .unwrap();
    assert_eq!(parsed, infodiff::measure::default_config());
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
