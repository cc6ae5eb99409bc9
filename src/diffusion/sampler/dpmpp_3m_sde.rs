//! DPM-Solver++(3M) SDE as k-diffusion's `sample_dpmpp_3m_sde` takes it with η = 1,
//! s_noise = 1 (diffusers has no third-order SDE solver of this form), in σ-space with
//! σ̃ = σ_t/s_t, x̃ = x/s_t, x' = s_{t'} x̃': with h = ln σ̃ − ln σ̃' = λ_{t'} − λ_t,
//! D₀ = x̂₀ = (x + σ_t² s)/s_t at `from`, D₋₁, D₋₂ the previous steps' and h₋₁, h₋₂ their h,
//!
//! x̃' = e^{−2h} x̃ + (1 − e^{−2h}) D₀ + C + σ̃'√(1 − e^{−2h})·z,
//! φ₂ = (e^{−2h} − 1)/(2h) + 1,  φ₃ = φ₂/(2h) − ½,
//! second order (one earlier step): r = h₋₁/h, C = φ₂ (D₀ − D₋₁)/r;
//! third order: r₀ = h₋₁/h, r₁ = h₋₂/h, d₁,₀ = (D₀ − D₋₁)/r₀, d₁,₁ = (D₋₁ − D₋₂)/r₁,
//!   d₁ = d₁,₀ + (d₁,₀ − d₁,₁) r₀/(r₀ + r₁), d₂ = (d₁,₀ − d₁,₁)/(r₀ + r₁),
//!   C = φ₂ d₁ − φ₃ d₂ (first order: C = 0),
//!
//! and x̃' = D₀ on a step to σ̃' = 0. First order on the first step, second on the second, third
//! after. The first-order step is DDIM with η = 1 on the same points, and the corrections change
//! only the mean: the path discretises the reverse SDE dx = [f x − g² s] dt + g dW̄ (noise
//! σ_{t'}²(1 − e^{−2h}) per step).
//!
//! Written as x' = A x + Σ_j w_j D_j + √var z ([`super::multistep`]) with A = (s_{t'}/s_t)e^{−2h},
//! var = σ_{t'}²(1 − e^{−2h}); the transition reports c on s₀ and c₋₁, c₋₂ on the earlier
//! scores; its mean also has label-free terms in the earlier states.

use super::multistep::{History, Update, exp_neg_h, lambda};
use super::{Sampler, ScoreFn, StepCtx, Transition};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// DPM-Solver++(3M) SDE with its history.
pub struct Dpmpp3mSde {
    hist: History,
    /// Test-only: take the mean path (z = 0 on every step; the reported transition is unchanged)
    /// to compare with a reference whose noise is fixed to zeros
    /// ([`super::SamplerKind::build_mean_path`]).
    pub zero_noise: bool,
}

impl Dpmpp3mSde {
    /// For `batch` states of dimension `dim`.
    pub fn new(batch: usize, dim: usize) -> Dpmpp3mSde {
        Dpmpp3mSde {
            hist: History::new("dpmpp_3m_sde step", 2, batch, dim),
            zero_noise: false,
        }
    }
}

/// The update from `p` to `q` with the previous steps' `from` points `earlier` (newest first;
/// its length, at most 2, sets the order; ignored on a step to σ = 0).
pub(crate) fn update(p: &GridPoint, q: &GridPoint, earlier: &[GridPoint]) -> Update {
    let e = exp_neg_h(p, q);
    let e2 = e * e;
    // σ-space e^{−2h} x̃ is (s_{t'}/s_t) e^{−2h} x here; (1 − e^{−2h}) D₀ gets the factor s_{t'}
    let a_x = q.s / p.s * e2;
    let p0 = q.s * (1.0 - e2);
    let var = q.sigma * q.sigma * (1.0 - e2);
    if q.sigma == 0.0 || earlier.is_empty() {
        return Update {
            a_x,
            w: [p0, 0.0, 0.0],
            order: 1,
            var,
        };
    }
    let h = lambda(q) - lambda(p);
    let h_eta = 2.0 * h;
    let phi2 = (-h_eta).exp_m1() / h_eta + 1.0;
    let phi3 = phi2 / h_eta - 0.5;
    let (qq, rr) = (q.s * phi2, q.s * phi3);
    let h1 = lambda(p) - lambda(&earlier[0]);
    if earlier.len() == 1 {
        // φ₂ (D₀ − D₋₁)/r
        let r = h1 / h;
        return Update {
            a_x,
            w: [p0 + qq / r, -qq / r, 0.0],
            order: 2,
            var,
        };
    }
    let h2 = lambda(&earlier[0]) - lambda(&earlier[1]);
    let (r0, r1) = (h1 / h, h2 / h);
    // φ₂ d₁ − φ₃ d₂ = φ₂ d₁,₀ + k (d₁,₀ − d₁,₁), k = (φ₂ r₀ − φ₃)/(r₀ + r₁)
    let k = (qq * r0 - rr) / (r0 + r1);
    Update {
        a_x,
        w: [
            p0 + qq / r0 + k / r0,
            -qq / r0 - k * (1.0 / r0 + 1.0 / r1),
            k / r1,
        ],
        order: 3,
        var,
    }
}

impl Sampler for Dpmpp3mSde {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        self.hist.begin(ctx)?;
        let upd = update(ctx.from, ctx.to, self.hist.points());
        let tr = upd.transition(ctx.from, self.hist.points())?;
        self.hist
            .apply(ctx, x, scores, &upd, !self.zero_noise, x_next, z);
        Ok(Some(tr))
    }
}
