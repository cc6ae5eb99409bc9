//! A diffusers UNet2DModel as a [`ScoreModel`]: s(x | y) = to_score(out(x, t, y)) with `out` the
//! network's prediction as its scheduler's `prediction_type` says (ε: s = −ε̂/σ_t; v:
//! ε̂ = (σ_t x + s_t v̂)/(s_t² + σ_t²); x̂₀: s = (s_t x̂₀ − x)/σ_t²; [`Prediction::to_score`]), with the
//! unconditional score from the null label (the last of num_class_embeds, as classifier-free
//! models are trained) and the K = num_class_embeds − 1 real classes; all K + 1 evaluations of a
//! step run as one batched forward. A multi-factor model (one embedding table per factor,
//! `infodiff_factors`) is measured one factor j at a time ([`UNetScore::with_factor`]): s(x | z_j)
//! with every other factor at its null label, s(x) with all null. Timesteps follow diffusers' DDPM indexing: state x_i takes
//! timestep i − 1.

use std::path::Path;

use super::{ScoreModel, Scores, check_batch};
use crate::diffusion::{GridPoint, Prediction};
use crate::error::{Error, Result};
use crate::nn::unet::{UNet, UNetConfig};
use crate::tensor::Tensor;

/// A class-conditional U-Net score model.
pub struct UNetScore {
    pub net: UNet,
    /// (C, H, W) of one image.
    pub image: (usize, usize, usize),
    classes: usize,
    /// What the network's output is (ε, v or x̂₀).
    pub prediction: Prediction,
    /// Rows of each label table (values and the null slot, last): one entry for a plain
    /// class-conditional model.
    tables: Vec<usize>,
    /// The factor measured (its label varies; the others stay null).
    factor: usize,
}

impl UNetScore {
    /// Loads a class-conditional ε-prediction model folder (config.json +
    /// diffusion_pytorch_model.safetensors).
    pub fn load(dir: &Path) -> Result<UNetScore> {
        UNetScore::load_with(dir, Prediction::Epsilon)
    }

    /// [`UNetScore::load`] for a network whose output is a `prediction` (the scheduler's
    /// `prediction_type`; [`Prediction::Score`] is refused: no diffusers network predicts it).
    pub fn load_with(dir: &Path, prediction: Prediction) -> Result<UNetScore> {
        if prediction == Prediction::Score {
            return Err(Error::config(
                "prediction_type",
                "epsilon, v_prediction or sample",
                "a score",
            ));
        }
        let net = UNet::load(dir)?;
        let classes = Self::classes_of_factor(&net.config, 0)?;
        let tables = net.config.label_tables().iter().map(|t| t.1).collect();
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
            prediction,
            tables,
            factor: 0,
        })
    }

    /// The same model measuring factor `j` (0 for a plain class-conditional model): its classes
    /// are that factor's values.
    pub fn with_factor(mut self, j: usize) -> Result<UNetScore> {
        self.classes = Self::classes_of_factor(&self.net.config, j)?;
        self.factor = j;
        Ok(self)
    }

    /// The labels of one evaluation (one per table): `value` for the measured factor (its null
    /// slot for the unconditional score), every other factor null.
    fn push_labels(&self, value: usize, labels: &mut Vec<i64>) {
        for (i, &rows) in self.tables.iter().enumerate() {
            labels.push(if i == self.factor { value } else { rows - 1 } as i64);
        }
    }

    /// The scores of one state `x` (D) from the network's prediction `pred` (D) at `point`, into
    /// `out` (D). ε keeps the f32 product −ε̂/σ_t (the device-resident loop's); v and x̂₀ go
    /// through [`Prediction::to_score`] in f64.
    fn to_scores(&self, point: &GridPoint, x: &[f32], pred: &[f32], out: &mut [f32]) {
        if self.prediction == Prediction::Epsilon {
            let inv = crate::diffusion::param::score_per_eps(point) as f32;
            for (o, e) in out.iter_mut().zip(pred) {
                *o = e * inv;
            }
        } else {
            for ((o, p), xv) in out.iter_mut().zip(pred).zip(x) {
                *o = self.prediction.to_score(point, *xv as f64, *p as f64) as f32;
            }
        }
    }

    /// K = num_class_embeds − 1 (the last label is the null class).
    pub fn classes_of(cfg: &UNetConfig) -> Result<usize> {
        Self::classes_of_factor(cfg, 0)
    }

    /// K_j = rows − 1 of factor j's table (its last row is the null label).
    pub fn classes_of_factor(cfg: &UNetConfig, j: usize) -> Result<usize> {
        if !cfg.factors.is_empty() {
            return match cfg.factors.get(j) {
                Some(&n) if n >= 2 => Ok(n - 1),
                other => Err(Error::config(
                    "factor",
                    format!(
                        "a factor of the model (0..{}) with ≥ 1 value",
                        cfg.factors.len()
                    ),
                    format!("{j} ({other:?} rows)"),
                )),
            };
        }
        if j != 0 {
            return Err(Error::config(
                "factor",
                "0: the model has one label (num_class_embeds)",
                j,
            ));
        }
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
        let mut batch = crate::backend::pool::take(b * (k + 1) * d); // pooled: a fresh Vec per forward grows the pool
        let mut labels = Vec::with_capacity(b * (k + 1) * self.tables.len());
        for row in x.chunks(d) {
            for lab in std::iter::once(k).chain(0..k) {
                batch.extend_from_slice(row);
                self.push_labels(lab, &mut labels);
            }
        }
        let input = Tensor::new(vec![b * (k + 1), c, h, w], batch)?;
        let timestep = crate::diffusion::param::network_timestep(point); // diffusers' index of state x_i
        let t = vec![timestep; b * (k + 1)];
        let pred = self.net.forward(&input, &t, Some(&labels))?;
        for bi in 0..b {
            let base = bi * (k + 1) * d;
            let xb = &x[bi * d..(bi + 1) * d];
            self.to_scores(
                point,
                xb,
                &pred.data[base..base + d],
                &mut out.uncond[bi * d..(bi + 1) * d],
            );
            for y in 0..k {
                let src = &pred.data[base + (1 + y) * d..base + (2 + y) * d];
                let dst = &mut out.cond[(bi * k + y) * d..(bi * k + y + 1) * d];
                self.to_scores(point, xb, src, dst);
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
        let mut buf = crate::backend::pool::take(x.len());
        buf.extend_from_slice(x);
        let input = Tensor::new(vec![b, c, h, w], buf)?;
        let t = vec![crate::diffusion::param::network_timestep(point); b];
        let mut labels = Vec::with_capacity(b * self.tables.len());
        for _ in 0..b {
            self.push_labels(self.classes, &mut labels); // every label null
        }
        let pred = self.net.forward(&input, &t, Some(&labels))?;
        for ((o, p), xb) in out.chunks_mut(d).zip(pred.data.chunks(d)).zip(x.chunks(d)) {
            self.to_scores(point, xb, p, o);
        }
        Ok(())
    }
    fn describe(&self) -> String {
        let (c, h, w) = self.image;
        let pred = match self.prediction {
            Prediction::Epsilon => "ε",
            Prediction::VPrediction => "v",
            Prediction::Sample => "x̂₀",
            Prediction::Score => "score",
        };
        let factor = if self.tables.len() > 1 {
            format!(", factor {} of {}", self.factor, self.tables.len())
        } else {
            String::new()
        };
        format!(
            "UNet2DModel ({c}×{h}×{w}, {} classes + null{factor}, {pred}-prediction)",
            self.classes
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diffusion::{Ddpm, Process};

    /// The same network read as ε-, v- and x̂₀-prediction: with o its output and s_ε = −o/σ,
    /// v gives s = (s_t·s_ε − x)/(s_t² + σ²) and x̂₀ gives s = (s_t·o − x)/σ² (f32 scores:
    /// 1e-4 relative).
    #[test]
    fn predictions_convert_the_same_output() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/tiny-class");
        let eps = UNetScore::load(&dir).unwrap();
        let v = UNetScore::load_with(&dir, Prediction::VPrediction).unwrap();
        let x0 = UNetScore::load_with(&dir, Prediction::Sample).unwrap();
        assert!(UNetScore::load_with(&dir, Prediction::Score).is_err());
        assert!(v.describe().contains("v-prediction"));
        let p = Ddpm::new(1e-4, 0.02, 1000)
            .unwrap()
            .grid(10)
            .unwrap()
            .points[4];
        let d = eps.dim();
        let x: Vec<f32> = (0..d)
            .map(|i| ((i * 37) % 100) as f32 / 50.0 - 1.0)
            .collect();
        let run = |m: &UNetScore| {
            let mut s = Scores::new(1, d, 10);
            m.scores(&x, &p, &mut s).unwrap();
            let mut u = vec![0.0f32; d];
            m.uncond_scores(&x, &p, &mut u).unwrap();
            (s, u)
        };
        let ((se, ue), (sv, uv), (sx, ux)) = (run(&eps), run(&v), run(&x0));
        let (st, sg) = (p.s, p.sigma);
        let close = |a: f32, b: f64| (a as f64 - b).abs() <= 1e-4 * b.abs().max(1.0);
        for i in 0..d {
            let xi = x[i] as f64;
            for (e, vv, xx) in [
                (se.uncond[i], sv.uncond[i], sx.uncond[i]),
                (se.cond[3 * d + i], sv.cond[3 * d + i], sx.cond[3 * d + i]),
                (ue[i], uv[i], ux[i]),
            ] {
                let o = -sg * e as f64; // the network's output
                assert!(
                    close(vv, (st * e as f64 - xi) / (st * st + sg * sg)),
                    "v at {i}"
                );
                assert!(close(xx, (st * o - xi) / (sg * sg)), "x̂₀ at {i}");
            }
        }
    }
}
