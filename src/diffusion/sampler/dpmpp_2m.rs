//! DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2) as diffusers'
//! `DPMSolverMultistepScheduler` takes it with `solver_order = 2`,
//! `algorithm_type = "dpmsolver++"`, `solver_type = "midpoint"`, `lower_order_final = True`,
//! `euler_at_final = False`, `final_sigmas_type = "zero"`: with λ = ln(s_t/σ_t),
//! h = λ_{t'} − λ_t, D₀ = x̂₀ = (x + σ_t² s)/s_t at `from` and D₋₁ the previous step's,
//!
//! first order: x' = (σ_{t'}/σ_t)·x + s_{t'}(1 − e^{−h})·D₀,
//! second order: r₀ = h₋₁/h, D₁ = (D₀ − D₋₁)/r₀,
//!   x' = (σ_{t'}/σ_t)·x + s_{t'}(1 − e^{−h})·(D₀ + ½D₁),
//!
//! with h₋₁ = λ_t − λ_{t₋₁} the previous step's. First order on the first step and on the last
//! (the step to σ = 0, or any last step below 15 steps: diffusers' `lower_order_final`); second
//! order otherwise. The grid's own state is diffusers' sample (s_t = 1/√(1 + σ̃²)), and it is
//! also the network input. Deterministic: the step reports no transition.

use super::multistep::{History, Update, diffusers_order, exp_neg_h, lambda};
use super::{Sampler, ScoreFn, StepCtx, Transition};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// DPM-Solver++(2M) with its history.
pub struct Dpmpp2m {
    hist: History,
    /// Steps of the grid the sampler was built for (diffusers' `len(timesteps)`).
    steps: usize,
}

impl Dpmpp2m {
    /// For `batch` states of dimension `dim` on a grid of `steps` steps.
    pub fn new(steps: usize, batch: usize, dim: usize) -> Dpmpp2m {
        Dpmpp2m {
            hist: History::new("dpmpp_2m step", 1, batch, dim),
            steps,
        }
    }
}

/// The update of order 1 or 2 from `p` to `q`; `prev` the previous step's `from`.
pub(crate) fn update(p: &GridPoint, q: &GridPoint, prev: Option<&GridPoint>) -> Update {
    let e = exp_neg_h(p, q);
    let b = q.s * (1.0 - e);
    let a_x = q.sigma / p.sigma;
    match prev {
        None => Update {
            a_x,
            w: [b, 0.0, 0.0],
            order: 1,
            var: 0.0,
        },
        Some(pm) => {
            let h = lambda(q) - lambda(p);
            let r0 = (lambda(p) - lambda(pm)) / h;
            // D₀ + ½(D₀ − D₋₁)/r₀
            Update {
                a_x,
                w: [b * (1.0 + 0.5 / r0), -b * 0.5 / r0, 0.0],
                order: 2,
                var: 0.0,
            }
        }
    }
}

impl Sampler for Dpmpp2m {
    fn step(
        &mut self,
        _model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        let taken = self.hist.begin(ctx)?;
        let order = diffusers_order(2, ctx.step, self.steps, taken, ctx.to.sigma == 0.0);
        let prev = (order == 2).then(|| self.hist.points()[0]);
        let upd = update(ctx.from, ctx.to, prev.as_ref());
        self.hist.apply(ctx, x, scores, &upd, false, x_next, z);
        Ok(None)
    }
}
