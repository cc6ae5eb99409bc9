//! The probability-flow ODE dx/dt = f x − ½g² s (Song et al. 2021) with Heun's method, stepping
//! h = t − t' backwards from t (Karras et al. 2022, Alg. 1):
//!
//! d₁ = f_t x − ½g_t² s(x, t),  x̃ = x − h d₁,
//! d₂ = f_{t'} x̃ − ½g_{t'}² s(x̃, t'),  x' = x − h (d₁ + d₂)/2,
//!
//! and Euler (x' = x̃) on a step to σ = 0, where the score is not defined. Deterministic: the
//! step is not a Gaussian transition, and draws no noise.

use super::{Sampler, ScoreFn, StepCtx, Transition};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// Heun's method, with the corrector's scores kept for the observer.
pub struct HeunOde {
    /// Scores at the predictor x̃ on `to`. (B, D) and (B, K, D)
    corrector: Scores,
    /// Whether the last step ran the corrector.
    corrected: bool,
}

impl HeunOde {
    /// Buffers for `batch` states of dimension `dim` with `classes` classes.
    pub fn new(batch: usize, dim: usize, classes: usize) -> HeunOde {
        HeunOde {
            corrector: Scores::new(batch, dim, classes),
            corrected: false,
        }
    }
}

/// The probability-flow drift f x − ½ g² s at one element.
#[inline]
fn drift(pt: &GridPoint, xv: f32, sv: f32) -> f64 {
    pt.f * xv as f64 - 0.5 * pt.g2 * sv as f64
}

impl Sampler for HeunOde {
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
        let h = p.t - q.t;
        for i in 0..n {
            x_next[i] = (x[i] as f64 - h * drift(p, x[i], scores.uncond[i])) as f32;
        }
        if q.sigma > 0.0 {
            model.scores_at(x_next, q, &ctx.score_ctx(true), &mut self.corrector)?;
            self.corrected = true;
            let s2 = &self.corrector.uncond;
            for i in 0..n {
                let d1 = drift(p, x[i], scores.uncond[i]);
                let d2 = drift(q, x_next[i], s2[i]);
                x_next[i] = (x[i] as f64 - h * 0.5 * (d1 + d2)) as f32;
            }
        }
        Ok(None)
    }

    fn corrector_scores(&self) -> Option<&Scores> {
        self.corrected.then_some(&self.corrector)
    }
}
