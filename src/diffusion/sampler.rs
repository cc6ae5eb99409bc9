//! Reverse samplers with one signature ([`sample`]) and an observer per step.
//!
//! Going from grid point t to t' < t with r = s_t/s_{t'} and v = σ_t² − r²σ_{t'}² (the variance of
//! the forward transition t' → t), every stochastic sampler here is a Gaussian transition linear
//! in the score, x' = a·x + c·s(x, t) + √var·z, z ~ N(0, I):
//! - ancestral (DDPM): a = 1/r, c = v/r, var = v ("β") or σ_{t'}² v/σ_t² ("β̃"), no noise on the
//!   last step (Ho et al. 2020, Alg. 2);
//! - DDIM(η): x̂₀ = (x + σ_t² s)/s_t, ε̂ = −σ_t s, σ_η = η σ_{t'} √(v)/σ_t,
//!   x' = s_{t'} x̂₀ + √(σ_{t'}² − σ_η²) ε̂ + σ_η z (Song et al. 2021);
//! - Euler–Maruyama on the reverse SDE dx = [f x − g² s] dt + g dW̄, step h = t − t':
//!   a = 1 − f h, c = g² h, var = g² h;
//! - probability-flow ODE dx/dt = f x − ½g² s with Heun's method (Euler on a step to σ = 0,
//!   where the score is not defined), deterministic.
//!
//! A class-conditional transition differs from the unconditional one only in its mean,
//! by c·(s(x | y) − s(x)); the online classifier uses exactly that.

use crate::diffusion::{Grid, GridPoint};
use crate::error::{Error, Result};
use crate::rng::Noise;
use crate::score::{ScoreCtx, ScoreModel, Scores};

/// Variance of the ancestral step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AncestralVariance {
    /// var = v = β_t (the forward transition variance).
    Beta,
    /// var = σ_{t'}² v / σ_t² = β̃_t (the posterior variance q(x_{t'} | x_t, x_0)).
    BetaTilde,
}

/// A reverse sampler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    Ancestral { variance: AncestralVariance },
    Ddim { eta: f64 },
    EulerMaruyama,
    HeunOde,
}

/// x' = a·x + c·s + √var·z.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transition {
    pub a: f64,
    pub c: f64,
    pub var: f64,
}

impl Sampler {
    pub fn name(&self) -> &'static str {
        match self {
            Sampler::Ancestral { .. } => "ancestral",
            Sampler::Ddim { .. } => "ddim",
            Sampler::EulerMaruyama => "euler_maruyama",
            Sampler::HeunOde => "heun_ode",
        }
    }

    /// Whether the transitions are random.
    pub fn is_stochastic(&self) -> bool {
        match self {
            Sampler::Ancestral { .. } | Sampler::EulerMaruyama => true,
            Sampler::Ddim { eta } => *eta > 0.0,
            Sampler::HeunOde => false,
        }
    }

    /// Whether the online classifier is Bayes along this sampler's paths: the sampler must
    /// discretise the reverse SDE itself (diffusion g, drift f x − g² s), so that the mixture
    /// over y of the class-conditional path laws is the unconditional one. Ancestral sampling,
    /// Euler–Maruyama and DDIM with η = 1 do. DDIM with 0 < η < 1 is the SDE with drift
    /// f x − ½(1+η²) g² s and diffusion η g: its transition ratio overstates the label information
    /// by (1+η²)²/(4η²) per unit time, so it is not used; nor can deterministic samplers drive it.
    pub fn supports_online_classifier(&self) -> bool {
        match self {
            Sampler::Ancestral { .. } | Sampler::EulerMaruyama => true,
            Sampler::Ddim { eta } => *eta == 1.0,
            Sampler::HeunOde => false,
        }
    }

    /// Why the online classifier cannot run on this sampler (None where it can).
    pub fn online_classifier_refusal(&self) -> Option<String> {
        match self {
            _ if self.supports_online_classifier() => None,
            Sampler::Ddim { eta } if *eta > 0.0 => Some(format!(
                "the online classifier is Bayes only along reverse-SDE paths (ancestral, euler_maruyama, ddim with eta = 1); \
                 ddim with eta = {eta} overstates the label information by (1+η²)²/(4η²)"
            )),
            _ => Some(format!(
                "the online classifier needs stochastic transitions; sampler {} is deterministic",
                self.name()
            )),
        }
    }

    /// The linear-Gaussian transition from `p` to `q` (None for Heun). `last` is the final step.
    pub fn transition(&self, p: &GridPoint, q: &GridPoint, last: bool) -> Option<Transition> {
        let r = p.s / q.s;
        let v = (p.sigma * p.sigma - r * r * q.sigma * q.sigma).max(0.0);
        match *self {
            Sampler::Ancestral { variance } => {
                let var = if last {
                    0.0
                } else {
                    match variance {
                        AncestralVariance::Beta => v,
                        AncestralVariance::BetaTilde => q.sigma * q.sigma * v / (p.sigma * p.sigma),
                    }
                };
                Some(Transition {
                    a: 1.0 / r,
                    c: v / r,
                    var,
                })
            }
            Sampler::Ddim { eta } => {
                let sig_eta2 = eta * eta * q.sigma * q.sigma * v / (p.sigma * p.sigma);
                let a = q.s / p.s;
                let c = q.s * p.sigma * p.sigma / p.s
                    - (q.sigma * q.sigma - sig_eta2).max(0.0).sqrt() * p.sigma;
                Some(Transition {
                    a,
                    c,
                    var: sig_eta2,
                })
            }
            Sampler::EulerMaruyama => {
                let h = p.t - q.t;
                Some(Transition {
                    a: 1.0 - p.f * h,
                    c: p.g2 * h,
                    var: p.g2 * h,
                })
            }
            Sampler::HeunOde => None,
        }
    }
}

/// What an observer sees of one step of a batch: the move from grid point `from` to `to`.
pub struct StepView<'a> {
    /// Step number 0..S−1 (grid point `step` to `step + 1`).
    pub step: usize,
    pub from: &'a GridPoint,
    pub to: &'a GridPoint,
    /// Index of the batch's first trajectory.
    pub first_trajectory: u64,
    /// States before the step. (B, D)
    pub x: &'a [f32],
    /// States after the step. (B, D)
    pub x_next: &'a [f32],
    /// Scores at `x` on `from` (for Heun: the first stage).
    pub scores: &'a Scores,
    /// Heun's second stage: the scores at the Euler predictor on `to` (None for other samplers
    /// and for a step to σ = 0).
    pub corrector_scores: Option<&'a Scores>,
    /// The Gaussian transition, or None for a deterministic sampler.
    pub transition: Option<Transition>,
    /// The standard normals z of this step (zeros where var = 0). (B, D)
    pub noise: &'a [f32],
}

/// The end of a batch: the final states on the last grid point.
pub struct EndView<'a> {
    pub point: &'a GridPoint,
    pub first_trajectory: u64,
    /// (B, D)
    pub x: &'a [f32],
    /// The model's exact posterior at `x`, where it has one. (B, K)
    pub exact_posterior: Option<Vec<f64>>,
}

/// Sees every step of a sampler. The information layer is one; samplers do not depend on it.
///
/// ```
/// use infodiff::score::{Component, GaussianMixture};
/// use infodiff::diffusion::{sample, Observer, Process, Sampler, StepView, Vp};
/// use infodiff::rng::Noise;
/// /// Largest |x| seen, and the steps.
/// struct Extent(f32, usize);
/// impl Observer for Extent {
///     fn on_step(&mut self, v: &StepView<'_>) -> infodiff::Result<()> {
///         self.0 = v.x_next.iter().fold(self.0, |m, x| m.max(x.abs()));
///         self.1 += 1;
///         Ok(())
///     }
/// }
/// let m = GaussianMixture::new(vec![Component { weight: 1.0, mean: vec![3.0], var: vec![0.0], class: 0 }]).unwrap();
/// let grid = Vp::new(0.1, 20.0).unwrap().grid(100).unwrap();
/// let mut obs = Extent(0.0, 0);
/// sample(&m, &grid, &Sampler::EulerMaruyama, Noise::new(0), 0, 16, &mut obs).unwrap();
/// assert_eq!(obs.1, 100);
/// assert!(obs.0 > 2.5);
/// ```
pub trait Observer {
    fn on_step(&mut self, view: &StepView<'_>) -> Result<()>;
    fn on_end(&mut self, _view: &EndView<'_>) -> Result<()> {
        Ok(())
    }
}

/// An observer that does nothing.
pub struct NoObserver;
impl Observer for NoObserver {
    fn on_step(&mut self, _view: &StepView<'_>) -> Result<()> {
        Ok(())
    }
}

/// Runs `batch` trajectories (indices `first_trajectory..`) of `model` with `sampler` over `grid`,
/// showing each step to `observer`; returns the final states (B, D).
///
/// ```
/// use infodiff::score::{Component, GaussianMixture};
/// use infodiff::diffusion::{sample, Ddpm, NoObserver, Process, Sampler, AncestralVariance};
/// use infodiff::rng::Noise;
/// let model = GaussianMixture::new(vec![
///     Component { weight: 1.0, mean: vec![-2.0], var: vec![0.0], class: 0 },
///     Component { weight: 1.0, mean: vec![2.0], var: vec![0.0], class: 1 },
/// ]).unwrap();
/// let grid = Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(100).unwrap();
/// let sampler = Sampler::Ancestral { variance: AncestralVariance::Beta };
/// let x0 = sample(&model, &grid, &sampler, Noise::new(0), 0, 8, &mut NoObserver).unwrap();
/// assert!(x0.iter().all(|x| (x.abs() - 2.0).abs() < 0.1));
/// ```
pub fn sample<M: ScoreModel + ?Sized, O: Observer + ?Sized>(
    model: &M,
    grid: &Grid,
    sampler: &Sampler,
    noise: Noise,
    first_trajectory: u64,
    batch: usize,
    observer: &mut O,
) -> Result<Vec<f32>> {
    let (d, k) = (model.dim(), model.num_classes());
    let pts = &grid.points;
    if pts.len() < 2 {
        return Err(Error::config("sampler.steps", "at least 1", 0));
    }
    let mut x = vec![0.0f32; batch * d]; // (B, D)
    for (b, row) in x.chunks_mut(d).enumerate() {
        model.initial_state(&pts[0], &noise, first_trajectory + b as u64, row);
    }
    let mut x_next = vec![0.0f32; batch * d]; // (B, D)
    let mut z = vec![0.0f32; batch * d]; // (B, D)
    let mut scores = Scores::new(batch, d, k);
    let mut scores2 = Scores::new(batch, d, k);
    let steps = pts.len() - 1;
    for step in 0..steps {
        let mut corrected = false;
        let (p, q) = (&pts[step], &pts[step + 1]);
        let last = step + 1 == steps;
        let ctx = ScoreCtx {
            noise,
            first_trajectory,
            step: step as u32,
            corrector: false,
        };
        model.scores_at(&x, p, &ctx, &mut scores)?;
        let tr = sampler.transition(p, q, last);
        match tr {
            Some(Transition { a, c, var }) => {
                let sd = var.sqrt();
                for b in 0..batch {
                    let row = &mut z[b * d..(b + 1) * d];
                    if sd > 0.0 {
                        noise.fill_normals(first_trajectory + b as u64, step as u32, row);
                    } else {
                        row.fill(0.0);
                    }
                }
                // x' = a x + c s + √var z
                for i in 0..batch * d {
                    x_next[i] =
                        (a * x[i] as f64 + c * scores.uncond[i] as f64 + sd * z[i] as f64) as f32;
                }
            }
            None => {
                // Heun on dx/dt = f x − ½ g² s, stepping h = t − t' backwards.
                z.fill(0.0);
                let h = p.t - q.t;
                let drift =
                    |pt: &GridPoint, xv: f32, sv: f32| pt.f * xv as f64 - 0.5 * pt.g2 * sv as f64;
                for i in 0..batch * d {
                    x_next[i] = (x[i] as f64 - h * drift(p, x[i], scores.uncond[i])) as f32;
                }
                if q.sigma > 0.0 {
                    let ctx2 = ScoreCtx {
                        corrector: true,
                        ..ctx
                    };
                    model.scores_at(&x_next, q, &ctx2, &mut scores2)?;
                    corrected = true;
                    for i in 0..batch * d {
                        let d1 = drift(p, x[i], scores.uncond[i]);
                        let d2 = drift(q, x_next[i], scores2.uncond[i]);
                        x_next[i] = (x[i] as f64 - h * 0.5 * (d1 + d2)) as f32;
                    }
                }
            }
        }
        if let Some(i) = x_next.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                op: "sample",
                step,
                t: q.t,
                what: format!(
                    "state of trajectory {} (value {})",
                    first_trajectory + (i / d) as u64,
                    x_next[i]
                ),
            });
        }
        observer.on_step(&StepView {
            step,
            from: p,
            to: q,
            first_trajectory,
            x: &x,
            x_next: &x_next,
            scores: &scores,
            corrector_scores: corrected.then_some(&scores2),
            transition: tr,
            noise: &z,
        })?;
        std::mem::swap(&mut x, &mut x_next);
    }
    let end = &pts[steps];
    observer.on_end(&EndView {
        point: end,
        first_trajectory,
        x: &x,
        exact_posterior: model.exact_posterior(&x, end),
    })?;
    Ok(x)
}
