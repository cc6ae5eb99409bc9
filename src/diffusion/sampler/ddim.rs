//! DDIM(η) (Song, Meng & Ermon 2021): from t to t' < t with x̂₀ = (x + σ_t² s)/s_t,
//! ε̂ = −σ_t s, v = σ_t² − (s_t/s_{t'})²σ_{t'}² and σ_η = η σ_{t'} √v/σ_t,
//!
//! x' = s_{t'} x̂₀ + √(σ_{t'}² − σ_η²) ε̂ + σ_η z,
//!
//! linear in the score: a = s_{t'}/s_t, c = s_{t'}σ_t²/s_t − √(σ_{t'}² − σ_η²)·σ_t, var = σ_η².
//! η = 0 is deterministic; η = 1 is the ancestral step with variance β̃.

use super::{OneStep, Transition};
use crate::diffusion::GridPoint;

/// DDIM with noise scale η ∈ [0, 1].
#[derive(Clone, Copy, Debug)]
pub struct Ddim {
    pub eta: f64,
}

impl OneStep for Ddim {
    /// The step from `p` to `q`.
    fn transition(&self, p: &GridPoint, q: &GridPoint, _last: bool) -> Transition {
        let eta = self.eta;
        let r = p.s / q.s;
        let v = (p.sigma * p.sigma - r * r * q.sigma * q.sigma).max(0.0);
        let sig_eta2 = eta * eta * q.sigma * q.sigma * v / (p.sigma * p.sigma);
        let a = q.s / p.s;
        let c = q.s * p.sigma * p.sigma / p.s
            - (q.sigma * q.sigma - sig_eta2).max(0.0).sqrt() * p.sigma;
        Transition::new(a, c, sig_eta2)
    }
}
