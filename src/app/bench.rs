//! `infodiff bench`: throughput of the engine's own kernels on this machine.

use std::path::Path;
use std::time::Instant;

use crate::error::Result;
use crate::nn::unet::{UNet, UNetConfig};
use crate::ops::gemm::{MatRef, sgemm};
use crate::simd::detected;
use crate::tensor::Tensor;
use crate::tensor::ops::{conv_weight, conv2d_packed};

/// What a benchmark measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub what: String,
    pub seconds: f64,
    pub images_per_s: Option<f64>,
    pub gflops: Option<f64>,
    /// Trajectory-steps per second (mixture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trajectory_steps_per_s: Option<f64>,
    /// Effective memory bandwidth, bytes moved per step / seconds per step (sde-step).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gbytes_per_s: Option<f64>,
    /// Seconds per op kind in one more forward (`--profile`), with call counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<OpTime>>,
}

/// Wall time of one kind of op in a profiled forward.
#[derive(Clone, Debug, serde::Serialize)]
pub struct OpTime {
    pub op: String,
    pub seconds: f64,
    pub calls: u64,
}

/// Best wall time of `reps` runs of `f` after one warm-up.
fn best_of(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn fill(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// Square SGEMM of size n: 2n³ flops.
pub fn gemm(n: usize) -> Result<BenchResult> {
    let (a, b) = (fill(n * n), fill(n * n));
    let mut c = vec![0.0f32; n * n];
    let s = best_of(5, || {
        sgemm(
            detected(),
            MatRef::row_major(&a, n, n),
            MatRef::row_major(&b, n, n),
            &mut c,
            n,
            false,
        )
    })?;
    Ok(BenchResult {
        what: format!("sgemm {n}x{n}x{n} ({})", detected().name()),
        seconds: s,
        images_per_s: None,
        gflops: Some(2.0 * (n as f64).powi(3) / s / 1e9),
        profile: None,
        trajectory_steps_per_s: None,
        gbytes_per_s: None,
    })
}

/// conv2d 3×3, 64→64 channels, 32×32, padding 1: 2·B·64·64·9·32·32 flops. Timed as the U-Net
/// runs it: the weights packed into GEMM panels once ([`crate::tensor::ops::ConvWeight`], as at model load),
/// outside the timed repetitions.
pub fn conv(batch: usize) -> Result<BenchResult> {
    let x = Tensor::new(vec![batch, 64, 32, 32], fill(batch * 64 * 32 * 32))?;
    let w = conv_weight(&Tensor::new(vec![64, 64, 3, 3], fill(64 * 64 * 9))?)?;
    let b = Tensor::new(vec![64], fill(64))?;
    let s = best_of(5, || conv2d_packed(&x, &w, Some(&b), 1, [1; 4]).map(|_| ()))?;
    let flops = 2.0 * batch as f64 * 64.0 * 64.0 * 9.0 * 32.0 * 32.0;
    Ok(BenchResult {
        what: format!("conv2d 3x3 64->64 32x32 batch {batch} (weights packed at load)"),
        seconds: s,
        images_per_s: Some(batch as f64 / s),
        gflops: Some(flops / s / 1e9),
        profile: None,
        trajectory_steps_per_s: None,
        gbytes_per_s: None,
    })
}

/// The full U-Net forward on a batch: the model in `dir`, or the DDPM CIFAR-10 architecture with
/// random weights.
/// The forward of the U-Net in `dir` (default: the DDPM CIFAR-10 architecture, random weights)
/// on a batch; with `profile`, one more forward is timed op by op.
pub fn unet(dir: Option<&Path>, batch: usize, profile: bool) -> Result<BenchResult> {
    unet_on(None, dir, batch, profile)
}

/// [`unet`] on a GPU when one is given, weights stored as asked (no op profile there:
/// launches are asynchronous).
pub fn unet_on(
    gpu: Option<(&crate::backend::Gpu, crate::backend::Storage)>,
    dir: Option<&Path>,
    batch: usize,
    profile: bool,
) -> Result<BenchResult> {
    let net = match dir {
        Some(d) => UNet::load(d)?,
        None => UNet::random(UNetConfig::ddpm_cifar10(), 0)?,
    };
    let cfg = net.config.clone();
    let size = cfg.sample_size.unwrap_or(32);
    let x = Tensor::new(
        vec![batch, cfg.in_channels, size, size],
        fill(batch * cfg.in_channels * size * size),
    )?;
    let t: Vec<f32> = (0..batch).map(|i| (i * 37 % 1000) as f32).collect();
    let labels: Option<Vec<i64>> = cfg
        .num_class_embeds
        .map(|n| (0..batch).map(|i| (i % n) as i64).collect());
    // Small batches take tens of milliseconds: more repetitions steady their best time.
    let reps = if batch <= 4 { 10 } else { 2 };
    if let Some((g, storage)) = gpu {
        let dev = crate::nn::unet::UNetOn::new(crate::backend::Cuda(g), &net, storage)?;
        // Each forward ends with the download of its output: the time includes the device work.
        let s = best_of(reps.max(5), || {
            dev.forward(&x, &t, labels.as_deref()).map(|_| ())
        })?;
        return Ok(BenchResult {
            what: format!(
                "UNet ({} parameters, {storage:?} weights) batch {batch} on cuda ({})",
                net.parameters(),
                g.describe()
            ),
            seconds: s,
            images_per_s: Some(batch as f64 / s),
            gflops: None,
            profile: None,
            trajectory_steps_per_s: None,
            gbytes_per_s: None,
        });
    }
    let s = best_of(reps, || net.forward(&x, &t, labels.as_deref()).map(|_| ()))?;
    let profile = if profile {
        crate::nn::profile::enable(true);
        let run = net.forward(&x, &t, labels.as_deref());
        crate::nn::profile::enable(false);
        run?;
        let ops = crate::nn::profile::collected();
        Some(
            ops.into_iter()
                .map(|(op, seconds, calls)| OpTime {
                    op: op.to_string(),
                    seconds,
                    calls,
                })
                .collect(),
        )
    } else {
        None
    };
    let what = match dir {
        Some(d) => format!(
            "UNet {} ({} parameters) batch {batch}",
            d.display(),
            net.parameters()
        ),
        None => format!(
            "UNet DDPM CIFAR-10 architecture ({} parameters, random weights) batch {batch}",
            net.parameters()
        ),
    };
    Ok(BenchResult {
        what,
        seconds: s,
        images_per_s: Some(batch as f64 / s),
        gflops: None,
        profile,
        trajectory_steps_per_s: None,
        gbytes_per_s: None,
    })
}

/// The fused mixture kernel on the default job's mixture, decision problems and schedule, with
/// `trajectories` × `steps`: on the GPU when one is given, else the CPU's SIMD kernel.
pub fn mixture(
    gpu: Option<&crate::backend::Gpu>,
    trajectories: usize,
    steps: usize,
) -> Result<BenchResult> {
    use crate::fused::mixture_trajectory::{self, MixturePlan};
    let mut v = crate::app::default_config().to_json();
    v["trajectories"] = trajectories.into();
    v["sampler"]["steps"] = steps.into();
    let cfg = crate::app::Config::from_value(&v)?;
    let plan = MixturePlan::new(
        &cfg.mixture()?,
        &cfg.spec()?,
        &cfg.grid()?,
        &cfg.sampler,
        crate::rng::Noise::new(cfg.seed),
    )?;
    let (what, s) = match gpu {
        Some(g) => (
            format!(
                "fused mixture kernel, {trajectories} x {steps} (cuda: {})",
                g.describe()
            ),
            best_of(3, || {
                crate::fused::mixture_trajectory::cuda::run(g, &plan, 0, trajectories, None)
                    .map(|_| ())
            })?,
        ),
        None => (
            format!(
                "fused mixture kernel, {trajectories} x {steps} ({})",
                detected().name()
            ),
            best_of(3, || {
                mixture_trajectory::run(&plan, detected(), 0, trajectories, None).map(|_| ())
            })?,
        ),
    };
    Ok(BenchResult {
        what,
        seconds: s,
        images_per_s: None,
        gflops: None,
        profile: None,
        trajectory_steps_per_s: Some((trajectories * steps) as f64 / s),
        gbytes_per_s: None,
    })
}

/// The fused reverse-SDE step on `batch` states of `dim` values with `classes` + 1 network
/// outputs each (the CIFAR-10 shape by default): seconds per step and the effective bandwidth.
pub fn sde_step(
    gpu: Option<&crate::backend::Gpu>,
    batch: usize,
    classes: usize,
    dim: usize,
) -> Result<BenchResult> {
    use crate::fused::sde_step::{SdeStepParams, sde_step};
    // ε̂ read, x read and written, ln π read and written, the record (5 + 3K values) written
    let width = 5 + 3 * classes;
    let bytes = 4.0
        * (batch * (classes + 1) * dim + 2 * batch * dim + batch * (width + 2 * classes)) as f64;
    let (what, secs) = match gpu {
        Some(g) => {
            let (secs, _) =
                crate::fused::sde_step::cuda::bench_sde_step(g, batch, classes, dim, 200)?;
            let peak = crate::fused::sde_step::cuda::copy_bandwidth(g)?;
            (
                format!(
                    "sde_step (cuda: {}; measured copy bandwidth {:.0} GB/s, the step at {:.0}%)",
                    g.describe(),
                    peak / 1e9,
                    100.0 * bytes / secs / peak
                ),
                secs,
            )
        }
        None => {
            let eps = fill(batch * (classes + 1) * dim);
            let mut x = fill(batch * dim);
            let mut lp = vec![-(classes as f32).ln(); batch * classes];
            let mut rec = vec![0.0f32; batch * width];
            let noise = crate::rng::Noise::new(1);
            let mut step = 0u32;
            let secs = best_of(5, || {
                step += 1;
                let p = SdeStepParams::new(
                    (0.999, 1e-3, 1e-4),
                    0.5,
                    noise,
                    0,
                    step,
                    (batch, classes, dim),
                )?;
                sde_step(detected(), &p, &mut x, &eps, &mut lp, &mut rec)
            })?;
            (format!("sde_step ({})", detected().name()), secs)
        }
    };
    Ok(BenchResult {
        what: format!("{what}, batch {batch}, {classes} classes + null, dim {dim}"),
        seconds: secs,
        images_per_s: None,
        gflops: None,
        profile: None,
        trajectory_steps_per_s: Some(batch as f64 / secs),
        gbytes_per_s: Some(bytes / secs / 1e9),
    })
}
