//! Reverse samplers behind one trait ([`Sampler`]), one file per sampler, and the driver
//! [`sample`] that runs a batch through a score model and shows every step to an [`Observer`].
//!
//! Going from grid point t to t' < t with r = s_t/s_{t'} and v = σ_t² − r²σ_{t'}² (the variance of
//! the forward transition t' → t), every stochastic sampler here is a Gaussian transition linear
//! in the score, x' = a·x + c·s(x, t) + √var·z, z ~ N(0, I) ([`Transition`]); the update rules
//! are in each sampler's file: [`ancestral`], [`ddim`], [`euler_maruyama`], [`heun_ode`], and
//! diffusers' schedulers: [`ddpm`], [`ddim`] (with `clip_sample`), [`euler`],
//! [`euler_ancestral`], [`heun`], [`dpmpp_2m`], [`dpmpp_2m_sde`], [`dpmpp_3m_sde`].
//! A multistep sampler's mean also takes the scores (and states) of earlier grid points,
//! μ = a·x + c·s + Σ_j c_j·s_j + (terms in the earlier states, which do not depend on the label);
//! the sampler keeps that history itself ([`multistep`]).
//!
//! Every sampler works on grid points of any process (x = s_t x₀ + σ_t ε): diffusers' σ-space
//! samplers (Euler, Heun, …) take σ̃ = σ_t/s_t and carry the state s_t·x̃, which is their
//! `scale_model_input`, so the network input is always the state itself.
//!
//! A class-conditional transition differs from the unconditional one only in its mean,
//! by Σ_j c_j·(s_j(x | y) − s_j(x)); the online classifier uses exactly that
//! ([`crate::info::OnlineUpdate`]).
//!
//! Adding a sampler: one file here implementing [`Sampler`] (or, for a one-step linear-Gaussian
//! step, only [`OneStep::transition`]), and one [`SamplerKind`] variant (with its config name)
//! whose arms in this file say how to build it and what it supports.

pub mod ancestral;
pub mod ddim;
pub mod ddpm;
pub mod dpmpp_2m;
pub mod dpmpp_2m_sde;
pub mod dpmpp_3m_sde;
pub mod euler;
pub mod euler_ancestral;
pub mod euler_maruyama;
pub mod heun;
pub mod heun_ode;
pub mod multistep;

use crate::diffusion::{Grid, GridPoint, param};
use crate::error::{Error, Result};
use crate::rng::Noise;
use crate::score::{ScoreCtx, ScoreModel, Scores};

/// Variance of the ancestral step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AncestralVariance {
    /// var = v = β_t (the forward transition variance).
    #[default]
    Beta,
    /// var = σ_{t'}² v / σ_t² = β̃_t (the posterior variance q(x_{t'} | x_t, x_0)).
    BetaTilde,
}

/// Which reverse sampler, with its settings: the configuration that [`SamplerKind::build`] turns
/// into a [`Sampler`]. Serialised as the job config names it, `{"kind": "ddim", "eta": 0.5}`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerKind {
    Ancestral {
        #[serde(default)]
        variance: AncestralVariance,
    },
    Ddim {
        #[serde(default)]
        eta: f64,
        /// Clamp x̂₀ to [−clip, clip] before the step (DDIMScheduler's `clip_sample`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip: Option<f64>,
    },
    EulerMaruyama,
    HeunOde,
    /// DDPMScheduler: the ancestral step with the posterior variance β̃ ("fixed_small"), x̂₀
    /// clamped to [−clip, clip] where set (`clip_sample`).
    Ddpm {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip: Option<f64>,
    },
    /// EulerDiscreteScheduler: Euler on the probability-flow ODE in σ = σ_t/s_t.
    Euler,
    /// EulerAncestralDiscreteScheduler.
    EulerAncestral,
    /// HeunDiscreteScheduler: Heun's second-order method in σ.
    Heun,
    /// DPMSolverMultistepScheduler, second order, `dpmsolver++`.
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m,
    /// DPMSolverMultistepScheduler, second order, `sde-dpmsolver++`.
    #[serde(rename = "dpmpp_2m_sde")]
    Dpmpp2mSde,
    /// DPM-Solver++(3M) SDE (third-order multistep, `sde-dpmsolver++`).
    #[serde(rename = "dpmpp_3m_sde")]
    Dpmpp3mSde,
}

/// Most earlier-point score terms a [`Transition`] holds (a third-order multistep method needs 2).
pub const MAX_EARLIER_TERMS: usize = 3;

/// x' = a·x + c·s + Σ_j c_j·s_{−j} + √var·z: `c` is the coefficient on the score at the step's
/// own point (`from`), `earlier()[j − 1]` the one on the score taken j grid steps before it.
/// One-step samplers have no earlier terms ([`Transition::one_term`]).
///
/// A multistep sampler's mean (DPM-Solver++) also has terms b_j·x_{−j} in the earlier states
/// (through their x̂₀'s), which do not depend on the label and are not reported: `a` is then the
/// coefficient on the current state x alone, ∂x'/∂x, not the whole mean's; the unconditional
/// mean is x' − √var·z, and the class-conditional one differs from it by
/// c·(s(x | y) − s(x)) + Σ_j c_j·(s_{−j}(x_{−j} | y) − s_{−j}(x_{−j})) ([`multistep`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub a: f64,
    pub c: f64,
    pub var: f64,
    earlier: [f64; MAX_EARLIER_TERMS],
    n_earlier: usize,
}

impl Transition {
    /// The one-term transition x' = a·x + c·s + √var·z.
    pub fn new(a: f64, c: f64, var: f64) -> Transition {
        Transition {
            a,
            c,
            var,
            earlier: [0.0; MAX_EARLIER_TERMS],
            n_earlier: 0,
        }
    }

    /// Adds the coefficients on the scores 1, 2, … grid steps back (at most [`MAX_EARLIER_TERMS`]).
    pub fn with_earlier(mut self, coefs: &[f64]) -> Result<Transition> {
        if coefs.len() > MAX_EARLIER_TERMS {
            return Err(Error::shape(
                "Transition::with_earlier: earlier score terms",
                MAX_EARLIER_TERMS,
                coefs.len(),
            ));
        }
        self.earlier[..coefs.len()].copy_from_slice(coefs);
        self.n_earlier = coefs.len();
        Ok(self)
    }

    /// The coefficients c_j on the scores j = 1, 2, … grid steps back.
    pub fn earlier(&self) -> &[f64] {
        &self.earlier[..self.n_earlier]
    }

    /// (a, c, var) when the mean takes only the score at `from` (every one-step sampler); None
    /// for a multistep transition. The fused kernels' plans take this form.
    pub fn one_term(&self) -> Option<(f64, f64, f64)> {
        (self.n_earlier == 0).then_some((self.a, self.c, self.var))
    }
}

impl SamplerKind {
    /// Every kind's config name (`{"kind": …}`), in declaration order: the list the job config
    /// offers when a kind is unknown.
    pub const NAMES: [&'static str; 11] = [
        "ancestral",
        "ddim",
        "euler_maruyama",
        "heun_ode",
        "ddpm",
        "euler",
        "euler_ancestral",
        "heun",
        "dpmpp_2m",
        "dpmpp_2m_sde",
        "dpmpp_3m_sde",
    ];

    /// This kind's config name, one of [`SamplerKind::NAMES`].
    pub fn name(&self) -> &'static str {
        match self {
            SamplerKind::Ancestral { .. } => "ancestral",
            SamplerKind::Ddim { .. } => "ddim",
            SamplerKind::EulerMaruyama => "euler_maruyama",
            SamplerKind::HeunOde => "heun_ode",
            SamplerKind::Ddpm { .. } => "ddpm",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerAncestral => "euler_ancestral",
            SamplerKind::Heun => "heun",
            SamplerKind::Dpmpp2m => "dpmpp_2m",
            SamplerKind::Dpmpp2mSde => "dpmpp_2m_sde",
            SamplerKind::Dpmpp3mSde => "dpmpp_3m_sde",
        }
    }

    /// Whether the transitions are random.
    pub fn is_stochastic(&self) -> bool {
        match self {
            SamplerKind::Ancestral { .. }
            | SamplerKind::EulerMaruyama
            | SamplerKind::Ddpm { .. }
            | SamplerKind::EulerAncestral
            | SamplerKind::Dpmpp2mSde
            | SamplerKind::Dpmpp3mSde => true,
            SamplerKind::Ddim { eta, .. } => *eta > 0.0,
            SamplerKind::HeunOde
            | SamplerKind::Euler
            | SamplerKind::Heun
            | SamplerKind::Dpmpp2m => false,
        }
    }

    /// Whether the online classifier is Bayes along this sampler's paths: the sampler must
    /// discretise the reverse SDE itself (diffusion g, drift f x − g² s), so that the mixture
    /// over y of the class-conditional path laws is the unconditional one, and its step must be
    /// a Gaussian transition linear in the scores. Ancestral sampling, Euler–Maruyama and DDIM
    /// with η = 1 do, and so do:
    /// - `ddpm` without clipping: the ancestral step with the posterior variance β̃, which is
    ///   DDIM with η = 1 ([`ddpm`]);
    /// - `euler_ancestral`: σ_up, σ_down make it DDIM with η = 1 on the same points
    ///   ([`euler_ancestral`]);
    /// - `dpmpp_2m_sde`, `dpmpp_3m_sde`: the first-order step is DDIM with η = 1, and the
    ///   higher orders only correct the mean by earlier x̂₀'s, keeping the reverse SDE's noise
    ///   ([`dpmpp_2m_sde`], [`dpmpp_3m_sde`]).
    ///
    /// DDIM with 0 < η < 1 is the SDE with drift f x − ½(1+η²) g² s and diffusion η g: its
    /// transition ratio overstates the label information by (1+η²)²/(4η²) per unit time, so it
    /// is not used; nor can deterministic samplers drive it, nor a clipped x̂₀ (not linear in
    /// the score).
    pub fn supports_online_classifier(&self) -> bool {
        match self {
            SamplerKind::Ancestral { .. } | SamplerKind::EulerMaruyama => true,
            SamplerKind::Ddim { eta, clip: None } => *eta == 1.0,
            SamplerKind::Ddpm { clip: None } => true,
            SamplerKind::EulerAncestral | SamplerKind::Dpmpp2mSde | SamplerKind::Dpmpp3mSde => true,
            _ => false,
        }
    }

    /// Why the online classifier cannot run on this sampler (None where it can).
    pub fn online_classifier_refusal(&self) -> Option<String> {
        match self {
            _ if self.supports_online_classifier() => None,
            SamplerKind::Ddim { clip: Some(c), .. } | SamplerKind::Ddpm { clip: Some(c) } => {
                Some(format!(
                    "the online classifier needs steps linear in the score; sampler {} clamps \
                     x̂₀ to ±{c} (clip_sample), which is not",
                    self.name()
                ))
            }
            SamplerKind::Ddim { eta, .. } if *eta > 0.0 => Some(format!(
                "the online classifier is Bayes only along reverse-SDE paths (ancestral, euler_maruyama, ddim with eta = 1); \
                 ddim with eta = {eta} overstates the label information by (1+η²)²/(4η²)"
            )),
            _ => Some(format!(
                "the online classifier needs stochastic transitions; sampler {} is deterministic",
                self.name()
            )),
        }
    }

    /// The one-step linear-Gaussian transition from `p` to `q` (`last`: the final step), for
    /// samplers whose step depends on nothing but the two points (None for the Heuns, for any
    /// multistep sampler, and where x̂₀ is clipped). The fused kernels' plans build their steps
    /// from this.
    pub fn transition(&self, p: &GridPoint, q: &GridPoint, last: bool) -> Option<Transition> {
        match *self {
            SamplerKind::Ancestral { variance } => {
                Some(ancestral::Ancestral { variance }.transition(p, q, last))
            }
            SamplerKind::Ddim { eta, clip: None } => {
                Some(ddim::Ddim { eta }.transition(p, q, last))
            }
            SamplerKind::EulerMaruyama => {
                Some(euler_maruyama::EulerMaruyama.transition(p, q, last))
            }
            SamplerKind::Ddpm { clip: None } => Some(ddpm::Ddpm::transition(p, q)),
            SamplerKind::Euler => Some(euler::Euler.transition(p, q, last)),
            SamplerKind::EulerAncestral => {
                Some(euler_ancestral::EulerAncestral.transition(p, q, last))
            }
            SamplerKind::Ddim { clip: Some(_), .. }
            | SamplerKind::Ddpm { clip: Some(_) }
            | SamplerKind::HeunOde
            | SamplerKind::Heun
            | SamplerKind::Dpmpp2m
            | SamplerKind::Dpmpp2mSde
            | SamplerKind::Dpmpp3mSde => None,
        }
    }

    /// The sampler for `batch` states of dimension `dim` with `classes` classes on `grid`
    /// (a multistep sampler sizes its history by the batch, and DPM-Solver++(2M) reads the
    /// grid's step count for diffusers' lower-order rules). Refuses a `clip` that is not a
    /// finite number > 0 and an η outside [0, 1].
    pub fn build(
        &self,
        grid: &Grid,
        batch: usize,
        dim: usize,
        classes: usize,
    ) -> Result<Box<dyn Sampler>> {
        self.build_inner(grid, batch, dim, classes, false)
    }

    /// Test-only: [`SamplerKind::build`] with every z = 0 (the mean path), to compare a
    /// stochastic sampler with a reference whose noise is fixed to zeros (diffusers with its
    /// `randn_tensor` patched). The transitions reported are unchanged (their var is what the
    /// step would have added). Deterministic kinds are built as by [`SamplerKind::build`].
    pub fn build_mean_path(
        &self,
        grid: &Grid,
        batch: usize,
        dim: usize,
        classes: usize,
    ) -> Result<Box<dyn Sampler>> {
        self.build_inner(grid, batch, dim, classes, true)
    }

    fn build_inner(
        &self,
        grid: &Grid,
        batch: usize,
        dim: usize,
        classes: usize,
        zero_noise: bool,
    ) -> Result<Box<dyn Sampler>> {
        fn one_step<T: OneStep + 'static>(t: T, zero_noise: bool) -> Box<dyn Sampler> {
            if zero_noise {
                Box::new(MeanPath(t))
            } else {
                Box::new(t)
            }
        }
        if let SamplerKind::Ddim { eta, .. } = *self
            && !(0.0..=1.0).contains(&eta)
        {
            return Err(Error::config("sampler.eta", "a number in [0, 1]", eta));
        }
        if let SamplerKind::Ddim { clip: Some(c), .. } | SamplerKind::Ddpm { clip: Some(c) } = *self
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::config(
                "sampler.clip",
                "a finite number > 0 (clip_sample_range)",
                c,
            ));
        }
        let steps = grid.steps();
        Ok(match *self {
            SamplerKind::Ancestral { variance } => {
                one_step(ancestral::Ancestral { variance }, zero_noise)
            }
            SamplerKind::Ddim { eta, clip: None } => one_step(ddim::Ddim { eta }, zero_noise),
            SamplerKind::Ddim {
                eta,
                clip: Some(clip),
            } => Box::new(ddim::DdimClip {
                eta,
                clip,
                zero_noise,
            }),
            SamplerKind::EulerMaruyama => one_step(euler_maruyama::EulerMaruyama, zero_noise),
            SamplerKind::HeunOde => Box::new(heun_ode::HeunOde::new(batch, dim, classes)),
            SamplerKind::Ddpm { clip } => Box::new(ddpm::Ddpm { clip, zero_noise }),
            SamplerKind::Euler => Box::new(euler::Euler),
            SamplerKind::EulerAncestral => one_step(euler_ancestral::EulerAncestral, zero_noise),
            SamplerKind::Heun => Box::new(heun::Heun::new(batch, dim, classes)),
            SamplerKind::Dpmpp2m => Box::new(dpmpp_2m::Dpmpp2m::new(steps, batch, dim)),
            SamplerKind::Dpmpp2mSde => {
                let mut s = dpmpp_2m_sde::Dpmpp2mSde::new(steps, batch, dim);
                s.zero_noise = zero_noise;
                Box::new(s)
            }
            SamplerKind::Dpmpp3mSde => {
                let mut s = dpmpp_3m_sde::Dpmpp3mSde::new(batch, dim);
                s.zero_noise = zero_noise;
                Box::new(s)
            }
        })
    }
}

/// Where one step of a batch sits: the move from grid point `from` to `to`.
#[derive(Clone, Copy, Debug)]
pub struct StepCtx<'a> {
    /// Step number 0..S−1 (grid point `step` to `step + 1`).
    pub step: usize,
    pub from: &'a GridPoint,
    pub to: &'a GridPoint,
    /// Whether this is the final step (into the data end).
    pub last: bool,
    pub noise: Noise,
    /// Index of the batch's first trajectory.
    pub first_trajectory: u64,
    pub batch: usize,
    pub dim: usize,
}

impl StepCtx<'_> {
    /// The context of a score evaluation inside this step (`corrector`: a later stage's).
    pub fn score_ctx(&self, corrector: bool) -> ScoreCtx {
        ScoreCtx {
            noise: self.noise,
            first_trajectory: self.first_trajectory,
            step: self.step as u32,
            corrector,
        }
    }
}

/// The score evaluations a sampler may ask for inside a step (a dyn-compatible view of a
/// [`ScoreModel`]).
pub trait ScoreFn {
    /// [`ScoreModel::scores_at`].
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> Result<()>;
}

struct ModelFn<'a, M: ?Sized>(&'a M);

impl<M: ScoreModel + ?Sized> ScoreFn for ModelFn<'_, M> {
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> Result<()> {
        self.0.scores_at(x, point, ctx, out)
    }
}

/// A reverse sampler built for one grid and one batch ([`SamplerKind::build`]), holding whatever
/// state it carries from step to step (a multistep method's history, a stage's buffers).
///
/// Every step follows one signature (k-diffusion's): the driver has taken the scores at `x` on
/// `ctx.from`; the sampler writes the next states into `x_next` and the standard normals it used
/// into `z` (zeros where it adds no noise), evaluating `model` again if it has further stages,
/// and returns the Gaussian transition it took (None where the step is not one).
pub trait Sampler: Send {
    /// One grid step of the batch. `x`, `x_next`, `z` and `scores.uncond` are (B, D).
    fn step(
        &mut self,
        model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>>;

    /// The scores of a later stage of the last step (Heun's corrector at the predictor on `to`),
    /// None where there was none.
    fn corrector_scores(&self) -> Option<&Scores> {
        None
    }
}

/// A sampler whose step is a one-term linear-Gaussian transition fixed by the two grid points:
/// implementing [`OneStep::transition`] makes it a [`Sampler`] (z from the run's noise, zeros where
/// var = 0; x' = a·x + c·s + √var·z in f64 per element, rounded once).
pub trait OneStep: Send {
    /// The transition from `p` to `q` (`last`: the final step, into the data end).
    fn transition(&self, p: &GridPoint, q: &GridPoint, last: bool) -> Transition;
}

impl<T: OneStep> Sampler for T {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        let tr = self.transition(ctx.from, ctx.to, ctx.last);
        one_step_apply(&tr, ctx, x, scores, tr.var > 0.0, x_next, z);
        Ok(Some(tr))
    }
}

/// A one-step sampler's mean path (test-only, [`SamplerKind::build_mean_path`]): the step of `T`
/// with z = 0, reporting `T`'s transition unchanged.
pub struct MeanPath<T>(pub T);

impl<T: OneStep> Sampler for MeanPath<T> {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        let tr = self.0.transition(ctx.from, ctx.to, ctx.last);
        one_step_apply(&tr, ctx, x, scores, false, x_next, z);
        Ok(Some(tr))
    }
}

/// x' = a x + c s + √var z in f64 per element, rounded once; z drawn when `draw`, else zeros.
fn one_step_apply(
    tr: &Transition,
    ctx: &StepCtx<'_>,
    x: &[f32],
    scores: &Scores,
    draw: bool,
    x_next: &mut [f32],
    z: &mut [f32],
) {
    let n = ctx.batch * ctx.dim;
    fill_noise(ctx, z, draw);
    let (a, c, sd) = (tr.a, tr.c, tr.var.max(0.0).sqrt());
    // x' = a x + c s + √var z
    for i in 0..n {
        x_next[i] = (a * x[i] as f64 + c * scores.uncond[i] as f64 + sd * z[i] as f64) as f32;
    }
}

/// Fills row b of `z` (B, D) with the normals of (trajectory `first_trajectory + b`, `step`)
/// when `draw`, with zeros otherwise: a trajectory's noise depends only on (seed, trajectory,
/// step), never on its batch.
pub(crate) fn fill_noise(ctx: &StepCtx<'_>, z: &mut [f32], draw: bool) {
    let (d, n) = (ctx.dim, ctx.batch * ctx.dim);
    for (b, row) in z[..n].chunks_mut(d.max(1)).enumerate() {
        if draw {
            ctx.noise
                .fill_normals(ctx.first_trajectory + b as u64, ctx.step as u32, row);
        } else {
            row.fill(0.0);
        }
    }
}

/// v clamped to [−lim, lim] where `lim` is set (diffusers' `clip_sample`; `build` refuses a lim
/// that is not a finite number > 0). Never panics, unlike `f64::clamp`.
#[inline]
pub(crate) fn clamp_abs(v: f64, lim: Option<f64>) -> f64 {
    match lim {
        Some(l) if v > l => l,
        Some(l) if v < -l => -l,
        _ => v,
    }
}

/// What an observer sees of one step of a batch: the move from grid point `from` to `to`.
pub struct StepView<'a> {
    /// Step number 0..S−1 (grid point `step` to `step + 1`).
    pub step: usize,
    pub from: &'a GridPoint,
    pub to: &'a GridPoint,
    /// Index of the batch's first trajectory.
    pub first_trajectory: u64,
    /// States before the step. (B, D)
    pub x: &'a [f32],
    /// States after the step. (B, D)
    pub x_next: &'a [f32],
    /// Scores at `x` on `from` (for Heun: the first stage).
    pub scores: &'a Scores,
    /// The denoised estimate at `x` from the unconditional score on `from`,
    /// x̂₀ = (x + σ_t² s)/s_t ([`param::x0_from_score`]). (B, D)
    pub x0_hat: &'a [f32],
    /// Heun's second stage: the scores at the Euler predictor on `to` (None for other samplers
    /// and for a step to σ = 0).
    pub corrector_scores: Option<&'a Scores>,
    /// The Gaussian transition, or None for a deterministic sampler.
    pub transition: Option<Transition>,
    /// The standard normals z of this step (zeros where var = 0). (B, D)
    pub noise: &'a [f32],
}

/// The end of a batch: the final states on the last grid point.
pub struct EndView<'a> {
    pub point: &'a GridPoint,
    pub first_trajectory: u64,
    /// (B, D)
    pub x: &'a [f32],
    /// The model's exact posterior at `x`, where it has one. (B, K)
    pub exact_posterior: Option<Vec<f64>>,
}

/// Sees every step of a sampler. The information layer is one; samplers do not depend on it.
///
/// ```
/// use infodiff::score::{Component, GaussianMixture};
/// use infodiff::diffusion::{sample, Observer, Process, SamplerKind, StepView, Vp};
/// use infodiff::rng::Noise;
/// /// Largest |x| seen, the steps, and the largest |x̂₀| on the last step.
/// struct Extent(f32, usize, f32);
/// impl Observer for Extent {
///     fn on_step(&mut self, v: &StepView<'_>) -> infodiff::Result<()> {
///         self.0 = v.x_next.iter().fold(self.0, |m, x| m.max(x.abs()));
///         self.1 += 1;
///         self.2 = v.x0_hat.iter().fold(0.0, |m, x| m.max(x.abs()));
///         Ok(())
///     }
/// }
/// let m = GaussianMixture::new(vec![Component { weight: 1.0, mean: vec![3.0], var: vec![0.0], class: 0 }]).unwrap();
/// let grid = Vp::new(0.1, 20.0).unwrap().grid(100).unwrap();
/// let mut obs = Extent(0.0, 0, 0.0);
/// sample(&m, &grid, &SamplerKind::EulerMaruyama, Noise::new(0), 0, 16, &mut obs).unwrap();
/// assert_eq!(obs.1, 100);
/// assert!(obs.0 > 2.5);
/// // One data point: x̂₀ is that point wherever the score is taken (f32 rounding: 1e-3).
/// assert!((obs.2 - 3.0).abs() < 1e-3);
/// ```
pub trait Observer {
    fn on_step(&mut self, view: &StepView<'_>) -> Result<()>;
    fn on_end(&mut self, _view: &EndView<'_>) -> Result<()> {
        Ok(())
    }
}

/// An observer that does nothing.
pub struct NoObserver;
impl Observer for NoObserver {
    fn on_step(&mut self, _view: &StepView<'_>) -> Result<()> {
        Ok(())
    }
}

/// Runs `batch` trajectories (indices `first_trajectory..`) of `model` with `sampler` over `grid`,
/// showing each step to `observer`; returns the final states (B, D).
///
/// ```
/// use infodiff::score::{Component, GaussianMixture};
/// use infodiff::diffusion::{sample, Ddpm, NoObserver, Process, SamplerKind, AncestralVariance};
/// use infodiff::rng::Noise;
/// let model = GaussianMixture::new(vec![
///     Component { weight: 1.0, mean: vec![-2.0], var: vec![0.0], class: 0 },
///     Component { weight: 1.0, mean: vec![2.0], var: vec![0.0], class: 1 },
/// ]).unwrap();
/// let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(100).unwrap();
/// let sampler = SamplerKind::Ancestral { variance: AncestralVariance::Beta };
/// let x0 = sample(&model, &grid, &sampler, Noise::new(0), 0, 8, &mut NoObserver).unwrap();
/// assert!(x0.iter().all(|x| (x.abs() - 2.0).abs() < 0.1));
/// ```
pub fn sample<M: ScoreModel + ?Sized, O: Observer + ?Sized>(
    model: &M,
    grid: &Grid,
    sampler: &SamplerKind,
    noise: Noise,
    first_trajectory: u64,
    batch: usize,
    observer: &mut O,
) -> Result<Vec<f32>> {
    let (d, k) = (model.dim(), model.num_classes());
    let mut sampler = sampler.build(grid, batch, d, k)?;
    sample_with(
        model,
        grid,
        sampler.as_mut(),
        noise,
        first_trajectory,
        batch,
        observer,
    )
}

/// [`sample`] with a sampler already built for `grid` and `batch` (one of [`SamplerKind::build`]'s,
/// or a [`Sampler`] of the caller's own); returns the final states (B, D).
pub fn sample_with<M: ScoreModel + ?Sized, O: Observer + ?Sized>(
    model: &M,
    grid: &Grid,
    sampler: &mut dyn Sampler,
    noise: Noise,
    first_trajectory: u64,
    batch: usize,
    observer: &mut O,
) -> Result<Vec<f32>> {
    let d = model.dim();
    let pts = &grid.points;
    if pts.len() < 2 {
        return Err(Error::config("sampler.steps", "at least 1", 0));
    }
    let mut x = vec![0.0f32; batch * d]; // (B, D)
    for (b, row) in x.chunks_mut(d).enumerate() {
        model.initial_state(&pts[0], &noise, first_trajectory + b as u64, row);
    }
    sample_from(model, grid, sampler, noise, first_trajectory, x, observer)
}

/// [`sample_with`] from given initial states `x` (B, D) on the grid's first point (a sampler's
/// initial noise × its scale, or a user's `--init`); returns the final states (B, D).
pub fn sample_from<M: ScoreModel + ?Sized, O: Observer + ?Sized>(
    model: &M,
    grid: &Grid,
    sampler: &mut dyn Sampler,
    noise: Noise,
    first_trajectory: u64,
    mut x: Vec<f32>,
    observer: &mut O,
) -> Result<Vec<f32>> {
    let (d, k) = (model.dim(), model.num_classes());
    let pts = &grid.points;
    if pts.len() < 2 {
        return Err(Error::config("sampler.steps", "at least 1", 0));
    }
    if d == 0 || x.len() % d != 0 {
        return Err(Error::shape(
            "sample_from: initial states (B, D)",
            format!("(B, {d})"),
            x.len(),
        ));
    }
    let batch = x.len() / d;
    let score_fn = ModelFn(model);
    let mut x_next = vec![0.0f32; batch * d]; // (B, D)
    let mut z = vec![0.0f32; batch * d]; // (B, D)
    let mut x0_hat = vec![0.0f32; batch * d]; // (B, D)
    let mut scores = Scores::new(batch, d, k);
    let steps = pts.len() - 1;
    for step in 0..steps {
        let (p, q) = (&pts[step], grid.target(step));
        let ctx = StepCtx {
            step,
            from: p,
            to: q,
            last: step + 1 == steps,
            noise,
            first_trajectory,
            batch,
            dim: d,
        };
        model.scores_at(&x, p, &ctx.score_ctx(false), &mut scores)?;
        let tr = sampler.step(&score_fn, &ctx, &x, &scores, &mut x_next, &mut z)?;
        if let Some(i) = x_next.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                op: "sample",
                step,
                t: q.t,
                what: format!(
                    "state of trajectory {} (value {})",
                    first_trajectory + (i / d) as u64,
                    x_next[i]
                ),
            });
        }
        param::x0_from_scores(p, &x, &scores.uncond, &mut x0_hat);
        observer.on_step(&StepView {
            step,
            from: p,
            to: q,
            first_trajectory,
            x: &x,
            x_next: &x_next,
            scores: &scores,
            x0_hat: &x0_hat,
            corrector_scores: sampler.corrector_scores(),
            transition: tr,
            noise: &z,
        })?;
        std::mem::swap(&mut x, &mut x_next);
    }
    let end = &pts[steps];
    observer.on_end(&EndView {
        point: end,
        first_trajectory,
        x: &x,
        exact_posterior: model.exact_posterior(&x, end),
    })?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Ddpm, Process, Ve, Vp};

    fn kinds() -> [SamplerKind; 16] {
        [
            SamplerKind::Ancestral {
                variance: AncestralVariance::Beta,
            },
            SamplerKind::Ancestral {
                variance: AncestralVariance::BetaTilde,
            },
            SamplerKind::Ddim {
                eta: 0.0,
                clip: None,
            },
            SamplerKind::Ddim {
                eta: 0.5,
                clip: None,
            },
            SamplerKind::EulerMaruyama,
            SamplerKind::HeunOde,
            SamplerKind::Ddim {
                eta: 1.0,
                clip: Some(1.0),
            },
            SamplerKind::Ddpm { clip: None },
            SamplerKind::Ddpm { clip: Some(1.0) },
            SamplerKind::Euler,
            SamplerKind::EulerAncestral,
            SamplerKind::Heun,
            SamplerKind::Dpmpp2m,
            SamplerKind::Dpmpp2mSde,
            SamplerKind::Dpmpp3mSde,
            SamplerKind::Ddim {
                eta: 1.0,
                clip: None,
            },
        ]
    }

    #[test]
    fn kinds_read_and_write_the_config_names() {
        let read = |s: &str| serde_json::from_str::<SamplerKind>(s);
        assert_eq!(
            read(r#"{"kind": "ancestral"}"#).unwrap(),
            SamplerKind::Ancestral {
                variance: AncestralVariance::Beta
            }
        );
        assert_eq!(
            read(r#"{"kind": "ancestral", "variance": "beta_tilde"}"#).unwrap(),
            SamplerKind::Ancestral {
                variance: AncestralVariance::BetaTilde
            }
        );
        assert_eq!(
            read(r#"{"kind": "ddim"}"#).unwrap(),
            SamplerKind::Ddim {
                eta: 0.0,
                clip: None
            }
        );
        assert!(read(r#"{"kind": "ddim", "eta": 1, "etta": 2}"#).is_err());
        assert!(read(r#"{"kind": "dpm"}"#).is_err());
        // Every listed name is a kind serde reads.
        for n in SamplerKind::NAMES {
            let v = serde_json::json!({ "kind": n });
            assert!(serde_json::from_value::<SamplerKind>(v).is_ok(), "{n}");
        }
        for k in kinds() {
            let json = serde_json::to_value(k).unwrap();
            assert_eq!(json["kind"], k.name());
            assert!(SamplerKind::NAMES.contains(&k.name()), "{}", k.name());
            assert_eq!(serde_json::from_value::<SamplerKind>(json).unwrap(), k);
        }
    }

    #[test]
    fn plans_get_one_term_transitions() {
        // The fused plans read (a, c, var): every transition a kind gives them has one term.
        let grids = [
            Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap(),
            Vp::new(0.1, 20.0).unwrap().grid(10).unwrap(),
            Ve::new(0.01, 50.0).unwrap().grid(10).unwrap(),
        ];
        for g in &grids {
            for k in kinds() {
                for (j, w) in g.points.windows(2).enumerate() {
                    let tr = k.transition(&w[0], &w[1], j + 2 == g.points.len());
                    let one_step = !matches!(
                        k,
                        SamplerKind::HeunOde
                            | SamplerKind::Heun
                            | SamplerKind::Dpmpp2m
                            | SamplerKind::Dpmpp2mSde
                            | SamplerKind::Dpmpp3mSde
                            | SamplerKind::Ddim { clip: Some(_), .. }
                            | SamplerKind::Ddpm { clip: Some(_) }
                    );
                    assert_eq!(tr.is_some(), one_step, "{k:?}");
                    if let Some(tr) = tr {
                        assert_eq!(tr.one_term(), Some((tr.a, tr.c, tr.var)));
                        assert!(tr.var >= 0.0 && (tr.var > 0.0) <= k.is_stochastic());
                    }
                }
            }
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let g = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap();
        for (k, field) in [
            (
                SamplerKind::Ddim {
                    eta: 1.5,
                    clip: None,
                },
                "sampler.eta",
            ),
            (
                SamplerKind::Ddim {
                    eta: 0.0,
                    clip: Some(0.0),
                },
                "sampler.clip",
            ),
            (
                SamplerKind::Ddpm {
                    clip: Some(f64::NAN),
                },
                "sampler.clip",
            ),
        ] {
            let e = k.build(&g, 2, 3, 1).err().expect("refused").to_string();
            assert!(e.contains(field), "{k:?}: {e}");
        }
    }

    #[test]
    fn multistep_samplers_refuse_steps_out_of_order() {
        struct NoModel;
        impl ScoreFn for NoModel {
            fn scores_at(
                &self,
                _: &[f32],
                _: &GridPoint,
                _: &ScoreCtx,
                _: &mut Scores,
            ) -> Result<()> {
                Ok(())
            }
        }
        let g = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(10).unwrap();
        for k in [
            SamplerKind::Dpmpp2m,
            SamplerKind::Dpmpp2mSde,
            SamplerKind::Dpmpp3mSde,
        ] {
            let mut s = k.build(&g, 2, 3, 1).unwrap();
            let (x, sc) = (vec![0.5f32; 6], Scores::new(2, 3, 1));
            let (mut xn, mut z) = (vec![0.0f32; 6], vec![0.0f32; 6]);
            let ctx = |step| StepCtx {
                step,
                from: &g.points[step],
                to: &g.points[step + 1],
                last: false,
                noise: Noise::new(1),
                first_trajectory: 0,
                batch: 2,
                dim: 3,
            };
            assert!(s.step(&NoModel, &ctx(2), &x, &sc, &mut xn, &mut z).is_err());
            s.step(&NoModel, &ctx(0), &x, &sc, &mut xn, &mut z).unwrap();
            s.step(&NoModel, &ctx(1), &x, &sc, &mut xn, &mut z).unwrap();
            assert!(
                s.step(&NoModel, &ctx(3), &x, &sc, &mut xn, &mut z).is_err(),
                "{k:?}"
            );
            // a new batch starts again at step 0
            s.step(&NoModel, &ctx(0), &x, &sc, &mut xn, &mut z).unwrap();
        }
    }

    #[test]
    fn earlier_terms_are_bounded() {
        let tr = Transition::new(1.0, 0.5, 0.1);
        assert_eq!(tr.with_earlier(&[0.1, 0.2]).unwrap().earlier(), &[0.1, 0.2]);
        assert!(tr.with_earlier(&[0.0; MAX_EARLIER_TERMS + 1]).is_err());
    }
}
