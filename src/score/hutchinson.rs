//! Hutchinson's estimator of the divergence ∇·s(x) for score models that have none in closed
//! form (networks), so that entropy production (`hx0_rate` = (g²/2)(d/σ² + E∇·s)) can be
//! measured for them:
//!
//! ∇·s(x) ≈ (1/N) Σ_n v_nᵀ (s(x + h v_n) − s(x − h v_n)) / (2h),
//!
//! with N Rademacher probes v_n ∈ {±1}^D drawn from the probe stream of [`Noise::rademacher`]
//! at (seed, trajectory, step, element): a trajectory's estimate is the same in any batch, and
//! independent of the sampler's noise. E[v vᵀ] = I makes the estimate unbiased up to the central
//! difference's O(h²) error; its variance, 2 Σ_{i≠j} ((J_ij + J_ji)/2)² / N for the score's
//! Jacobian J, lands in the per-trajectory spread of the observer's sums, so `hx0_rate_se`
//! includes it.
//!
//! The step h ≈ [`PROBE_REL_STEP`]·σ_t, rounded to the nearest power of two ([`probe_step`]).
//! Why 10⁻³σ_t: p_t is the data smoothed by N(0, σ_t² I), so the score varies on the length
//! scale σ_t; a step h along the ±1 probe (length √D) leaves a truncation error of relative size
//! ≲ (h√D/σ_t)²/6 ≈ 10⁻⁶·D/6 (5·10⁻⁴ at D = 3072, and 0 where the score is locally linear),
//! while an f32 network's output error δ ≈ 10⁻⁶|ε̂| enters as ≈ √D·δ/(2hσ_t) in ∇·s, about
//! 10⁻⁵ of d/σ_t² at D = 3072; a larger h trades rounding for truncation. Why a power of two:
//! then x ± h v is exact in f32 for every |x| < 2²³h (h is a multiple of ulp(x); in practice
//! always, |x|/σ_t < 5000), so the step is exactly 2h v. A rounded step is not a harmless
//! error: x + h and x − h round in complementary directions (their fractional parts in ulps of x
//! are f and 1 − f), so the realised step is shorter (or longer) than 2h by the same fraction
//! on every element of a binade, a systematic relative bias of up to ulp(x)/(2h) in ∇·s, which
//! near the noise end, where d/σ² + ∇·s cancels to 10⁻⁵ of either term, is the whole signal.
//! What remains is the rounding of the scores themselves, of random sign.

use super::{ScoreCtx, ScoreModel, Scores};
use crate::diffusion::GridPoint;
use crate::error::{Error, Result};
use crate::rng::{MAX_PROBES, Noise, PROBE_STREAM, probe_sign};

/// h/σ_t of the central differences, before rounding to a power of two (see the module docs).
pub const PROBE_REL_STEP: f64 = 1e-3;

/// The probe step at `point`: the power of two nearest to [`PROBE_REL_STEP`]·σ_t (so within a
/// factor √2 of it), in f32 as the states are perturbed; 0 where σ_t is 0 or not finite.
pub fn probe_step(point: &GridPoint) -> f32 {
    let h = PROBE_REL_STEP * point.sigma;
    if !(h > 0.0 && h.is_finite()) {
        return 0.0;
    }
    2f64.powi(h.log2().round().clamp(-126.0, 127.0) as i32) as f32
}

/// The probe states of one step, (B, 2N, D): for each state of `x` (B, D) and probe n, x + h v_n
/// then x − h v_n (each one f32 rounding: fma(±h, v, x)), v_n the Rademacher signs of
/// (first + b, step, n, e). The device twin is `sde_probe_rows` in kernels/sde_step.cu.
pub fn probe_states(
    noise: &Noise,
    first: u64,
    step: u32,
    h: f32,
    probes: usize,
    x: &[f32],
    dim: usize,
) -> Vec<f32> {
    let b = x.len() / dim.max(1);
    let mut out = vec![0.0f32; b * 2 * probes * dim];
    for (bi, xb) in x.chunks(dim).enumerate() {
        let base = bi * 2 * probes * dim;
        for (e, xv) in xb.iter().enumerate() {
            let w = noise.probe_words(first + bi as u64, step, e);
            for n in 0..probes {
                let v = probe_sign(&w, n);
                out[base + 2 * n * dim + e] = h.mul_add(v, *xv);
                out[base + (2 * n + 1) * dim + e] = (-h).mul_add(v, *xv);
            }
        }
    }
    out
}

/// A score model whose divergence is Hutchinson's estimate with `probes` probes, in place of
/// whatever the inner model reports (exact models included: that is how the estimator is
/// tested). Scores, posterior and initial states are the inner model's.
pub struct Hutchinson<'a, M: ScoreModel + ?Sized> {
    pub inner: &'a M,
    probes: usize,
}

impl<'a, M: ScoreModel + ?Sized> Hutchinson<'a, M> {
    /// `probes` in 1..=[`MAX_PROBES`].
    pub fn new(inner: &'a M, probes: usize) -> Result<Self> {
        if probes == 0 || probes > MAX_PROBES {
            return Err(Error::config(
                "probes",
                format!("1..={MAX_PROBES} Hutchinson probes (0: no divergence estimate)"),
                probes,
            ));
        }
        Ok(Hutchinson { inner, probes })
    }

    pub fn probes(&self) -> usize {
        self.probes
    }

    /// The estimate for each state of `x` (B, D) of the batch starting at trajectory `first`.
    /// (B)
    pub fn divergence(
        &self,
        x: &[f32],
        point: &GridPoint,
        noise: &Noise,
        first: u64,
        step: u32,
    ) -> Result<Vec<f64>> {
        let d = self.inner.dim();
        if d == 0 || x.len() % d != 0 {
            return Err(Error::shape("Hutchinson::divergence: x (B, D)", d, x.len()));
        }
        if step >= PROBE_STREAM - 1 {
            return Err(Error::Unsupported {
                op: "Hutchinson::divergence",
                reason: format!("step {step}: the probe stream serves steps below 2³¹ − 1"),
            });
        }
        let h = probe_step(point);
        if !(h > 0.0) {
            return Err(Error::Unsupported {
                op: "Hutchinson::divergence",
                reason: format!("probe step h = {h} at σ = {} (needs σ > 0)", point.sigma),
            });
        }
        let n = self.probes;
        let xp = probe_states(noise, first, step, h, n, x, d);
        let mut sp = vec![0.0f32; xp.len()];
        self.inner.uncond_scores(&xp, point, &mut sp)?;
        let scale = 1.0 / (2.0 * h as f64 * n as f64);
        Ok(sp
            .chunks(2 * n * d)
            .enumerate()
            .map(|(bi, rows)| {
                let mut acc = 0.0f64;
                for e in 0..d {
                    let w = noise.probe_words(first + bi as u64, step, e);
                    for k in 0..n {
                        let v = probe_sign(&w, k) as f64;
                        acc += v * (rows[2 * k * d + e] as f64 - rows[(2 * k + 1) * d + e] as f64);
                    }
                }
                acc * scale
            })
            .collect())
    }
}

impl<M: ScoreModel + ?Sized> ScoreModel for Hutchinson<'_, M> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn class_prior(&self) -> Vec<f64> {
        self.inner.class_prior()
    }
    /// The inner scores without a divergence: outside a sampler run the probes have no address.
    fn scores(&self, x: &[f32], point: &GridPoint, out: &mut Scores) -> Result<()> {
        self.inner.scores(x, point, out)?;
        out.divergence = None;
        Ok(())
    }
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> Result<()> {
        self.inner.scores_at(x, point, ctx, out)?;
        out.divergence = if ctx.corrector {
            None // Heun's second stage: no observer reads it
        } else {
            Some(self.divergence(x, point, &ctx.noise, ctx.first_trajectory, ctx.step)?)
        };
        Ok(())
    }
    fn uncond_scores(&self, x: &[f32], point: &GridPoint, out: &mut [f32]) -> Result<()> {
        self.inner.uncond_scores(x, point, out)
    }
    fn exact_posterior(&self, x: &[f32], point: &GridPoint) -> Option<Vec<f64>> {
        self.inner.exact_posterior(x, point)
    }
    fn initial_state(&self, point: &GridPoint, noise: &Noise, trajectory: u64, out: &mut [f32]) {
        self.inner.initial_state(point, noise, trajectory, out)
    }
    fn describe(&self) -> String {
        format!(
            "{} (∇·s by Hutchinson, {} probe{})",
            self.inner.describe(),
            self.probes,
            if self.probes == 1 { "" } else { "s" }
        )
    }
}
