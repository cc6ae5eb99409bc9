//! From per-point sums ([`InfoSums`]) to the estimator curves, and peak finding.
//!
//! Rates are per unit t and positive in forward time (t is the state index for DDPM).

use super::observer::Tracking;
use super::sums::{InfoSums, Layout, integral_weights};
use super::{InfoSpec, bits};
use crate::sde::Grid;

/// A decision problem's curves.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionCurve {
    pub name: String,
    /// H(Z | X_t, Y ∈ a∪b), nats.
    pub h: Vec<f64>,
    /// Its rate (finite difference), nats per unit t.
    pub rate: Vec<f64>,
}

/// Every estimator on every grid point, noise first (see the module docs of [`crate::info`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Curves {
    /// Grid position (0 = noise end).
    pub step: Vec<usize>,
    pub t: Vec<f64>,
    pub log_snr: Vec<f64>,
    pub h_online: Vec<f64>,
    pub h_online_se: Vec<f64>,
    pub h_exact: Vec<Option<f64>>,
    pub h_exact_se: Vec<Option<f64>>,
    pub rate_rb: Vec<Option<f64>>,
    pub rate_fd: Vec<f64>,
    pub mi_entropy: Vec<f64>,
    pub mi_girsanov: Vec<f64>,
    pub mi_girsanov_se: Vec<f64>,
    /// ∫_t^T rate_rb du: I(Y; X_t) − I(Y; X_T) from the Rao–Blackwell rate, and its SE.
    pub mi_rb: Vec<f64>,
    pub mi_rb_se: Vec<f64>,
    pub partitions: Vec<PartitionCurve>,
    /// Per class k: H(Y | X_t) over trajectories weighted by their final π_k. (K, S+1)
    pub class_h: Vec<Vec<f64>>,
    /// dH(X_0 | X_t)/dt = (g²/2)(d/σ² + E∇·s), where the divergence is known.
    pub hx0_rate: Vec<Option<f64>>,
    /// H(Y), nats.
    pub prior_entropy: f64,
    pub tracking: Tracking,
    pub trajectories: usize,
}

fn mean_se(sum: f64, sum2: f64, n: f64) -> (f64, f64) {
    let m = sum / n;
    let var = if n > 1.0 {
        ((sum2 / n - m * m) * n / (n - 1.0)).max(0.0)
    } else {
        0.0
    };
    (m, (var / n).sqrt())
}

/// d y/dt along a decreasing grid by the difference over ±k points (k = ⌈n/200⌉, so a 1000-step
/// grid differences over ±5 points; one-sided at the ends); positive when y grows with t. The
/// span trades a little resolution for much less Monte Carlo noise in the rate.
pub fn finite_difference(t: &[f64], y: &[f64]) -> Vec<f64> {
    let n = t.len();
    let k = n.div_ceil(200).max(1);
    (0..n)
        .map(|j| {
            let (a, b) = (j.saturating_sub(k), (j + k).min(n - 1));
            if a == b {
                0.0
            } else {
                (y[a] - y[b]) / (t[a] - t[b])
            }
        })
        .collect()
}

impl Curves {
    /// Computes the curves from the sums of trajectories on `grid`.
    pub fn from_sums(sums: &InfoSums, spec: &InfoSpec, grid: &Grid, tracking: Tracking) -> Curves {
        let pts = &grid.points;
        let n = pts.len();
        let lay = sums.layout;
        let mut c = Curves {
            step: (0..n).collect(),
            t: pts.iter().map(|p| p.t).collect(),
            log_snr: pts.iter().map(|p| p.log_snr()).collect(),
            h_online: vec![0.0; n],
            h_online_se: vec![0.0; n],
            h_exact: vec![None; n],
            h_exact_se: vec![None; n],
            rate_rb: vec![None; n],
            rate_fd: vec![],
            mi_entropy: vec![],
            mi_girsanov: vec![0.0; n],
            mi_girsanov_se: vec![0.0; n],
            mi_rb: vec![0.0; n],
            mi_rb_se: vec![0.0; n],
            partitions: vec![],
            class_h: vec![vec![0.0; n]; spec.classes()],
            hx0_rate: vec![None; n],
            prior_entropy: spec.prior_entropy(),
            tracking,
            trajectories: sums.row(0)[Layout::N] as usize,
        };
        let mut part_h = vec![vec![0.0; n]; spec.partitions.len()];
        for (j, p) in pts.iter().enumerate() {
            let r = sums.row(j);
            let nn = r[Layout::N].max(1.0);
            (c.h_online[j], c.h_online_se[j]) = mean_se(r[Layout::H], r[Layout::H2], nn);
            if r[Layout::HXN] > 0.0 {
                let (m, se) = mean_se(r[Layout::HX], r[Layout::HX2], r[Layout::HXN]);
                c.h_exact[j] = Some(m);
                c.h_exact_se[j] = Some(se);
            }
            if r[Layout::RBN] > 0.0 {
                c.rate_rb[j] = Some(0.5 * p.g2 * r[Layout::RB] / r[Layout::RBN]);
            }
            if r[Layout::PRODN] > 0.0 && p.sigma > 0.0 {
                c.hx0_rate[j] = Some(0.5 * p.g2 * r[Layout::PROD] / r[Layout::PRODN]);
            }
            for (i, ph) in part_h.iter_mut().enumerate() {
                let w = r[lay.part_w(i)];
                ph[j] = if w > 0.0 {
                    r[lay.part_wh(i)] / w
                } else {
                    f64::NAN
                };
            }
            for (k, ch) in c.class_h.iter_mut().enumerate() {
                let w = r[lay.class_w(k)];
                ch[j] = if w > 0.0 {
                    r[lay.class_wh(k)] / w
                } else {
                    f64::NAN
                };
            }
        }
        // ∫_t^T (g²/2) E‖Δ_Y‖² du from T (see `integral_weights`); SEs from each trajectory's own
        // integral.
        let w = integral_weights(grid);
        let mean_of = |q: usize, j: usize| {
            let r = sums.row(j);
            r[q] / r[Layout::N].max(1.0)
        };
        for j in 1..n {
            let nn = sums.row(j)[Layout::N].max(1.0);
            c.mi_girsanov[j] = c.mi_girsanov[j - 1]
                + w[j][0] * mean_of(Layout::GIR, j - 1)
                + w[j][1] * mean_of(Layout::GIR, j);
            c.mi_girsanov_se[j] = mean_se(c.mi_girsanov[j] * nn, sums.row(j)[Layout::GIRC2], nn).1;
            (c.mi_rb[j], c.mi_rb_se[j]) =
                mean_se(sums.row(j)[Layout::RBC], sums.row(j)[Layout::RBC2], nn);
        }
        c.rate_fd = finite_difference(&c.t, &c.h_online);
        c.mi_entropy = c.h_online.iter().map(|h| c.prior_entropy - h).collect();
        c.partitions = spec
            .partitions
            .iter()
            .zip(part_h)
            .map(|(p, h)| PartitionCurve {
                name: p.name.clone(),
                rate: finite_difference(&c.t, &h),
                h,
            })
            .collect();
        c
    }

    /// Every rate curve by name: `rate_rb`, `rate_fd`, `rate_<partition>`, `hx0_rate`.
    pub fn rate_curves(&self) -> Vec<(String, Vec<Option<f64>>)> {
        let mut out = vec![
            ("rate_rb".to_string(), self.rate_rb.clone()),
            (
                "rate_fd".to_string(),
                self.rate_fd.iter().map(|v| Some(*v)).collect(),
            ),
        ];
        for p in &self.partitions {
            out.push((
                format!("rate_{}", p.name),
                p.rate.iter().map(|v| Some(*v)).collect(),
            ));
        }
        if self.hx0_rate.iter().any(|v| v.is_some()) {
            out.push(("hx0_rate".to_string(), self.hx0_rate.clone()));
        }
        out
    }

    /// The CSV header (see README for each column).
    pub fn csv_header(&self) -> String {
        let mut h = String::from(
            "step,t,log_snr,h_online,h_online_se,h_exact,rate_rb,rate_fd,mi_entropy,mi_girsanov",
        );
        for p in &self.partitions {
            h += &format!(",h_{}", p.name);
        }
        for p in &self.partitions {
            h += &format!(",rate_{}", p.name);
        }
        for k in 0..self.class_h.len() {
            h += &format!(",h_class_{k}");
        }
        h += ",h_exact_se,hx0_rate,mi_girsanov_se,mi_rb,mi_rb_se";
        h
    }

    /// The CSV text: a header and one row per grid point, noise first; empty fields where a value
    /// does not exist.
    pub fn to_csv(&self) -> String {
        let f = |v: f64| {
            if v.is_finite() {
                format!("{v:.9e}")
            } else {
                String::new()
            }
        };
        let o = |v: Option<f64>| v.map(f).unwrap_or_default();
        let mut s = self.csv_header();
        s.push('\n');
        for j in 0..self.t.len() {
            let mut row = vec![
                j.to_string(),
                format!("{}", self.t[j]),
                f(self.log_snr[j]),
                f(self.h_online[j]),
                f(self.h_online_se[j]),
                o(self.h_exact[j]),
                o(self.rate_rb[j]),
                f(self.rate_fd[j]),
                f(self.mi_entropy[j]),
                f(self.mi_girsanov[j]),
            ];
            row.extend(self.partitions.iter().map(|p| f(p.h[j])));
            row.extend(self.partitions.iter().map(|p| f(p.rate[j])));
            row.extend(self.class_h.iter().map(|c| f(c[j])));
            row.push(o(self.h_exact_se[j]));
            row.push(o(self.hx0_rate[j]));
            row.push(f(self.mi_girsanov_se[j]));
            row.push(f(self.mi_rb[j]));
            row.push(f(self.mi_rb_se[j]));
            s += &row.join(",");
            s.push('\n');
        }
        s
    }

    /// Index of the grid point nearest to time `t`.
    pub fn nearest(&self, t: f64) -> usize {
        (0..self.t.len())
            .min_by(|&a, &b| (self.t[a] - t).abs().total_cmp(&(self.t[b] - t).abs()))
            .unwrap_or(0)
    }

    /// H(Y | X_t) (tracked) in bits at point j.
    pub fn h_bits(&self, j: usize) -> f64 {
        bits(self.h_online[j])
    }
}

/// A local maximum of a curve.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Peak {
    pub step: usize,
    pub t: f64,
    pub log_snr: f64,
    pub value: f64,
}

/// Local maxima of `y` (None = no value) that are the largest within ±w points (w = 2% of the
/// grid, at least 2) and at least 10% of the global maximum; largest first.
pub fn peaks(t: &[f64], log_snr: &[f64], y: &[Option<f64>]) -> Vec<Peak> {
    let n = y.len();
    let vals: Vec<f64> = y
        .iter()
        .map(|v| v.filter(|x| x.is_finite()).unwrap_or(f64::NEG_INFINITY))
        .collect();
    let gmax = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    if !(gmax.is_finite() && gmax > 0.0) {
        return vec![];
    }
    let w = (n / 50).max(2);
    let mut out: Vec<Peak> = (0..n)
        .filter(|&j| {
            let (a, b) = (j.saturating_sub(w), (j + w + 1).min(n));
            vals[j] >= 0.1 * gmax
                && (a..b).all(|i| vals[i] < vals[j] || (vals[i] == vals[j] && i >= j))
        })
        .map(|j| Peak {
            step: j,
            t: t[j],
            log_snr: log_snr[j],
            value: vals[j],
        })
        .collect();
    out.sort_by(|a, b| b.value.total_cmp(&a.value));
    out
}
