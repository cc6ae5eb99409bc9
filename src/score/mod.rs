//! Score models: s(x, t) = ∇ₓ log p_t(x) and the K class-conditional scores s(x | y) of a batch,
//! evaluated in one call.
//!
//! [`GaussianMixture`] is exact (score, class posterior, divergence in closed form) and is the
//! ground truth of every estimator; neural models implement the same trait.

pub mod guided;
pub mod hutchinson;
pub mod mixture;
pub mod unet;

pub use hutchinson::Hutchinson;
pub use mixture::{Component, GaussianMixture};

use crate::diffusion::GridPoint;
use crate::error::{Error, Result};
use crate::rng::Noise;

/// Output of one [`ScoreModel::scores`] call for a batch of B states of dimension D with K classes.
#[derive(Clone, Debug, Default)]
pub struct Scores {
    pub batch: usize,
    pub dim: usize,
    pub classes: usize,
    /// Unconditional score s(x). (B, D)
    pub uncond: Vec<f32>,
    /// Class-conditional scores s(x | y). (B, K, D)
    pub cond: Vec<f32>,
    /// Exact class posterior p(y | x_t), where the model has one. (B, K)
    pub posterior: Option<Vec<f64>>,
    /// Exact divergence ∇·s(x), where the model has one. (B)
    pub divergence: Option<Vec<f64>>,
    /// The denoised estimate x̂₀ of the unconditional (or guided) score, computed in f64 from the
    /// network's own output and rounded once, where a model has it (B, D). Samplers take x̂₀
    /// from here rather than from (x + σ_t² s)/s_t, which cancels where s_t is small: at
    /// s_t = 5e-5 (a cosine schedule's noise end) an f32 score keeps x̂₀ to only ~1e-3, while a
    /// v- or x̂₀-predicting network gives it to f32 precision.
    pub denoised: Option<Vec<f32>>,
}

impl Scores {
    /// Buffers for `batch` states.
    pub fn new(batch: usize, dim: usize, classes: usize) -> Self {
        Scores {
            batch,
            dim,
            classes,
            uncond: vec![0.0; batch * dim],
            cond: vec![0.0; batch * classes * dim],
            posterior: None,
            divergence: None,
            denoised: None,
        }
    }
    /// x̂₀ of element i (of the (B, D) buffers) at state value `x` on `p`: [`Scores::denoised`]
    /// where the model gave it, else (x + σ_t² s)/s_t from the unconditional score.
    #[inline]
    pub fn x0_at(&self, i: usize, x: f64, p: &GridPoint) -> f64 {
        match &self.denoised {
            Some(d) => d[i] as f64,
            None => (x + p.sigma * p.sigma * self.uncond[i] as f64) / p.s,
        }
    }
    /// s(x_b | y). (D)
    pub fn cond_of(&self, b: usize, y: usize) -> &[f32] {
        let o = (b * self.classes + y) * self.dim;
        &self.cond[o..o + self.dim]
    }
    /// s(x_b). (D)
    pub fn uncond_of(&self, b: usize) -> &[f32] {
        &self.uncond[b * self.dim..(b + 1) * self.dim]
    }
}

/// Where a [`ScoreModel::scores_at`] call sits in a sampler run: the batch's first trajectory,
/// the step and the run's noise, for models that draw randomness of their own per trajectory
/// (Hutchinson probes), so that a trajectory's values do not depend on its batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoreCtx {
    pub noise: Noise,
    /// Trajectory index of batch row 0.
    pub first_trajectory: u64,
    /// Sampler step (grid point `step` is where the scores are taken).
    pub step: u32,
    /// Heun's second stage (scores at the predictor on the next point), whose divergence no
    /// observer reads.
    pub corrector: bool,
}

/// A score model over D dimensions with K classes.
pub trait ScoreModel: Sync {
    fn dim(&self) -> usize;
    fn num_classes(&self) -> usize;
    /// Class prior p(y). (K)
    fn class_prior(&self) -> Vec<f64>;
    /// Unconditional and class-conditional scores at the states `x` (B, D) on grid point `point`;
    /// fills `out.posterior`/`out.divergence` where the model has them exactly.
    fn scores(&self, x: &[f32], point: &GridPoint, out: &mut Scores) -> Result<()>;
    /// [`ScoreModel::scores`] inside a sampler run (the sampler calls this one); models that
    /// need the trajectories' indices (e.g. [`Hutchinson`]) override it.
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        _ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> Result<()> {
        self.scores(x, point, out)
    }
    /// The unconditional score s(x) only, at `x` (B, D) into `out` (B, D). The default takes it
    /// from [`ScoreModel::scores`]; a network overrides it with one forward of the null label.
    fn uncond_scores(&self, x: &[f32], point: &GridPoint, out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        if d == 0 || x.len() % d != 0 || out.len() != x.len() {
            return Err(Error::shape(
                "ScoreModel::uncond_scores: x, out (B, D)",
                x.len(),
                out.len(),
            ));
        }
        let mut s = Scores::new(x.len() / d, d, self.num_classes());
        self.scores(x, point, &mut s)?;
        out.copy_from_slice(&s.uncond);
        Ok(())
    }
    /// Exact class posterior p(y | x) at `x` (B, D), if the model has one. (B, K)
    fn exact_posterior(&self, _x: &[f32], _point: &GridPoint) -> Option<Vec<f64>> {
        None
    }
    /// Draws the initial state x_T of `trajectory` into `out` (D). The default is N(0, (s_T² + σ_T²) I),
    /// the marginal of unit-variance data; exact models draw from their exact marginal.
    fn initial_state(&self, point: &GridPoint, noise: &Noise, trajectory: u64, out: &mut [f32]) {
        noise.fill_normals(trajectory, crate::rng::INIT_STEP, out);
        let scale = (point.s * point.s + point.sigma * point.sigma).sqrt() as f32;
        out.iter_mut().for_each(|v| *v *= scale);
    }
    /// Short description for reports.
    fn describe(&self) -> String;
}

pub(crate) fn check_batch(op: &'static str, x: &[f32], dim: usize, out: &Scores) -> Result<usize> {
    if dim == 0 || x.len() % dim != 0 {
        return Err(Error::shape(op, format!("(B, {dim})"), x.len()));
    }
    let b = x.len() / dim;
    if out.batch != b || out.dim != dim {
        return Err(Error::shape(op, (b, dim), (out.batch, out.dim)));
    }
    Ok(b)
}
