//! The information layer: how much the state x_t of a generative trajectory tells about its label Y.
//!
//! All quantities are in nats (bits only in plots and printed tables), accumulated in f64 over
//! trajectories, with standard errors for the entropy curves. With π_y the tracked posterior
//! (the online Bayesian classifier for stochastic samplers, the exact posterior for deterministic
//! ones) and Δ_y = s(x | y) − s(x):
//! - H(Y | X_t) ≈ E[−Σ_y π_y ln π_y] (`h_online`), and with the exact posterior (`h_exact`);
//! - dH(Y | X_t)/dt = (g²/2) E Σ_y π_y ‖Δ_y‖² (Rao–Blackwell, `rate_rb`) and the finite
//!   difference of `h_online` (`rate_fd`);
//! - I(Y; X_t) = H(Y) − H(Y | X_t) (`mi_entropy`) and the Girsanov/filtering sum from T,
//!   ∫_t^T (g²/2) E‖Δ_Y‖² du (`mi_girsanov`, trapezoid rule on the grid), with Y the label the
//!   trajectory ends in (each trajectory weighted by its final posterior);
//! - decision problems (classes a vs b): H(Z | X_t, Y ∈ a∪b) with P(a | x) = π_a/(π_a + π_b),
//!   trajectories weighted by P(a∪b | x_t)/P(a∪b) (self-normalised), and its rate in
//!   Rao–Blackwell form (the coarsened label's (I4) rate; see [`curves`]) beside its finite
//!   difference;
//! - per-class curves: trajectories weighted by their final posterior probability of class k,
//!   and their Rao–Blackwell rates;
//! - entropy production dH(X_0 | X_t)/dt = (g²/2)(d/σ_t² + E ∇·s) (`hx0_rate`; ∇·s exact or
//!   by Hutchinson probes) and by integration by parts (g²/2)(d/σ_t² − E‖s‖²)
//!   (`hx0_rate_ibp`);
//! - standard errors for every curve, paired (from per-trajectory differences) where two
//!   estimates share trajectories.
//!
//! The online classifier is updated from each step's actual transition, so it is the model's
//! Bayes posterior p(y | path) along multistep (DPM-Solver++ SDE) and guided paths too
//! ([`observer`] derives it and says what it means under guidance, [`guidance`] draws the
//! guided paths).

pub mod classifier;
pub mod closed_form;
pub mod curves;
pub mod divergence;
pub mod guidance;
pub mod observer;
pub mod sums;

pub use classifier::OnlineUpdate;
pub use curves::{Curves, PartitionCurve, Peak, peaks};
pub use divergence::hutchinson_divergence;
pub use guidance::{Guidance, GuidedSampler};
pub use observer::{
    InfoObserver, MeasureOptions, PointScores, Tracking, measure_run, measure_trajectories,
    point_terms,
};
pub use sums::{InfoSums, Layout};

use crate::error::{Error, Result};

/// A decision problem: class set `a` against class set `b` (disjoint, not necessarily covering).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    pub name: String,
    pub a: Vec<usize>,
    pub b: Vec<usize>,
}

/// What the information layer measures: K classes with prior p(y), and decision problems.
#[derive(Clone, Debug, PartialEq)]
pub struct InfoSpec {
    pub prior: Vec<f64>,
    pub partitions: Vec<Partition>,
}

impl InfoSpec {
    /// Validates the prior (positive, summing to 1) and the partitions against K = prior.len()
    /// classes.
    pub fn new(prior: Vec<f64>, partitions: Vec<Partition>) -> Result<Self> {
        let k = prior.len();
        if k == 0 {
            return Err(Error::config("classes", "at least one class", 0));
        }
        if let Some((y, p)) = prior
            .iter()
            .enumerate()
            .find(|(_, p)| !(p.is_finite() && **p > 0.0))
        {
            return Err(Error::config(format!("prior[{y}]"), "a probability > 0", p));
        }
        let total: f64 = prior.iter().sum();
        if (total - 1.0).abs() > 1e-9 {
            return Err(Error::config("prior", "probabilities summing to 1", total));
        }
        for (i, p) in partitions.iter().enumerate() {
            let f = |n: &str| format!("partitions[{i}].{n}");
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(Error::config(
                    f("name"),
                    "a non-empty name of letters, digits, '_' or '-'",
                    format!("{:?}", p.name),
                ));
            }
            if partitions[..i].iter().any(|q| q.name == p.name) {
                return Err(Error::config(
                    f("name"),
                    "a name not used by another partition",
                    format!("{:?}", p.name),
                ));
            }
            for (set, name) in [(&p.a, "a"), (&p.b, "b")] {
                if set.is_empty() {
                    return Err(Error::config(f(name), "at least one class", "[]"));
                }
                if let Some(c) = set.iter().find(|&&c| c >= k) {
                    return Err(Error::config(
                        f(name),
                        format!("classes in 0..{}", k.saturating_sub(1)),
                        format!("class {c}"),
                    ));
                }
            }
            for (set, name) in [(&p.a, "a"), (&p.b, "b")] {
                if let Some((at, c)) = set
                    .iter()
                    .enumerate()
                    .find(|(at, c)| set[..*at].contains(c))
                {
                    return Err(Error::config(
                        f(&format!("{name}[{at}]")),
                        "each class once",
                        format!("class {c} repeated"),
                    ));
                }
            }
            if let Some(c) = p.a.iter().find(|c| p.b.contains(c)) {
                return Err(Error::config(
                    f("b"),
                    "classes disjoint from `a`",
                    format!("class {c} in both"),
                ));
            }
        }
        Ok(InfoSpec { prior, partitions })
    }
    pub fn classes(&self) -> usize {
        self.prior.len()
    }
    /// H(Y) in nats.
    pub fn prior_entropy(&self) -> f64 {
        entropy(&self.prior)
    }
    /// Prior mass P(a ∪ b) of partition `i`.
    pub fn partition_mass(&self, i: usize) -> f64 {
        let p = &self.partitions[i];
        p.a.iter().chain(&p.b).map(|&c| self.prior[c]).sum()
    }
}

/// Shannon entropy −Σ p ln p of a probability vector, in nats.
pub fn entropy(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v * v.ln())
        .sum::<f64>()
}

/// Binary entropy of choosing a over b given masses `pa`, `pb` (nats): H(pa/(pa+pb)).
pub fn decision_entropy(pa: f64, pb: f64) -> f64 {
    let s = pa + pb;
    if !(s > 0.0) {
        return 0.0;
    }
    let q = (pa / s).clamp(0.0, 1.0);
    entropy(&[q, 1.0 - q])
}

/// Nats to bits.
pub fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}
