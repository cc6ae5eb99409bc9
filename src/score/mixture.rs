//! Exact Gaussian mixtures under a linear forward process.
//!
//! Components N(m_k, C_k) with weights π_k and class labels c(k); at time t the marginal is
//! p_t(x) = Σ_k π_k N(x; s_t m_k, Σ_k), Σ_k = s_t² C_k + σ_t² I (diagonal). With responsibilities
//! w_k(x) ∝ π_k N_k(x) and component scores s_k = −Σ_k⁻¹(x − s_t m_k):
//! s(x) = Σ_k w_k s_k; p(y | x) = Σ_{c(k)=y} w_k; s(x | y) = Σ_{c(k)=y} w_k s_k / p(y | x);
//! ∇·s(x) = −Σ_k w_k tr Σ_k⁻¹ + Σ_k w_k ‖s_k‖² − ‖s‖².

use super::{ScoreModel, Scores, check_batch};
use crate::diffusion::GridPoint;
use crate::error::{Error, Result};
use crate::rng::{INIT_STEP, Noise};

/// Smallest component variance used in evaluations: a point mass at σ_t = 0 (the data end) is
/// evaluated as a Gaussian of this variance, which makes its posterior one-hot.
pub const VAR_FLOOR: f64 = 1e-30;

/// One mixture component.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub weight: f64,
    /// (D)
    pub mean: Vec<f64>,
    /// Diagonal covariance (D); 0 is a point mass in that direction.
    pub var: Vec<f64>,
    pub class: usize,
}

/// Everything a mixture gives at one state.
#[derive(Clone, Debug, Default)]
pub struct MixtureEval {
    /// Responsibilities w_k. (K_c components)
    pub resp: Vec<f64>,
    /// Class posterior p(y | x). (K classes)
    pub posterior: Vec<f64>,
    /// s(x). (D)
    pub score: Vec<f64>,
    /// s(x | y). (K, D)
    pub class_scores: Vec<f64>,
    /// ∇·s(x).
    pub divergence: f64,
    /// log p_t(x).
    pub log_density: f64,
}

/// An exact Gaussian mixture with class labels.
///
/// ```
/// use infodiff::score::{Component, GaussianMixture};
/// let m = GaussianMixture::new(vec![
///     Component { weight: 0.5, mean: vec![-1.0], var: vec![0.0], class: 0 },
///     Component { weight: 0.5, mean: vec![1.0], var: vec![0.0], class: 1 },
/// ]).unwrap();
/// let e = m.eval(&[0.0], 0.6, 0.8);
/// assert!((e.posterior[0] - 0.5).abs() < 1e-12);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    dim: usize,
    classes: usize,
    components: Vec<Component>,
    log_weights: Vec<f64>,
}

impl GaussianMixture {
    /// Validates and normalises the weights. Classes are 0..K−1 with K = 1 + the largest label;
    /// every class must own a component.
    pub fn new(components: Vec<Component>) -> Result<Self> {
        if components.is_empty() {
            return Err(Error::config(
                "mixture.components",
                "at least one component",
                "an empty list",
            ));
        }
        let dim = components[0].mean.len();
        if dim == 0 {
            return Err(Error::config(
                "mixture.components[0].mean",
                "at least one coordinate",
                "[]",
            ));
        }
        let mut total = 0.0;
        for (i, c) in components.iter().enumerate() {
            let f = |name: &str| format!("mixture.components[{i}].{name}");
            if !(c.weight.is_finite() && c.weight > 0.0) {
                return Err(Error::config(f("weight"), "a finite number > 0", c.weight));
            }
            if c.mean.len() != dim {
                return Err(Error::config(
                    f("mean"),
                    format!("{dim} coordinates"),
                    c.mean.len(),
                ));
            }
            if let Some(v) = c.mean.iter().find(|v| !v.is_finite()) {
                return Err(Error::config(f("mean"), "finite coordinates", v));
            }
            if c.var.len() != dim {
                return Err(Error::config(
                    f("var"),
                    format!("a number or {dim} numbers"),
                    c.var.len(),
                ));
            }
            if let Some(v) = c.var.iter().find(|v| !(v.is_finite() && **v >= 0.0)) {
                return Err(Error::config(f("var"), "finite variances ≥ 0", v));
            }
            // every class 0..K−1 needs a component, so no class reaches the component count
            if c.class >= components.len() {
                return Err(Error::config(
                    f("class"),
                    format!(
                        "a class in 0..={} (every class below it needs a component)",
                        components.len() - 1
                    ),
                    c.class,
                ));
            }
            total += c.weight;
        }
        let classes = components.iter().map(|c| c.class).max().unwrap_or(0) + 1;
        for y in 0..classes {
            if !components.iter().any(|c| c.class == y) {
                return Err(Error::config(
                    "mixture.components[].class",
                    format!("classes numbered 0..{} without gaps", classes - 1),
                    format!("no component of class {y}"),
                ));
            }
        }
        let log_weights = components.iter().map(|c| (c.weight / total).ln()).collect();
        Ok(GaussianMixture {
            dim,
            classes,
            components,
            log_weights,
        })
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }
    /// Normalised component weights π_k.
    pub fn weights(&self) -> Vec<f64> {
        self.log_weights.iter().map(|l| l.exp()).collect()
    }
    /// Whether each class owns exactly one component (then p(y | x) = w_k).
    pub fn one_component_per_class(&self) -> bool {
        self.components.len() == self.classes
    }

    /// Σ_k per dimension at (s, σ), floored at [`VAR_FLOOR`].
    pub fn component_var(&self, k: usize, d: usize, s: f64, sigma: f64) -> f64 {
        (s * s * self.components[k].var[d] + sigma * sigma).max(VAR_FLOOR)
    }

    /// Evaluates everything at one state `x` (D) for kernel coefficients (s, σ).
    pub fn eval(&self, x: &[f64], s: f64, sigma: f64) -> MixtureEval {
        let (kc, d, k) = (self.components.len(), self.dim, self.classes);
        let mut logp = vec![0.0; kc];
        let mut comp_scores = vec![0.0; kc * d];
        let mut trace = vec![0.0; kc];
        for (i, c) in self.components.iter().enumerate() {
            let mut q = 0.0;
            let mut logdet = 0.0;
            for j in 0..d {
                let v = self.component_var(i, j, s, sigma);
                let diff = x[j] - s * c.mean[j];
                q += diff * diff / v;
                logdet += (2.0 * std::f64::consts::PI * v).ln();
                comp_scores[i * d + j] = -diff / v;
                trace[i] += 1.0 / v;
            }
            logp[i] = self.log_weights[i] - 0.5 * (q + logdet);
        }
        let m = logp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logp.iter().map(|l| (l - m).exp()).sum();
        let log_density = m + z.ln();
        let resp: Vec<f64> = logp.iter().map(|l| (l - log_density).exp()).collect();
        let mut posterior = vec![0.0; k];
        let mut score = vec![0.0; d];
        let mut class_scores = vec![0.0; k * d];
        let mut divergence = 0.0;
        for (i, c) in self.components.iter().enumerate() {
            posterior[c.class] += resp[i];
            let mut norm2 = 0.0;
            for j in 0..d {
                let sk = comp_scores[i * d + j];
                score[j] += resp[i] * sk;
                class_scores[c.class * d + j] += resp[i] * sk;
                norm2 += sk * sk;
            }
            divergence += resp[i] * (norm2 - trace[i]);
        }
        divergence -= score.iter().map(|v| v * v).sum::<f64>();
        for y in 0..k {
            if posterior[y] > 0.0 {
                for j in 0..d {
                    class_scores[y * d + j] /= posterior[y];
                }
            } else {
                // p(y | x) underflowed: s(x | y) from the class's own components by log-weights.
                let lm = self
                    .components
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.class == y)
                    .map(|(i, _)| logp[i])
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut zsum = 0.0;
                for (i, _) in self
                    .components
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.class == y)
                {
                    let w = (logp[i] - lm).exp();
                    zsum += w;
                    for j in 0..d {
                        class_scores[y * d + j] += w * comp_scores[i * d + j];
                    }
                }
                for j in 0..d {
                    class_scores[y * d + j] /= zsum;
                }
            }
        }
        MixtureEval {
            resp,
            posterior,
            score,
            class_scores,
            divergence,
            log_density,
        }
    }

    /// Cumulative component weights in f32 (the table both the generic and the fused path use to
    /// pick the component of x_T).
    pub fn cumulative_weights_f32(&self) -> Vec<f32> {
        let mut acc = 0.0f64;
        self.weights()
            .iter()
            .map(|w| {
                acc += w;
                acc as f32
            })
            .collect()
    }

    /// The component chosen by uniform `u` ∈ [0, 1): the number of cumulative weights ≤ u
    /// (clamped to the last component).
    pub fn pick_component(cumulative: &[f32], u: f32) -> usize {
        cumulative
            .iter()
            .filter(|&&c| c <= u)
            .count()
            .min(cumulative.len() - 1)
    }
}

impl ScoreModel for GaussianMixture {
    fn dim(&self) -> usize {
        self.dim
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn class_prior(&self) -> Vec<f64> {
        let mut p = vec![0.0; self.classes];
        for (c, w) in self.components.iter().zip(self.weights()) {
            p[c.class] += w;
        }
        p
    }
    fn scores(&self, x: &[f32], point: &GridPoint, out: &mut Scores) -> Result<()> {
        let b = check_batch("GaussianMixture::scores", x, self.dim, out)?;
        let (d, k) = (self.dim, self.classes);
        let mut post = out.posterior.take().unwrap_or_default();
        let mut div = out.divergence.take().unwrap_or_default();
        post.resize(b * k, 0.0);
        div.resize(b, 0.0);
        let mut xd = vec![0.0f64; d];
        for i in 0..b {
            for j in 0..d {
                xd[j] = x[i * d + j] as f64;
            }
            let e = self.eval(&xd, point.s, point.sigma);
            for j in 0..d {
                out.uncond[i * d + j] = e.score[j] as f32;
            }
            for (o, v) in out.cond[i * k * d..(i + 1) * k * d]
                .iter_mut()
                .zip(&e.class_scores)
            {
                *o = *v as f32;
            }
            post[i * k..(i + 1) * k].copy_from_slice(&e.posterior);
            div[i] = e.divergence;
        }
        out.posterior = Some(post);
        out.divergence = Some(div);
        Ok(())
    }
    fn exact_posterior(&self, x: &[f32], point: &GridPoint) -> Option<Vec<f64>> {
        let d = self.dim;
        let mut xd = vec![0.0f64; d];
        let mut out = Vec::with_capacity(x.len() / d * self.classes);
        for row in x.chunks(d) {
            for j in 0..d {
                xd[j] = row[j] as f64;
            }
            out.extend(self.eval(&xd, point.s, point.sigma).posterior);
        }
        Some(out)
    }
    /// x_T = s_T m_k + √(s_T² C_k + σ_T²) z with k drawn by the weights: the exact marginal.
    fn initial_state(&self, point: &GridPoint, noise: &Noise, trajectory: u64, out: &mut [f32]) {
        let u = noise.init_uniform(trajectory);
        let k = Self::pick_component(&self.cumulative_weights_f32(), u);
        noise.fill_normals(trajectory, INIT_STEP, out);
        let c = &self.components[k];
        for (j, v) in out.iter_mut().enumerate() {
            let sd = (point.s * point.s * c.var[j] + point.sigma * point.sigma).sqrt();
            *v = (point.s * c.mean[j] + sd * *v as f64) as f32;
        }
    }
    fn describe(&self) -> String {
        format!(
            "exact Gaussian mixture ({} components, {} classes, D = {})",
            self.components.len(),
            self.classes,
            self.dim
        )
    }
}
