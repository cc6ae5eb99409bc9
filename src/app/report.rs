//! A finished job's report: the curves with the engine and throughput that made them, the
//! checks of the numbers (every quantity finite, entropies in [0, ln K]) and the warnings about
//! them, the table printed by `infodiff measure`, and the output set (`curves.csv`,
//! `summary.json`, `entropy.svg`) written atomically.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::diffusion::SamplerKind;
use crate::error::{Error, Result};
use crate::info::{Curves, Tracking, bits, peaks};

use super::config::Config;
use super::plot;
use super::runner::Engine;

/// How far an entropy may leave [0, ln K] (f32 accumulation), nats.
pub const ENTROPY_TOL: f64 = 1e-3;

/// A finished job.
pub struct Report {
    pub config: Config,
    pub curves: Curves,
    pub engine: Engine,
    pub wall_s: f64,
    pub trajectory_steps_per_s: f64,
    pub threads: usize,
    /// The sampler as it ran (a model's scheduler settings filled in).
    pub sampler: SamplerKind,
    /// What the user should know about how the numbers were made: where the grid came from,
    /// the engine's routing, guidance, what posterior was tracked and why.
    pub notes: Vec<String>,
}

impl Report {
    /// Things the user should know about this run's numbers.
    pub fn warnings(&self) -> Vec<String> {
        let c = &self.curves;
        let mut w = result_warnings(c);
        if c.tracking == Tracking::Online
            && let Some(hx) = c.h_exact[0]
            && bits(c.prior_entropy - hx) > 0.005
        {
            w.push(format!(
                "x_T already holds {:.4} bits about Y, which the online classifier (started at the prior) cannot see; \
                 h_online is biased up by about that much (raise the noise end, e.g. sigma_max)",
                bits(c.prior_entropy - hx)
            ));
        }
        if self.config.sampler == SamplerKind::EulerMaruyama
            && let Ok(grid) = self.config.grid()
        {
            // The score term moves x by c·s ≈ −(g²h/σ²)·(x − s_t m): beyond 1 the step overshoots.
            // (The last step, into the data end, is a denoising step with ratio ≈ 1 by design.)
            let n = grid.points.len();
            let worst = grid.points[..n - 1]
                .windows(2)
                .map(|p| p[0].g2 * (p[0].t - p[1].t) / (p[0].sigma * p[0].sigma))
                .fold(0.0, f64::max);
            if worst > 1.0 {
                w.push(format!(
                    "Euler–Maruyama steps reach g²·h/σ² = {worst:.2} (> 1): those steps overshoot and do not follow \
                     the reverse SDE; use more steps or the ancestral sampler"
                ));
            }
        }
        w
    }

    /// summary.json: the config, H(Y), the peaks of every rate, wall time and throughput.
    pub fn summary(&self) -> Value {
        let c = &self.curves;
        let mut pk = Map::new();
        for (name, y) in c.rate_curves() {
            pk.insert(name, json!(peaks(&c.t, &c.log_snr, &y)));
        }
        let last = c.t.len() - 1;
        json!({
            "infodiff_version": env!("CARGO_PKG_VERSION"),
            "config": self.config.to_json(),
            "units": "nats (bits where a key says so); rates per unit t, positive in forward time; t is the DDPM state index",
            "posterior": match c.tracking {
                Tracking::Online => ONLINE_POSTERIOR.to_string(),
                Tracking::Exact => tracking_note(&self.sampler).unwrap_or_else(|| "exact posterior p(y | x_t)".into()),
            },
            "sampler_run": serde_json::to_value(self.sampler).unwrap_or(Value::Null),
            "notes": self.notes,
            "classes": c.class_h.len(),
            "prior_entropy_nats": c.prior_entropy,
            "prior_entropy_bits": bits(c.prior_entropy),
            "x_T_information_nats": c.h_exact[0].map(|h| c.prior_entropy - h),
            "warnings": self.warnings(),
            "final": {
                "h_online_nats": c.h_online[last],
                "mi_entropy_nats": c.mi_entropy[last],
                "mi_girsanov_nats": c.mi_girsanov[last],
            },
            "peaks": pk,
            "engine": self.engine.name(),
            "threads": self.threads,
            "trajectories": self.config.trajectories,
            "steps": c.t.len() - 1,
            "wall_time_s": self.wall_s,
            "trajectory_steps_per_s": self.trajectory_steps_per_s,
        })
    }

    /// The short table printed by `infodiff measure`.
    pub fn table(&self) -> String {
        let c = &self.curves;
        let n = c.t.len();
        let mut s = String::new();
        s += &format!(
            "H(Y) = {:.4} bits; posterior: {}\n",
            bits(c.prior_entropy),
            c.tracking.name()
        );
        for n in &self.notes {
            s += &format!("note: {n}\n");
        }
        s += "      t    log-SNR   H_online (bits)  ± SE     H_exact (bits)   I_girsanov (bits)\n";
        let picks: Vec<usize> = (0..=10).map(|i| (i * (n - 1)) / 10).collect();
        for j in picks {
            let hx = c.h_exact[j]
                .map(|v| format!("{:.4}", bits(v)))
                .unwrap_or_else(|| "-".into());
            s += &format!(
                "{:>9.4} {:>8.3} {:>12.4} {:>10.4} {:>14} {:>16.4}\n",
                c.t[j],
                c.log_snr[j],
                bits(c.h_online[j]),
                bits(c.h_online_se[j]),
                hx,
                bits(c.mi_girsanov[j])
            );
        }
        s += "peak of each rate (largest local maximum; t_fit: vertex of a parabola through its top):\n";
        for (name, y) in c.rate_curves() {
            if let Some(p) = peaks(&c.t, &c.log_snr, &y).first() {
                let fit = p
                    .t_fit
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into());
                s += &format!(
                    "  {:<22} t = {:<10.4} t_fit = {:<8} log-SNR = {:<8.3} rate = {:.4e} nats/unit t\n",
                    name, p.t, fit, p.log_snr, p.value
                );
            }
        }
        s += &format!(
            "{} trajectories x {} steps in {:.3} s = {:.3e} trajectory-steps/s ({}, {} threads)\n",
            self.config.trajectories,
            n - 1,
            self.wall_s,
            self.trajectory_steps_per_s,
            self.engine.name(),
            self.threads
        );
        s
    }

    /// The three output files (name, contents), rendered in memory.
    pub fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let summary = serde_json::to_string_pretty(&self.summary()).map_err(|e| Error::Io {
            path: "summary.json".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let svg = plot::entropy_svg(&self.curves)?;
        let [csv_name, summary_name, svg_name] = crate::io::atomic::OUTPUT_FILES;
        Ok(vec![
            (csv_name, self.curves.to_csv().into_bytes()),
            (summary_name, summary.into_bytes()),
            (svg_name, svg.into_bytes()),
        ])
    }

    /// Writes curves.csv, summary.json and entropy.svg into `dir` (created if missing) as a
    /// set: a reader sees the old three files or the new three (see [`crate::io::atomic::OutputSet`]).
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_to(crate::io::atomic::OutputSet::prepare(dir)?)
    }

    /// [`Report::write`] into a destination checked before the run.
    pub fn write_to(&self, dest: crate::io::atomic::OutputSet) -> Result<()> {
        let files = self.files()?;
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        dest.commit(&refs)
    }
}

/// What the online classifier tracks (summary.json's `posterior`; see [`crate::info::observer`]).
pub const ONLINE_POSTERIOR: &str = "online Bayesian classifier: p(y | path) under the model's \
     class-conditional path laws, updated at each step from the transition actually taken (x' \
     minus the unconditional mean, guidance drift included, against the class-conditional mean \
     shifts, earlier steps' score terms included)";

/// Why a sampler's job tracks the exact posterior p(y | x_t) instead of the online classifier
/// (None where the online classifier runs): a deterministic sampler's path has no transition
/// density, so the Bayes update is degenerate (the path is a function of x_T); other samplers
/// take the sampler's own reason ([`SamplerKind::online_classifier_refusal`]).
pub fn tracking_note(sampler: &SamplerKind) -> Option<String> {
    let why = sampler.online_classifier_refusal()?;
    Some(if !sampler.is_stochastic() {
        format!(
            "exact posterior p(y | x_t) tracked, not the online classifier: {} is deterministic, \
             so a path has no transition density and the Bayes update is degenerate (the path is \
             a function of x_T, p(y | x_T, …, x_t) = p(y | x_T)); its paths carry p_T to p_t, so \
             the exact posterior along them gives H(Y | X_t)",
            sampler.name()
        )
    } else {
        format!("exact posterior p(y | x_t) tracked, not the online classifier: {why}")
    })
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
