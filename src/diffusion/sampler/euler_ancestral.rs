//! Euler ancestral sampling in σ-space (k-diffusion's `sample_euler_ancestral`, η = 1), as
//! diffusers' `EulerAncestralDiscreteScheduler.step` takes it: with σ̃ = σ_t/s_t, x̃ = x/s_t,
//! x̂₀ = (x + σ_t² s)/s_t,
//!
//! σ_up = σ̃' √(σ̃² − σ̃'²)/σ̃,  σ_down = √(σ̃'² − σ_up²),
//! x̃' = x̃ + (σ_down − σ̃)·(x̃ − x̂₀)/σ̃ + σ_up z,  x' = s_{t'} x̃',
//!
//! i.e. (with (x̃ − x̂₀)/σ̃ = ε̂ = −σ_t s) a = s_{t'}/s_t, c = s_{t'} σ_t (σ̃ − σ_down),
//! var = s_{t'}² σ_up². This is DDIM with η = 1 on the same points: s_{t'}² σ_up² =
//! σ_{t'}² v/σ_t² (v = σ_t² − (s_t/s_{t'})² σ_{t'}²) and s_{t'} σ_down = √(σ_{t'}² − σ_η²).
//! A step to σ̃' = 0 lands on x̂₀ without noise.

use super::euler::sigma_tilde;
use super::{OneStep, Transition};
use crate::diffusion::GridPoint;

/// EulerAncestralDiscreteScheduler.
#[derive(Clone, Copy, Debug, Default)]
pub struct EulerAncestral;

impl OneStep for EulerAncestral {
    /// The step from `p` to `q`.
    fn transition(&self, p: &GridPoint, q: &GridPoint, _last: bool) -> Transition {
        let (st, st_to) = (sigma_tilde(p), sigma_tilde(q));
        let up2 = (st_to * st_to * (st * st - st_to * st_to) / (st * st)).max(0.0);
        let down = (st_to * st_to - up2).max(0.0).sqrt();
        Transition::new(q.s / p.s, q.s * p.sigma * (st - down), q.s * q.s * up2)
    }
}
