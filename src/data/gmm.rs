//! Data source `gmm:FILE.json`: example i is x = m_k + √C_k ⊙ z, a draw from the measure
//! config's mixture Σ_k π_k N(m_k, C_k), shaped as the config's `image` [C, H, W] (C·H·W = D,
//! channel-major), labelled with the component's class (one factor `class`).
//!
//! Example i draws with the run's seed as a trajectory of its own, `GMM_STREAM + i` (a range
//! no measurement reaches, trajectories < 2⁴⁰): the component k from [`Noise::init_uniform`] and
//! the cumulative f32 weights ([`GaussianMixture::pick_component`]), z from the normals of
//! step [`INIT_STEP`] — the same draw as [`crate::score::ScoreModel::initial_state`] at s = 1,
//! σ = 0. The set has `train_examples` examples (default 50,000; see
//! [`crate::app::config::mixture_data`]), each computed when asked for (nothing is stored).

use super::{Dataset, Factor};
use crate::error::{Error, Result};
use crate::rng::{INIT_STEP, Noise};
use crate::score::{GaussianMixture, ScoreModel};

/// The trajectory index of example 0 (2⁶³).
pub const GMM_STREAM: u64 = 1 << 63;

/// Samples of a Gaussian mixture as images.
#[derive(Clone, Debug)]
pub struct GmmData {
    mixture: GaussianMixture,
    /// [C, H, W]
    shape: [usize; 3],
    len: usize,
    noise: Noise,
    cumulative: Vec<f32>,
    factors: Vec<Factor>,
    source: String,
}

impl GmmData {
    /// `len` draws of `mixture` shaped `shape` (C·H·W must be D, else an error naming `image`),
    /// keyed by `seed`; `source` names the data in [`Dataset::name`].
    pub fn new(
        mixture: GaussianMixture,
        shape: [usize; 3],
        len: usize,
        seed: u64,
        source: &str,
    ) -> Result<GmmData> {
        let n: usize = shape.iter().product();
        if n != mixture.dim() || shape.contains(&0) {
            return Err(Error::config(
                "image",
                format!(
                    "[C, H, W] with C·H·W = {} (the mixture's dimension)",
                    mixture.dim()
                ),
                format!("{shape:?} (C·H·W = {n})"),
            ));
        }
        Ok(GmmData {
            cumulative: mixture.cumulative_weights_f32(),
            factors: vec![Factor {
                name: "class".into(),
                cardinality: mixture.num_classes(),
            }],
            mixture,
            shape,
            len,
            noise: Noise::new(seed),
            source: source.into(),
        })
    }

    /// The component example `i` is drawn from.
    pub fn component_of(&self, i: usize) -> usize {
        let u = self.noise.init_uniform(GMM_STREAM + i as u64);
        GaussianMixture::pick_component(&self.cumulative, u)
    }
}

impl Dataset for GmmData {
    fn name(&self) -> String {
        format!(
            "gmm:{} ({} draws of {})",
            self.source,
            self.len,
            self.mixture.describe()
        )
    }
    fn len(&self) -> usize {
        self.len
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn factors(&self) -> &[Factor] {
        &self.factors
    }
    fn example(&self, i: usize, image: &mut [f32], labels: &mut [i64]) -> Result<()> {
        let d = self.mixture.dim();
        if i >= self.len {
            return Err(Error::shape("GmmData::example: index", self.len, i));
        }
        if image.len() != d || labels.len() != 1 {
            return Err(Error::shape(
                "GmmData::example: image (D), labels (1)",
                (d, 1),
                (image.len(), labels.len()),
            ));
        }
        let k = self.component_of(i);
        self.noise
            .fill_normals(GMM_STREAM + i as u64, INIT_STEP, image);
        let c = &self.mixture.components()[k];
        for ((v, m), var) in image.iter_mut().zip(&c.mean).zip(&c.var) {
            *v = (m + var.sqrt() * *v as f64) as f32;
        }
        labels[0] = c.class as i64;
        Ok(())
    }
}
