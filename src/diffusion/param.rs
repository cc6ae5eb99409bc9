//! The parameterisations of a denoiser's output, and the network timestep of a grid point,
//! written once.
//!
//! On grid point t with x = s_t x₀ + σ_t ε (see [`crate::diffusion::Process`]):
//! - score s = ∇ₓ ln p_t(x) = −ε/σ_t (ε-prediction: [`score_from_eps`], [`eps_from_score`]);
//! - denoised x̂₀ = E[x₀ | x] = (x + σ_t² s)/s_t (Tweedie; [`x0_from_score`], [`score_from_x0`]);
//! - v = s_t ε − σ_t x₀ (Salimans & Ho 2022; diffusers' `v_prediction`), so that
//!   x₀ = (s_t x − σ_t v)/(s_t² + σ_t²) and ε = (σ_t x + s_t v)/(s_t² + σ_t²) ([`v_from`],
//!   [`eps_x0_from_v`]; the denominators are 1 on variance-preserving processes).
//!
//! Every function is pointwise in f64 on one element; callers loop over their (B, D) buffers.
//! The score is undefined at σ_t = 0 (the data end): the score forms need σ_t > 0, and callers
//! check it where a user's grid could reach it.

use crate::diffusion::GridPoint;

/// What a denoising network predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prediction {
    /// The noise ε (diffusers' `epsilon`).
    Epsilon,
    /// The clean sample x₀ (diffusers' `sample`).
    Sample,
    /// v = s_t ε − σ_t x₀ (diffusers' `v_prediction`).
    VPrediction,
    /// The score itself.
    Score,
}

impl Prediction {
    /// The score at state `x` on `p` from a prediction `out` of this kind (σ_t > 0).
    #[inline]
    pub fn to_score(self, p: &GridPoint, x: f64, out: f64) -> f64 {
        match self {
            Prediction::Epsilon => score_from_eps(p, out),
            Prediction::Sample => score_from_x0(p, x, out),
            Prediction::VPrediction => score_from_eps(p, eps_x0_from_v(p, x, out).0),
            Prediction::Score => out,
        }
    }
}

impl Prediction {
    /// The denoised x̂₀ at state `x` on `p` from a prediction `out` of this kind, taken directly
    /// (no detour through the score, which cancels where s_t is small): ε: (x − σ_t ε)/s_t;
    /// x̂₀: itself; v: (s_t x − σ_t v)/(s_t² + σ_t²); score: (x + σ_t² s)/s_t.
    #[inline]
    pub fn to_x0(self, p: &GridPoint, x: f64, out: f64) -> f64 {
        match self {
            Prediction::Epsilon => (x - p.sigma * out) / p.s,
            Prediction::Sample => out,
            Prediction::VPrediction => eps_x0_from_v(p, x, out).1,
            Prediction::Score => x0_from_score(p, x, out),
        }
    }
}

/// The factor −1/σ_t that turns ε into the score: s = `score_per_eps(p)`·ε (σ_t > 0).
#[inline]
pub fn score_per_eps(p: &GridPoint) -> f64 {
    -1.0 / p.sigma
}

/// s = −ε/σ_t.
#[inline]
pub fn score_from_eps(p: &GridPoint, eps: f64) -> f64 {
    eps * score_per_eps(p)
}

/// ε = −σ_t s.
#[inline]
pub fn eps_from_score(p: &GridPoint, score: f64) -> f64 {
    -p.sigma * score
}

/// x̂₀ = (x + σ_t² s)/s_t.
#[inline]
pub fn x0_from_score(p: &GridPoint, x: f64, score: f64) -> f64 {
    (x + p.sigma * p.sigma * score) / p.s
}

/// s = (s_t x̂₀ − x)/σ_t² (σ_t > 0).
#[inline]
pub fn score_from_x0(p: &GridPoint, x: f64, x0: f64) -> f64 {
    (p.s * x0 - x) / (p.sigma * p.sigma)
}

/// v = s_t ε − σ_t x₀.
#[inline]
pub fn v_from(p: &GridPoint, eps: f64, x0: f64) -> f64 {
    p.s * eps - p.sigma * x0
}

/// (ε, x₀) from the state x and v: ε = (σ_t x + s_t v)/(s_t² + σ_t²), x₀ = (s_t x − σ_t v)/(s_t² + σ_t²).
#[inline]
pub fn eps_x0_from_v(p: &GridPoint, x: f64, v: f64) -> (f64, f64) {
    let n = p.s * p.s + p.sigma * p.sigma;
    ((p.sigma * x + p.s * v) / n, (p.s * x - p.sigma * v) / n)
}

/// x̂₀ of a batch: `out[i] = (x[i] + σ_t² s[i])/s_t`, each element in f64 and rounded once. (B, D)
pub fn x0_from_scores(p: &GridPoint, x: &[f32], scores: &[f32], out: &mut [f32]) {
    for ((o, &xv), &sv) in out.iter_mut().zip(x).zip(scores) {
        *o = x0_from_score(p, xv as f64, sv as f64) as f32;
    }
}

/// The timestep a diffusers-trained network takes for the state on `p` ([`GridPoint::timestep`]:
/// DDPM state x_i is timestep i − 1, diffusers counting the first noisy state as 0).
#[inline]
pub fn network_timestep(p: &GridPoint) -> f32 {
    p.timestep as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(s: f64, sigma: f64) -> GridPoint {
        GridPoint {
            index: 7,
            t: 0.3,
            s,
            sigma,
            f: 0.0,
            g2: 1.0,
            timestep: 6.0,
        }
    }

    #[test]
    fn conversions_round_trip() {
        // A VP point (s² + σ² = 1) and a VE-like one (s = 1, σ = 3): the v forms must hold off VP.
        for p in [point(0.8, 0.6), point(1.0, 3.0)] {
            let (x0, eps) = (0.7, -1.3);
            let x = p.s * x0 + p.sigma * eps;
            let s = score_from_eps(&p, eps);
            // f64 round trips: relative 1e-12.
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
            assert!(close(eps_from_score(&p, s), eps));
            assert!(close(x0_from_score(&p, x, s), x0));
            assert!(close(score_from_x0(&p, x, x0), s));
            let v = v_from(&p, eps, x0);
            let (e2, x02) = eps_x0_from_v(&p, x, v);
            assert!(close(e2, eps) && close(x02, x0));
            for (kind, out) in [
                (Prediction::Epsilon, eps),
                (Prediction::Sample, x0),
                (Prediction::VPrediction, v),
                (Prediction::Score, s),
            ] {
                assert!(close(kind.to_score(&p, x, out), s), "{kind:?}");
                assert!(close(kind.to_x0(&p, x, out), x0), "{kind:?}");
            }
        }
        assert_eq!(network_timestep(&point(1.0, 1.0)), 6.0);
    }
}
