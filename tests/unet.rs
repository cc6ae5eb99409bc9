//! The U-Net against diffusers: every case in tests/fixtures/unet (tiny-class, tiny-uncond and
//! tiny-ddpm, the DDPM CIFAR-10 layout options; made by tests/fixtures/make_unet_fixtures.py,
//! reference computed in float64) matched to relative L2 error ≤ 1e-4.

mod common;
use common::rel_l2;
use std::path::PathBuf;

use infodiff::nn::Weights;
use infodiff::nn::unet::UNet;
use infodiff::tensor::Tensor;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet")
}

/// The reference cases (folders holding io.safetensors) under `root`, sorted.
fn cases_in(root: &std::path::Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("fixtures at {}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("io.safetensors").exists())
        .collect();
    cases.sort();
    cases
}

#[test]
fn unet_matches_diffusers_on_every_fixture() {
    let cases = cases_in(&fixtures());
    let names: Vec<_> = cases.iter().map(|c| c.file_name().unwrap()).collect();
    assert_eq!(
        names,
        ["tiny-class", "tiny-ddpm", "tiny-uncond"],
        "{}",
        fixtures().display()
    );
    for case in cases {
        let net = UNet::load(&case).unwrap();
        let io = Weights::load(&case.join("io.safetensors")).unwrap();
        let x: &Tensor = &io.tensors["sample"];
        let t = &io.tensors["timestep"].data;
        let labels = io.ints.get("class_labels").map(|(_, v)| v.as_slice());
        let want = &io.tensors["out"];
        let got = net.forward(x, t, labels).unwrap();
        assert_eq!(got.shape, want.shape);
        let rel = rel_l2(&got, want);
        eprintln!("{}: relative L2 error {rel:.3e}", case.display());
        // issue: ≤ 1e-4 relative L2 against the float64 reference
        assert!(rel <= 1e-4, "{}: relative L2 error {rel:e}", case.display());
    }
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infodiff-unet-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A copy of the tiny-class model with config.json edited by `edit` and the weights by `weights`.
fn variant(
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
    weights: impl Fn(Vec<u8>) -> Vec<u8>,
) -> PathBuf {
    let src = fixtures().join("tiny-class");
    let dir = tempdir(name);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let w = std::fs::read(src.join("diffusion_pytorch_model.safetensors")).unwrap();
    std::fs::write(dir.join("diffusion_pytorch_model.safetensors"), weights(w)).unwrap();
    dir
}

fn load_err(dir: &PathBuf) -> String {
    match UNet::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_config_values_are_refused_by_key_and_value() {
    for (key, value, what) in [
        ("act_fn", serde_json::json!("gelu"), "act_fn"),
        (
            "resnet_time_scale_shift",
            serde_json::json!("scale_shift"),
            "resnet_time_scale_shift",
        ),
        (
            "time_embedding_type",
            serde_json::json!("fourier"),
            "time_embedding_type",
        ),
        (
            "class_embed_type",
            serde_json::json!("timestep"),
            "class_embed_type",
        ),
        (
            "down_block_types",
            serde_json::json!(["DownBlock2D", "SkipDownBlock2D", "DownBlock2D"]),
            "down_block_types",
        ),
        ("some_new_option", serde_json::json!(1), "some_new_option"),
        ("norm_num_groups", serde_json::json!(7), "norm_num_groups"),
    ] {
        let dir = variant(what, |c| c[key] = value.clone(), |w| w);
        let e = load_err(&dir);
        // the key, and the offending value (for a list: the offending entry)
        let shown = match &value {
            serde_json::Value::Array(_) => "\"SkipDownBlock2D\"".to_string(),
            v => v.to_string(),
        };
        assert!(e.contains(what) && e.contains(&shown), "{key}: {e}");
    }
}

#[test]
fn missing_misshaped_and_corrupt_weights_are_errors() {
    // a config with one more layer per block expects tensors the file lacks
    let e = load_err(&variant(
        "layers",
        |c| c["layers_per_block"] = serde_json::json!(2),
        |w| w,
    ));
    assert!(
        e.contains("down_blocks.0.resnets.1") && e.contains("missing"),
        "{e}"
    );
    // more classes than the embedding table has: both shapes named
    let e = load_err(&variant(
        "classes",
        |c| c["num_class_embeds"] = serde_json::json!(12),
        |w| w,
    ));
    assert!(
        e.contains("class_embedding.weight") && e.contains("[12, 32]") && e.contains("[11, 32]"),
        "{e}"
    );
    // a truncated file
    let e = load_err(&variant("truncated", |_| {}, |w| w[..w.len() / 2].to_vec()));
    assert!(e.contains("safetensors"), "{e}");
    // garbage
    let e = load_err(&variant(
        "garbage",
        |_| {},
        |_| b"not a safetensors file".to_vec(),
    ));
    assert!(e.contains("safetensors"), "{e}");
}

#[test]
fn denoise_command_writes_the_reference_output() {
    let case = fixtures().join("tiny-uncond");
    let out = tempdir("denoise").join("out.safetensors");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
        .args(["denoise", "--model"])
        .arg(&case)
        .arg("--input")
        .arg(case.join("io.safetensors"))
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = Weights::load(&out).unwrap();
    let want = Weights::load(&case.join("io.safetensors")).unwrap();
    let (g, w) = (&got.tensors["out"], &want.tensors["out"]);
    assert_eq!(g.shape, w.shape);
    assert!(rel_l2(g, w) <= 1e-4);
    // wrong inputs are errors naming what is wrong, not panics: 1-channel samples for a
    // 3-channel model, and a class-conditional model without labels
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
        .args(["denoise", "--model"])
        .arg(fixtures().join("tiny-class"))
        .arg("--input")
        .arg(case.join("io.safetensors"))
        .arg("--output")
        .arg(tempdir("denoise2").join("o.safetensors"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("sample channels"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let net = UNet::load(&fixtures().join("tiny-class")).unwrap();
    let x = Tensor::zeros(vec![2, 3, 16, 16]);
    let e = net.forward(&x, &[1.0, 2.0], None).unwrap_err().to_string();
    assert!(e.contains("class_labels"), "{e}");
    let e = net
        .forward(&x, &[1.0, 2.0], Some(&[0, 11]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("class label"), "{e}");
}

/// The U-Net score model: one batched forward per step gives s(x) from the null label and
/// s(x | y) from each real label, −ε̂/σ_t at diffusers timestep i − 1 for state x_i.
#[test]
fn unet_score_model_batches_labels_and_timesteps_like_single_forwards() {
    use infodiff::diffusion::{Ddpm, Process};
    use infodiff::score::unet::UNetScore;
    use infodiff::score::{ScoreModel, Scores};
    let dir = fixtures().join("tiny-class");
    let m = UNetScore::load(&dir).unwrap();
    assert_eq!(m.num_classes(), 10);
    assert_eq!(m.dim(), 3 * 16 * 16);
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap();
    let p = grid.points[3]; // state index 700
    let d = m.dim();
    let x: Vec<f32> = (0..2 * d)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut s = Scores::new(2, d, 10);
    m.scores(&x, &p, &mut s).unwrap();
    let net = UNet::load(&dir).unwrap();
    for b in 0..2 {
        let xi = Tensor::new(vec![1, 3, 16, 16], x[b * d..(b + 1) * d].to_vec()).unwrap();
        for (label, got) in [
            (10i64, s.uncond_of(b)),
            (0, s.cond_of(b, 0)),
            (7, s.cond_of(b, 7)),
        ] {
            let eps = net
                .forward(&xi, &[p.index as f32 - 1.0], Some(&[label]))
                .unwrap();
            for (g, e) in got.iter().zip(&eps.data) {
                let want = -e / p.sigma as f32;
                // batched and single forwards differ only in GEMM blocking: 1e-4 relative
                assert!(
                    (g - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "label {label}: {g} vs {want}"
                );
            }
        }
    }
}

/// `infodiff measure --model` runs the information layer on a network end to end.
#[test]
fn measure_runs_on_a_network() {
    let out = tempdir("measure-model");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
        .args(["measure", "--trajectories", "2", "--steps", "5", "--model"])
        .arg(fixtures().join("tiny-class"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["classes"], 10);
    assert!(
        summary["config"]["model"]
            .as_str()
            .unwrap()
            .ends_with("tiny-class")
    );
    let csv = std::fs::read_to_string(out.join("curves.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 6);
    // the online classifier starts at the uniform prior over 10 classes: ln 10 nats
    let first: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert!((first[3].parse::<f64>().unwrap() - 10f64.ln()).abs() < 1e-6);
    // an unconditional model cannot be measured: refused naming the key
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
        .args(["measure", "--trajectories", "2", "--steps", "5", "--model"])
        .arg(fixtures().join("tiny-uncond"))
        .arg("--out")
        .arg(tempdir("measure-uncond"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("num_class_embeds"));
}

/// `measure --model --probes N`: entropy production from Hutchinson probes on the CPU path
/// (`hx0_rate` and its SE at every point but the data end; none with `--probes 0`), the count
/// kept in summary.json's config, and an out-of-range count refused naming the key.
#[test]
fn measure_on_a_network_estimates_entropy_production_with_probes() {
    let run = |probes: &str| {
        let out = tempdir(&format!("measure-probes-{probes}"));
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
            .args([
                "measure",
                "--trajectories",
                "2",
                "--steps",
                "4",
                "--device",
                "cpu",
            ])
            .args(["--probes", probes, "--model"])
            .arg(fixtures().join("tiny-class"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        (o, out)
    };
    let column = |out: &PathBuf, name: &str| -> Vec<String> {
        let csv = std::fs::read_to_string(out.join("curves.csv")).unwrap();
        let mut lines = csv.lines();
        let head: Vec<&str> = lines.next().unwrap().split(',').collect();
        let i = head.iter().position(|h| *h == name).unwrap();
        lines
            .map(|l| l.split(',').nth(i).unwrap().to_string())
            .collect()
    };
    let (o, out) = run("2");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["config"]["probes"], 2);
    for name in ["hx0_rate", "hx0_rate_se", "hx0_rate_ibp"] {
        let col = column(&out, name);
        assert_eq!(col.len(), 5);
        for v in &col[..4] {
            assert!(v.parse::<f64>().unwrap().is_finite(), "{name}: {v:?}");
        }
    }
    let (o, out) = run("0");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        column(&out, "hx0_rate").iter().all(|v| v.is_empty()),
        "no probes, no hx0_rate"
    );
    assert!(
        column(&out, "hx0_rate_ibp")[0].parse::<f64>().is_ok(),
        "needs no divergence"
    );
    let (o, _) = run("65");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("probes"));
}

/// The DDPM CIFAR-10 architecture has the 35.7M parameters of google/ddpm-cifar10-32, and
/// `infodiff bench` reports its figures as JSON.
#[test]
fn cifar_architecture_and_bench_command() {
    use infodiff::nn::unet::UNetConfig;
    let net = UNet::random(UNetConfig::ddpm_cifar10(), 1).unwrap();
    assert_eq!(net.parameters(), 35_746_307);
    let y = net
        .forward(&Tensor::zeros(vec![1, 3, 32, 32]), &[10.0], None)
        .unwrap();
    assert_eq!(y.shape, vec![1, 3, 32, 32]);
    assert!(y.data.iter().all(|v| v.is_finite()));
    for args in [
        vec!["bench", "gemm", "--size", "96", "--json"],
        vec!["bench", "conv", "--batch", "2", "--json"],
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
            .args(&args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["gflops"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v.get("images_per_s").is_some());
    }
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_infodiff"))
        .args(["bench", "unet", "--batch", "1", "--json", "--model"])
        .arg(fixtures().join("tiny-uncond"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
}

/// The device forward's orchestration (`UNetOn<Emu>`: every launch of the GPU path with its
/// shapes, strides, offsets, the attention's batched GEMMs, bf16 packing) run on `backend::Emu`,
/// which executes each launch from its parameters (the GEMM with gemm.cu's index arithmetic and
/// summation order; GroupNorm, softmax and the element-wise ops as CPU loops over the same
/// parameters), against diffusers' float64 reference on every fixture: relative L2 ≤ 1e-4, as
/// the CPU forward. The kernels' own device code is checked in tests/cuda.rs.
#[test]
fn device_unet_orchestration_matches_diffusers_on_the_kernel_interpreter() {
    use infodiff::backend::{Emu, Storage};
    use infodiff::nn::unet::UNetOn;
    for case in cases_in(&fixtures()) {
        let net = UNet::load(&case).unwrap();
        let bf16 = UNetOn::new(Emu, &net, Storage::Bf16).unwrap();
        let dev = UNetOn::new(Emu, &net, Storage::F32).unwrap();
        let io = Weights::load(&case.join("io.safetensors")).unwrap();
        let labels = io.ints.get("class_labels").map(|(_, v)| v.as_slice());
        let got = dev
            .forward(&io.tensors["sample"], &io.tensors["timestep"].data, labels)
            .unwrap();
        let want = &io.tensors["out"];
        assert_eq!(got.shape, want.shape);
        let rel = rel_l2(&got, want);
        eprintln!(
            "{} (device path, interpreter): relative L2 error {rel:.3e}",
            case.display()
        );
        // issue: ≤ 1e-4 relative L2 against the float64 reference
        assert!(rel <= 1e-4, "{}: relative L2 error {rel:e}", case.display());
        // bf16 weights (2⁻⁹ relative rounding each, f32 accumulation): 2e-2 relative L2
        let got = bf16
            .forward(&io.tensors["sample"], &io.tensors["timestep"].data, labels)
            .unwrap();
        let rel = rel_l2(&got, want);
        eprintln!(
            "{} (bf16 weights, interpreter): relative L2 error {rel:.3e}",
            case.display()
        );
        assert!(
            rel <= 2e-2,
            "{}: bf16 relative L2 error {rel:e}",
            case.display()
        );
    }
}

/// The tiny-class score model with two decision problems, 2 trajectories from index `first` in
/// one batch through 3 DDPM ancestral steps, without probes and with two Hutchinson probes (the
/// CPU side then wraps the score in `Hutchinson`): the CPU observer's sums against what
/// `on_device` gives for the same job (its last argument: the probes). Every sum entry,
/// including the cross terms (per-class rates), the decision problems' score gaps, ‖s‖² (the
/// integration-by-parts rate) and PROD/PROD2 (entropy production), within 1e-3·(1 + |sum|)
/// (f32 records and two forward implementations against f64 sums of f32 scores).
fn neural_loop_against_the_cpu_observer(
    first: u64,
    on_device: impl Fn(
        &infodiff::score::unet::UNetScore,
        &infodiff::info::InfoSpec,
        &infodiff::diffusion::Grid,
        &infodiff::diffusion::SamplerKind,
        infodiff::rng::Noise,
        usize,
    ) -> infodiff::info::InfoSums,
) {
    use infodiff::diffusion::{AncestralVariance, Ddpm, Process, SamplerKind};
    use infodiff::info::{InfoSpec, Layout, Partition, Tracking, measure_trajectories};
    use infodiff::rng::Noise;
    use infodiff::score::unet::UNetScore;
    use infodiff::score::{Hutchinson, ScoreModel};
    let score = UNetScore::load(&fixtures().join("tiny-class")).unwrap();
    let parts = vec![
        Partition {
            name: "low_high".into(),
            a: (0..5).collect(),
            b: (5..10).collect(),
        },
        Partition {
            name: "c3_c7".into(),
            a: vec![3],
            b: vec![7],
        },
    ];
    let spec = InfoSpec::new(score.class_prior(), parts).unwrap();
    let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(3).unwrap();
    let sampler = SamplerKind::Ancestral {
        variance: AncestralVariance::Beta,
    };
    let noise = Noise::new(5);
    for probes in [0, 2] {
        let hutch = Hutchinson::new(&score, probes.max(1)).unwrap();
        let model: &dyn ScoreModel = if probes > 0 { &hutch } else { &score };
        let cpu = measure_trajectories(
            model,
            &spec,
            &grid,
            &sampler,
            noise,
            first,
            2,
            2,
            Tracking::Online,
            None,
        )
        .unwrap();
        let on_dev = on_device(&score, &spec, &grid, &sampler, noise, probes);
        assert!(cpu.data.iter().any(|v| *v != 0.0));
        assert_eq!(on_dev.data.len(), cpu.data.len());
        let lay = cpu.layout;
        let row = cpu.row(0);
        // the fields the device records feed: not trivially zero on the CPU side
        assert!(
            row[Layout::IBP] != 0.0 && row[lay.part_rate(0)] > 0.0 && row[lay.part_rate(1)] > 0.0
        );
        assert!(row[lay.class_rate(0)] != 0.0);
        assert_eq!(
            row[Layout::PRODN] > 0.0,
            probes > 0,
            "entropy production iff probes"
        );
        for (i, (a, b)) in on_dev.data.iter().zip(&cpu.data).enumerate() {
            assert!(
                (a - b).abs() <= 1e-3 * (1.0 + b.abs()),
                "probes {probes}, entry {i}: device {a} vs cpu {b}"
            );
        }
    }
}

/// The device-resident loop's orchestration (`fused::neural::measure_on`: states replicated for
/// the K + 1 labels and the probe rows on the device, the network there, each step's records at
/// its offset in a device table, one download per batch, the sums built from that table) on
/// the kernel interpreter gives the CPU observer's information sums (see
/// `neural_loop_against_the_cpu_observer`). Inside `Emu` the fused step runs as its CPU twin
/// (`fused::sde_step::sde_step`), not as kernels/sde_step.cu: the kernel's device code is checked against
/// that twin in tests/cuda.rs (compiled for the host, and on a GPU), and the whole loop with
/// the kernel in `gpu_device_resident_neural_loop_matches_the_cpu_observer`.
#[test]
fn device_resident_loop_orchestration_matches_the_cpu_observer() {
    use infodiff::backend::{Emu, Storage};
    use infodiff::fused::neural::measure_on;
    use infodiff::nn::unet::UNetOn;
    neural_loop_against_the_cpu_observer(7, |score, spec, grid, sampler, noise, probes| {
        let dev = UNetOn::new(Emu, &score.net, Storage::F32).unwrap();
        measure_on(
            &dev, score, spec, grid, sampler, noise, 7, 2, 2, probes, None,
        )
        .unwrap()
    });
}

/// The device-resident neural loop on the GPU (U-Net kernels and the fused sde_step kernel)
/// against the CPU observer, as the interpreter test above.
#[test]
#[cfg_attr(
    not(infodiff_require_cuda),
    ignore = "needs a CUDA GPU: run with INFODIFF_REQUIRE_CUDA=1 and --features cuda"
)]
fn gpu_device_resident_neural_loop_matches_the_cpu_observer() {
    use infodiff::fused::neural::measure_on_gpu;
    let gpu =
        infodiff::backend::gpu_for_test("gpu_device_resident_neural_loop_matches_the_cpu_observer");
    neural_loop_against_the_cpu_observer(0, |score, spec, grid, sampler, noise, probes| {
        measure_on_gpu(&gpu, score, spec, grid, sampler, noise, 2, 2, probes, None).unwrap()
    });
}

/// The U-Net on the GPU against diffusers' float64 reference on every fixture (relative L2
/// ≤ 1e-4, as on the CPU; bf16 weights ≤ 2e-2); ignored unless INFODIFF_REQUIRE_CUDA=1, which
/// makes a missing GPU a failure.
#[test]
#[cfg_attr(
    not(infodiff_require_cuda),
    ignore = "needs a CUDA GPU: run with INFODIFF_REQUIRE_CUDA=1 and --features cuda"
)]
fn gpu_unet_matches_diffusers_fixtures() {
    use infodiff::backend::{Cuda, Storage};
    use infodiff::nn::unet::UNetOn;
    let gpu = infodiff::backend::gpu_for_test("gpu_unet_matches_diffusers_fixtures");
    for case in cases_in(&fixtures()) {
        let net = UNet::load(&case).unwrap();
        let io = Weights::load(&case.join("io.safetensors")).unwrap();
        let labels = io.ints.get("class_labels").map(|(_, v)| v.as_slice());
        for (storage, bound) in [(Storage::F32, 1e-4), (Storage::Bf16, 2e-2)] {
            let gnet = UNetOn::new(Cuda(&gpu), &net, storage).unwrap();
            let got = gnet
                .forward(&io.tensors["sample"], &io.tensors["timestep"].data, labels)
                .unwrap();
            let rel = rel_l2(&got, &io.tensors["out"]);
            eprintln!(
                "{} on the GPU ({storage:?}): relative L2 error {rel:.3e}",
                case.display()
            );
            assert!(rel <= bound, "{} ({storage:?}): {rel:e}", case.display());
        }
    }
}
