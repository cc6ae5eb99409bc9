//! From per-point sums ([`InfoSums`]) to the estimator curves, and peak finding.
//!
//! Rates are per unit t and positive in forward time (t is the state index for DDPM), in nats.
//! Every rate has a Rao–Blackwell form (a conditional expectation given x_t of what the
//! finite difference of an entropy curve estimates), with π the tracked posterior and
//! Δ_y = s(x|y) − s(x):
//! - label: dH(Y|X_t)/dt = (g²/2) E Σ_y π_y ‖Δ_y‖² (`rate_rb`);
//! - decision problem a vs b (Z = [Y ∈ a] among Y ∈ a∪b, weighted as its entropy is):
//!   dH(Z|X_t, Y∈a∪b)/dt = (g²/2) E(w q_a q_b ‖s(x|a) − s(x|b)‖²) / E(w), with w = π_ab/P(a∪b),
//!   q_z = π_z/π_ab, s(x|z) = Σ_{y∈z} π_y s(x|y)/π_z (the rate (I4) of the coarsened label
//!   under p(x | a∪b), where Σ_z q_z‖s(x|z) − s(x|a∪b)‖² = q_a q_b ‖s(x|a) − s(x|b)‖²);
//! - class k (H(Y|X_t) among trajectories of class k, `h_class_k`, weighted by π_k):
//!   (g²/2) E[π_k (Σ_y π_y‖Δ_y‖² + 2 Δ_k·u)] / P(k), u = Σ_y π_y ln π_y Δ_y. Along the reverse
//!   SDE π is a martingale, dπ_y = π_y g Δ_y·dW̄, so dH(π) has drift −(g²/2) Σ_y π_y‖Δ_y‖² and
//!   its covariation with π_k is −g² π_k Σ_y π_y ln π_y Δ_k·Δ_y; weighting by π_k^final and
//!   taking the expectation given x_t gives the formula. Σ_k P(k)·rate_class_k = rate_rb.
//!
//! Standard errors of rates are those of the numerator's mean (the normaliser taken as known);
//! differences of two estimates from the same trajectories carry the paired standard error, from
//! the per-trajectory differences.

use super::observer::Tracking;
use super::sums::{InfoSums, Layout, integral_weights};
use super::{InfoSpec, bits};
use crate::diffusion::Grid;

/// A decision problem's curves.
#[derive(Clone, Debug, PartialEq)]
pub struct PartitionCurve {
    pub name: String,
    /// H(Z | X_t, Y ∈ a∪b), nats.
    pub h: Vec<f64>,
    /// Its Rao–Blackwell rate (module docs), nats per unit t, and its standard error; None at
    /// the data end.
    pub rate: Vec<Option<f64>>,
    pub rate_se: Vec<Option<f64>>,
    /// Its rate as the finite difference of `h`, nats per unit t.
    pub rate_fd: Vec<f64>,
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
    /// Per class k: P̂(k), the mean final posterior mass (the normaliser of `class_h[k]`). (K)
    pub class_mass: Vec<f64>,
    /// Per class k: the Rao–Blackwell rate of `class_h[k]` (module docs) and its SE. (K, S+1)
    pub class_rate: Vec<Vec<Option<f64>>>,
    pub class_rate_se: Vec<Vec<Option<f64>>>,
    /// dH(X_0 | X_t)/dt = (g²/2)(d/σ² + E∇·s), where the divergence is known (exactly or by
    /// Hutchinson probes), and its standard error.
    pub hx0_rate: Vec<Option<f64>>,
    pub hx0_rate_se: Vec<Option<f64>>,
    /// The integration-by-parts form (g²/2)(d/σ² − E‖s‖²): equal to `hx0_rate` in expectation
    /// for an exact score, so their gap diagnoses a learned one. Its SE, and the paired SE of
    /// `hx0_rate − hx0_rate_ibp`.
    pub hx0_rate_ibp: Vec<Option<f64>>,
    pub hx0_rate_ibp_se: Vec<Option<f64>>,
    pub hx0_gap_se: Vec<Option<f64>>,
    /// Paired standard errors of `mi_entropy − mi_girsanov` and of
    /// (`h_online[0] − h_online`) − `mi_rb` (from per-trajectory differences).
    pub mi_girsanov_diff_se: Vec<f64>,
    pub mi_rb_diff_se: Vec<f64>,
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
        let (np, k) = (spec.partitions.len(), spec.classes());
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
            class_h: vec![vec![0.0; n]; k],
            class_mass: (0..k)
                .map(|y| sums.row(0)[lay.class_w(y)] / sums.row(0)[Layout::N].max(1.0))
                .collect(),
            class_rate: vec![vec![None; n]; k],
            class_rate_se: vec![vec![None; n]; k],
            hx0_rate: vec![None; n],
            hx0_rate_se: vec![None; n],
            hx0_rate_ibp: vec![None; n],
            hx0_rate_ibp_se: vec![None; n],
            hx0_gap_se: vec![None; n],
            mi_girsanov_diff_se: vec![0.0; n],
            mi_rb_diff_se: vec![0.0; n],
            prior_entropy: spec.prior_entropy(),
            tracking,
            trajectories: sums.row(0)[Layout::N] as usize,
        };
        let mut part_h = vec![vec![0.0; n]; np];
        let mut part_rate = vec![vec![None; n]; np];
        let mut part_rate_se = vec![vec![None; n]; np];
        // A weighted rate (g²/2)·Σv/Σw and the SE of its numerator's mean, n samples of v.
        let weighted = |half_g2: f64, sv: f64, sv2: f64, n: f64, sw: f64| {
            if !(sw > 0.0 && n > 0.0) {
                return (None, None);
            }
            let (m, se) = mean_se(sv, sv2, n);
            (Some(half_g2 * m * n / sw), Some(half_g2 * se * n / sw))
        };
        for (j, p) in pts.iter().enumerate() {
            let r = sums.row(j);
            let nn = r[Layout::N].max(1.0);
            let half_g2 = 0.5 * p.g2;
            (c.h_online[j], c.h_online_se[j]) = mean_se(r[Layout::H], r[Layout::H2], nn);
            if r[Layout::HXN] > 0.0 {
                let (m, se) = mean_se(r[Layout::HX], r[Layout::HX2], r[Layout::HXN]);
                c.h_exact[j] = Some(m);
                c.h_exact_se[j] = Some(se);
            }
            let nrb = r[Layout::RBN];
            if nrb > 0.0 {
                c.rate_rb[j] = Some(half_g2 * r[Layout::RB] / nrb);
            }
            if p.sigma > 0.0 && nrb > 0.0 {
                let (m, se) = mean_se(r[Layout::IBP], r[Layout::IBP2], nrb);
                c.hx0_rate_ibp[j] = Some(half_g2 * m);
                c.hx0_rate_ibp_se[j] = Some(half_g2 * se);
            }
            if r[Layout::PRODN] > 0.0 && p.sigma > 0.0 {
                let np_ = r[Layout::PRODN];
                let (m, se) = mean_se(r[Layout::PROD], r[Layout::PROD2], np_);
                c.hx0_rate[j] = Some(half_g2 * m);
                c.hx0_rate_se[j] = Some(half_g2 * se);
                if np_ == nrb {
                    let gap = m - r[Layout::IBP] / nrb;
                    c.hx0_gap_se[j] = Some(half_g2 * mean_se(gap * nrb, r[Layout::IBPD2], nrb).1);
                }
            }
            for i in 0..np {
                let w = r[lay.part_w(i)];
                part_h[i][j] = if w > 0.0 {
                    r[lay.part_wh(i)] / w
                } else {
                    f64::NAN
                };
                (part_rate[i][j], part_rate_se[i][j]) = weighted(
                    half_g2,
                    r[lay.part_rate(i)],
                    r[lay.part_rate2(i)],
                    nrb,
                    w * nrb / nn,
                );
            }
            for y in 0..k {
                let w = r[lay.class_w(y)];
                c.class_h[y][j] = if w > 0.0 {
                    r[lay.class_wh(y)] / w
                } else {
                    f64::NAN
                };
                (c.class_rate[y][j], c.class_rate_se[y][j]) = weighted(
                    half_g2,
                    r[lay.class_rate(y)],
                    r[lay.class_rate2(y)],
                    nrb,
                    w * nrb / nn,
                );
            }
        }
        // ∫_t^T (g²/2) E‖Δ_Y‖² du from T (see `integral_weights`); SEs from each trajectory's own
        // integral, paired SEs from each trajectory's own difference.
        let w = integral_weights(grid);
        let mean_of = |q: usize, j: usize| {
            let r = sums.row(j);
            r[q] / r[Layout::N].max(1.0)
        };
        for j in 1..n {
            let r = sums.row(j);
            let nn = r[Layout::N].max(1.0);
            c.mi_girsanov[j] = c.mi_girsanov[j - 1]
                + w[j][0] * mean_of(Layout::GIR, j - 1)
                + w[j][1] * mean_of(Layout::GIR, j);
            c.mi_girsanov_se[j] = mean_se(c.mi_girsanov[j] * nn, r[Layout::GIRC2], nn).1;
            (c.mi_rb[j], c.mi_rb_se[j]) = mean_se(r[Layout::RBC], r[Layout::RBC2], nn);
            let hg = c.h_online[j] + c.mi_girsanov[j];
            c.mi_girsanov_diff_se[j] = mean_se(hg * nn, r[Layout::HG2], nn).1;
            let d = c.h_online[0] - c.h_online[j] - c.mi_rb[j];
            c.mi_rb_diff_se[j] = mean_se(d * nn, r[Layout::RBD2], nn).1;
        }
        c.rate_fd = finite_difference(&c.t, &c.h_online);
        c.mi_entropy = c.h_online.iter().map(|h| c.prior_entropy - h).collect();
        c.partitions = spec
            .partitions
            .iter()
            .zip(part_h)
            .zip(part_rate.into_iter().zip(part_rate_se))
            .map(|((p, h), (rate, rate_se))| PartitionCurve {
                name: p.name.clone(),
                rate_fd: finite_difference(&c.t, &h),
                rate,
                rate_se,
                h,
            })
            .collect();
        c
    }

    /// Every rate curve by name: `rate_rb`, `rate_fd`, `rate_<partition>`,
    /// `rate_fd_<partition>`, `rate_class_<k>`, `hx0_rate` (where the divergence is known),
    /// `hx0_rate_ibp`.
    pub fn rate_curves(&self) -> Vec<(String, Vec<Option<f64>>)> {
        let some = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        let mut out = vec![
            ("rate_rb".to_string(), self.rate_rb.clone()),
            ("rate_fd".to_string(), some(&self.rate_fd)),
        ];
        for p in &self.partitions {
            out.push((format!("rate_{}", p.name), p.rate.clone()));
        }
        for p in &self.partitions {
            out.push((format!("rate_fd_{}", p.name), some(&p.rate_fd)));
        }
        for (k, r) in self.class_rate.iter().enumerate() {
            out.push((format!("rate_class_{k}"), r.clone()));
        }
        if self.hx0_rate.iter().any(|v| v.is_some()) {
            out.push(("hx0_rate".to_string(), self.hx0_rate.clone()));
        }
        out.push(("hx0_rate_ibp".to_string(), self.hx0_rate_ibp.clone()));
        out
    }

    /// The CSV columns (see README for each): a name and the value at every grid point (None:
    /// the value does not exist there).
    pub fn columns(&self) -> Vec<(String, Vec<Option<f64>>)> {
        let some = |v: &[f64]| v.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        let mut cols = vec![
            ("log_snr".to_string(), some(&self.log_snr)),
            ("h_online".to_string(), some(&self.h_online)),
            ("h_online_se".to_string(), some(&self.h_online_se)),
            ("h_exact".to_string(), self.h_exact.clone()),
            ("rate_rb".to_string(), self.rate_rb.clone()),
            ("rate_fd".to_string(), some(&self.rate_fd)),
            ("mi_entropy".to_string(), some(&self.mi_entropy)),
            ("mi_girsanov".to_string(), some(&self.mi_girsanov)),
        ];
        // The weighted entropies are NaN where no trajectory carries weight (`from_sums`): they
        // do not exist there.
        let weighted = |v: &[f64]| v.iter().map(|x| (!x.is_nan()).then_some(*x)).collect();
        for p in &self.partitions {
            cols.push((format!("h_{}", p.name), weighted(&p.h)));
        }
        for p in &self.partitions {
            cols.push((format!("rate_{}", p.name), p.rate.clone()));
        }
        for (k, h) in self.class_h.iter().enumerate() {
            cols.push((format!("h_class_{k}"), weighted(h)));
        }
        cols.push(("h_exact_se".to_string(), self.h_exact_se.clone()));
        cols.push(("hx0_rate".to_string(), self.hx0_rate.clone()));
        cols.push(("mi_girsanov_se".to_string(), some(&self.mi_girsanov_se)));
        cols.push(("mi_rb".to_string(), some(&self.mi_rb)));
        cols.push(("mi_rb_se".to_string(), some(&self.mi_rb_se)));
        for p in &self.partitions {
            cols.push((format!("rate_{}_se", p.name), p.rate_se.clone()));
            cols.push((format!("rate_fd_{}", p.name), some(&p.rate_fd)));
        }
        for (k, (r, se)) in self.class_rate.iter().zip(&self.class_rate_se).enumerate() {
            cols.push((format!("rate_class_{k}"), r.clone()));
            cols.push((format!("rate_class_{k}_se"), se.clone()));
        }
        cols.push(("hx0_rate_se".to_string(), self.hx0_rate_se.clone()));
        cols.push(("hx0_rate_ibp".to_string(), self.hx0_rate_ibp.clone()));
        cols.push(("hx0_rate_ibp_se".to_string(), self.hx0_rate_ibp_se.clone()));
        cols.push(("hx0_gap_se".to_string(), self.hx0_gap_se.clone()));
        cols.push((
            "mi_girsanov_diff_se".to_string(),
            some(&self.mi_girsanov_diff_se),
        ));
        cols.push(("mi_rb_diff_se".to_string(), some(&self.mi_rb_diff_se)));
        cols
    }

    /// The names of curves.csv's columns after `step,t` for decision problems `partitions` and
    /// `classes` classes, in [`Curves::to_csv`]'s order (a test holds the two together).
    pub fn column_names(partitions: &[String], classes: usize) -> Vec<String> {
        let mut v: Vec<String> = [
            "log_snr",
            "h_online",
            "h_online_se",
            "h_exact",
            "rate_rb",
            "rate_fd",
            "mi_entropy",
            "mi_girsanov",
        ]
        .map(String::from)
        .into();
        v.extend(partitions.iter().map(|p| format!("h_{p}")));
        v.extend(partitions.iter().map(|p| format!("rate_{p}")));
        v.extend((0..classes).map(|k| format!("h_class_{k}")));
        v.extend(
            [
                "h_exact_se",
                "hx0_rate",
                "mi_girsanov_se",
                "mi_rb",
                "mi_rb_se",
            ]
            .map(String::from),
        );
        for p in partitions {
            v.push(format!("rate_{p}_se"));
            v.push(format!("rate_fd_{p}"));
        }
        for k in 0..classes {
            v.push(format!("rate_class_{k}"));
            v.push(format!("rate_class_{k}_se"));
        }
        v.extend(
            [
                "hx0_rate_se",
                "hx0_rate_ibp",
                "hx0_rate_ibp_se",
                "hx0_gap_se",
                "mi_girsanov_diff_se",
                "mi_rb_diff_se",
            ]
            .map(String::from),
        );
        v
    }

    /// The CSV header (see README for each column).
    pub fn csv_header(&self) -> String {
        let mut h = String::from("step,t");
        for (name, _) in self.columns() {
            h.push(',');
            h += &name;
        }
        h
    }

    /// The CSV text: a header and one row per grid point, noise first; empty fields where a value
    /// does not exist (or is not finite).
    pub fn to_csv(&self) -> String {
        let cols = self.columns();
        let mut s = self.csv_header();
        s.push('\n');
        for j in 0..self.t.len() {
            s += &format!("{j},{}", self.t[j]);
            for (_, v) in &cols {
                s.push(',');
                if let Some(x) = v[j].filter(|x| x.is_finite()) {
                    s += &format!("{x:.9e}");
                }
            }
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
    /// The grid point of the maximum, its time, log-SNR and value.
    pub step: usize,
    pub t: f64,
    pub log_snr: f64,
    pub value: f64,
    /// The peak's time from a least-squares parabola through the curve within ±w grid points
    /// (w = ⌈S/25⌉, at least 3), centred on the maximum and then once more on the parabola's
    /// vertex: a flat-topped peak's grid maximum jitters with Monte Carlo noise by more than the
    /// vertex of a fit over the whole top does. None where the fit is not concave or its vertex
    /// leaves the window.
    pub t_fit: Option<f64>,
}

/// Vertex of the least-squares parabola through the finite values of `y` within ±w points of
/// `j0`, if concave and inside the window.
fn parabola_vertex(t: &[f64], y: &[f64], j0: usize, w: usize) -> Option<f64> {
    let (a, b) = (j0.saturating_sub(w), (j0 + w + 1).min(y.len()));
    let scale = (t[a] - t[b - 1]).abs().max(f64::MIN_POSITIVE);
    // Normal equations of y = c0 + c1 u + c2 u², u = (t − t[j0])/scale.
    let (mut m, mut r) = ([[0.0f64; 3]; 3], [0.0f64; 3]);
    let mut count = 0;
    for j in a..b {
        if !y[j].is_finite() {
            continue;
        }
        count += 1;
        let u = (t[j] - t[j0]) / scale;
        let f = [1.0, u, u * u];
        for p in 0..3 {
            r[p] += f[p] * y[j];
            for q in 0..3 {
                m[p][q] += f[p] * f[q];
            }
        }
    }
    if count < 5 {
        return None;
    }
    let det = |m: &[[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(&m);
    if !(d.abs() > 0.0) {
        return None;
    }
    let mut c = [0.0; 3];
    for (k, ck) in c.iter_mut().enumerate() {
        let mut mk = m;
        for p in 0..3 {
            mk[p][k] = r[p];
        }
        *ck = det(&mk) / d;
    }
    if !(c[2] < 0.0) {
        return None;
    }
    let tv = t[j0] - c[1] / (2.0 * c[2]) * scale;
    let (lo, hi) = (t[a].min(t[b - 1]), t[a].max(t[b - 1]));
    (tv.is_finite() && tv >= lo && tv <= hi).then_some(tv)
}

/// Local maxima of `y` (None = no value) that are the largest within ±w points (w = 2% of the
/// grid, at least 2) and at least 10% of the global maximum; largest first, each with its
/// fitted time ([`Peak::t_fit`]).
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
    let wfit = n.div_ceil(25).max(3);
    let nearest = |tv: f64| {
        (0..n)
            .min_by(|&a, &b| (t[a] - tv).abs().total_cmp(&(t[b] - tv).abs()))
            .unwrap_or(0)
    };
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
            t_fit: parabola_vertex(t, &vals, j, wfit)
                .and_then(|tv| parabola_vertex(t, &vals, nearest(tv), wfit)),
        })
        .collect();
    out.sort_by(|a, b| b.value.total_cmp(&a.value));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `column_names` lists what `to_csv` writes, in order.
    #[test]
    fn column_names_follow_the_csv() {
        use crate::info::{InfoSpec, InfoSums, Layout, Partition};
        let spec = InfoSpec::new(
            vec![0.5, 0.25, 0.25],
            vec![Partition {
                name: "ab".into(),
                a: vec![0],
                b: vec![1, 2],
            }],
        )
        .unwrap();
        use crate::diffusion::Process;
        let grid = crate::diffusion::Ddpm::new(1e-4, 0.02, 10)
            .unwrap()
            .grid(10)
            .unwrap();
        let sums = InfoSums::new(Layout::new(&spec), 11);
        let c = Curves::from_sums(&sums, &spec, &grid, Tracking::Online);
        let names: Vec<String> = c.columns().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, Curves::column_names(&["ab".to_string()], 3));
        assert!(
            c.to_csv()
                .starts_with(&format!("step,t,{}\n", names.join(",")))
        );
    }

    /// An asymmetric-free parabola with a flat top sampled on a grid: the fit finds its vertex
    /// between grid points, the grid maximum only to the nearest point.
    #[test]
    fn fitted_peak_finds_the_vertex_between_grid_points() {
        let t: Vec<f64> = (0..=1000).rev().map(|i| i as f64).collect();
        let y: Vec<Option<f64>> = t
            .iter()
            .map(|&x| Some(1.0 - ((x - 357.3) / 150.0).powi(2)))
            .collect();
        let l = vec![0.0; t.len()];
        let p = &peaks(&t, &l, &y)[0];
        assert_eq!(p.t, 357.0);
        assert!((p.t_fit.unwrap() - 357.3).abs() < 1e-6, "{:?}", p.t_fit);
    }
}
