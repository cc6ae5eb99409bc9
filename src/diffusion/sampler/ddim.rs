//! DDIM(η) (Song, Meng & Ermon 2021, eq. 12) as diffusers' `DDIMScheduler.step` takes it: from t
//! to t' < t with x̂₀ = (x + σ_t² s)/s_t, ε̂ = −σ_t s, v = σ_t² − (s_t/s_{t'})²σ_{t'}² and
//! σ_η = η σ_{t'} √v/σ_t,
//!
//! x' = s_{t'} x̂₀ + √(σ_{t'}² − σ_η²) ε̂ + σ_η z,
//!
//! linear in the score: a = s_{t'}/s_t, c = s_{t'}σ_t²/s_t − √(σ_{t'}² − σ_η²)·σ_t, var = σ_η².
//! η = 0 is deterministic; η = 1 is the ancestral step with variance β̃.
//!
//! With `clip_sample` ([`DdimClip`]) x̂₀ is clamped to [−clip, clip] and ε̂ kept as it was
//! (diffusers' default `use_clipped_model_output = False`):
//! x' = s_{t'} clamp(x̂₀) + √(σ_{t'}² − σ_η²) ε̂ + σ_η z, which is not linear in the score.

use super::{OneStep, Sampler, ScoreFn, StepCtx, Transition, clamp_abs, fill_noise};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// DDIM with noise scale η ∈ [0, 1].
#[derive(Clone, Copy, Debug)]
pub struct Ddim {
    pub eta: f64,
}

/// σ_η² = η² σ_{t'}² v/σ_t² and the ε̂ coefficient √(σ_{t'}² − σ_η²) of the step from `p` to `q`.
fn eta_terms(eta: f64, p: &GridPoint, q: &GridPoint) -> (f64, f64) {
    let r = p.s / q.s;
    let v = (p.sigma * p.sigma - r * r * q.sigma * q.sigma).max(0.0);
    let sig_eta2 = eta * eta * q.sigma * q.sigma * v / (p.sigma * p.sigma);
    (sig_eta2, (q.sigma * q.sigma - sig_eta2).max(0.0).sqrt())
}

impl OneStep for Ddim {
    /// The step from `p` to `q`.
    fn transition(&self, p: &GridPoint, q: &GridPoint, _last: bool) -> Transition {
        let (sig_eta2, k_eps) = eta_terms(self.eta, p, q);
        let a = q.s / p.s;
        let c = q.s * p.sigma * p.sigma / p.s - k_eps * p.sigma;
        Transition::new(a, c, sig_eta2)
    }
}

/// DDIM(η) with x̂₀ clamped to ±`clip` (DDIMScheduler's `clip_sample`, `clip_sample_range`).
#[derive(Clone, Copy, Debug)]
pub struct DdimClip {
    pub eta: f64,
    pub clip: f64,
    /// Test-only: take the mean path (z = 0 on every step) to compare with a reference whose
    /// noise is fixed to zeros ([`super::SamplerKind::build_mean_path`]).
    pub zero_noise: bool,
}

impl Sampler for DdimClip {
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
        let (sig_eta2, k_eps) = eta_terms(self.eta, p, q);
        let sd = sig_eta2.sqrt();
        fill_noise(ctx, z, sd > 0.0 && !self.zero_noise);
        let (sig_t, s_t, s_to) = (p.sigma, p.s, q.s);
        for i in 0..n {
            let (xv, sv) = (x[i] as f64, scores.uncond[i] as f64);
            // x̂₀ = (x + σ_t² s)/s_t clamped; ε̂ = −σ_t s unclamped
            let x0 = clamp_abs((xv + sig_t * sig_t * sv) / s_t, Some(self.clip));
            let eps = -sig_t * sv;
            x_next[i] = (s_to * x0 + k_eps * eps + sd * z[i] as f64) as f32;
        }
        Ok(None)
    }
}
