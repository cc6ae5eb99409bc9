//! A diffusers UNet2DModel as a [`ScoreModel`]: ε-prediction, s(x | y) = −ε̂(x, t, y)/σ_t, with the
//! unconditional score from the null label (the last of num_class_embeds, as classifier-free
//! models are trained) and the K = num_class_embeds − 1 real classes; all K + 1 evaluations of a
//! step run as one batched forward. Timesteps follow diffusers' DDPM indexing: state x_i takes
//! timestep i − 1.

use std::path::Path;

use super::{ScoreModel, Scores, check_batch};
use crate::diffusion::GridPoint;
use crate::error::{Error, Result};
use crate::nn::unet::{UNet, UNetConfig};
use crate::tensor::Tensor;

/// A class-conditional U-Net score model.
pub struct UNetScore {
    pub net: UNet,
    /// (C, H, W) of one image.
    pub image: (usize, usize, usize),
    classes: usize,
}

impl UNetScore {
    /// Loads a class-conditional model folder (config.json + diffusion_pytorch_model.safetensors).
    pub fn load(dir: &Path) -> Result<UNetScore> {
        let net = UNet::load(dir)?;
        let classes = Self::classes_of(&net.config)?;
        let size = net.config.sample_size.ok_or_else(|| {
            Error::config(
                "config.json: sample_size",
                "the image size the model was trained on",
                "null",
            )
        })?;
        let image = (net.config.in_channels, size, size);
        Ok(UNetScore {
            net,
            image,
            classes,
        })
    }

    /// K = num_class_embeds − 1 (the last label is the null class).
    pub fn classes_of(cfg: &UNetConfig) -> Result<usize> {
        match cfg.num_class_embeds {
            Some(n) if n >= 2 => Ok(n - 1),
            other => Err(Error::config(
                "config.json: num_class_embeds",
                "a class-conditional model with a null class (≥ 2 labels) to measure label information",
                format!("{other:?}"),
            )),
        }
    }
}

impl ScoreModel for UNetScore {
    fn dim(&self) -> usize {
        self.image.0 * self.image.1 * self.image.2
    }
    fn num_classes(&self) -> usize {
        self.classes
    }
    fn class_prior(&self) -> Vec<f64> {
        vec![1.0 / self.classes as f64; self.classes]
    }
    fn scores(&self, x: &[f32], point: &GridPoint, out: &mut Scores) -> Result<()> {
        let d = self.dim();
        let b = check_batch("UNetScore::scores", x, d, out)?;
        if !(point.sigma > 0.0) {
            return Err(Error::Unsupported {
                op: "UNetScore::scores",
                reason: format!("no score at σ = 0 (t = {})", point.t),
            });
        }
        let k = self.classes;
        let (c, h, w) = self.image;
        // (B·(K+1), C, H, W): for each state, the null label first, then classes 0..K−1.
        let mut batch = Vec::with_capacity(b * (k + 1) * d);
        let mut labels = Vec::with_capacity(b * (k + 1));
        for row in x.chunks(d) {
            for lab in std::iter::once(k).chain(0..k) {
                batch.extend_from_slice(row);
                labels.push(lab as i64);
            }
        }
        let input = Tensor::new(vec![b * (k + 1), c, h, w], batch)?;
        let timestep = crate::diffusion::param::network_timestep(point); // diffusers' index of state x_i
        let t = vec![timestep; b * (k + 1)];
        let eps = self.net.forward(&input, &t, Some(&labels))?;
        let inv = crate::diffusion::param::score_per_eps(point) as f32;
        for bi in 0..b {
            let base = bi * (k + 1) * d;
            for (o, e) in out.uncond[bi * d..(bi + 1) * d]
                .iter_mut()
                .zip(&eps.data[base..base + d])
            {
                *o = e * inv;
            }
            for y in 0..k {
                let src = &eps.data[base + (1 + y) * d..base + (2 + y) * d];
                let dst = &mut out.cond[(bi * k + y) * d..(bi * k + y + 1) * d];
                for (o, e) in dst.iter_mut().zip(src) {
                    *o = e * inv;
                }
            }
        }
        out.posterior = None;
        out.divergence = None;
        Ok(())
    }
    fn uncond_scores(&self, x: &[f32], point: &GridPoint, out: &mut [f32]) -> Result<()> {
        let d = self.dim();
        if x.len() % d != 0 || out.len() != x.len() {
            return Err(Error::shape(
                "UNetScore::uncond_scores: x, out (B, D)",
                x.len(),
                out.len(),
            ));
        }
        if !(point.sigma > 0.0) {
            return Err(Error::Unsupported {
                op: "UNetScore::uncond_scores",
                reason: format!("no score at σ = 0 (t = {})", point.t),
            });
        }
        let b = x.len() / d;
        let (c, h, w) = self.image;
        let input = Tensor::new(vec![b, c, h, w], x.to_vec())?;
        let t = vec![crate::diffusion::param::network_timestep(point); b];
        let labels = vec![self.classes as i64; b]; // the null label
        let eps = self.net.forward(&input, &t, Some(&labels))?;
        let inv = crate::diffusion::param::score_per_eps(point) as f32;
        for (o, e) in out.iter_mut().zip(&eps.data) {
            *o = e * inv;
        }
        Ok(())
    }
    fn describe(&self) -> String {
        let (c, h, w) = self.image;
        format!("UNet2DModel ({c}×{h}×{w}, {} classes + null)", self.classes)
    }
}
