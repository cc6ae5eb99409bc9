//! The fused step's flat parameters: [`SdeStepParams`], the one struct the CPU body
//! ([`super::cpu`]) and the GPU launch ([`super::cuda`]) read, built and checked here from the
//! step's transition coefficients (a, c, var), σ, the noise key, the batch's shape, its decision
//! problems (class lists, sent as bitmasks) and its Hutchinson probes; and the record's offsets.
//! The limits and offsets are [`crate::info::sums::consts`]' (shared with the kernel through the
//! generated `layout.cuh`).

use crate::error::{Error, Result};
use crate::info::sums::consts;
use crate::rng::{MAX_PROBES, Noise, PROBE_STREAM};

/// Most classes the fused step takes (the GPU kernel keeps 3K partial sums per thread).
pub const MAX_CLASSES: usize = consts::SDE_STEP_MAX_CLASSES;
/// Most decision problems (partitions) the fused step records.
pub const MAX_PARTITIONS: usize = consts::SDE_STEP_MAX_PARTITIONS;

/// Record offsets (see the module docs): H(π), Σ π‖Δ‖², non-finite flag, ‖s‖², ∇·s estimate;
/// the K- and P-long fields follow from [`REC_FIXED`].
pub const REC_H: usize = consts::SDE_STEP_REC_H;
pub const REC_RB: usize = consts::SDE_STEP_REC_RB;
pub const REC_FLAG: usize = consts::SDE_STEP_REC_FLAG;
pub const REC_S2: usize = consts::SDE_STEP_REC_S2;
pub const REC_DIV: usize = consts::SDE_STEP_REC_DIV;
pub const REC_FIXED: usize = consts::SDE_STEP_REC_FIXED;

/// The step's coefficients and addresses; mirrored field for field by `SdeStepParams` in
/// `kernels/sde_step.cu` (`#[repr(C)]`, 136 bytes; tests/cuda.rs checks its size and every
/// field's offset against the kernel's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SdeStepParams {
    /// x' = a x + c s + sd z.
    pub a: f32,
    pub c: f32,
    /// √var (0 for a deterministic step: no noise, no classifier update).
    pub sd: f32,
    /// c/√var and c²/(2 var).
    pub cs: f32,
    pub kl: f32,
    /// −1/σ_t: s = −ε̂/σ_t.
    pub neg_inv_sigma: f32,
    /// Philox key (the seed's two halves).
    pub key0: u32,
    pub key1: u32,
    /// Trajectory index of batch row 0.
    pub traj0: u64,
    pub step: u32,
    pub dim: u32,
    pub classes: u32,
    pub batch: u32,
    /// Decision problems recorded (≤ [`MAX_PARTITIONS`]), their sides as class bitmasks below.
    pub partitions: u32,
    /// Hutchinson probes N (≤ [`MAX_PROBES`]); 0: no divergence estimate.
    pub probes: u32,
    /// Probe step h (x ± h v) and the divergence's scale −1/(2 h N σ).
    pub probe_h: f32,
    pub div_scale: f32,
    pub part_a: [u32; MAX_PARTITIONS],
    pub part_b: [u32; MAX_PARTITIONS],
}

impl SdeStepParams {
    /// Parameters for the transition x' = a x + c s + √var z of `step`, scores from ε̂ at σ; no
    /// partitions and no probes (see [`SdeStepParams::with_partitions`],
    /// [`SdeStepParams::with_probes`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        (a, c, var): (f64, f64, f64),
        sigma: f64,
        noise: Noise,
        traj0: u64,
        step: u32,
        (batch, classes, dim): (usize, usize, usize),
    ) -> Result<SdeStepParams> {
        if !(sigma > 0.0) || !(var >= 0.0) || !a.is_finite() || !c.is_finite() {
            return Err(Error::Unsupported {
                op: "sde_step",
                reason: format!("coefficients a = {a}, c = {c}, var = {var}, σ = {sigma}"),
            });
        }
        if classes == 0 || classes > MAX_CLASSES || dim == 0 || dim > u32::MAX as usize {
            return Err(Error::shape(
                "sde_step: classes in 1..=32, dim ≥ 1",
                (MAX_CLASSES, 1),
                (classes, dim),
            ));
        }
        let sd = var.sqrt();
        let crate::info::OnlineUpdate { cs, kl } = crate::info::OnlineUpdate::new(c, var);
        let [key0, key1] = noise.key();
        Ok(SdeStepParams {
            a: a as f32,
            c: c as f32,
            sd: sd as f32,
            cs: cs as f32,
            kl: kl as f32,
            neg_inv_sigma: (-1.0 / sigma) as f32,
            key0,
            key1,
            traj0,
            step,
            dim: dim as u32,
            classes: classes as u32,
            batch: batch as u32,
            partitions: 0,
            probes: 0,
            probe_h: 0.0,
            div_scale: 0.0,
            part_a: [0; MAX_PARTITIONS],
            part_b: [0; MAX_PARTITIONS],
        })
    }

    /// Records ‖s(x|a) − s(x|b)‖² for each decision problem (a, b) (class lists, disjoint,
    /// classes < K); at most [`MAX_PARTITIONS`].
    pub fn with_partitions<'a>(
        mut self,
        parts: impl IntoIterator<Item = (&'a [usize], &'a [usize])>,
    ) -> Result<SdeStepParams> {
        let k = self.classes as usize;
        let mut n = 0;
        for (a, b) in parts {
            if n == MAX_PARTITIONS {
                return Err(Error::Unsupported {
                    op: "sde_step",
                    reason: format!(
                        "the fused neural step records at most {MAX_PARTITIONS} decision problems"
                    ),
                });
            }
            let mask = |set: &[usize]| -> Result<u32> {
                set.iter().try_fold(0u32, |m, &c| {
                    if c < k {
                        Ok(m | 1 << c)
                    } else {
                        Err(Error::shape("sde_step: partition class < K", k, c))
                    }
                })
            };
            let (ma, mb) = (mask(a)?, mask(b)?);
            if ma & mb != 0 {
                return Err(Error::Unsupported {
                    op: "sde_step",
                    reason: format!(
                        "partition {n}: a class on both sides (masks {ma:#x}, {mb:#x})"
                    ),
                });
            }
            self.part_a[n] = ma;
            self.part_b[n] = mb;
            n += 1;
        }
        self.partitions = n as u32;
        Ok(self)
    }

    /// Estimates ∇·s with `probes` Hutchinson probes at step `h` (> 0): ε̂ then holds 2·probes
    /// more rows per state (see the module docs). 0 probes: none.
    pub fn with_probes(mut self, probes: usize, h: f32) -> Result<SdeStepParams> {
        if probes > MAX_PROBES {
            return Err(Error::Unsupported {
                op: "sde_step",
                reason: format!("{probes} Hutchinson probes: at most {MAX_PROBES}"),
            });
        }
        if probes > 0 && (!(h > 0.0) || !h.is_finite() || self.step >= PROBE_STREAM - 1) {
            return Err(Error::Unsupported {
                op: "sde_step",
                reason: format!(
                    "probe step h = {h} (needs h > 0) at step {} (< 2³¹ − 1)",
                    self.step
                ),
            });
        }
        self.probes = probes as u32;
        self.probe_h = if probes > 0 { h } else { 0.0 };
        self.div_scale = if probes > 0 {
            (self.neg_inv_sigma as f64 / (2.0 * h as f64 * probes as f64)) as f32
        } else {
            0.0
        };
        Ok(self)
    }

    /// Network output rows per state: K + 1 + 2N.
    pub fn eps_rows(&self) -> usize {
        self.classes as usize + 1 + 2 * self.probes as usize
    }

    /// Record values per trajectory: 5 + 3K + P.
    pub fn record_width(&self) -> usize {
        REC_FIXED + 3 * self.classes as usize + self.partitions as usize
    }

    /// Checks buffer lengths: x (B, D), ε̂ (B, R, D), ln π (B, K), record (B, W).
    pub fn check(&self, x: usize, eps: usize, log_pi: usize, rec: usize) -> Result<()> {
        let (b, k, d) = (
            self.batch as usize,
            self.classes as usize,
            self.dim as usize,
        );
        let want = (
            b * d,
            b * self.eps_rows() * d,
            b * k,
            b * self.record_width(),
        );
        if (x, eps, log_pi, rec) != want {
            return Err(Error::shape(
                "sde_step: x (B, D), eps (B, K+1+2N, D), log_pi (B, K), record (B, 5 + 3K + P)",
                want,
                (x, eps, log_pi, rec),
            ));
        }
        Ok(())
    }
}
