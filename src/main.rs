//! The `infodiff` command line: a thin layer over the library. The only place that exits:
//! bad input (a config, override, model folder or tensor file) exits 2, other failures 1.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use infodiff::Error;
use infodiff::app::{self, Config};
use infodiff::backend::Storage;
use infodiff::backend::{Device, DeviceChoice};
use infodiff::diffusion::{SamplerKind, SigmaGrid, Spacing};

#[derive(Parser)]
#[command(
    name = "infodiff",
    version,
    about = "Measure how information about a label is produced along diffusion trajectories"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the information measurement (the embedded default when no config is given).
    Measure {
        /// JSON config (see README for the schema).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output folder for curves.csv, summary.json and entropy.svg.
        #[arg(long, default_value = "infodiff-out")]
        out: PathBuf,
        /// Number of trajectories (overrides the config).
        #[arg(long)]
        trajectories: Option<usize>,
        /// Sampler steps (overrides the config).
        #[arg(long)]
        steps: Option<usize>,
        /// Seed (overrides the config).
        #[arg(long)]
        seed: Option<u64>,
        /// Worker threads (default: all cores; at most 1024).
        #[arg(long)]
        threads: Option<usize>,
        /// Measure a class-conditional diffusers model instead of the mixture: a pipeline
        /// folder (model_index.json, unet/, scheduler/) or a bare UNet2DModel folder; the
        /// folder's scheduler_config.json sets the process and the prediction type.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Classifier-free guidance scale W of the sampled paths (--classes alone: 1); the
        /// online classifier stays the model's Bayes posterior along them.
        #[arg(long, allow_negative_numbers = true)]
        guidance: Option<f64>,
        /// Guidance labels, cycled over trajectories (--guidance alone: every class).
        #[arg(long, value_delimiter = ',')]
        classes: Option<Vec<usize>>,
        /// Hutchinson probes per state and step for a network's ∇·s (hx0_rate); 0: off
        /// (overrides the config; default 1).
        #[arg(long)]
        probes: Option<usize>,
        /// Print the default config as JSON and exit.
        #[arg(long)]
        print_default_config: bool,
        /// Where to run: the GPU when one opens (auto), or as named. The fused mixture kernel
        /// and, with --model, the network run on the GPU; the generic engine (deterministic
        /// samplers on a mixture) runs on the CPU.
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
    },
    /// Throughput of the engine's own kernels on this machine.
    Bench {
        /// gemm (square SGEMM), conv (3×3, 64→64, 32×32), unet (full forward), mixture (the
        /// fused trajectory kernel on the default job) or sde-step (the fused neural step).
        #[arg(value_enum)]
        what: BenchWhat,
        /// Where to run (mixture, sde-step and unet have GPU kernels; gemm and conv run on the
        /// CPU).
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
        /// Trajectories for mixture (default 20,000 on the CPU, 1,000,000 on a GPU).
        #[arg(long)]
        trajectories: Option<usize>,
        /// Steps for mixture (default 1000).
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        /// Model folder for `unet` (default: the DDPM CIFAR-10 architecture, random weights).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Batch for conv, unet and sde-step (default 16, 64 and 256).
        #[arg(long)]
        batch: Option<usize>,
        /// Matrix size for gemm (default 1024).
        #[arg(long, default_value_t = 1024)]
        size: usize,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Weight storage of the U-Net on the GPU (bf16: half the bytes, f32 accumulation).
        #[arg(long, value_enum, default_value_t = StorageArg::F32)]
        storage: StorageArg,
        /// For unet: time one more forward op by op (conv2d, group_norm+silu, attention, ...).
        #[arg(long)]
        profile: bool,
    },
    /// Draw samples from a diffusers pipeline or UNet2DModel folder with its scheduler's
    /// sampler (or one named), optionally class-guided; writes samples.safetensors, images/,
    /// grid.png and summary.json into --out.
    Sample {
        /// A diffusers pipeline folder (model_index.json + unet/ + scheduler/) or a UNet2DModel
        /// folder (config.json + diffusion_pytorch_model.safetensors; DDPM defaults).
        #[arg(long)]
        model: PathBuf,
        /// The sampler (default: the one matching the folder's scheduler class).
        #[arg(long, value_enum)]
        sampler: Option<SamplerArg>,
        /// Inference steps (default: diffusers' pipelines', 1000 for ddpm and 50 otherwise).
        #[arg(long)]
        steps: Option<usize>,
        /// Timestep spacing (overrides the scheduler config's timestep_spacing).
        #[arg(long, value_enum)]
        spacing: Option<SpacingArg>,
        /// Karras σ (ρ = 7) between the schedule's σ_max and σ_min.
        #[arg(long, conflicts_with = "log_snr")]
        karras: bool,
        /// σ uniform in log-SNR between the schedule's σ_max and σ_min.
        #[arg(long)]
        log_snr: bool,
        /// DDIM's η (0: deterministic; 1: DDPM-like noise). Only with --sampler ddim.
        #[arg(long)]
        eta: Option<f64>,
        /// The class of every sample (default: the null label, i.e. unconditional).
        #[arg(long, conflicts_with = "classes", allow_negative_numbers = true)]
        class: Option<i64>,
        /// Classes cycled over the samples (sample k takes the (k mod n)-th).
        #[arg(long, value_delimiter = ',', num_args = 1.., allow_negative_numbers = true)]
        classes: Vec<i64>,
        /// Classifier-free guidance scale W: out = out(∅) + W·(out(y) − out(∅)); 1: plain
        /// conditional sampling.
        #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
        guidance: f64,
        /// Number of samples (default: the --init file's N, else 64).
        #[arg(long)]
        num: Option<usize>,
        /// Samples per batch (one sampler run, one batched network forward per step).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Seed of the initial noise and the samplers' noise (sample k depends only on
        /// (seed, k)).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// safetensors with tensor `noise` (N, C, H, W) f32 of standard normals: the initial
        /// noise (each sampler scales it by its initial σ).
        #[arg(long)]
        init: Option<PathBuf>,
        /// Where to run (the network runs on the CPU in this version; cuda is refused).
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
        /// Worker threads (default: all cores; at most 1024).
        #[arg(long)]
        threads: Option<usize>,
        /// Write no images/ and grid.png.
        #[arg(long)]
        no_images: bool,
        /// Output folder: new, empty, or an earlier sample run's (replaced).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a UNet2DModel by denoising score matching (AdamW, EMA, checkpoints) and write a
    /// diffusers pipeline folder (model_index.json, unet/, scheduler/) that `sample` and
    /// `measure --model` read, with loss.csv, loss.svg, train_summary.json and checkpoint/.
    Train {
        /// Training data: gmm:FILE.json (samples of a measure config's mixture), digits,
        /// shapes, shapes:16, shapes:32 or folder:DIR (PNG images in class subfolders).
        #[arg(long)]
        data: String,
        /// Output folder: new, empty, or an earlier run's (only continued, with --resume).
        #[arg(long)]
        out: PathBuf,
        /// UNet2DModel config.json (or a folder holding one); default: sized to the data.
        #[arg(long)]
        unet: Option<PathBuf>,
        /// Optimiser steps in all (default: per data set).
        #[arg(long)]
        steps: Option<u64>,
        /// Images per step (default: per data set).
        #[arg(long)]
        batch: Option<usize>,
        /// Peak learning rate (default: per data set).
        #[arg(long)]
        lr: Option<f64>,
        /// Linear learning-rate warm-up steps (default 100).
        #[arg(long)]
        warmup: Option<u64>,
        /// Learning-rate schedule after the warm-up (default cosine; only a constant one can be
        /// extended on --resume).
        #[arg(long, value_enum)]
        schedule: Option<ScheduleArg>,
        /// Seed of the initial weights, the minibatch order and the noise (default 0).
        #[arg(long)]
        seed: Option<u64>,
        /// Probability of replacing each label by its null label (default 0.1 on conditional
        /// models).
        #[arg(long)]
        p_uncond: Option<f64>,
        /// Largest decay of the EMA of the weights, which is what is saved (default 0.999).
        #[arg(long)]
        ema: Option<f64>,
        /// What the network predicts (default epsilon).
        #[arg(long, value_enum)]
        prediction: Option<PredictionArg>,
        /// A checkpoint every this many steps (default 500; 0: only at the end).
        #[arg(long)]
        checkpoint_every: Option<u64>,
        /// Global gradient-norm bound (default 1; 0: no clipping).
        #[arg(long)]
        clip: Option<f64>,
        /// Continue the run whose checkpoint is in --out (bit-identical to an uninterrupted one).
        #[arg(long)]
        resume: bool,
        /// Worker threads (default: all cores; at most 1024). The weights do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Run a diffusers UNet2DModel on the inputs of a safetensors file and write its output.
    Denoise {
        /// Folder with config.json and diffusion_pytorch_model.safetensors.
        #[arg(long)]
        model: PathBuf,
        /// safetensors with `sample` (B, C, H, W), `timestep` (B) and optional `class_labels` (B).
        #[arg(long)]
        input: PathBuf,
        /// safetensors to write, holding tensor `out`.
        #[arg(long)]
        output: PathBuf,
        /// Where to run the network (auto: the GPU when one opens).
        #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
        device: DeviceArg,
        /// Weight storage of the network on the GPU (bf16: half the bytes, f32 accumulation).
        #[arg(long, value_enum, default_value_t = StorageArg::F32)]
        storage: StorageArg,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BenchWhat {
    Gemm,
    Conv,
    Unet,
    Mixture,
    SdeStep,
}

/// `--sampler`: every kind of [`infodiff::diffusion::SamplerKind`] by its config name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum SamplerArg {
    Ddpm,
    Ddim,
    Euler,
    EulerAncestral,
    Heun,
    #[value(name = "dpmpp_2m")]
    Dpmpp2m,
    #[value(name = "dpmpp_2m_sde")]
    Dpmpp2mSde,
    #[value(name = "dpmpp_3m_sde")]
    Dpmpp3mSde,
    Ancestral,
    EulerMaruyama,
    HeunOde,
}

impl SamplerArg {
    fn kind(self) -> SamplerKind {
        match self {
            SamplerArg::Ddpm => SamplerKind::Ddpm { clip: None },
            SamplerArg::Ddim => SamplerKind::Ddim {
                eta: 0.0,
                clip: None,
            },
            SamplerArg::Euler => SamplerKind::Euler,
            SamplerArg::EulerAncestral => SamplerKind::EulerAncestral,
            SamplerArg::Heun => SamplerKind::Heun,
            SamplerArg::Dpmpp2m => SamplerKind::Dpmpp2m,
            SamplerArg::Dpmpp2mSde => SamplerKind::Dpmpp2mSde,
            SamplerArg::Dpmpp3mSde => SamplerKind::Dpmpp3mSde,
            SamplerArg::Ancestral => SamplerKind::Ancestral {
                variance: Default::default(),
            },
            SamplerArg::EulerMaruyama => SamplerKind::EulerMaruyama,
            SamplerArg::HeunOde => SamplerKind::HeunOde,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ScheduleArg {
    Constant,
    Cosine,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
enum PredictionArg {
    Epsilon,
    VPrediction,
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum SpacingArg {
    Linspace,
    Leading,
    Trailing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StorageArg {
    F32,
    Bf16,
}

/// The GPU and its weight storage, or None on the CPU (where only f32 exists).
fn gpu_storage(
    dev: &Device,
    storage: StorageArg,
) -> Result<Option<(&infodiff::backend::Gpu, Storage)>, Error> {
    match (dev, storage) {
        (Device::Cuda(g), StorageArg::F32) => Ok(Some((g, Storage::F32))),
        (Device::Cuda(g), StorageArg::Bf16) => Ok(Some((g, Storage::Bf16))),
        (Device::Cpu { .. }, StorageArg::F32) => Ok(None),
        (Device::Cpu { .. }, StorageArg::Bf16) => Err(Error::config(
            "--storage",
            "f32 on the CPU (bf16 weights are a GPU option)",
            "bf16",
        )),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    Auto,
    Cpu,
    Cuda,
}

/// Opens the device asked for and says on stderr which one is used (see
/// [`app::runner::open_device`]).
fn open_device(arg: DeviceArg, what: &str, gpu_path: bool) -> Result<Device, Error> {
    let choice = match arg {
        DeviceArg::Auto => DeviceChoice::Auto,
        DeviceArg::Cpu => DeviceChoice::Cpu,
        DeviceArg::Cuda => DeviceChoice::Cuda,
    };
    let dev = app::runner::open_device(choice, what, gpu_path)?;
    eprintln!("infodiff: {}", dev.describe());
    Ok(dev)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_signal_handlers();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("infodiff: error: {e}");
            if let Some(sig) = app::sample::interrupted_by().or(app::train::interrupted_by()) {
                // Die of the signal as if unhandled, now that the temporaries are gone.
                // SAFETY: resetting a handler and raising a signal.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
            }
            if e.is_bad_input() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// SIGINT, SIGTERM, SIGHUP: remove the temporaries of outputs being written, then die of the
/// signal as if unhandled.
extern "C" fn on_signal(sig: libc::c_int) {
    // A sampling run stops at its next step and removes its own temporaries (a second signal
    // ends it at once).
    if app::sample::request_interrupt(sig) || app::train::request_interrupt(sig) {
        return;
    }
    infodiff::io::atomic::remove_temporaries();
    // SAFETY: signal and raise are async-signal-safe.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: on_signal only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

/// Most worker threads `--threads` starts (each reserves a stack and per-worker buffers).
const MAX_THREADS: usize = 1024;

/// Progress on stderr: a bar on a terminal, otherwise a plain line every
/// `INFODIFF_PROGRESS_INTERVAL` seconds (default 10) and one at the end.
enum Progress {
    Bar(ProgressBar),
    Lines {
        unit: &'static str,
        total: u64,
        done: AtomicU64,
        start: Instant,
        every: Duration,
        last: Mutex<Instant>,
    },
}

impl Progress {
    /// Progress over `total` items called `unit` (trajectories, samples).
    fn new(total: u64, unit: &'static str) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bar:40} {pos}/{len} {msg} ({per_sec}, eta {eta})",
                )
                .expect("valid template"),
            );
            bar.set_message(unit);
            return Progress::Bar(bar);
        }
        let every = std::env::var("INFODIFF_PROGRESS_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(10.0);
        let now = Instant::now();
        Progress::Lines {
            unit,
            total,
            done: AtomicU64::new(0),
            start: now,
            every: Duration::from_secs_f64(every.min(1e6)),
            last: Mutex::new(now),
        }
    }
    fn tick(&self, n: usize) {
        match self {
            Progress::Bar(b) => b.inc(n as u64),
            Progress::Lines {
                unit,
                total,
                done,
                start,
                every,
                last,
            } => {
                let d = done.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
                let Ok(mut last) = last.lock() else { return };
                if last.elapsed() < *every || d >= *total {
                    return; // the final line comes from finish()
                }
                *last = Instant::now();
                let el = start.elapsed().as_secs_f64();
                let eta = el * (*total - d.min(*total)) as f64 / d.max(1) as f64;
                eprintln!(
                    "infodiff: progress: {d}/{total} {unit} ({:.1}%), {el:.1} s, eta {eta:.1} s",
                    100.0 * d as f64 / *total as f64
                );
            }
        }
    }
    fn finish(&self) {
        match self {
            Progress::Bar(b) => b.finish_and_clear(),
            Progress::Lines {
                unit,
                total,
                done,
                start,
                ..
            } => eprintln!(
                "infodiff: progress: {}/{total} {unit}, done in {:.1} s",
                done.load(Ordering::Relaxed),
                start.elapsed().as_secs_f64()
            ),
        }
    }
}

/// `--threads`: the global pool's size (default: all cores).
fn set_threads(threads: Option<usize>) -> Result<(), Error> {
    if let Some(t) = threads {
        if t == 0 || t > MAX_THREADS {
            return Err(Error::config(
                "--threads",
                format!("a whole number in 1..={MAX_THREADS}"),
                t,
            ));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| Error::Unsupported {
                op: "--threads",
                reason: e.to_string(),
            })?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Sample {
            model,
            sampler,
            steps,
            spacing,
            karras,
            log_snr,
            eta,
            class,
            classes,
            guidance,
            num,
            batch,
            seed,
            init,
            device,
            threads,
            no_images,
            out,
        } => {
            use infodiff::app::sample::{SampleOptions, sample};
            set_threads(threads)?;
            let (classes, classes_option) = match class {
                Some(c) => (vec![c], "--class"),
                None => (classes, "--classes"),
            };
            let opts = SampleOptions {
                model,
                sampler: sampler.map(SamplerArg::kind),
                eta,
                steps,
                spacing: spacing.map(|s| match s {
                    SpacingArg::Linspace => Spacing::Linspace,
                    SpacingArg::Leading => Spacing::Leading,
                    SpacingArg::Trailing => Spacing::Trailing,
                }),
                sigmas: match (karras, log_snr) {
                    (true, _) => SigmaGrid::Karras,
                    (_, true) => SigmaGrid::UniformLogSnr,
                    _ => SigmaGrid::Scheduler,
                },
                classes,
                classes_option,
                guidance,
                num,
                batch,
                seed,
                init,
                images: !no_images,
                out: out.clone(),
            };
            // The network runs on the CPU (the sample loop has no GPU path yet).
            open_device(device, "sample", false)?;
            // The bar starts with the first batch, when N is known (it may come from --init).
            let progress = std::sync::OnceLock::new();
            let tick = |n: usize, total: usize| {
                progress
                    .get_or_init(|| Progress::new(total as u64, "samples"))
                    .tick(n)
            };
            let summary = sample(&opts, Some(&tick), &|note| {
                eprintln!("infodiff: note: {note}")
            })?;
            if let Some(p) = progress.get() {
                p.finish();
            }
            println!(
                "{} samples in {:.2} s ({:.2} samples/s; network {:.2} s, other {:.2} s)",
                summary.samples,
                summary.wall_s,
                summary.samples_per_s,
                summary.network_s,
                summary.overhead_s
            );
            println!("wrote {}/{}", out.display(), summary.files.join(", "));
            Ok(())
        }
        Command::Bench {
            what,
            model,
            batch,
            size,
            json,
            profile,
            device,
            trajectories,
            steps,
            storage,
        } => {
            use infodiff::app::bench;
            // Sizes are bounded before anything is allocated.
            let within = |name: &str, v: usize, hi: usize| -> Result<(), Error> {
                if v == 0 || v > hi {
                    return Err(Error::config(
                        name,
                        format!("a whole number in 1..={hi}"),
                        v,
                    ));
                }
                Ok(())
            };
            within("--batch", batch.unwrap_or(1), 4096)?;
            within("--size", size, 16384)?;
            within(
                "--trajectories",
                trajectories.unwrap_or(1),
                app::MAX_TRAJECTORIES,
            )?;
            within("--steps", steps, app::MAX_STEPS)?;
            let gpu_path = matches!(
                what,
                BenchWhat::Mixture | BenchWhat::SdeStep | BenchWhat::Unet
            );
            let dev = open_device(device, &format!("bench {what:?}").to_lowercase(), gpu_path)?;
            let gpu = match &dev {
                Device::Cuda(g) => Some(g),
                Device::Cpu { .. } => None,
            };
            let r = match what {
                BenchWhat::Gemm => bench::gemm(size)?,
                BenchWhat::Conv => bench::conv(batch.unwrap_or(16))?,
                BenchWhat::Unet => bench::unet_on(
                    gpu_storage(&dev, storage)?,
                    model.as_deref(),
                    batch.unwrap_or(64),
                    profile,
                )?,
                BenchWhat::Mixture => {
                    let n = trajectories.unwrap_or(if gpu.is_some() { 1_000_000 } else { 20_000 });
                    bench::mixture(gpu, n, steps)?
                }
                BenchWhat::SdeStep => bench::sde_step(gpu, batch.unwrap_or(256), 10, 3 * 32 * 32)?,
            };
            if json {
                println!("{}", serde_json::to_string(&r).expect("serialisable"));
            } else {
                print!("{}: {:.4} s", r.what, r.seconds);
                if let Some(g) = r.gflops {
                    print!(", {g:.1} GFLOP/s");
                }
                if let Some(i) = r.images_per_s {
                    print!(", {i:.2} images/s");
                }
                if let Some(t) = r.trajectory_steps_per_s {
                    print!(", {t:.3e} trajectory-steps/s");
                }
                if let Some(b) = r.gbytes_per_s {
                    print!(", {b:.1} GB/s");
                }
                println!();
                if let Some(ops) = &r.profile {
                    let total: f64 = ops.iter().map(|o| o.seconds).sum();
                    println!("profile of one more forward ({total:.4} s in the ops below):");
                    for o in ops {
                        println!(
                            "  {:<16} {:>9.4} s {:>5.1}% {:>6} calls",
                            o.op,
                            o.seconds,
                            100.0 * o.seconds / total,
                            o.calls
                        );
                    }
                }
            }
            Ok(())
        }
        Command::Train {
            data,
            out,
            unet,
            steps,
            batch,
            lr,
            warmup,
            schedule,
            seed,
            p_uncond,
            ema,
            prediction,
            checkpoint_every,
            clip,
            resume,
            threads,
        } => {
            use infodiff::app::train::{TrainBar, TrainOptions, train};
            use infodiff::train::loss::PredictionType;
            use infodiff::train::optim::LrSchedule;
            set_threads(threads)?;
            let opts = TrainOptions {
                unet,
                steps,
                batch,
                lr,
                warmup,
                schedule: schedule.map(|s| match s {
                    ScheduleArg::Constant => LrSchedule::Constant,
                    ScheduleArg::Cosine => LrSchedule::Cosine,
                }),
                seed,
                p_uncond,
                ema,
                prediction: prediction.map(|p| match p {
                    PredictionArg::Epsilon => PredictionType::Epsilon,
                    PredictionArg::VPrediction => PredictionType::VPrediction,
                    PredictionArg::Sample => PredictionType::Sample,
                }),
                checkpoint_every,
                clip,
                resume,
                ..TrainOptions::new(&data, out.clone())
            };
            let bar = TrainBar::new(std::io::stderr().is_terminal());
            let summary = train(&opts, Some(&|p| bar.tick(p)), &|note| {
                eprintln!("infodiff: note: {note}")
            });
            bar.finish();
            let summary = summary?;
            println!(
                "{} steps ({} this run) in {:.2} s ({:.1} images/s); final loss {:.5} (mean of the last 100 steps); {} parameters",
                summary.steps,
                summary.run_steps,
                summary.wall_s,
                summary.images_per_s,
                summary.final_loss,
                summary.params
            );
            println!("wrote {}/{}", out.display(), summary.files.join(", "));
            Ok(())
        }
        Command::Denoise {
            model,
            input,
            output,
            device,
            storage,
        } => {
            let dev = open_device(device, "denoise", true)?;
            let gpu = gpu_storage(&dev, storage)?;
            infodiff::app::denoise::denoise_file_on(&model, &input, &output, gpu)?;
            println!("wrote {}", output.display());
            Ok(())
        }
        Command::Measure {
            config,
            out,
            trajectories,
            steps,
            seed,
            threads,
            model,
            guidance,
            classes,
            probes,
            print_default_config,
            device,
        } => {
            if print_default_config {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&app::default_config().to_json())
                        .expect("serialisable")
                );
                return Ok(());
            }
            // The pool first: validation estimates memory per worker thread.
            set_threads(threads)?;
            if let Some(dir) = &model
                && dir.to_str().is_none()
            {
                return Err(Error::config(
                    "--model",
                    "a UTF-8 path (it is recorded in summary.json)",
                    dir.display(),
                ));
            }
            let file = match &config {
                Some(path) => {
                    let text = infodiff::io::read_text(path)?;
                    Config::from_json_str(&text, &path.display().to_string())?
                }
                None => app::default_config(),
            };
            let overrides = app::Overrides {
                model,
                trajectories,
                steps,
                seed,
                probes,
            };
            let cfg = file
                .with_overrides(&overrides, config.is_some())?
                .with_guidance(guidance, classes.as_deref())?;
            // The destination is checked, and its temporary folder made, before the run.
            let dest = infodiff::io::atomic::OutputSet::prepare(&out)?;
            let grid = cfg.grid()?;
            let classes = cfg.spec()?.classes();
            let est = app::estimate(&cfg, &grid, classes, rayon::current_num_threads())?;
            eprintln!("infodiff: {}", est.describe());
            let progress = Progress::new(cfg.trajectories as u64, "trajectories");
            let tick = |n: usize| progress.tick(n);
            // GPU paths: the fused mixture kernel (unguided one-step online-classifier samplers),
            // or the network.
            let gpu_path = app::runner::has_gpu_path(&cfg);
            let what = "measure with this sampler (the generic engine)";
            let dev = open_device(device, what, gpu_path)?;
            let (gpu, why_cpu) = app::runner::gpu_for(&cfg, &dev, device == DeviceArg::Auto);
            if let Some(why) = why_cpu {
                eprintln!("infodiff: running on the CPU instead: {why}");
            }
            let report = app::run_on(&cfg, gpu, None, Some(&tick))?;
            progress.finish();
            for w in report.warnings() {
                eprintln!("infodiff: warning: {w}");
            }
            report.write_to(dest)?;
            print!("{}", report.table());
            println!(
                "wrote {}/curves.csv, summary.json, entropy.svg",
                out.display()
            );
            Ok(())
        }
    }
}
