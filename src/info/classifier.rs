//! The online Bayesian classifier's update, written once.
//!
//! A stochastic reverse step is Gaussian, x' ~ N(μ, σ²I) with μ = a·x + Σ_j c_j·s_j; conditioned
//! on the label y its mean moves by Δμ_y = Σ_j c_j·(s_j(· | y) − s_j(·)) and nothing else
//! changes. With x' = μ + σz the log-likelihood ratio of the step taken is
//!
//! ln p(x' | x, y) − ln p(x' | x) = z·Δμ_y/σ − ‖Δμ_y‖²/(2σ²),
//!
//! so ln π_y += z·Δμ_y/σ − ‖Δμ_y‖²/(2σ²), then ln π is renormalised (Handke et al. 2025).
//! For the one-score transitions every kernel runs (Δμ_y = c·Δ_y, Δ_y = s(x | y) − s(x)) this is
//! ln π_y += `cs`·(z·Δ_y) − `kl`·‖Δ_y‖² with cs = c/σ and kl = c²/(2σ²); [`OnlineUpdate`] holds
//! those two numbers. The observer and the f64 references call [`OnlineUpdate::increment`]; the
//! fused kernels (SIMD bodies and `.cu`) take `cs` and `kl` from their plans, which build them
//! here, and apply the same two-term formula.

use crate::diffusion::Transition;

/// The classifier coefficients of one Gaussian transition (nats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnlineUpdate {
    /// c/σ: the coefficient on z·Δ_y.
    pub cs: f64,
    /// c²/(2σ²) = KL(p(x' | x, y) ‖ p(x' | x))/‖Δ_y‖²: the coefficient on ‖Δ_y‖².
    pub kl: f64,
}

impl OnlineUpdate {
    /// The update of `tr`; both coefficients 0 for a deterministic step (σ = 0: no evidence).
    pub fn from_transition(tr: &Transition) -> OnlineUpdate {
        OnlineUpdate::new(tr.c, tr.var)
    }

    /// The update of a step x' = a·x + c·s + √var·z.
    pub fn new(c: f64, var: f64) -> OnlineUpdate {
        if var > 0.0 {
            OnlineUpdate {
                cs: c / var.sqrt(),
                kl: c * c / (2.0 * var),
            }
        } else {
            OnlineUpdate { cs: 0.0, kl: 0.0 }
        }
    }

    /// The increment of ln π_y from z·Δ_y and ‖Δ_y‖².
    #[inline]
    pub fn increment(&self, z_dot_delta: f64, delta2: f64) -> f64 {
        self.cs * z_dot_delta - self.kl * delta2
    }
}

/// Renormalises ln π in place (log-sum-exp), after the increments of a step.
pub fn normalise_log(lp: &mut [f64]) {
    let m = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + lp.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
    lp.iter_mut().for_each(|l| *l -= lse);
}
