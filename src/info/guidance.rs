//! Classifier-free guidance inside a measure run: the path is drawn with the guided score
//!
//! ŝ(x) = s(x) + W·(s(x | y*) − s(x)),
//!
//! s(x) the unconditional score (a network's null label; an exact mixture's Σ_y p(y|x) s(x|y)),
//! y* the trajectory's guidance label (trajectory i takes `classes[i mod len]`), W the scale
//! (W = 0: unconditional, W = 1: plain class-conditional sampling). A network's guidance acts on
//! its output (ε, v or x̂₀), out(x, ∅) + W·(out(x, y*) − out(x, ∅)); every conversion to a score
//! is affine in the output at a fixed state and point ([`crate::diffusion::Prediction::to_score`]),
//! and the weights 1 − W and W sum to 1, so that is the same ŝ.
//!
//! [`GuidedSampler`] wraps any [`Sampler`]: it hands the inner sampler ŝ in place of s (and a
//! [`ScoreFn`] that does the same for a later stage's evaluations), while the driver shows the
//! observer the model's own scores. The observer then sees s, s(·|y) and the transition, and
//! adds the guidance drift to the residual of its Bayes update itself (see
//! [`crate::info::observer`]): what the path is drawn with and what the classifier scores it
//! against stay separate.

use crate::diffusion::{GridPoint, Sampler, ScoreFn, StepCtx, Transition};
use crate::error::{Error, Result};
use crate::score::{ScoreCtx, Scores};

/// Guidance of a measure run: scale W and the labels y* cycled over trajectories.
#[derive(Clone, Debug, PartialEq)]
pub struct Guidance {
    /// W.
    pub scale: f64,
    /// Trajectory i is guided towards `classes[i mod classes.len()]` (not empty).
    pub classes: Vec<usize>,
}

impl Guidance {
    /// Validates W (finite) and the labels (each in 0..K for K = `num_classes`, at least one);
    /// errors name the config keys `guidance` and `classes[i]`.
    pub fn new(scale: f64, classes: Vec<usize>, num_classes: usize) -> Result<Guidance> {
        if !scale.is_finite() {
            return Err(Error::config(
                "guidance",
                "a finite guidance scale W",
                scale,
            ));
        }
        if classes.is_empty() {
            return Err(Error::config(
                "classes",
                "at least one guidance label",
                "[]",
            ));
        }
        if let Some((i, c)) = classes.iter().enumerate().find(|(_, c)| **c >= num_classes) {
            return Err(Error::config(
                format!("classes[{i}]"),
                format!("a class in 0..={}", num_classes.saturating_sub(1)),
                c,
            ));
        }
        Ok(Guidance { scale, classes })
    }

    /// y* of trajectory `trajectory`.
    #[inline]
    pub fn label(&self, trajectory: u64) -> usize {
        self.classes[(trajectory % self.classes.len() as u64) as usize]
    }

    /// Replaces `scores.uncond` (B, D) by ŝ = s + W·(s(·|y*) − s), row b guided towards the
    /// label of trajectory `first_trajectory + b` (f64 per element, rounded once).
    pub fn guide(&self, first_trajectory: u64, scores: &mut Scores) {
        let (d, w) = (scores.dim, self.scale);
        for b in 0..scores.batch {
            let y = self.label(first_trajectory + b as u64);
            let o = (b * scores.classes + y) * d;
            let (uncond, cond) = (
                &mut scores.uncond[b * d..(b + 1) * d],
                &scores.cond[o..o + d],
            );
            for (u, c) in uncond.iter_mut().zip(cond) {
                let su = *u as f64;
                *u = (su + w * (*c as f64 - su)) as f32;
            }
        }
        // A model's own x̂₀ is that of the unguided score: samplers take x̂₀ from ŝ instead.
        scores.denoised = None;
    }
}

/// A [`ScoreFn`] whose unconditional score is the guided one.
struct GuidedFn<'a> {
    inner: &'a dyn ScoreFn,
    guidance: &'a Guidance,
}

impl ScoreFn for GuidedFn<'_> {
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> Result<()> {
        self.inner.scores_at(x, point, ctx, out)?;
        self.guidance.guide(ctx.first_trajectory, out);
        Ok(())
    }
}

/// A sampler drawing its path with the guided score ŝ (module docs); its transitions are the
/// inner sampler's (the coefficients do not depend on the score).
pub struct GuidedSampler<'g> {
    inner: Box<dyn Sampler + 'g>,
    guidance: &'g Guidance,
    /// The step's scores with ŝ in place of s. (B, D) and (B, K, D)
    guided: Scores,
}

impl<'g> GuidedSampler<'g> {
    pub fn new(inner: Box<dyn Sampler + 'g>, guidance: &'g Guidance) -> GuidedSampler<'g> {
        GuidedSampler {
            inner,
            guidance,
            guided: Scores::default(),
        }
    }
}

impl Sampler for GuidedSampler<'_> {
    fn step(
        &mut self,
        model: &dyn ScoreFn,
        ctx: &StepCtx<'_>,
        x: &[f32],
        scores: &Scores,
        x_next: &mut [f32],
        z: &mut [f32],
    ) -> Result<Option<Transition>> {
        self.guided.clone_from(scores);
        self.guidance.guide(ctx.first_trajectory, &mut self.guided);
        let guided_fn = GuidedFn {
            inner: model,
            guidance: self.guidance,
        };
        self.inner.step(&guided_fn, ctx, x, &self.guided, x_next, z)
    }

    fn corrector_scores(&self) -> Option<&Scores> {
        self.inner.corrector_scores()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guidance_mixes_the_scores_and_names_bad_values() {
        let g = Guidance::new(2.0, vec![1, 0], 2).unwrap();
        assert_eq!((g.label(0), g.label(1), g.label(7)), (1, 0, 0));
        let mut s = Scores::new(2, 1, 2);
        s.uncond = vec![1.0, 1.0];
        s.cond = vec![0.0, 3.0, 5.0, -1.0]; // (B, K, D)
        s.denoised = Some(vec![0.5, 0.5]); // the unguided x̂₀ a model may give
        g.guide(10, &mut s); // trajectory 10 → class 1, 11 → class 0
        assert_eq!(s.denoised, None); // samplers then take x̂₀ from ŝ
        // ŝ = s + 2 (s_y − s): exact in f32 here
        assert_eq!(s.uncond, vec![1.0 + 2.0 * 2.0, 1.0 + 2.0 * 4.0]);
        let e = Guidance::new(f64::NAN, vec![0], 2).unwrap_err().to_string();
        assert!(e.contains("`guidance`"), "{e}");
        let e = Guidance::new(1.0, vec![0, 2], 2).unwrap_err().to_string();
        assert!(e.contains("`classes[1]`") && e.contains("0..=1"), "{e}");
        assert!(Guidance::new(1.0, vec![], 2).is_err());
    }
}
