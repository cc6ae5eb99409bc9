//! What the multistep data-prediction samplers ([`super::dpmpp_2m`], [`super::dpmpp_2m_sde`],
//! [`super::dpmpp_3m_sde`]) share: the history of x̂₀'s, and the update
//!
//! x' = A·x + Σ_{j<order} w_j·D_j + √var·z,  D_j = x̂₀ = (x_j + σ_j² s_j)/s_j j steps back
//! (D₀ at `from`),
//!
//! whose mean, written in the scores, is a·x + c·s₀ + Σ_{j≥1} c_j·s_j + Σ_{j≥1} (w_j/s_j)·x_j with
//! a = A + w₀/s₀, c = w₀σ₀²/s₀, c_j = w_j σ_j²/s_j (`Update::transition`). The terms in the
//! earlier states x_j do not depend on the label, so the class-conditional mean shift is
//! Σ_j c_j (s_j(x_j | y) − s_j(x_j)) all the same; but `a·x + c·s₀ + Σ c_j s_j` is not the
//! whole unconditional mean of a multistep step: that is x' − √var·z.

use crate::diffusion::GridPoint;
use crate::error::{Error, Result};
use crate::score::Scores;

use super::{MAX_EARLIER_TERMS, StepCtx, Transition, fill_noise};

/// λ = ln(s_t/σ_t), half the log-SNR (DPM-Solver's λ; −∞ never occurs: σ_t > 0 wherever the
/// score is taken).
#[inline]
pub(crate) fn lambda(p: &GridPoint) -> f64 {
    p.s.ln() - p.sigma.ln()
}

/// e^{−h} = (σ_{t'} s_t)/(s_{t'} σ_t), h = λ_{t'} − λ_t (0 on a step to σ = 0, where h = ∞).
#[inline]
pub(crate) fn exp_neg_h(p: &GridPoint, q: &GridPoint) -> f64 {
    (q.sigma * p.s) / (q.s * p.sigma)
}

/// DPMSolverMultistepScheduler's choice of order for step `step` of `steps`
/// (`lower_order_final = True`, `euler_at_final = False`), given that `taken` earlier steps'
/// x̂₀ are held (`lower_order_nums`) and whether the step lands on σ = 0
/// (`final_sigmas_type = "zero"`):
/// first order on the first step and on the last one (always when it lands on σ = 0, else
/// below 15 steps), at most second order on the last but one below 15 steps.
pub(crate) fn diffusers_order(
    solver_order: usize,
    step: usize,
    steps: usize,
    taken: usize,
    to_zero: bool,
) -> usize {
    let lower_order_final = step + 1 == steps && (steps < 15 || to_zero);
    let lower_order_second = step + 2 == steps && steps < 15;
    if solver_order == 1 || taken < 1 || lower_order_final {
        1
    } else if solver_order == 2 || taken < 2 || lower_order_second {
        2
    } else {
        3
    }
}

/// One step's update: x' = A·x + Σ_{j<order} w_j D_j + √var·z.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Update {
    /// A: the coefficient on the state x itself.
    pub a_x: f64,
    /// w_j on D_j, j = 0..order.
    pub w: [f64; 3],
    pub order: usize,
    pub var: f64,
}

impl Update {
    /// The transition in the scores: a = A + w₀/s₀, c = w₀σ₀²/s₀, c_j = w_j σ_j²/s_j
    /// (`earlier[j − 1]` is the point j steps back).
    pub fn transition(&self, from: &GridPoint, earlier: &[GridPoint]) -> Result<Transition> {
        let mut cs = [0.0; MAX_EARLIER_TERMS];
        for j in 1..self.order {
            let p = &earlier[j - 1];
            cs[j - 1] = self.w[j] * p.sigma * p.sigma / p.s;
        }
        Transition::new(
            self.a_x + self.w[0] / from.s,
            self.w[0] * from.sigma * from.sigma / from.s,
            self.var,
        )
        .with_earlier(&cs[..self.order - 1])
    }
}

/// The x̂₀'s (f64) and points of the last `cap` steps, newest first, for a batch run in step order.
pub(crate) struct History {
    /// d[0]: this step's D₀ (scratch); d[j]: D_j, j steps back. (cap + 1) × (B, D)
    d: Vec<Vec<f64>>,
    /// pts[j − 1]: the `from` point j steps back.
    pts: Vec<GridPoint>,
    /// Earlier steps held (≤ cap).
    len: usize,
    /// The step that may use this history next.
    next_step: usize,
    op: &'static str,
}

impl History {
    /// A history of `cap` earlier steps for `batch` states of dimension `dim`.
    pub fn new(op: &'static str, cap: usize, batch: usize, dim: usize) -> History {
        History {
            d: vec![vec![0.0; batch * dim]; cap + 1],
            pts: Vec::with_capacity(cap),
            len: 0,
            next_step: 0,
            op,
        }
    }

    /// Starts step `ctx.step`: on step 0 the history is cleared (and sized to the batch);
    /// later steps must follow the previous one. Returns the number of earlier steps held.
    pub fn begin(&mut self, ctx: &StepCtx<'_>) -> Result<usize> {
        let n = ctx.batch * ctx.dim;
        if ctx.step == 0 {
            self.len = 0;
            self.pts.clear();
            for d in &mut self.d {
                d.resize(n, 0.0);
            }
        } else if ctx.step != self.next_step || self.d[0].len() != n {
            return Err(Error::Unsupported {
                op: self.op,
                reason: format!(
                    "step {} of a batch of {} states after step {} of {} states: a multistep \
                     sampler runs one batch's steps in order from step 0",
                    ctx.step,
                    ctx.batch,
                    self.next_step as i64 - 1,
                    self.d[0].len() / ctx.dim.max(1)
                ),
            });
        }
        Ok(self.len)
    }

    /// The `from` points of the earlier steps held, newest first.
    pub fn points(&self) -> &[GridPoint] {
        &self.pts[..self.len]
    }

    /// Takes the step: D₀ = (x + σ₀² s)/s₀ per element, x' = A x + Σ w_j D_j + √var z (z drawn
    /// when `draw` and var > 0, else zeros), each element in f64 and rounded once; then records
    /// D₀ and `from`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        upd: &Update,
        draw: bool,
        x_next: &mut [f32],
        z: &mut [f32],
    ) {
        let p = ctx.from;
        let n = ctx.batch * ctx.dim;
        let sd = upd.var.max(0.0).sqrt();
        fill_noise(ctx, z, draw && sd > 0.0);
        let (sig2, s0) = (p.sigma * p.sigma, p.s);
        let (d0, rest) = self.d.split_at_mut(1);
        let d0 = &mut d0[0];
        for (i, d) in d0[..n].iter_mut().enumerate() {
            *d = (x[i] as f64 + sig2 * scores.uncond[i] as f64) / s0;
        }
        let [w0, w1, w2] = upd.w;
        match upd.order {
            1 => {
                for i in 0..n {
                    let m = upd.a_x * x[i] as f64 + w0 * d0[i];
                    x_next[i] = (m + sd * z[i] as f64) as f32;
                }
            }
            2 => {
                let d1 = &rest[0];
                for i in 0..n {
                    let m = upd.a_x * x[i] as f64 + w0 * d0[i] + w1 * d1[i];
                    x_next[i] = (m + sd * z[i] as f64) as f32;
                }
            }
            _ => {
                let (d1, d2) = (&rest[0], &rest[1]);
                for i in 0..n {
                    let m = upd.a_x * x[i] as f64 + w0 * d0[i] + w1 * d1[i] + w2 * d2[i];
                    x_next[i] = (m + sd * z[i] as f64) as f32;
                }
            }
        }
        // newest first: this step's D₀ becomes D₁, the oldest buffer the next scratch
        let cap = self.d.len() - 1;
        self.d.rotate_right(1);
        self.pts.insert(0, *p);
        self.pts.truncate(cap);
        self.len = (self.len + 1).min(cap);
        self.next_step = ctx.step + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Ddpm, Process, Ve};

    fn orders(solver_order: usize, steps: usize, to_zero: bool) -> Vec<usize> {
        (0..steps)
            .map(|j| diffusers_order(solver_order, j, steps, j.min(solver_order), to_zero))
            .collect()
    }

    #[test]
    fn order_choice_follows_diffusers() {
        // DPMSolverMultistepScheduler.step: lower_order_nums < 1 → 1; last step → 1 below 15
        // steps or into σ = 0; last but one below 15 steps → at most 2.
        let mut want = vec![2; 10];
        (want[0], want[9]) = (1, 1);
        assert_eq!(orders(2, 10, true), want);
        assert_eq!(orders(2, 10, false), want);
        let mut want = vec![2; 20];
        want[0] = 1;
        assert_eq!(orders(2, 20, false), want);
        want[19] = 1;
        assert_eq!(orders(2, 20, true), want);
        let mut want = vec![3; 10];
        (want[0], want[1], want[8], want[9]) = (1, 2, 2, 1);
        assert_eq!(orders(3, 10, true), want);
        let mut want = vec![3; 20];
        (want[0], want[1]) = (1, 2);
        assert_eq!(orders(3, 20, false), want);
        assert_eq!(orders(1, 5, false), vec![1; 5]);
    }

    /// k-diffusion's sequential 3M SDE mean in σ-space (η = 1, z = 0), mapped to the grid's
    /// space: x' = s' x̃'.
    fn k_diffusion_3m(pts: &[GridPoint], q: &GridPoint, x: f64, d: &[f64]) -> f64 {
        let st = |p: &GridPoint| p.sigma / p.s;
        let p = &pts[0];
        let h = st(p).ln() - st(q).ln();
        let he = 2.0 * h;
        let mut xt = (-he).exp() * (x / p.s) + (-(-he).exp_m1()) * d[0];
        let phi2 = (-he).exp_m1() / he + 1.0;
        if pts.len() == 2 {
            let r = (st(&pts[1]).ln() - st(p).ln()) / h;
            xt += phi2 * (d[0] - d[1]) / r;
        } else if pts.len() == 3 {
            let (r0, r1) = (
                (st(&pts[1]).ln() - st(p).ln()) / h,
                (st(&pts[2]).ln() - st(&pts[1]).ln()) / h,
            );
            let d10 = (d[0] - d[1]) / r0;
            let d11 = (d[1] - d[2]) / r1;
            let d1 = d10 + (d10 - d11) * r0 / (r0 + r1);
            let d2 = (d10 - d11) / (r0 + r1);
            let phi3 = phi2 / he - 0.5;
            xt += phi2 * d1 - phi3 * d2;
        }
        q.s * xt
    }

    /// diffusers' sde-dpmsolver++ midpoint mean (z = 0), as its code writes it.
    fn diffusers_2m_sde(pts: &[GridPoint], q: &GridPoint, x: f64, d: &[f64]) -> f64 {
        let lam = |p: &GridPoint| p.s.ln() - p.sigma.ln();
        let p = &pts[0];
        let h = lam(q) - lam(p);
        let base = (q.sigma / p.sigma * (-h).exp()) * x + (q.s * (1.0 - (-2.0 * h).exp())) * d[0];
        if pts.len() == 1 {
            return base;
        }
        let r0 = (lam(p) - lam(&pts[1])) / h;
        let d1 = (d[0] - d[1]) / r0;
        base + 0.5 * (q.s * (1.0 - (-2.0 * h).exp())) * d1
    }

    #[test]
    fn weights_are_the_published_updates() {
        // The weight form x' = A x + Σ w_j D_j against the updates as k-diffusion and diffusers
        // write them, in f64: relative 1e-12.
        let grids = [
            Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(12).unwrap(),
            Ve::new(0.01, 50.0).unwrap().grid(12).unwrap(),
        ];
        let (x, d) = (0.37, [0.81, -0.44, 1.3]);
        for g in &grids {
            for j in 2..g.steps() - 1 {
                let q = &g.points[j + 1];
                for order in 1..=3 {
                    // newest first: from, then 1 and 2 steps back
                    let pts: Vec<GridPoint> = (0..order).map(|k| g.points[j - k]).collect();
                    let mix =
                        |u: &Update| u.a_x * x + (0..u.order).map(|k| u.w[k] * d[k]).sum::<f64>();
                    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + b.abs());
                    let u = super::super::dpmpp_3m_sde::update(&pts[0], q, &pts[1..]);
                    assert_eq!(u.order, order);
                    let want = k_diffusion_3m(&pts, q, x, &d);
                    assert!(close(mix(&u), want), "3M order {order} step {j}");
                    if order <= 2 {
                        let u = super::super::dpmpp_2m_sde::update(&pts[0], q, pts.get(1));
                        let want = diffusers_2m_sde(&pts, q, x, &d);
                        assert!(close(mix(&u), want), "2M SDE order {order} step {j}");
                    }
                }
            }
        }
    }
}
