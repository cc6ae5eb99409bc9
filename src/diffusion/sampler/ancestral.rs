//! Ancestral sampling (DDPM; Ho et al. 2020, Alg. 2): from t to t' < t with r = s_t/s_{t'} and
//! v = σ_t² − r²σ_{t'}² (the forward transition t' → t's variance),
//!
//! x' = (x + v·s(x, t))/r + √var·z,  var = v ("β") or σ_{t'}² v/σ_t² ("β̃"),
//!
//! i.e. a = 1/r, c = v/r, and no noise on the last step.

use super::{AncestralVariance, OneStep, Transition};
use crate::diffusion::GridPoint;

/// The ancestral step with its variance choice.
#[derive(Clone, Copy, Debug)]
pub struct Ancestral {
    pub variance: AncestralVariance,
}

impl OneStep for Ancestral {
    /// The step from `p` to `q` (`last`: no noise).
    fn transition(&self, p: &GridPoint, q: &GridPoint, last: bool) -> Transition {
        let r = p.s / q.s;
        let v = (p.sigma * p.sigma - r * r * q.sigma * q.sigma).max(0.0);
        let var = if last {
            0.0
        } else {
            match self.variance {
                AncestralVariance::Beta => v,
                AncestralVariance::BetaTilde => q.sigma * q.sigma * v / (p.sigma * p.sigma),
            }
        };
        Transition::new(1.0 / r, v / r, var)
    }
}
