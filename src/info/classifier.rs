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
//!
//! A multistep transition (earlier score terms, [`Transition::earlier`]) has
//! Δμ_y = c·Δ_y + Σ_{j≥1} c_j·Δ_{y,−j} with Δ_{y,−j} the label's score difference j grid steps
//! back, and a guided path's residual x' − μ_u = √var·z + W·Δμ_{y*} carries the guidance drift:
//! neither is two numbers per step. The observer ([`crate::info::observer`], whose docs derive
//! the update) keeps each trajectory's earlier Δ and applies
//! ln π_y += (r·Δμ_y − ½‖Δμ_y‖²)/var itself; [`mean_shift`] and [`mean_shift_increment`] are the
//! unguided form for one trajectory (z·Δμ_y/σ − ‖Δμ_y‖²/(2σ²)), which equals the two-term form
//! when the only term is c·Δ_y. The fused kernels take one-term unguided transitions only.

use crate::diffusion::Transition;
use crate::error::{Error, Result};

/// The classifier coefficients of one Gaussian transition (nats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OnlineUpdate {
    /// c/σ: the coefficient on z·Δ_y.
    pub cs: f64,
    /// c²/(2σ²) = KL(p(x' | x, y) ‖ p(x' | x))/‖Δ_y‖²: the coefficient on ‖Δ_y‖².
    pub kl: f64,
}

impl OnlineUpdate {
    /// The update of `tr` from its coefficient on the score at `from`; both coefficients 0 for a
    /// deterministic step (σ = 0: no evidence). Exact for a one-term transition, which is every
    /// one [`crate::diffusion::SamplerKind::transition`] returns (the fused plans' source); a
    /// transition with earlier score terms ([`Transition::one_term`] is None) needs
    /// [`mean_shift_increment`] on the Δμ_y of [`mean_shift`] instead.
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

/// Δμ_y = c·Δ_y + Σ_{j≥1} c_j·Δ_{y,−j} of `tr` into `out` (D), from the label's score difference
/// at `from` (`delta`, D) and those 1, 2, … grid steps back (`earlier[j − 1]`, D each; as many as
/// `tr.earlier()` has coefficients).
pub fn mean_shift(
    tr: &Transition,
    delta: &[f64],
    earlier: &[&[f64]],
    out: &mut [f64],
) -> Result<()> {
    let d = out.len();
    if delta.len() != d
        || earlier.len() != tr.earlier().len()
        || earlier.iter().any(|e| e.len() != d)
    {
        return Err(Error::shape(
            "mean_shift: Δ (D), earlier Δ (J × D)",
            (d, tr.earlier().len()),
            (delta.len(), earlier.len()),
        ));
    }
    for (o, dv) in out.iter_mut().zip(delta) {
        *o = tr.c * dv;
    }
    for (cj, e) in tr.earlier().iter().zip(earlier) {
        for (o, dv) in out.iter_mut().zip(*e) {
            *o += cj * dv;
        }
    }
    Ok(())
}

/// The increment of ln π_y for a step of variance `var` whose mean moves by Δμ_y under y:
/// z·Δμ_y/σ − ‖Δμ_y‖²/(2σ²) from z·Δμ_y and ‖Δμ_y‖² (0 where var = 0).
#[inline]
pub fn mean_shift_increment(var: f64, z_dot_dmu: f64, dmu2: f64) -> f64 {
    if var > 0.0 {
        z_dot_dmu / var.sqrt() - dmu2 / (2.0 * var)
    } else {
        0.0
    }
}

/// Renormalises ln π in place (log-sum-exp), after the increments of a step.
pub fn normalise_log(lp: &mut [f64]) {
    let m = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let lse = m + lp.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
    lp.iter_mut().for_each(|l| *l -= lse);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_term_and_general_forms_agree() {
        let tr = Transition::new(0.9, 0.3, 0.04);
        let upd = OnlineUpdate::from_transition(&tr);
        // Bit for bit the plans' coefficients.
        assert_eq!(
            (upd.cs, upd.kl),
            (0.3 / 0.04f64.sqrt(), 0.3 * 0.3 / (2.0 * 0.04))
        );
        let (delta, z) = ([0.5, -1.0, 2.0], [0.1, 0.7, -0.4]);
        let mut dmu = [0.0; 3];
        mean_shift(&tr, &delta, &[], &mut dmu).unwrap();
        let zd: f64 = z.iter().zip(&delta).map(|(a, b)| a * b).sum();
        let d2: f64 = delta.iter().map(|v| v * v).sum();
        let zm: f64 = z.iter().zip(&dmu).map(|(a, b)| a * b).sum();
        let m2: f64 = dmu.iter().map(|v| v * v).sum();
        // Same quantity by two roundings: 1e-12 relative.
        let (a, b) = (upd.increment(zd, d2), mean_shift_increment(tr.var, zm, m2));
        assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        // A two-term transition: not one term, Δμ = cΔ + c₁Δ₋₁.
        let tr2 = tr.with_earlier(&[-0.1]).unwrap();
        assert!(tr2.one_term().is_none() && tr.one_term() == Some((0.9, 0.3, 0.04)));
        let prev = [1.0, 1.0, 1.0];
        mean_shift(&tr2, &delta, &[&prev], &mut dmu).unwrap();
        assert_eq!(dmu, [0.3 * 0.5 - 0.1, -0.3 - 0.1, 0.3 * 2.0 - 0.1]);
        assert!(mean_shift(&tr2, &delta, &[], &mut dmu).is_err());
    }
}
