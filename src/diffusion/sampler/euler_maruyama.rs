//! Euler–Maruyama on the reverse SDE dx = [f x − g² s] dt + g dW̄ (Song et al. 2021), stepping
//! h = t − t' backwards from t:
//!
//! x' = (1 − f h)·x + g² h·s(x, t) + √(g² h)·z,
//!
//! i.e. a = 1 − f h, c = g² h, var = g² h, with f and g² taken at t.

use super::{OneStep, Transition};
use crate::diffusion::GridPoint;

/// The Euler–Maruyama step.
#[derive(Clone, Copy, Debug)]
pub struct EulerMaruyama;

impl OneStep for EulerMaruyama {
    /// The step from `p` to `q`.
    fn transition(&self, p: &GridPoint, q: &GridPoint, _last: bool) -> Transition {
        let h = p.t - q.t;
        Transition::new(1.0 - p.f * h, p.g2 * h, p.g2 * h)
    }
}
