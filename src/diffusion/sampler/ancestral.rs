//! Ancestral sampling (DDPM; Ho et al. 2020, Alg. 2): from t to t' < t with r = s_t/s_{t'} and
//! v = σ_t² − r²σ_{t'}² (the forward transition t' → t's variance),
//!
//! x' = (x + v·s(x, t))/r + √var·z,  var = v ("β") or σ_{t'}² v/σ_t² ("β̃"),
//!
//! i.e. a = 1/r, c = v/r, and no noise on the last step.

use super::{AncestralVariance, Sampler, ScoreFn, StepCtx, Transition, linear_step};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// The ancestral step with its variance choice.
#[derive(Clone, Copy, Debug)]
pub struct Ancestral {
    pub variance: AncestralVariance,
}

/// The step from `p` to `q` (`last`: no noise).
pub fn transition(
    variance: AncestralVariance,
    p: &GridPoint,
    q: &GridPoint,
    last: bool,
) -> Transition {
    let r = p.s / q.s;
    let v = (p.sigma * p.sigma - r * r * q.sigma * q.sigma).max(0.0);
    let var = if last {
        0.0
    } else {
        match variance {
            AncestralVariance::Beta => v,
            AncestralVariance::BetaTilde => q.sigma * q.sigma * v / (p.sigma * p.sigma),
        }
    };
    Transition::new(1.0 / r, v / r, var)
}

impl Sampler for Ancestral {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        let tr = transition(self.variance, ctx.from, ctx.to, ctx.last);
        linear_step(tr, ctx, x, scores, x_next, z)
    }
}
