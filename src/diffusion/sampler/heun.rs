//! Heun's second-order method on the probability-flow ODE in σ-space (Karras et al. 2022,
//! Alg. 1 with S_churn = 0), as diffusers' `HeunDiscreteScheduler` steps its interleaved σ's:
//! with σ̃ = σ_t/s_t, x̃ = x/s_t and d = (x̃ − x̂₀)/σ̃ = ε̂ = −σ_t s,
//!
//! d₁ = −σ_t s(x, t),  x̃_p = x̃ + (σ̃' − σ̃)·d₁,  x_p = s_{t'} x̃_p,
//! d₂ = −σ_{t'} s(x_p, t'),  x̃' = x̃ + (σ̃' − σ̃)·(d₁ + d₂)/2,  x' = s_{t'} x̃',
//!
//! the second evaluation taken at the predictor x_p on `to` (the network input, diffusers'
//! `scale_model_input` of x̃_p, with `to`'s timestep). A step to σ̃' = 0 is Euler's alone
//! (x' = x_p = x̂₀), as diffusers' interleaved σ's end with one first-order step. Deterministic:
//! the step is not a Gaussian transition, and draws no noise.

use super::euler::sigma_tilde;
use super::{Sampler, ScoreFn, StepCtx, Transition};
use crate::error::Result;
use crate::score::Scores;

/// HeunDiscreteScheduler, with the corrector's scores kept for the observer.
pub struct Heun {
    /// Scores at the predictor x_p on `to`. (B, D) and (B, K, D)
    corrector: Scores,
    classes: usize,
    /// Whether the last step ran the corrector.
    corrected: bool,
}

impl Heun {
    /// Buffers for `batch` states of dimension `dim` with `classes` classes.
    pub fn new(batch: usize, dim: usize, classes: usize) -> Heun {
        Heun {
            corrector: Scores::new(batch, dim, classes),
            classes,
            corrected: false,
        }
    }
}

impl Sampler for Heun {
    fn step(
        &mut self,
        model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        let (p, q) = (ctx.from, ctx.to);
        let n = ctx.batch * ctx.dim;
        z[..n].fill(0.0);
        self.corrected = false;
        let (st, st_to) = (sigma_tilde(p), sigma_tilde(q));
        let dsig = st_to - st;
        let (inv_s, s_to) = (1.0 / p.s, q.s);
        // predictor: x_p = s_{t'}(x/s_t + (σ̃' − σ̃) d₁)
        for i in 0..n {
            let d1 = -p.sigma * scores.uncond[i] as f64;
            x_next[i] = (s_to * (x[i] as f64 * inv_s + dsig * d1)) as f32;
        }
        if q.sigma > 0.0 {
            if self.corrector.batch != ctx.batch || self.corrector.dim != ctx.dim {
                self.corrector = Scores::new(ctx.batch, ctx.dim, self.classes);
            }
            model.scores_at(x_next, q, &ctx.score_ctx(true), &mut self.corrector)?;
            self.corrected = true;
            let s2 = &self.corrector.uncond;
            for i in 0..n {
                let d1 = -p.sigma * scores.uncond[i] as f64;
                let d2 = -q.sigma * s2[i] as f64;
                x_next[i] = (s_to * (x[i] as f64 * inv_s + dsig * 0.5 * (d1 + d2))) as f32;
            }
        }
        Ok(None)
    }

    fn corrector_scores(&self) -> Option<&Scores> {
        self.corrected.then_some(&self.corrector)
    }
}
