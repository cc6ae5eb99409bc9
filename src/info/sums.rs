//! Per-grid-point sums over trajectories, in f64: the one interface between the samplers' fast
//! paths (the fused SIMD kernel, the generic observer) and the estimators in [`super::curves`].

use super::InfoSpec;
use crate::diffusion::Grid;

/// The constants shared with the CUDA kernels (the sums' columns, the fused kernels' limits,
/// block sizes and record offsets), written once: build.rs reads the same file and generates the
/// `layout.cuh` the kernels include.
#[path = "layout_consts.rs"]
pub mod consts;

/// Column layout of [`InfoSums`]: fixed quantities, then four per partition, then four per class.
/// The values are [`consts`]' `L_*`, `MIX_FIXED`, `MIX_PER_*`, which the kernels see through the
/// generated `layout.cuh`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub partitions: usize,
    pub classes: usize,
}

impl Layout {
    /// Trajectories observed.
    pub const N: usize = consts::L_N;
    /// Σ h and Σ h² of the tracked posterior entropy.
    pub const H: usize = consts::L_H;
    pub const H2: usize = consts::L_H2;
    /// Σ h, Σ h², count, of the exact posterior entropy.
    pub const HX: usize = consts::L_HX;
    pub const HX2: usize = consts::L_HX2;
    pub const HXN: usize = consts::L_HXN;
    /// Σ Σ_y π_y ‖Δ_y‖² (tracked π) and its count.
    pub const RB: usize = consts::L_RB;
    pub const RBN: usize = consts::L_RBN;
    /// Σ Σ_y π_y^final ‖Δ_y‖².
    pub const GIR: usize = consts::L_GIR;
    /// Σ (d/σ_t² + ∇·s), the pathwise entropy production over g²/2 (I6), and its count.
    pub const PROD: usize = consts::L_PROD;
    pub const PRODN: usize = consts::L_PRODN;
    /// Σ G_i(t)² of each trajectory's own Girsanov integral G_i(t) = ∫_t^T (g²/2) Σ_y π_y^final ‖Δ_y‖²
    /// (for the standard error of `mi_girsanov`).
    pub const GIRC2: usize = consts::L_GIRC2;
    /// Σ R_i(t) and Σ R_i(t)² of each trajectory's Rao–Blackwell integral
    /// R_i(t) = ∫_t^T (g²/2) Σ_y π_y(u) ‖Δ_y‖² du.
    pub const RBC: usize = consts::L_RBC;
    pub const RBC2: usize = consts::L_RBC2;
    /// Σ (d/σ_t² + ∇·s)² (for the standard error of `hx0_rate`), counted by `PRODN`.
    pub const PROD2: usize = consts::L_PROD2;
    /// Σ (d/σ_t² − ‖s‖²), the integration-by-parts form of the production, and its square;
    /// counted by `RBN` (recorded wherever scores are).
    pub const IBP: usize = consts::L_IBP;
    pub const IBP2: usize = consts::L_IBP2;
    /// Σ (∇·s + ‖s‖²)², the squared per-trajectory gap of the two production forms (where the
    /// divergence is known): the paired standard error of `hx0_rate − hx0_rate_ibp`.
    pub const IBPD2: usize = consts::L_IBPD2;
    /// Σ (h_i(t) + G_i(t))²: the paired standard error of `mi_entropy − mi_girsanov`
    /// (H(Y) − h_i − G_i per trajectory).
    pub const HG2: usize = consts::L_HG2;
    /// Σ (h_i(0) − h_i(t) − R_i(t))²: the paired standard error of ΔH − `mi_rb`.
    pub const RBD2: usize = consts::L_RBD2;
    pub const FIXED: usize = consts::MIX_FIXED;
    /// Columns per partition and per class.
    pub const PER_PARTITION: usize = consts::MIX_PER_PARTITION;
    pub const PER_CLASS: usize = consts::MIX_PER_CLASS;

    pub fn new(spec: &InfoSpec) -> Self {
        Layout {
            partitions: spec.partitions.len(),
            classes: spec.classes(),
        }
    }
    /// Σ w and Σ w·h_Z of partition `i` (w = P(a∪b | x)/P(a∪b)).
    pub fn part_w(&self, i: usize) -> usize {
        Self::FIXED + Self::PER_PARTITION * i
    }
    pub fn part_wh(&self, i: usize) -> usize {
        self.part_w(i) + 1
    }
    /// Σ w·q_a q_b ‖s(x|a) − s(x|b)‖² of partition `i` (its Rao–Blackwell rate over g²/2, with
    /// q_z = π_z/(π_a + π_b) and s(x|z) = Σ_{y∈z} π_y s(x|y)/π_z) and the sum of its squares.
    pub fn part_rate(&self, i: usize) -> usize {
        self.part_w(i) + 2
    }
    pub fn part_rate2(&self, i: usize) -> usize {
        self.part_w(i) + 3
    }
    /// Σ π_k^final and Σ π_k^final·h of class `k`.
    pub fn class_w(&self, k: usize) -> usize {
        Self::FIXED + Self::PER_PARTITION * self.partitions + Self::PER_CLASS * k
    }
    pub fn class_wh(&self, k: usize) -> usize {
        self.class_w(k) + 1
    }
    /// Σ π_k (Σ_y π_y ‖Δ_y‖² + 2 Δ_k·u), u = Σ_y π_y ln π_y Δ_y (π tracked, at the point itself):
    /// class k's Rao–Blackwell entropy rate over g²/2 (see [`crate::info::curves`]), and the
    /// sum of its squares. Summed over k it is `RB`.
    pub fn class_rate(&self, k: usize) -> usize {
        self.class_w(k) + 2
    }
    pub fn class_rate2(&self, k: usize) -> usize {
        self.class_w(k) + 3
    }
    pub fn width(&self) -> usize {
        Self::FIXED + Self::PER_PARTITION * self.partitions + Self::PER_CLASS * self.classes
    }
}

/// Sums over trajectories at each grid point. (S+1, width)
#[derive(Clone, Debug, PartialEq)]
pub struct InfoSums {
    pub layout: Layout,
    pub points: usize,
    pub data: Vec<f64>,
}

impl InfoSums {
    pub fn new(layout: Layout, points: usize) -> Self {
        InfoSums {
            layout,
            points,
            data: vec![0.0; points * layout.width()],
        }
    }
    /// The sums of grid point j. (width)
    pub fn row(&self, j: usize) -> &[f64] {
        let w = self.layout.width();
        &self.data[j * w..(j + 1) * w]
    }
    pub fn row_mut(&mut self, j: usize) -> &mut [f64] {
        let w = self.layout.width();
        &mut self.data[j * w..(j + 1) * w]
    }
    /// Adds `other` (same layout and grid).
    pub fn merge(&mut self, other: &InfoSums) {
        debug_assert_eq!(self.data.len(), other.data.len());
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a += b;
        }
    }
}

/// Quadrature weights of ∫_t^T (g²/2) γ(u) du on a grid (noise first): the integral at point p is
/// `Σ_{q≤p} (w[q][0] γ(q−1) + w[q][1] γ(q))`, the trapezoid rule, except on the last interval
/// (ending at the data, where no score is evaluated), which takes its left end. `w[0] = [0, 0]`.
pub fn integral_weights(grid: &Grid) -> Vec<[f64; 2]> {
    let pts = &grid.points;
    let n = pts.len();
    (0..n)
        .map(|p| {
            if p == 0 {
                return [0.0, 0.0];
            }
            let dt = pts[p - 1].t - pts[p].t;
            if p == n - 1 {
                [dt * 0.5 * pts[p - 1].g2, 0.0]
            } else {
                [0.5 * dt * 0.5 * pts[p - 1].g2, 0.5 * dt * 0.5 * pts[p].g2]
            }
        })
        .collect()
}
