//! Running a job: which engine computes the trajectories (the fused SIMD or CUDA mixture kernel,
//! the generic sampler loop, the device-resident neural loop), falling back from the GPU where
//! its kernels cannot take the job's shape ([`gpu_limit`]), and what a job is expected to take
//! ([`estimate`]: peak memory and CPU time).

use std::time::Instant;

use crate::backend::{Device, DeviceChoice};
use crate::diffusion::Grid;
use crate::error::{Error, Result};
use crate::fused::mixture_trajectory::{self, MixturePlan};
use crate::info::{Curves, MeasureOptions, Tracking, measure_run};
use crate::rng::Noise;
use crate::score::ScoreModel;
use crate::simd::{IsaKind, detected};

use super::config::Config;
use super::report::{Report, check_results};

/// Which implementation ran the trajectories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The fused SIMD mixture kernel (stochastic samplers).
    Fused(IsaKind),
    /// The fused mixture kernel on the GPU (kernels/mixture_trajectory.cu).
    FusedCuda,
    /// The generic sampler loop with the information observer (any sampler and model; a
    /// network runs on the CPU).
    Generic,
    /// The device-resident neural loop on the GPU (`cuda::neural`: the U-Net and the fused
    /// step `kernels/sde_step.cu` on the device, the observer's sums built from its records).
    NeuralCuda,
}

impl Engine {
    pub fn name(&self) -> String {
        match self {
            Engine::Fused(k) => format!("fused ({})", k.name()),
            Engine::FusedCuda => "fused (cuda)".into(),
            Engine::Generic => "generic".into(),
            Engine::NeuralCuda => "device-resident neural (cuda)".into(),
        }
    }
}

/// Opens the device asked for. `gpu_path`: whether the command has GPU kernels; without,
/// `Cuda` is refused and `Auto` runs on the CPU, saying so in the device's description.
/// `what` names the command in those words.
pub fn open_device(choice: DeviceChoice, what: &str, gpu_path: bool) -> Result<Device> {
    if !gpu_path && choice != DeviceChoice::Cpu {
        if choice == DeviceChoice::Cuda {
            return Err(Error::Unsupported {
                op: "--device cuda",
                reason: format!("{what} has no GPU path in this version; use --device cpu or auto"),
            });
        }
        return Ok(Device::Cpu {
            why_not_gpu: Some(crate::backend::Unavailable::new(format!(
                "{what} runs on the CPU in this version"
            ))),
        });
    }
    Device::open(choice).map_err(|e| Error::Unsupported {
        op: "--device cuda",
        reason: e.to_string(),
    })
}

/// The GPU job `cfg` runs on from `dev`, and why it runs on the CPU instead where `auto` is
/// set and the job is past a GPU kernel's shape limits ([`gpu_limit`]); without `auto` (the
/// GPU named) the run goes on and fails with the kernel's own refusal.
pub fn gpu_for<'a>(
    cfg: &Config,
    dev: &'a Device,
    auto: bool,
) -> (Option<&'a crate::backend::Gpu>, Option<String>) {
    let gpu = match dev {
        Device::Cuda(g) => g,
        Device::Cpu { .. } => return (None, None),
    };
    match gpu_limit(cfg) {
        Some(why) if auto => (None, Some(why)),
        _ => (Some(gpu), None),
    }
}

/// Runs a job on the current rayon pool. `progress` receives finished trajectory counts.
pub fn run(
    cfg: &Config,
    engine: Option<Engine>,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<Report> {
    run_on(cfg, None, engine, progress)
}

/// Why the fused kernels (the mixture kernel on SIMD or CUDA, the device-resident neural step)
/// cannot run job `cfg`'s paths, if they cannot: they take unguided one-step linear-Gaussian
/// transitions only (x' = a·x + c·s + √var·z from the two grid points) and track the online
/// classifier. The generic engine (the sampler loop with the observer) runs everything else.
pub fn fused_refusal(cfg: &Config) -> Option<String> {
    let plan = cfg.plan().ok()?;
    let sampler = plan.sampler;
    if !sampler.supports_online_classifier() {
        return Some(format!(
            "the fused kernels run the online classifier, which {} does not take",
            sampler.name()
        ));
    }
    if let Some(g) = &cfg.guidance {
        return Some(format!(
            "the fused kernels draw unguided paths; this job is guided (W = {})",
            g.scale
        ));
    }
    let pts = &plan.grid.points;
    let steps = plan.grid.steps();
    let one_step = (0..steps).all(|j| {
        sampler
            .transition(&pts[j], plan.grid.target(j), j + 1 == steps)
            .is_some_and(|tr| tr.one_term().is_some())
    });
    if !one_step {
        return Some(format!(
            "the fused kernels take one-step linear-Gaussian transitions only; {}'s mean also \
             takes earlier steps' scores (multistep)",
            sampler.name()
        ));
    }
    None
}

/// Whether job `cfg` has a GPU path: a network (the device-resident loop, or the CPU when the
/// GPU's kernels cannot take it, [`gpu_limit`]), or a mixture the fused kernel takes
/// ([`fused_refusal`]). `measure --device cuda` is refused for a job without one.
pub fn has_gpu_path(cfg: &Config) -> bool {
    cfg.model.is_some() || fused_refusal(cfg).is_none()
}

/// Why the GPU's kernels cannot run job `cfg` (a shape past a kernel's limits, or paths the
/// fused kernels do not draw), if they cannot: `--device auto` then runs it on the CPU, saying
/// this. None: the GPU path takes it (or the job has no GPU path at all, [`has_gpu_path`]).
pub fn gpu_limit(cfg: &Config) -> Option<String> {
    if let Some(md) = &cfg.model_dir {
        use crate::fused::sde_step::{MAX_CLASSES, MAX_PARTITIONS};
        let spec = cfg.spec().ok()?;
        let (k, np) = (spec.classes(), spec.partitions.len());
        if k > MAX_CLASSES {
            return Some(format!(
                "the fused neural step takes at most {MAX_CLASSES} classes, this model has {k}"
            ));
        }
        if np > MAX_PARTITIONS {
            return Some(format!(
                "the fused neural step records at most {MAX_PARTITIONS} decision problems, this job has {np}"
            ));
        }
        if md.scheduler.prediction != crate::diffusion::Prediction::Epsilon {
            return Some(format!(
                "the fused neural step takes ε-prediction networks; this one predicts {:?}",
                md.scheduler.prediction
            ));
        }
        if let Some(why) = fused_refusal(cfg) {
            return Some(why);
        }
        // The device loop starts from N(0, (s_T² + σ_T²) I); a diffusers start that differs
        // (EulerDiscrete's init_noise_sigma with `leading` spacing) runs on the CPU.
        let plan = cfg.plan().ok()?;
        let p0 = plan.grid.points[0];
        let default = (p0.s * p0.s + p0.sigma * p0.sigma).sqrt();
        return plan
            .init_scale
            .filter(|s| (s - default).abs() > 1e-12 * default)
            .map(|s| {
                format!(
                    "the device loop starts from N(0, {default}²), this scheduler from N(0, {s}²)"
                )
            });
    }
    if !cfg.sampler.supports_online_classifier() {
        return None;
    }
    if let Some(why) = fused_refusal(cfg) {
        return Some(why);
    }
    // The job's shape against the kernel's per-thread arrays (no plan is built for this).
    let m = cfg.mixture().ok()?;
    let spec = cfg.spec().ok()?;
    crate::fused::mixture_trajectory::gpu_shape_limit([
        m.dim(),
        spec.classes(),
        m.components().len(),
        spec.partitions.len(),
    ])
}

/// [`run`] with a GPU: the fused mixture kernel runs there (online-classifier samplers with
/// one-step transitions, unguided), and a network (`model`) runs device-resident
/// (`cuda::neural`: the U-Net, the probe rows and the fused step on the device); the generic
/// engine (deterministic, multistep or guided paths) stays on the CPU, and is refused with a
/// GPU given (the caller's `--device auto` falls back before, [`gpu_limit`]).
pub fn run_on(
    cfg: &Config,
    gpu: Option<&crate::backend::Gpu>,
    engine: Option<Engine>,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<Report> {
    let spec = cfg.spec()?;
    let plan = cfg.plan()?;
    let grid = &plan.grid;
    let noise = Noise::new(cfg.seed);
    let fused_why = fused_refusal(cfg);
    let mut notes = vec![];
    if let Some(md) = &cfg.model_dir {
        notes.push(format!(
            "model {}: process and prediction type ({:?}) from {}; grid: {}",
            md.root.display(),
            md.scheduler.prediction,
            md.scheduler_file
                .as_ref()
                .map_or("the bare UNet2DModel's default DDPMScheduler".into(), |f| f
                    .display()
                    .to_string()),
            plan.grid_from
        ));
    } else {
        notes.push(format!("grid: {}", plan.grid_from));
    }
    if plan.sampler != cfg.sampler {
        notes.push(format!(
            "the sampler ran as the scheduler config sets it: {:?}",
            plan.sampler
        ));
    }
    if let Some(g) = &cfg.guidance {
        notes.push(guidance_note(g));
    }
    let tracking = if plan.sampler.supports_online_classifier() {
        Tracking::Online
    } else {
        Tracking::Exact
    };
    if let Some(n) = super::report::tracking_note(&plan.sampler) {
        notes.push(n);
    }
    let opts = MeasureOptions {
        guidance: cfg.guidance.as_ref(),
        init_scale: plan.init_scale,
        progress,
    };
    if let Some(md) = &cfg.model_dir {
        let net = crate::score::unet::UNetScore::load_with(&md.unet, md.scheduler.prediction)?;
        let start = Instant::now();
        let sums = match gpu {
            Some(g) => {
                if let Some(why) = gpu_limit(cfg) {
                    return Err(Error::Unsupported {
                        op: "measure (device)",
                        reason: format!("{why} (use --device cpu or auto)"),
                    });
                }
                // Network, states and classifier on the GPU; one download per batch of 64.
                crate::fused::neural::measure_on_gpu(
                    g,
                    &net,
                    &spec,
                    grid,
                    &plan.sampler,
                    noise,
                    cfg.trajectories,
                    64,
                    cfg.probes,
                    progress,
                )?
            }
            // Batches of 8 trajectories: each step is one forward of 8·(K+1) images (and one
            // of 8·2N null-label probe images for the Hutchinson divergence).
            None => {
                if let Some(why) = &fused_why {
                    notes.push(format!("CPU sampler loop ({why})"));
                }
                let hutch;
                let model: &dyn crate::score::ScoreModel = if cfg.probes > 0 {
                    hutch = crate::score::Hutchinson::new(&net, cfg.probes)?;
                    &hutch
                } else {
                    &net
                };
                measure_run(
                    model,
                    &spec,
                    grid,
                    &plan.sampler,
                    noise,
                    0,
                    cfg.trajectories,
                    MODEL_BATCH as usize,
                    Tracking::Online,
                    &opts,
                )?
            }
        };
        let wall_s = start.elapsed().as_secs_f64();
        let curves = Curves::from_sums(&sums, &spec, grid, Tracking::Online);
        check_results(&curves)?;
        return Ok(Report {
            config: cfg.clone(),
            curves,
            engine: if gpu.is_some() {
                Engine::NeuralCuda
            } else {
                Engine::Generic
            },
            wall_s,
            trajectory_steps_per_s: (cfg.trajectories * grid.steps()) as f64 / wall_s,
            threads: rayon::current_num_threads(),
            sampler: plan.sampler,
            notes,
        });
    }
    let mixture = cfg.mixture()?;
    let engine = match engine {
        Some(e) => e,
        None if fused_why.is_some() => Engine::Generic,
        None if gpu.is_some() => Engine::FusedCuda,
        None => Engine::Fused(detected()),
    };
    match (&engine, &fused_why) {
        (Engine::Fused(_) | Engine::FusedCuda, Some(why)) => {
            return Err(Error::Unsupported {
                op: "measure (fused engine)",
                reason: format!("{why} (the generic engine runs this job on the CPU)"),
            });
        }
        (Engine::Generic, Some(why)) => {
            if gpu.is_some() {
                return Err(Error::Unsupported {
                    op: "measure (device)",
                    reason: format!("{why} (use --device cpu or auto)"),
                });
            }
            notes.push(format!("generic engine: {why}"));
        }
        _ => {}
    }
    let start = Instant::now();
    let sums = match engine {
        Engine::Fused(kind) => {
            let plan = MixturePlan::new(&mixture, &spec, grid, &plan.sampler, noise)?;
            mixture_trajectory::run_with_progress(&plan, kind, 0, cfg.trajectories, None, progress)?
        }
        Engine::FusedCuda => {
            let gpu = gpu.ok_or_else(|| Error::Unsupported {
                op: "measure",
                reason: "the fused CUDA engine needs an opened GPU".into(),
            })?;
            let plan = MixturePlan::new(&mixture, &spec, grid, &plan.sampler, noise)?;
            let sums =
                crate::fused::mixture_trajectory::cuda::run(gpu, &plan, 0, cfg.trajectories, None)?;
            if let Some(p) = progress {
                p(cfg.trajectories);
            }
            sums
        }
        Engine::NeuralCuda => {
            return Err(Error::Unsupported {
                op: "measure",
                reason: "the device-resident neural engine runs networks (`model`), not mixtures"
                    .into(),
            });
        }
        Engine::Generic => measure_run(
            &mixture,
            &spec,
            grid,
            &plan.sampler,
            noise,
            0,
            cfg.trajectories,
            GENERIC_BATCH as usize,
            tracking,
            &opts,
        )?,
    };
    let wall_s = start.elapsed().as_secs_f64();
    let curves = Curves::from_sums(&sums, &spec, grid, tracking);
    check_results(&curves)?;
    Ok(Report {
        config: cfg.clone(),
        curves,
        engine,
        wall_s,
        trajectory_steps_per_s: (cfg.trajectories * grid.steps()) as f64 / wall_s,
        threads: rayon::current_num_threads(),
        sampler: plan.sampler,
        notes,
    })
}

/// What a guided job's curves are (see [`crate::info::observer`]).
fn guidance_note(g: &crate::info::Guidance) -> String {
    let labels: Vec<String> = g.classes.iter().map(|c| c.to_string()).collect();
    let what = if g.scale == 0.0 {
        "W = 0 is unconditional sampling".to_string()
    } else if g.scale == 1.0 {
        "W = 1 is class-conditional sampling: with the labels in the prior's proportions, \
         (label, path) is the model's own joint and the curves are its H(Y|X_t)"
            .to_string()
    } else {
        format!(
            "at W = {} the path law is not the model's: the curves are the model's posterior \
             p(y | path) along guided paths (how recognisably guidance makes them its class), \
             not an entropy of the model's joint",
            g.scale
        )
    };
    format!(
        "guided paths: ŝ = s + W·(s(·|y*) − s) with W = {}, y* cycled over classes [{}]; the \
         online update scores each step against the model's class-conditional transitions \
         (x' − μ_uncond includes the guidance drift); {what}",
        g.scale,
        labels.join(", ")
    )
}

/// Trajectories per chunk of the fused kernel, per batch of the generic engine and of a network
/// on the CPU (the batches [`run_on`] uses; [`estimate`] sizes memory by them).
const FUSED_CHUNK: u64 = 128;
const GENERIC_BATCH: u64 = 256;
const MODEL_BATCH: u64 = 8;

/// What a job is expected to take.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Peak memory, bytes (an upper estimate).
    pub bytes: u64,
    /// Wall time on this machine's CPU, where a rate is known (not for networks).
    pub seconds: Option<f64>,
    /// Trajectory-steps of the job.
    pub trajectory_steps: u64,
}

pub(super) fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

impl Estimate {
    /// One line for stderr.
    pub fn describe(&self) -> String {
        let t = match self.seconds {
            Some(s) => format!("about {s:.1} s on the CPU"),
            None => "time: see the progress lines".into(),
        };
        format!(
            "estimate: {} trajectory-steps, {t}, peak memory about {}",
            self.trajectory_steps,
            if self.bytes < 1 << 30 {
                format!("{:.1} MiB", self.bytes as f64 / (1u64 << 20) as f64)
            } else {
                gib(self.bytes)
            }
        )
    }
}

/// The memory and time `cfg` needs with `threads` workers and `classes` classes.
pub fn estimate(cfg: &Config, grid: &Grid, classes: usize, threads: usize) -> Result<Estimate> {
    let (p, k, t) = (
        grid.points.len() as u64,
        classes as u64,
        threads.max(1) as u64,
    );
    let parts = cfg.partitions.len() as u64;
    // Per-point f64 sums (over-estimated columns) kept per worker plus the total.
    let sums = p
        .saturating_mul(32 + 4 * k + 4 * parts)
        .saturating_mul(8)
        .saturating_mul(2 * t + 1);
    let trail = |batch: u64| {
        p.saturating_mul(batch)
            .saturating_mul(1 + k)
            .saturating_mul(4)
            .saturating_mul(t)
    };
    // The observer's earlier steps' Δ_y for multistep transitions, f64. (J, B, K, D) per worker
    let history = |batch: u64, d: u64| {
        (crate::diffusion::sampler::MAX_EARLIER_TERMS as u64)
            .saturating_mul(batch)
            .saturating_mul(k)
            .saturating_mul(d)
            .saturating_mul(8)
            .saturating_mul(t)
    };
    let steps = (cfg.trajectories as u64).saturating_mul(grid.steps() as u64);
    let (bytes, seconds) = match &cfg.model_dir {
        Some(md) => {
            let dir = &md.unet;
            let net = crate::nn::unet::UNetConfig::load(dir)?;
            let size = net.sample_size.unwrap_or(1);
            let images = (MODEL_BATCH as usize).saturating_mul(classes + 1);
            let fwd = net
                .forward_bytes(images, size, size, threads)
                .saturating_mul(t);
            let weights = std::fs::metadata(dir.join("diffusion_pytorch_model.safetensors"))
                .map(|m| m.len().saturating_mul(2))
                .unwrap_or(0);
            let d = (net.in_channels as u64).saturating_mul((size as u64).saturating_pow(2));
            (
                trail(MODEL_BATCH)
                    .saturating_add(history(MODEL_BATCH, d))
                    .saturating_add(sums)
                    .saturating_add(fwd)
                    .saturating_add(weights),
                None,
            )
        }
        None => {
            let d = cfg.components.first().map_or(1, |c| c.mean.len()) as f64;
            // Work per trajectory-step relative to the default job (4 point masses, D = 1).
            let work = ((cfg.components.len() as f64 * d + classes as f64) / 8.0).max(1.0);
            let (batch, rate) = if fused_refusal(cfg).is_none() {
                (FUSED_CHUNK, 1.0e8) // per thread, README: 2.1e8 on 2 threads
            } else {
                (GENERIC_BATCH, 1.6e6) // per thread, README: 3.3e6 on 2 threads
            };
            (
                trail(batch)
                    .saturating_add(history(batch, d as u64))
                    .saturating_add(sums),
                Some(steps as f64 * work / (rate * t as f64)),
            )
        }
    };
    Ok(Estimate {
        bytes,
        seconds,
        trajectory_steps: steps,
    })
}
