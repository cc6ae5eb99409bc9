//! DDPM ancestral sampling as diffusers' `DDPMScheduler.step` takes it (Ho et al. 2020, eq. 7,
//! `variance_type = "fixed_small"`): from t to t' < t with x̂₀ = (x + σ_t² s)/s_t (clamped to
//! [−clip, clip] where `clip_sample` is set), r = s_t/s_{t'} and v = σ_t² − r²σ_{t'}²
//! (on a VP grid v = β_t = 1 − ᾱ_t/ᾱ_{t'}),
//!
//! x' = (s_{t'} v/σ_t²)·x̂₀ + (r σ_{t'}²/σ_t²)·x + √β̃·z,  β̃ = σ_{t'}² v/σ_t²,
//!
//! the mean of the posterior q(x_{t'} | x_t, x̂₀) (on a VP grid the coefficients are
//! √ᾱ_{t'} β_t/(1 − ᾱ_t) and √α_t (1 − ᾱ_{t'})/(1 − ᾱ_t), β̃ = (1 − ᾱ_{t'})/(1 − ᾱ_t)·β_t).
//! Without clipping the step is linear in the score: a = 1/r, c = v/r, var = β̃ — the ancestral
//! step with the posterior variance ([`super::AncestralVariance::BetaTilde`]), which is also
//! DDIM with η = 1. With clipping it is not a Gaussian transition linear in the score, and the
//! step reports none.
//!
//! Noise is drawn only where β̃ > 0 (diffusers adds √max(β̃, 10⁻²⁰)·z on every step from t > 0,
//! i.e. 10⁻¹⁰·z on a step into σ = 0: below f32 resolution, so it is left out).

use super::{Sampler, ScoreFn, StepCtx, Transition, clamp_abs, fill_noise};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// DDPMScheduler's step, x̂₀ clamped to ±`clip` where set.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ddpm {
    /// `clip_sample_range` where `clip_sample` is true.
    pub clip: Option<f64>,
    /// Test-only: take the mean path (z = 0 on every step; the reported transition is unchanged)
    /// to compare with a reference whose noise is fixed to zeros
    /// ([`super::SamplerKind::build_mean_path`]).
    pub zero_noise: bool,
}

/// The step's coefficients: x' = k₀·x̂₀ + k_x·x + √var·z.
struct Coefs {
    k0: f64,
    kx: f64,
    var: f64,
}

fn coefs(p: &GridPoint, q: &GridPoint) -> Coefs {
    let r = p.s / q.s;
    let (sig2, sig2_to) = (p.sigma * p.sigma, q.sigma * q.sigma);
    // v = σ_t² − r² σ_{t'}² (β_t on a VP grid)
    let v = (sig2 - r * r * sig2_to).max(0.0);
    Coefs {
        k0: q.s * v / sig2,
        kx: r * sig2_to / sig2,
        var: sig2_to * v / sig2,
    }
}

impl Ddpm {
    /// The unclipped step from `p` to `q` as a transition: a = 1/r, c = v/r, var = β̃.
    pub fn transition(p: &GridPoint, q: &GridPoint) -> Transition {
        let r = p.s / q.s;
        let v = (p.sigma * p.sigma - r * r * q.sigma * q.sigma).max(0.0);
        Transition::new(1.0 / r, v / r, coefs(p, q).var)
    }
}

impl Sampler for Ddpm {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        let (p, q) = (ctx.from, ctx.to);
        let n = ctx.batch * ctx.dim;
        let Coefs { k0, kx, var } = coefs(p, q);
        let sd = var.sqrt();
        fill_noise(ctx, z, sd > 0.0 && !self.zero_noise);
        let (sig2, s_t) = (p.sigma * p.sigma, p.s);
        for i in 0..n {
            let xv = x[i] as f64;
            // x̂₀ = (x + σ_t² s)/s_t, clamped
            let x0 = clamp_abs((xv + sig2 * scores.uncond[i] as f64) / s_t, self.clip);
            x_next[i] = (k0 * x0 + kx * xv + sd * z[i] as f64) as f32;
        }
        Ok(match self.clip {
            None => Some(Ddpm::transition(p, q)),
            Some(_) => None,
        })
    }
}
