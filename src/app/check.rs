//! Validation of a job before it runs (sizes, the process's range, the mixture's scale, the
//! memory it needs) and of its results after (every recorded quantity finite, entropies in
//! [0, ln K]).

use crate::diffusion::Grid;
use crate::error::{Error, Result};
use crate::info::Curves;
use crate::score::Component;

use super::Config;

/// Most grid transitions (`process.steps`, `sampler.steps`).
pub const MAX_STEPS: usize = 1_000_000;
/// Most trajectories of one job (2⁴⁰ ≈ 1.1e12).
pub const MAX_TRAJECTORIES: usize = 1 << 40;
/// The noise end must carry noise: σ_T ≥ s_T / 1000, i.e. log-SNR at T ≤ 2 ln 1000 ≈ 13.8.
pub const MAX_LOG_SNR_T: f64 = 13.815510557964274;
/// Largest σ on the grid (VE's `sigma_max`): f32 states of this size still square finitely.
pub const MAX_SIGMA: f64 = 1e4;
/// How far an entropy may leave [0, ln K] (f32 accumulation), nats.
pub const ENTROPY_TOL: f64 = 1e-3;
/// Trajectories per chunk of the fused kernel, per batch of the generic engine and of a network.
const FUSED_CHUNK: u64 = 128;
const GENERIC_BATCH: u64 = 256;
const MODEL_BATCH: u64 = 8;

/// `v` as a size in `lo..=hi`, or an error naming `field`.
pub fn bounded(field: &str, v: u64, lo: usize, hi: usize) -> Result<usize> {
    if v < lo as u64 || v > hi as u64 {
        return Err(Error::config(
            field,
            format!("a whole number in {lo}..={hi}"),
            v,
        ));
    }
    Ok(v as usize)
}

/// Partition names whose `h_<name>` or `rate_<name>` would be another column of curves.csv.
const RESERVED: [&str; 6] = ["online", "online_se", "exact", "exact_se", "rb", "fd"];
const RESERVED_PREFIXES: [&str; 5] = ["class_", "fd_", "rb_", "online_", "exact_"];

/// Refuses a partition name that would duplicate a built-in column of curves.csv.
pub fn partition_name(field: &str, name: &str) -> Result<()> {
    if RESERVED.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(Error::config(
            field,
            format!(
                "a name whose h_/rate_ columns are not built-in ones (not {} nor starting with {})",
                RESERVED.join(", "),
                RESERVED_PREFIXES.join(", ")
            ),
            format!("{name:?}"),
        ));
    }
    Ok(())
}

/// The process on the grid: finite coefficients, noise at the noise end (σ_T ≥ s_T/1000) and σ
/// no larger than [`MAX_SIGMA`]. `field` names the process parameter that sets the noise end.
pub fn process_range(grid: &Grid, field: &str) -> Result<()> {
    for p in &grid.points {
        for (name, v) in [("s", p.s), ("σ", p.sigma), ("f", p.f), ("g²", p.g2)] {
            if !v.is_finite() || (name == "σ" && v < 0.0) {
                return Err(Error::config(
                    "process",
                    "a schedule with finite coefficients on the grid",
                    format!("{name} = {v} at t = {}", p.t),
                ));
            }
        }
    }
    let end = grid.points[0];
    let lam: Vec<f64> = grid
        .points
        .iter()
        .map(|p| p.log_snr())
        .filter(|l| l.is_finite())
        .collect();
    let (lo, hi) = lam
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let lam_t = end.log_snr();
    if !(end.sigma > 0.0 && lam_t.is_finite() && lam_t <= MAX_LOG_SNR_T) {
        return Err(Error::config(
            field,
            format!(
                "a process whose noise end carries noise: σ_T ≥ s_T/1000 (log-SNR at T ≤ {MAX_LOG_SNR_T:.1})"
            ),
            format!(
                "σ_T = {:e}, s_T = {}, log-SNR at T = {lam_t}, log-SNR range on the grid [{lo}, {hi}]",
                end.sigma, end.s
            ),
        ));
    }
    let smax = grid.points.iter().map(|p| p.sigma).fold(0.0, f64::max);
    if smax > MAX_SIGMA {
        return Err(Error::config(
            field,
            format!("σ ≤ {MAX_SIGMA:e} on the grid (f32 states)"),
            format!("σ = {smax:e}"),
        ));
    }
    Ok(())
}

/// The mixture's scale against the grid: f32 states must resolve the smallest noise on the grid,
/// |mean| + √var ≤ 0.1 σ_min · 2²⁴.
pub fn mixture_range(components: &[Component], grid: &Grid) -> Result<()> {
    let smin = grid
        .points
        .iter()
        .map(|p| p.sigma)
        .filter(|s| *s > 0.0)
        .fold(f64::INFINITY, f64::min);
    let limit = 0.1 * smin * (1u64 << 24) as f64;
    for (i, c) in components.iter().enumerate() {
        let m = c.mean.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let v = c.var.iter().fold(0.0f64, |a, v| a.max(*v));
        if m + v.sqrt() > limit {
            let key = if m >= v.sqrt() { "mean" } else { "var" };
            return Err(Error::config(
                format!("mixture.components[{i}].{key}"),
                format!(
                    "|mean| + √var ≤ {limit:.4e} (f32 states resolve the grid's smallest noise σ = {smin:.3e} to 10%)"
                ),
                format!("|mean| = {m:e}, var = {v:e}"),
            ));
        }
    }
    Ok(())
}

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

fn gib(b: u64) -> String {
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
    let steps = (cfg.trajectories as u64).saturating_mul(grid.steps() as u64);
    let (bytes, seconds) = match &cfg.model {
        Some(dir) => {
            let net = crate::nn::unet::UNetConfig::load(dir)?;
            let size = net.sample_size.unwrap_or(1);
            let images = (MODEL_BATCH as usize).saturating_mul(classes + 1);
            let fwd = net
                .forward_bytes(images, size, size, threads)
                .saturating_mul(t);
            let weights = std::fs::metadata(dir.join("diffusion_pytorch_model.safetensors"))
                .map(|m| m.len().saturating_mul(2))
                .unwrap_or(0);
            (
                trail(MODEL_BATCH)
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
            let (batch, rate) = if cfg.sampler.supports_online_classifier() {
                (FUSED_CHUNK, 1.0e8) // per thread, README: 2.1e8 on 2 threads
            } else {
                (GENERIC_BATCH, 1.6e6) // per thread, README: 3.3e6 on 2 threads
            };
            (
                trail(batch).saturating_add(sums),
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

/// Refuses a job whose estimated memory exceeds this machine's, naming the size it would need.
pub fn memory(cfg: &Config, grid: &Grid, classes: usize) -> Result<()> {
    let Some(limit) = crate::io::memory_limit() else {
        return Ok(());
    };
    let e = estimate(cfg, grid, classes, rayon::current_num_threads())?;
    if e.bytes > limit {
        return Err(Error::config(
            if cfg.model.is_some() {
                "model"
            } else {
                "sampler.steps"
            },
            format!("a job that fits in this machine's {} of memory", gib(limit)),
            format!(
                "{} grid points × {classes} classes × {} threads needing about {}",
                grid.points.len(),
                rayon::current_num_threads(),
                gib(e.bytes)
            ),
        ));
    }
    Ok(())
}

/// Every recorded quantity of a finished run: each field of curves.csv is empty (does not
/// exist) or finite, and entropies (`h_*`) lie in [0, ln K] within [`ENTROPY_TOL`]. The error
/// names the column and the step.
pub fn check_results(c: &Curves) -> Result<()> {
    let ln_k = (c.class_h.len().max(1) as f64).ln();
    // The values themselves, not their CSV text (which leaves a non-finite value empty, as if it
    // did not exist); the one infinity that belongs is the log-SNR at σ = 0.
    for (col, values) in c.columns() {
        for (row, v) in values.iter().enumerate() {
            let Some(v) = *v else { continue };
            let t = c.t.get(row).copied().unwrap_or(f64::NAN);
            let bad = |expected: String| Error::Implausible {
                quantity: col.clone(),
                step: row,
                t,
                expected,
                found: format!("{v}"),
            };
            if !v.is_finite() {
                if col == "log_snr" && v == f64::INFINITY {
                    continue;
                }
                return Err(bad("a finite number".into()));
            }
            if col.ends_with("_se") {
                continue;
            }
            if col.starts_with("h_") && !(v >= -ENTROPY_TOL && v <= ln_k + ENTROPY_TOL) {
                return Err(bad(format!(
                    "an entropy in [0, ln K = {ln_k:.4}] nats (K = {} classes, tolerance {ENTROPY_TOL})",
                    c.class_h.len()
                )));
            }
        }
    }
    Ok(())
}

/// Mutual-information estimates above H(Y) (beyond 10% + 4 SE + 0.01 nats): they bound nothing
/// and say the discretisation or the score is off. One warning per curve, at its largest value.
pub fn result_warnings(c: &Curves) -> Vec<String> {
    let h = c.prior_entropy;
    let mut w = vec![];
    for (name, mi, se) in [
        ("mi_girsanov", &c.mi_girsanov, &c.mi_girsanov_se),
        ("mi_rb", &c.mi_rb, &c.mi_rb_se),
    ] {
        let worst = (0..mi.len())
            .filter(|&j| mi[j] > 1.1 * h + 4.0 * se.get(j).copied().unwrap_or(0.0) + 0.01)
            .max_by(|&a, &b| mi[a].total_cmp(&mi[b]));
        if let Some(j) = worst {
            w.push(format!(
                "{name} reaches {:.4e} nats at step {j} (t = {}), above H(Y) = {h:.4} nats: \
                 the estimate is not meaningful (too few steps for the process, or a score far from the model's)",
                mi[j], c.t[j]
            ));
        }
    }
    w
}
