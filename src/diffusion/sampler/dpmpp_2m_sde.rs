//! DPM-Solver++(2M) SDE (Lu et al. 2022, "DPM-Solver++", §5: the reverse SDE solved in λ with
//! the data prediction) as diffusers' `DPMSolverMultistepScheduler` takes it with
//! `solver_order = 2`, `algorithm_type = "sde-dpmsolver++"`, `solver_type = "midpoint"`,
//! `lower_order_final = True`, `final_sigmas_type = "zero"`: with λ = ln(s_t/σ_t),
//! h = λ_{t'} − λ_t, D₀ = x̂₀ = (x + σ_t² s)/s_t and D₋₁ the previous step's,
//!
//! first order: x' = (σ_{t'}/σ_t) e^{−h}·x + s_{t'}(1 − e^{−2h})·D₀ + σ_{t'}√(1 − e^{−2h})·z,
//! second order: r₀ = h₋₁/h, D₁ = (D₀ − D₋₁)/r₀,
//!   x' = (σ_{t'}/σ_t) e^{−h}·x + s_{t'}(1 − e^{−2h})·(D₀ + ½D₁) + σ_{t'}√(1 − e^{−2h})·z,
//!
//! with the same first/second-order choice as [`super::dpmpp_2m`]. The first-order step is
//! DDIM with η = 1 on the same points (σ_{t'}² (1 − e^{−2h}) = σ_{t'}² v/σ_t² and
//! σ_{t'}e^{−h} = √(σ_{t'}² − σ_η²)); the second order corrects its mean by a multiple of
//! D₀ − D₋₁, keeping the reverse SDE's noise, so the path is a (higher-order) discretisation of
//! the reverse SDE dx = [f x − g² s] dt + g dW̄.
//!
//! The transition reports c on s₀ and c₋₁ on s₋₁ ([`super::multistep`]): its mean also has the
//! label-free term −s_{t'}(1 − e^{−2h})/(2r₀ s₋₁)·x₋₁ in the previous state.

use super::multistep::{History, Update, diffusers_order, exp_neg_h, lambda};
use super::{Sampler, ScoreFn, StepCtx, Transition};
use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::score::Scores;

/// DPM-Solver++(2M) SDE with its history.
pub struct Dpmpp2mSde {
    hist: History,
    /// Steps of the grid the sampler was built for (diffusers' `len(timesteps)`).
    steps: usize,
    /// Test-only: take the mean path (z = 0 on every step; the reported transition is unchanged)
    /// to compare with a reference whose noise is fixed to zeros
    /// ([`super::SamplerKind::build_mean_path`]).
    pub zero_noise: bool,
}

impl Dpmpp2mSde {
    /// For `batch` states of dimension `dim` on a grid of `steps` steps.
    pub fn new(steps: usize, batch: usize, dim: usize) -> Dpmpp2mSde {
        Dpmpp2mSde {
            hist: History::new("dpmpp_2m_sde step", 1, batch, dim),
            steps,
            zero_noise: false,
        }
    }
}

/// The update of order 1 or 2 from `p` to `q`; `prev` the previous step's `from`.
pub(crate) fn update(p: &GridPoint, q: &GridPoint, prev: Option<&GridPoint>) -> Update {
    let e = exp_neg_h(p, q);
    let b = q.s * (1.0 - e * e);
    let a_x = q.sigma / p.sigma * e;
    let var = q.sigma * q.sigma * (1.0 - e * e);
    match prev {
        None => Update {
            a_x,
            w: [b, 0.0, 0.0],
            order: 1,
            var,
        },
        Some(pm) => {
            let h = lambda(q) - lambda(p);
            let r0 = (lambda(p) - lambda(pm)) / h;
            Update {
                a_x,
                w: [b * (1.0 + 0.5 / r0), -b * 0.5 / r0, 0.0],
                order: 2,
                var,
            }
        }
    }
}

impl Sampler for Dpmpp2mSde {
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
        let tr = upd.transition(ctx.from, self.hist.points())?;
        self.hist
            .apply(ctx, x, scores, &upd, !self.zero_noise, x_next, z);
        Ok(Some(tr))
    }
}
