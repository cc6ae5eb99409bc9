//! Heun's second-order method on the probability-flow ODE in σ-space (Karras et al. 2022,
//! Alg. 1 with S_churn = 0), as diffusers' `HeunDiscreteScheduler` steps its interleaved σ's:
//! with σ̃ = σ_t/s_t, x̃ = x/s_t and d = (x̃ − x̂₀)/σ̃ = ε̂ = −σ_t s,
//!
//! d₁ = −σ_t s(x, t),  x̃_p = x̃ + (σ̃' − σ̃)·d₁,  x_p = s_{t'} x̃_p,
//! d₂ = −σ_{t'} s(x_p, t'),  x̃' = x̃ + (σ̃' − σ̃)·(d₁ + d₂)/2,  x' = s_{t'} x̃',
//!
//! computed as x_p = s_{t'} x̂₀ + σ_{t'} ε̂₁ and x' = s_{t'} x̂₀ + s_{t'}(σ̃ + σ̃')/2·ε̂₁ +
//! s_{t'}(σ̃' − σ̃)/2·ε̂₂ (the same, with x/s_t = x̂₀ + σ̃ ε̂ exact), so that no two terms of size
//! 1/s_t cancel, x̂₀ taken from the model where it gives it ([`crate::score::Scores::denoised`]),
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
    /// The predictor x_p in f64. (B, D)
    pred: Vec<f64>,
}

impl Heun {
    /// Buffers for `batch` states of dimension `dim` with `classes` classes.
    pub fn new(batch: usize, dim: usize, classes: usize) -> Heun {
        Heun {
            corrector: Scores::new(batch, dim, classes),
            classes,
            corrected: false,
            pred: vec![0.0; batch * dim],
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
        let s_to = q.s;
        // Written in (x̂₀, ε̂) with x/s_t = x̂₀ + σ̃ ε̂ (exact), so that no two large terms cancel
        // where s_t is small (a cosine schedule's first step has σ̃ ≈ 2e4 and σ̃/σ̃' ≈ 1750):
        // predictor x_p = s_{t'} x̂₀ + σ_{t'} ε̂₁, kept in f64 (the network sees it rounded);
        // corrector x' = s_{t'} x̂₀ + s_{t'}(σ̃ + σ̃')/2·ε̂₁ + s_{t'}(σ̃' − σ̃)/2·ε̂₂.
        if self.pred.len() != n {
            self.pred = vec![0.0; n];
        }
        for i in 0..n {
            let x0 = scores.x0_at(i, x[i] as f64, p);
            let e1 = eps_at(scores, i, x[i] as f64, p, x0);
            self.pred[i] = s_to * x0 + q.sigma * e1;
            x_next[i] = self.pred[i] as f32;
        }
        if q.sigma > 0.0 {
            if self.corrector.batch != ctx.batch || self.corrector.dim != ctx.dim {
                self.corrector = Scores::new(ctx.batch, ctx.dim, self.classes);
            }
            model.scores_at(x_next, q, &ctx.score_ctx(true), &mut self.corrector)?;
            self.corrected = true;
            let (k1, k2) = (s_to * 0.5 * (st + st_to), s_to * 0.5 * (st_to - st));
            let c = &self.corrector;
            for i in 0..n {
                let x0 = scores.x0_at(i, x[i] as f64, p);
                let e1 = eps_at(scores, i, x[i] as f64, p, x0);
                // ε̂₂ = (x_p − s_{t'} x̂₀(x_p))/σ_{t'} from the f64 predictor where the model gives
                // x̂₀; else −σ_{t'} s(x_p).
                let e2 = match &c.denoised {
                    Some(d) => (self.pred[i] - s_to * d[i] as f64) / q.sigma,
                    None => -q.sigma * c.uncond[i] as f64,
                };
                x_next[i] = (s_to * x0 + k1 * e1 + k2 * e2) as f32;
            }
        }
        Ok(None)
    }

    fn corrector_scores(&self) -> Option<&Scores> {
        self.corrected.then_some(&self.corrector)
    }
}

/// ε̂ of element i with x̂₀ = `x0` at state `x` on `p`: (x − s_t x̂₀)/σ_t where the model gives
/// x̂₀ (consistent with it to the last bit), else −σ_t s.
#[inline]
fn eps_at(scores: &Scores, i: usize, x: f64, p: &crate::diffusion::GridPoint, x0: f64) -> f64 {
    match &scores.denoised {
        Some(_) => (x - p.s * x0) / p.sigma,
        None => -p.sigma * scores.uncond[i] as f64,
    }
}
