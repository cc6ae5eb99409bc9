//! Euler's method on the probability-flow ODE in σ-space (Karras et al. 2022, Alg. 2 with
//! S_churn = 0), as diffusers' `EulerDiscreteScheduler.step` takes it: with σ̃ = σ_t/s_t, the
//! σ-space state x̃ = x/s_t (diffusers' sample; our state x is its `scale_model_input`) and
//! x̂₀ = (x + σ_t² s)/s_t,
//!
//! d = (x̃ − x̂₀)/σ̃,  x̃' = x̃ + (σ̃' − σ̃)·d,  x' = s_{t'} x̃'.
//!
//! Since d = −σ_t s = ε̂, the step is x' = s_{t'}(x/s_t + (σ̃' − σ̃) ε̂): a = s_{t'}/s_t,
//! c = s_{t'} σ_t (σ̃ − σ̃'), var = 0 — exactly DDIM with η = 0 on the same two points. A step to
//! σ̃' = 0 lands on x̂₀.

use super::{OneStep, Transition};
use crate::diffusion::GridPoint;

/// The σ-space σ̃ = σ_t/s_t of a grid point.
#[inline]
pub(crate) fn sigma_tilde(p: &GridPoint) -> f64 {
    p.sigma / p.s
}

/// EulerDiscreteScheduler (deterministic: s_churn = 0).
#[derive(Clone, Copy, Debug, Default)]
pub struct Euler;

impl OneStep for Euler {
    /// The step from `p` to `q`.
    fn transition(&self, p: &GridPoint, q: &GridPoint, _last: bool) -> Transition {
        let (st, st_to) = (sigma_tilde(p), sigma_tilde(q));
        Transition::new(q.s / p.s, q.s * p.sigma * (st - st_to), 0.0)
    }
}
