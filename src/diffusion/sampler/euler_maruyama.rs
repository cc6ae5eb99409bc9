//! Euler–Maruyama on the reverse SDE dx = [f x − g² s] dt + g dW̄ (Song et al. 2021), stepping
//! h = t − t' backwards from t:
//!
//! x' = (1 − f h)·x + g² h·s(x, t) + √(g² h)·z,
//!
//! i.e. a = 1 − f h, c = g² h, var = g² h, with f and g² taken at t.

use super::{Sampler, ScoreFn, StepCtx, Transition, linear_step};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// The Euler–Maruyama step.
#[derive(Clone, Copy, Debug)]
pub struct EulerMaruyama;

/// The step from `p` to `q`.
pub fn transition(p: &GridPoint, q: &GridPoint) -> Transition {
    let h = p.t - q.t;
    Transition::new(1.0 - p.f * h, p.g2 * h, p.g2 * h)
}

impl Sampler for EulerMaruyama {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        linear_step(transition(ctx.from, ctx.to), ctx, x, scores, x_next, z)
    }
}
