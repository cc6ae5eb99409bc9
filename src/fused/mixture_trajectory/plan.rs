//! The mixture kernel's plan: everything [`super::cpu`] and [`super::cuda`] read, computed here
//! once in f64 from the domain (the [`GaussianMixture`], the [`InfoSpec`]'s classes and decision
//! problems, the [`Grid`], the sampler's transitions through `transition_coefficients`, the
//! [`Layout`] of the sums) and stored flat in f32: per grid point and component s_t m_k, 1/Σ_k,
//! the log-normalisers and d/σ² − tr Σ_k⁻¹; per step a, c, √var and the online classifier's
//! c/√var, c²/(2 var) ([`crate::info::OnlineUpdate`]); the initial state's moments; the
//! quadrature weights of the rate integrals; each decision problem's classes and 1/P(a∪b). The
//! kernels see no domain type, only these arrays and sizes.

use crate::diffusion::{Grid, GridPoint, SamplerKind, Transition};
use crate::error::{Error, Result};
use crate::info::sums::{consts, integral_weights};
use crate::info::{InfoSpec, Layout, OnlineUpdate};
use crate::rng::Noise;
use crate::score::mixture::VAR_FLOOR;
use crate::score::{GaussianMixture, ScoreModel};

/// The transition x' = a x + c s + √var z of the step from `p` to `q` (`last`: the step to
/// the data): the one place the plan asks the sampler.
fn transition_coefficients(
    sampler: &SamplerKind,
    p: &GridPoint,
    q: &GridPoint,
    last: bool,
) -> Result<Transition> {
    let tr = sampler
        .transition(p, q, last)
        .ok_or_else(|| Error::Unsupported {
            op: "MixturePlan",
            reason: format!(
                "{} has no one-step linear-Gaussian transition (a multistep, two-stage or \
                 clipped step); the generic engine runs it",
                sampler.name()
            ),
        })?;
    if tr.one_term().is_none() {
        return Err(Error::Unsupported {
            op: "MixturePlan",
            reason: format!(
                "{}'s transition takes earlier scores, which the fused kernel does not keep",
                sampler.name()
            ),
        });
    }
    Ok(tr)
}

#[derive(Clone, Debug)]
pub(super) struct PartPlan {
    pub(super) a: Vec<usize>,
    pub(super) b: Vec<usize>,
    pub(super) inv_mass: f32,
    pub(super) a_single: Option<usize>,
    pub(super) b_single: Option<usize>,
    pub(super) covers_all: bool,
}

/// Everything the kernel needs, precomputed in f64 and stored in f32.
#[derive(Clone, Debug)]
pub struct MixturePlan {
    pub dim: usize,
    pub comps: usize,
    pub classes: usize,
    pub steps: usize,
    pub(super) class_of: Vec<usize>,
    pub(super) one_per_class: bool,
    /// Per decision problem: classes a, classes b, 1/P(a∪b), and the shortcuts for the logs:
    /// the single class of a (of b), and whether a∪b covers every class (then ln P(a∪b) = 0).
    pub(super) parts: Vec<PartPlan>,
    pub(super) prior: Vec<f32>,
    pub(super) log_prior: Vec<f32>,
    /// s_t m_k per point. (S+1, Kc, D)
    pub(super) sm: Vec<f32>,
    /// 1/Σ_k per point. (S+1, Kc, D)
    pub(super) inv: Vec<f32>,
    /// ln π_k − ½ Σ_d ln(2π Σ_kd). (S+1, Kc)
    pub(super) lognorm: Vec<f32>,
    /// d/σ_t² − tr Σ_k⁻¹, computed in f64 (exactly 0 for a point mass). (S+1, Kc)
    pub(super) dtrace: Vec<f32>,
    /// d/σ_t² (σ² floored as in `dtrace`), for the integration-by-parts production. (S+1)
    pub(super) d_over_s2: Vec<f32>,
    /// t of every grid point (for error messages). (S+1)
    pub(super) times: Vec<f64>,
    /// Per step: a, c, √var, c/√var, c²/(2 var). (S, 5)
    pub(super) coef: Vec<[f32; 5]>,
    /// Initial state: s_T m_k and √(s_T² C_k + σ_T²). (Kc, D)
    pub(super) init_mean: Vec<f32>,
    pub(super) init_sd: Vec<f32>,
    pub(super) cum: Vec<f32>,
    /// Quadrature weights of the rate integrals (`integral_weights`). (S+1, 2)
    pub(super) gw: Vec<[f32; 2]>,
    pub(super) key: [u32; 2],
    pub(super) layout: Layout,
    /// The columns the step loop accumulates, and those of the final-posterior pass (GIR,
    /// GIRC2, HG2, class weights): each pass reduces only its own.
    pub(super) step_cols: Vec<usize>,
    pub(super) final_cols: Vec<usize>,
}

impl MixturePlan {
    fn final_columns(lay: &Layout) -> Vec<usize> {
        let mut v = vec![Layout::GIR, Layout::GIRC2, Layout::HG2];
        for y in 0..lay.classes {
            v.push(lay.class_w(y));
            v.push(lay.class_wh(y));
        }
        v
    }
    /// Prepares the kernel for `mixture` sampled by `sampler` (ancestral, Euler–Maruyama or DDIM
    /// with η = 1: the samplers the online classifier is Bayes for) on `grid`.
    pub fn new(
        mixture: &GaussianMixture,
        spec: &InfoSpec,
        grid: &Grid,
        sampler: &SamplerKind,
        noise: Noise,
    ) -> Result<Self> {
        if let Some(reason) = sampler.online_classifier_refusal() {
            return Err(Error::Unsupported {
                op: "MixturePlan",
                reason,
            });
        }
        let (d, kc, k) = (mixture.dim(), mixture.components().len(), spec.classes());
        if k != mixture.num_classes() {
            return Err(Error::shape(
                "MixturePlan: classes of spec vs mixture",
                mixture.num_classes(),
                k,
            ));
        }
        if grid.points.len() < 2 {
            return Err(Error::shape(
                "MixturePlan: grid points",
                "at least 2",
                grid.points.len(),
            ));
        }
        let pts = &grid.points;
        let steps = pts.len() - 1;
        let weights = mixture.weights();
        let mut sm = Vec::with_capacity((steps + 1) * kc * d);
        let mut inv = Vec::with_capacity((steps + 1) * kc * d);
        let mut lognorm = Vec::with_capacity((steps + 1) * kc);
        let mut dtrace = Vec::with_capacity((steps + 1) * kc);
        for p in pts {
            for (i, c) in mixture.components().iter().enumerate() {
                let mut ln_det = 0.0;
                let mut tr = 0.0;
                for j in 0..d {
                    let v = mixture.component_var(i, j, p.s, p.sigma);
                    sm.push((p.s * c.mean[j]) as f32);
                    inv.push((1.0 / v) as f32);
                    ln_det += (2.0 * std::f64::consts::PI * v).ln();
                    tr += 1.0 / v;
                }
                lognorm.push((weights[i].ln() - 0.5 * ln_det) as f32);
                // Point masses: Σ_k = σ² I exactly, so d/σ² − tr Σ_k⁻¹ = 0 without rounding.
                let point_mass = c.var.iter().all(|v| *v == 0.0);
                let dt = if point_mass {
                    0.0
                } else {
                    d as f64 / (p.sigma * p.sigma).max(VAR_FLOOR) - tr
                };
                dtrace.push(dt as f32);
            }
        }
        let coef = (0..steps)
            .map(|j| {
                // Step j lands on grid.target(j) (diffusers' DDPM/DDIM step to t − T/S), as the
                // generic driver's does.
                let tr = transition_coefficients(sampler, &pts[j], grid.target(j), j + 1 == steps)?;
                let sd = tr.var.sqrt();
                let upd = OnlineUpdate::from_transition(&tr);
                Ok([
                    tr.a as f32,
                    tr.c as f32,
                    sd as f32,
                    upd.cs as f32,
                    upd.kl as f32,
                ])
            })
            .collect::<Result<_>>()?;
        let p0 = &pts[0];
        let mut init_mean = Vec::with_capacity(kc * d);
        let mut init_sd = Vec::with_capacity(kc * d);
        for c in mixture.components() {
            for j in 0..d {
                init_mean.push((p0.s * c.mean[j]) as f32);
                init_sd.push((p0.s * p0.s * c.var[j] + p0.sigma * p0.sigma).sqrt() as f32);
            }
        }
        let parts = spec
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| PartPlan {
                a: p.a.clone(),
                b: p.b.clone(),
                inv_mass: (1.0 / spec.partition_mass(i)) as f32,
                a_single: (p.a.len() == 1).then(|| p.a[0]),
                b_single: (p.b.len() == 1).then(|| p.b[0]),
                covers_all: p.a.len() + p.b.len() == k,
            })
            .collect();
        Ok(MixturePlan {
            dim: d,
            comps: kc,
            classes: k,
            steps,
            class_of: mixture.components().iter().map(|c| c.class).collect(),
            one_per_class: mixture.one_component_per_class(),
            parts,
            prior: spec.prior.iter().map(|&p| p as f32).collect(),
            log_prior: spec.prior.iter().map(|&p| p.ln() as f32).collect(),
            sm,
            inv,
            lognorm,
            dtrace,
            d_over_s2: pts
                .iter()
                .map(|p| (d as f64 / (p.sigma * p.sigma).max(VAR_FLOOR)) as f32)
                .collect(),
            times: pts.iter().map(|p| p.t).collect(),
            coef,
            init_mean,
            init_sd,
            cum: mixture.cumulative_weights_f32(),
            gw: integral_weights(grid)
                .iter()
                .map(|w| [w[0] as f32, w[1] as f32])
                .collect(),
            key: noise.key(),
            layout: Layout::new(spec),
            step_cols: {
                let f = Self::final_columns(&Layout::new(spec));
                (0..Layout::new(spec).width())
                    .filter(|q| !f.contains(q))
                    .collect()
            },
            final_cols: Self::final_columns(&Layout::new(spec)),
        })
    }
}

/// A [`MixturePlan`] flattened for the GPU kernel: the arrays of `MixPlan` in
/// kernels/mixture_trajectory.cu, in its field order, and the dimensions of `MixParams`.
#[derive(Clone, Debug)]
pub struct FlatPlan {
    /// dim, classes, comps, parts, steps.
    pub dims: [u32; 5],
    pub one_per_class: bool,
    pub key: [u32; 2],
    /// sm, inv, lognorm, dtrace, d_over_s2, coef (S, 5), gw (S+1, 2), init_mean, init_sd, cum,
    /// prior, log_prior.
    pub f32s: [Vec<f32>; 12],
    pub class_of: Vec<u32>,
    /// Class bitmasks of each decision problem's two sides.
    pub part_a: Vec<u32>,
    pub part_b: Vec<u32>,
    /// The single class of a side, or −1.
    pub part_a_single: Vec<i32>,
    pub part_b_single: Vec<i32>,
    pub part_covers_all: Vec<u32>,
    pub part_inv_mass: Vec<f32>,
    pub layout: Layout,
}

/// Largest shapes of the GPU kernel (its per-thread arrays): D, K, components, decision problems
/// (`MIX_MAX_*`, shared with the kernel through the generated header).
pub const GPU_MAX: [usize; 4] = [
    consts::MIX_MAX_D,
    consts::MIX_MAX_K,
    consts::MIX_MAX_KC,
    consts::MIX_MAX_P,
];

/// Why the GPU kernel cannot take a job of shape (D, K, components, decision problems), if it
/// cannot: the first dimension past [`GPU_MAX`], named.
pub fn gpu_shape_limit(dims: [usize; 4]) -> Option<String> {
    ["dimension", "classes", "components", "decision problems"]
        .iter()
        .zip(dims.iter().zip(GPU_MAX))
        .find(|(_, (d, max))| **d > *max)
        .map(|(name, (d, max))| format!("{name}: at most {max} on the GPU kernel, found {d}"))
}

impl MixturePlan {
    /// The plan as the GPU kernel reads it; shapes past [`GPU_MAX`] are refused by name.
    pub fn flat(&self) -> Result<FlatPlan> {
        if let Some(reason) =
            gpu_shape_limit([self.dim, self.classes, self.comps, self.parts.len()])
        {
            return Err(Error::Unsupported {
                op: "mixture_trajectory (GPU)",
                reason,
            });
        }
        let mask = |v: &[usize]| v.iter().fold(0u32, |m, c| m | 1 << c);
        let single = |s: Option<usize>| s.map_or(-1, |c| c as i32);
        Ok(FlatPlan {
            dims: [
                self.dim as u32,
                self.classes as u32,
                self.comps as u32,
                self.parts.len() as u32,
                self.steps as u32,
            ],
            one_per_class: self.one_per_class,
            key: self.key,
            f32s: [
                self.sm.clone(),
                self.inv.clone(),
                self.lognorm.clone(),
                self.dtrace.clone(),
                self.d_over_s2.clone(),
                self.coef.iter().flatten().copied().collect(),
                self.gw.iter().flatten().copied().collect(),
                self.init_mean.clone(),
                self.init_sd.clone(),
                self.cum.clone(),
                self.prior.clone(),
                self.log_prior.clone(),
            ],
            class_of: self.class_of.iter().map(|c| *c as u32).collect(),
            part_a: self.parts.iter().map(|p| mask(&p.a)).collect(),
            part_b: self.parts.iter().map(|p| mask(&p.b)).collect(),
            part_a_single: self.parts.iter().map(|p| single(p.a_single)).collect(),
            part_b_single: self.parts.iter().map(|p| single(p.b_single)).collect(),
            part_covers_all: self.parts.iter().map(|p| p.covers_all as u32).collect(),
            part_inv_mass: self.parts.iter().map(|p| p.inv_mass).collect(),
            layout: self.layout,
        })
    }

    /// t of grid point `p` (for error messages).
    pub fn time(&self, p: usize) -> f64 {
        self.times[p.min(self.times.len() - 1)]
    }
}
