//! `infodiff train` end to end through the binary on a tiny `gmm:` data set (two classes of
//! 1×4×4 Gaussians): the pipeline folder it writes (read back by `ModelDir`, `UNet::load` and
//! `infodiff sample`), the log, the same weights on 1 and 2 threads, `--resume` continuing
//! bit for bit, refusals that name the option and leave `--out` as it was, and a diverging run
//! stopping at its step with the last checkpoint kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infodiff::io::model_dir::ModelDir;
use infodiff::nn::unet::UNet;
use infodiff::train::checkpoint;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_infodiff"))
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infodiff-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Two classes of 16-dimensional Gaussians shown as 1×4×4 images, 256 draws.
const GMM: &str = r#"{
  "mixture": {"components": [
    {"weight": 1, "mean": [0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5], "var": 0.01, "class": 0},
    {"weight": 1, "mean": [-0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5, -0.5, -0.5, -0.5, -0.5, 0.5, 0.5, 0.5, 0.5], "var": 0.01, "class": 1}
  ]},
  "image": [1, 4, 4], "train_examples": 256
}"#;

fn gmm(dir: &Path) -> String {
    let f = dir.join("gmm.json");
    std::fs::write(&f, GMM).unwrap();
    format!("gmm:{}", f.display())
}

/// `infodiff train --data <data> --out <out> <args>` with small defaults for the test.
fn train(data: &str, out: &Path, args: &[&str]) -> Output {
    bin()
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--batch", "16", "--warmup", "5"])
        .args(args)
        .env("INFODIFF_PROGRESS_INTERVAL", "0")
        .output()
        .unwrap()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "status {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

fn refused(o: &Output, code: i32, needles: &[&str]) {
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{e}");
    for n in needles {
        assert!(e.contains(n), "`{n}` not in: {e}");
    }
}

fn weights(out: &Path) -> Vec<u8> {
    std::fs::read(out.join("unet/diffusion_pytorch_model.safetensors")).unwrap()
}

/// Every file under `dir` (relative path, bytes), sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn trains_a_tiny_gmm_into_a_pipeline_folder_that_samples() {
    let dir = tempdir("pipeline");
    let data = gmm(&dir);
    let out = dir.join("model");
    let o = train(
        &data,
        &out,
        &[
            "--steps",
            "30",
            "--checkpoint-every",
            "10",
            "--threads",
            "2",
        ],
    );
    ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("30 steps") && stdout.contains("wrote"),
        "{stdout}"
    );
    for f in infodiff::app::train::output_files() {
        assert!(out.join(&f).is_file(), "{f} missing");
    }
    // What sample and measure --model read: the pipeline, its scheduler, the network.
    let md = ModelDir::open(&out).unwrap();
    assert_eq!(md.scheduler_class(), "DDPMScheduler");
    assert_eq!(md.scheduler.num_train_timesteps, 1000);
    assert_eq!(md.scheduler.clip_sample, Some(false));
    let net = UNet::load(&md.unet).unwrap();
    assert_eq!(net.config.in_channels, 1);
    assert_eq!(net.config.sample_size, Some(4));
    // Two classes and the null label.
    assert_eq!(net.config.num_class_embeds, Some(3));
    // The log: a header and one row per step.
    let csv = std::fs::read_to_string(out.join("loss.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "step,loss,lr,grad_norm,images_per_s");
    assert_eq!(rows.len(), 31);
    assert!(rows[30].starts_with("30,"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["steps"], 30);
    assert_eq!(summary["train"]["batch"], 16);
    assert!(
        std::fs::read_to_string(out.join("loss.svg"))
            .unwrap()
            .contains("<svg")
    );
    // The checkpoint holds step 30 and the weights written are its EMA.
    let (_, st) = checkpoint::load(&out.join("checkpoint").join(checkpoint::FILE)).unwrap();
    assert_eq!(st.step, 30);
    let layout = infodiff::nn::unet::params::ParamLayout::new(&net.config);
    assert_eq!(
        infodiff::app::train::weights_bytes(&layout, &st.ema).unwrap(),
        weights(&out)
    );
    // No temporaries beside --out.
    let left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    assert!(left.iter().all(|n| !n.contains("infodiff-tmp")), "{left:?}");
    // infodiff sample reads it.
    let s = bin()
        .args(["sample", "--model"])
        .arg(&out)
        .args([
            "--num",
            "4",
            "--batch",
            "4",
            "--steps",
            "5",
            "--sampler",
            "ddim",
        ])
        .args(["--no-images", "--out"])
        .arg(dir.join("samples"))
        .output()
        .unwrap();
    ok(&s);
    assert!(dir.join("samples/samples.safetensors").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn threads_do_not_change_the_weights_and_resume_continues_bit_for_bit() {
    let dir = tempdir("resume");
    let data = gmm(&dir);
    let common = [
        "--schedule",
        "constant",
        "--checkpoint-every",
        "7",
        "--seed",
        "3",
    ];
    let straight = dir.join("straight");
    ok(&train(
        &data,
        &straight,
        &[&common[..], &["--steps", "24", "--threads", "2"]].concat(),
    ));
    let one = dir.join("one-thread");
    ok(&train(
        &data,
        &one,
        &[&common[..], &["--steps", "24", "--threads", "1"]].concat(),
    ));
    assert_eq!(weights(&straight), weights(&one), "1 vs 2 threads");
    // 10 steps, then resumed to 24.
    let resumed = dir.join("resumed");
    ok(&train(
        &data,
        &resumed,
        &[&common[..], &["--steps", "10"]].concat(),
    ));
    let o = train(
        &data,
        &resumed,
        &[&common[..], &["--steps", "24", "--resume"]].concat(),
    );
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resuming from step 10"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        weights(&straight),
        weights(&resumed),
        "resumed at 10 vs straight"
    );
    let ck = |d: &Path| {
        checkpoint::load(&d.join("checkpoint").join(checkpoint::FILE))
            .unwrap()
            .1
    };
    let (a, b) = (ck(&straight), ck(&resumed));
    assert_eq!(a.params, b.params);
    assert_eq!(a.m, b.m);
    assert_eq!(a.v, b.v);
    let losses = |s: &infodiff::train::TrainState| s.log.iter().map(|r| r.loss).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b));
    // The whole log is in loss.csv after the resume.
    let csv = std::fs::read_to_string(resumed.join("loss.csv")).unwrap();
    assert_eq!(csv.lines().count(), 25);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refusals_name_the_option_and_leave_out_as_it_was() {
    let dir = tempdir("refusals");
    let data = gmm(&dir);
    let out = dir.join("model");
    ok(&train(&data, &out, &["--steps", "4"]));
    let before = snapshot(&out);
    // Again without --resume: the checkpoint is never replaced.
    refused(
        &train(&data, &out, &["--steps", "4"]),
        2,
        &["--out", "--resume"],
    );
    // --resume with another setting: named.
    refused(
        &train(&data, &out, &["--steps", "4", "--lr", "0.5", "--resume"]),
        2,
        &["--resume", "lr"],
    );
    refused(
        &train(
            &data,
            &out,
            &["--steps", "4", "--prediction", "v_prediction", "--resume"],
        ),
        2,
        &["prediction"],
    );
    assert_eq!(snapshot(&out), before, "a refused run changed --out");
    // --resume with nothing to resume.
    let empty = dir.join("empty");
    refused(&train(&data, &empty, &["--resume"]), 2, &["--resume"]);
    assert!(!empty.join("checkpoint").exists());
    // A folder holding something else.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    refused(
        &train(&data, &other, &["--steps", "2"]),
        2,
        &["--out", "notes.txt"],
    );
    assert_eq!(
        snapshot(&other),
        vec![("notes.txt".to_string(), b"mine".to_vec())]
    );
    // Bad data, settings and networks.
    refused(&train("nonsense", &dir.join("a"), &[]), 2, &["--data"]);
    refused(
        &train(&data, &dir.join("b"), &["--p-uncond", "2"]),
        2,
        &["--p-uncond"],
    );
    refused(
        &train(&data, &dir.join("c"), &["--ema", "1.5"]),
        2,
        &["--ema"],
    );
    let unet = dir.join("rgb.json");
    std::fs::write(
        &unet,
        r#"{"in_channels": 3, "out_channels": 3, "sample_size": 4, "block_out_channels": [32, 64],
            "down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"],
            "layers_per_block": 1, "norm_num_groups": 8, "num_class_embeds": 3}"#,
    )
    .unwrap();
    let o = train(&data, &dir.join("d"), &["--unet", unet.to_str().unwrap()]);
    refused(&o, 2, &["--unet", "in_channels"]);
    for d in ["a", "b", "c", "d"] {
        assert!(!dir.join(d).exists(), "{d} was created by a refused run");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_diverging_run_stops_at_its_step_and_keeps_the_last_checkpoint() {
    let dir = tempdir("diverge");
    let data = gmm(&dir);
    let out = dir.join("model");
    // No warm-up and an absurd rate: step 1 moves every weight by ~1e30, so the next forward
    // overflows.
    let o = bin()
        .args(["train", "--data", &data, "--out"])
        .arg(&out)
        .args([
            "--batch", "8", "--steps", "20", "--warmup", "0", "--lr", "1e30",
        ])
        .args(["--checkpoint-every", "1", "--clip", "0"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("non-finite") && e.contains("at step"), "{e}");
    let step: usize = e
        .split("at step ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no step in {e}"));
    assert!((2..=20).contains(&step), "{e}");
    // The checkpoint of the last good step is there; no model files were written.
    let (_, st) = checkpoint::load(&out.join("checkpoint").join(checkpoint::FILE)).unwrap();
    assert_eq!(st.step as usize, step - 1);
    assert!(!out.join("model_index.json").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
