//! `infodiff sample` end to end through the binary, on the fixture UNet2DModel folders
//! (tests/fixtures/unet/tiny-class: 3×16×16, 10 classes + null; tiny-uncond: 1×16×16): the
//! outputs and their shapes, refusals that name the option and write nothing into `--out`,
//! noise that depends only on (seed, sample), `--init`, bounded memory while streaming, and a
//! signal that leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use infodiff::io::safetensors::{Entry, Values, read};
use infodiff::rng::{INIT_STEP, Noise};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_infodiff"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/unet")
        .join(name)
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infodiff-sample-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `infodiff sample --model <fixture> <args> --out <out>`.
fn sample(model: &str, args: &[&str], out: &Path) -> Output {
    bin()
        .arg("sample")
        .arg("--model")
        .arg(fixture(model))
        .args(args)
        .arg("--out")
        .arg(out)
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

fn tensors(out: &Path) -> Vec<Entry> {
    read(&out.join("samples.safetensors")).unwrap()
}

fn f32s<'a>(e: &'a [Entry], name: &str) -> (&'a [usize], &'a [f32]) {
    let t = e
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no `{name}`"));
    match &t.values {
        Values::F32(v) => (&t.shape, v),
        other => panic!("`{name}` is not f32: {other:?}"),
    }
}

/// Nothing but `keep` in `dir` (no output, no temporary).
fn only(dir: &Path, keep: &[&str]) {
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    let mut want: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(left, want, "left in {}", dir.display());
}

#[test]
fn writes_samples_noise_labels_images_and_summary() {
    let dir = tempdir("outputs");
    let out = dir.join("out");
    let o = sample(
        "tiny-class",
        &[
            "--sampler",
            "dpmpp_2m",
            "--steps",
            "3",
            "--classes",
            "1,2",
            "--guidance",
            "2",
            "--num",
            "5",
            "--batch",
            "2",
            "--seed",
            "7",
        ],
        &out,
    );
    ok(&o);
    let e = tensors(&out);
    let (shape, x) = f32s(&e, "samples");
    assert_eq!(shape, [5, 3, 16, 16]);
    assert!(x.iter().all(|v| v.is_finite()));
    let (shape, z) = f32s(&e, "noise");
    assert_eq!(shape, [5, 3, 16, 16]);
    // The noise is sample k's standard normals at (seed, k, INIT_STEP), bit for bit.
    let d = 3 * 16 * 16;
    let mut want = vec![0.0f32; d];
    for k in 0..5 {
        Noise::new(7).fill_normals(k as u64, INIT_STEP, &mut want);
        assert_eq!(&z[k * d..(k + 1) * d], &want[..], "noise of sample {k}");
    }
    let labels = e.iter().find(|t| t.name == "labels").unwrap();
    assert_eq!(
        labels.values,
        Values::I64(vec![1, 2, 1, 2, 1]),
        "classes cycled"
    );
    // Images: pixel = round(255·clamp(x/2 + 0.5, 0, 1)), RGB from (C, H, W).
    for k in 0..5 {
        let p = out.join(format!("images/{k:06}.png"));
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0u8; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(
            (info.width, info.height, info.color_type),
            (16, 16, png::ColorType::Rgb)
        );
        let s = &x[k * d..(k + 1) * d];
        for (i, &px) in buf[..d].iter().enumerate() {
            let (pos, ch) = (i / 3, i % 3);
            let v = s[ch * 256 + pos];
            let want = ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8;
            assert_eq!(px, want, "sample {k} pixel {pos} channel {ch}");
        }
    }
    assert!(out.join("grid.png").is_file());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["samples"], 5);
    assert_eq!(s["batch"], 2);
    assert_eq!(s["seed"], 7);
    assert_eq!(s["steps"], 3);
    assert_eq!(s["guidance"], 2.0);
    assert_eq!(s["classes"], serde_json::json!([1, 2]));
    assert_eq!(s["sampler"]["kind"], "dpmpp_2m");
    assert_eq!(s["scheduler"]["class"], "DDPMScheduler");
    assert_eq!(
        s["network_rows"],
        2 * 5 * 3,
        "guided: two rows per state and step"
    );
    for k in [
        "wall_time_s",
        "samples_per_s",
        "network_time_s",
        "overhead_time_s",
    ] {
        assert!(s[k].as_f64().is_some_and(|v| v >= 0.0), "{k}: {}", s[k]);
    }
    only(&dir, &["out"]);
    // A second run replaces the first.
    ok(&sample(
        "tiny-class",
        &["--steps", "2", "--num", "1", "--sampler", "ddim"],
        &out,
    ));
    assert_eq!(f32s(&tensors(&out), "samples").0, [1, 3, 16, 16]);
    assert!(
        !out.join("images/000004.png").exists(),
        "the earlier run's images are gone"
    );
    only(&dir, &["out"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_sample_does_not_depend_on_its_batch() {
    let dir = tempdir("batches");
    // Stochastic (euler_ancestral, ddpm, dpmpp_2m_sde) and deterministic, guided and not.
    let cases: [&[&str]; 4] = [
        &["--sampler", "euler_ancestral", "--steps", "4"],
        &[
            "--sampler",
            "ddpm",
            "--steps",
            "3",
            "--classes",
            "0,5,9",
            "--guidance",
            "3",
        ],
        &["--sampler", "dpmpp_2m_sde", "--steps", "4", "--class", "2"],
        &[
            "--sampler",
            "ddim",
            "--steps",
            "3",
            "--classes",
            "3,4",
            "--guidance",
            "0.5",
        ],
    ];
    for args in cases {
        let mut runs = Vec::new();
        for batch in ["1", "3"] {
            let out = dir.join(format!("b{batch}"));
            let mut a = args.to_vec();
            a.extend([
                "--num",
                "4",
                "--batch",
                batch,
                "--seed",
                "11",
                "--no-images",
            ]);
            ok(&sample("tiny-class", &a, &out));
            runs.push(f32s(&tensors(&out), "samples").1.to_vec());
        }
        // Bit-identical: the same noise per (seed, sample, step) and the same arithmetic.
        assert!(runs[0] == runs[1], "{args:?}: batch 1 and batch 3 differ");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A diffusers pipeline folder around tiny-class: model_index.json, unet/, and a
/// scheduler/scheduler_config.json holding `scheduler`.
fn pipeline(dir: &Path, scheduler: &str) -> PathBuf {
    let root = dir.join("pipe");
    std::fs::create_dir_all(root.join("unet")).unwrap();
    std::fs::create_dir_all(root.join("scheduler")).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors"] {
        std::fs::copy(fixture("tiny-class").join(f), root.join("unet").join(f)).unwrap();
    }
    std::fs::write(
        root.join("model_index.json"),
        r#"{"_class_name": "DDIMPipeline", "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDIMScheduler"]}"#,
    )
    .unwrap();
    std::fs::write(root.join("scheduler/scheduler_config.json"), scheduler).unwrap();
    root
}

#[test]
fn a_pipeline_folder_samples_with_its_scheduler() {
    let dir = tempdir("pipeline");
    let model = pipeline(
        &dir,
        r#"{"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "prediction_type": "v_prediction", "timestep_spacing": "trailing", "clip_sample": false}"#,
    );
    let out = dir.join("out");
    let run = |args: &[&str]| {
        bin()
            .arg("sample")
            .arg("--model")
            .arg(&model)
            .args(args)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap()
    };
    ok(&run(&["--steps", "4", "--num", "2", "--no-images"]));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        s["sampler"]["kind"], "ddim",
        "the scheduler class's sampler"
    );
    assert_eq!(s["scheduler"]["class"], "DDIMScheduler");
    assert_eq!(s["scheduler"]["prediction_type"], "v_prediction");
    assert!(
        s["scheduler"]["file"]
            .as_str()
            .unwrap()
            .ends_with("scheduler/scheduler_config.json")
    );
    assert!(!out.join("images").exists(), "--no-images");
    // Default steps: DDIMPipeline's 50.
    ok(&run(&["--num", "1", "--no-images"]));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["steps"], 50);
    // A class infodiff does not reproduce: a note says which sampler was used instead.
    std::fs::write(
        model.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true}"#,
    )
    .unwrap();
    let o = run(&["--steps", "3", "--num", "1", "--no-images"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("PNDMScheduler") && err.contains("--sampler"),
        "{err}"
    );
    // A scheduler value that changes the numbers and is not implemented is refused by name.
    std::fs::write(
        model.join("scheduler/scheduler_config.json"),
        r#"{"_class_name": "DDIMScheduler", "thresholding": true}"#,
    )
    .unwrap();
    let o = run(&["--steps", "3", "--num", "1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("thresholding"), "{err}");
    only(&dir, &["pipe", "out"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes `noise` of `shape` (standard normals from seed 5) into `path`.
fn write_init(path: &Path, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let mut z = vec![0.0f32; n];
    Noise::new(5).fill_normals(0, 0, &mut z);
    use infodiff::io::safetensors::{View, write_file};
    write_file(path, "test", &[("noise", shape, View::F32(&z))]).unwrap();
    z
}

#[test]
fn init_noise_is_used_and_recorded() {
    let dir = tempdir("init");
    let init = dir.join("init.safetensors");
    let z = write_init(&init, &[3, 1, 16, 16]);
    let mut runs = Vec::new();
    for batch in ["1", "2"] {
        let out = dir.join(format!("b{batch}"));
        let o = bin()
            .arg("sample")
            .arg("--model")
            .arg(fixture("tiny-uncond"))
            .args([
                "--sampler",
                "euler",
                "--steps",
                "3",
                "--batch",
                batch,
                "--no-images",
            ])
            .arg("--init")
            .arg(&init)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        ok(&o);
        let e = tensors(&out);
        assert_eq!(f32s(&e, "noise").1, &z[..], "the init noise, as given");
        assert_eq!(f32s(&e, "samples").0, [3, 1, 16, 16], "N from the file");
        assert!(
            e.iter().all(|t| t.name != "labels"),
            "unconditional: no labels"
        );
        runs.push(f32s(&e, "samples").1.to_vec());
    }
    assert!(runs[0] == runs[1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `infodiff sample <args>` expecting a refusal: not a success, stderr naming `option`
/// (and each of `also`), and nothing written beside `keep` in `dir`.
fn refused(dir: &Path, model: &str, args: &[&str], option: &str, also: &[&str], keep: &[&str]) {
    let out = dir.join("out");
    let o = sample(model, args, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{args:?} ran");
    assert!(err.contains(option), "{args:?}: {err}");
    for a in also {
        assert!(err.contains(a), "{args:?}: no `{a}` in {err}");
    }
    only(dir, keep);
}

#[test]
fn bad_input_is_refused_naming_the_option_and_nothing_is_written() {
    let dir = tempdir("refusals");
    let r = |model: &str, args: &[&str], option: &str, also: &[&str]| {
        refused(&dir, model, args, option, also, &[])
    };
    r(
        "tiny-class",
        &["--sampler", "dpm"],
        "--sampler",
        &["euler_ancestral"],
    );
    r(
        "tiny-class",
        &["--spacing", "even"],
        "--spacing",
        &["trailing"],
    );
    r("tiny-class", &["--steps", "0"], "`--steps`", &["found 0"]);
    r(
        "tiny-class",
        &["--class", "10"],
        "`--class`",
        &["0..=9", "found 10"],
    );
    r(
        "tiny-class",
        &["--classes", "1,-2"],
        "`--classes`",
        &["found -2"],
    );
    r(
        "tiny-uncond",
        &["--class", "0"],
        "`--class`",
        &["unconditional"],
    );
    r(
        "tiny-class",
        &["--class", "1", "--guidance", "nan"],
        "`--guidance`",
        &["finite"],
    );
    r(
        "tiny-class",
        &["--class", "1", "--guidance", "inf"],
        "`--guidance`",
        &["finite"],
    );
    r(
        "tiny-class",
        &["--sampler", "euler", "--eta", "0.5"],
        "`--eta`",
        &["ddim"],
    );
    r("tiny-class", &["--num", "0"], "`--num`", &[]);
    r("tiny-class", &["--batch", "0"], "`--batch`", &[]);
    r("tiny-class", &["--device", "cuda"], "--device cuda", &[]);
    r("tiny-class", &["--steps", "5000"], "`--steps`", &["1000"]);
    // --init of the wrong shape (1 channel for a 3-channel model), or without `noise`.
    let init = dir.join("init.safetensors");
    write_init(&init, &[2, 1, 16, 16]);
    let init_s = init.to_str().unwrap();
    refused(
        &dir,
        "tiny-class",
        &["--init", init_s],
        "`--init`",
        &["(N, 3, 16, 16)", "[2, 1, 16, 16]"],
        &["init.safetensors"],
    );
    refused(
        &dir,
        "tiny-uncond",
        &["--init", init_s, "--num", "3"],
        "`--init`",
        &["(3, 1, 16, 16)", "[2, 1, 16, 16]"],
        &["init.safetensors"],
    );
    use infodiff::io::safetensors::{View, write_file};
    write_file(
        &init,
        "test",
        &[("z", &[1, 1, 16, 16], View::F32(&[0.0; 256]))],
    )
    .unwrap();
    refused(
        &dir,
        "tiny-uncond",
        &["--init", init_s],
        "`--init`",
        &["noise"],
        &["init.safetensors"],
    );
    std::fs::remove_file(&init).unwrap();
    // An unwritable --out (below a regular file), and a folder of someone else's files.
    std::fs::write(dir.join("file"), "x").unwrap();
    let o = sample("tiny-uncond", &["--steps", "1"], &dir.join("file/out"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("`--out`"), "{err}");
    std::fs::create_dir(dir.join("out")).unwrap();
    std::fs::write(dir.join("out/notes.txt"), "mine").unwrap();
    let o = sample("tiny-uncond", &["--steps", "1"], &dir.join("out"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("`--out`") && err.contains("notes.txt"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("out/notes.txt")).unwrap(),
        "mine"
    );
    only(&dir.join("out"), &["notes.txt"]);
    only(&dir, &["file", "out"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Peak resident memory (bytes) of `infodiff sample <args>` (wait4's rusage of that child).
#[allow(clippy::zombie_processes)] // reaped by wait4 below, which also gives its rusage
fn peak_rss(args: &[&str], out: &Path) -> u64 {
    let child = bin()
        .arg("sample")
        .arg("--model")
        .arg(fixture("tiny-uncond"))
        .args(args)
        .arg("--out")
        .arg(out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 reaps the child we spawned.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "status {status}"
    );
    ru.ru_maxrss as u64 * 1024 // KiB on Linux
}

#[test]
fn memory_stays_batch_sized_as_n_grows() {
    let dir = tempdir("memory");
    let base = [
        "--sampler",
        "ddim",
        "--steps",
        "1",
        "--batch",
        "64",
        "--seed",
        "1",
    ];
    let mut small = base.to_vec();
    small.extend(["--num", "1000"]);
    let mut large = base.to_vec();
    large.extend(["--num", "12000"]);
    let a = peak_rss(&small, &dir.join("small"));
    let b = peak_rss(&large, &dir.join("large"));
    // Held in memory, 11,000 more samples would take 11,000 × (samples + noise) × 1 KiB =
    // 22 MiB (plus their images); streamed, only batch-sized buffers exist: allow 6 MiB of
    // allocator noise.
    assert!(
        b < a + 6 * 1024 * 1024,
        "peak RSS {a} bytes at N = 1000, {b} bytes at N = 12000"
    );
    let n = std::fs::read_dir(dir.join("large/images")).unwrap().count();
    assert_eq!(n, 12000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_signal_stops_the_run_and_leaves_nothing() {
    let dir = tempdir("signal");
    let out = dir.join("out");
    let mut child = bin()
        .arg("sample")
        .arg("--model")
        .arg(fixture("tiny-class"))
        .args([
            "--sampler",
            "ddpm",
            "--steps",
            "1000",
            "--num",
            "1000000",
            "--batch",
            "4",
        ])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the temporary folder, i.e. for the run to be under way.
    let tmp = dir.join(format!(".out.infodiff-tmp-{}", child.id()));
    let start = std::time::Instant::now();
    while !tmp.join("samples.safetensors").exists() {
        assert!(start.elapsed().as_secs() < 60, "the run did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: signalling the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    only(&dir, &[]);
    std::fs::remove_dir_all(&dir).unwrap();
}
