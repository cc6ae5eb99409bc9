//! Classifier-free guided sampling from a diffusers UNet2DModel: the unconditional score of a
//! [`GuidedUNet`] is the guided one,
//!
//!   out = out(x, ∅) + W·(out(x, y) − out(x, ∅)),   s = to_score(out)
//!
//! (Ho & Salimans 2022), with the combination taken on the network's own output (ε, v or x̂₀ as
//! the scheduler's `prediction_type` says) and converted to a score once
//! ([`Prediction::to_score`]), as diffusers' pipelines do. ∅ is the null label, the last class
//! embedding (num_class_embeds − 1); the K = num_class_embeds − 1 labels before it are the
//! classes. W = 1 is plain conditional sampling (one network row per state); W ≠ 1 puts both
//! rows of every state into one batched forward (2B rows).
//!
//! Labels are per trajectory: the classes given are cycled over the sample index
//! k = first trajectory + b, so a sample's label does not depend on its batch. Without classes a
//! class-conditional model is sampled with the null label (unconditionally) and an unconditional
//! model with none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::{ScoreCtx, ScoreModel, Scores, check_batch};
use crate::diffusion::{GridPoint, Prediction, param};
use crate::error::{Error, Result};
use crate::nn::unet::UNet;
use crate::tensor::Tensor;

/// The labels a run samples with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    /// An unconditional model: no label is passed.
    None,
    /// A class-conditional model sampled unconditionally (the null label for every sample).
    Null(i64),
    /// Classes cycled over the sample index (sample k takes `classes[k mod len]`).
    Cycle(Vec<i64>),
}

/// A UNet2DModel sampled with classifier-free guidance (see the module docs); a
/// [`ScoreModel`] with no classes whose unconditional score is the guided one.
pub struct GuidedUNet {
    net: UNet,
    /// (C, H, W) of one image.
    image: (usize, usize, usize),
    prediction: Prediction,
    labels: Labels,
    /// W; only used with [`Labels::Cycle`].
    guidance: f64,
    /// Time spent inside the network's forwards, ns (for the overhead split).
    network_ns: AtomicU64,
    /// Network rows evaluated (images through the forward).
    network_rows: AtomicU64,
}

impl GuidedUNet {
    /// Wraps `net` (whose output is a `prediction`) to sample labels `classes` (empty: none
    /// given) with guidance `guidance`. `classes_option` names the option the classes came
    /// from (`--class`, `--classes`) in errors. Refused: a non-finite W, classes outside
    /// 0..K−1, classes for an unconditional model, W ≠ 1 without classes, a network whose
    /// output is not shaped like its input.
    pub fn new(
        net: UNet,
        prediction: Prediction,
        classes: &[i64],
        classes_option: &str,
        guidance: f64,
    ) -> Result<GuidedUNet> {
        let cfg = &net.config;
        let size = cfg.sample_size.ok_or_else(|| {
            Error::config(
                "config.json: sample_size",
                "the image size the model was trained on",
                "null",
            )
        })?;
        if cfg.out_channels != cfg.in_channels {
            return Err(Error::config(
                "config.json: out_channels",
                format!(
                    "in_channels ({}): one prediction per input value (learned-variance outputs are not supported)",
                    cfg.in_channels
                ),
                cfg.out_channels,
            ));
        }
        if !guidance.is_finite() {
            return Err(Error::config("--guidance", "a finite number", guidance));
        }
        if prediction == Prediction::Score {
            return Err(Error::config(
                "prediction_type",
                "epsilon, v_prediction or sample (a diffusers network's output)",
                "score",
            ));
        }
        let labels = match (cfg.num_class_embeds, classes.is_empty()) {
            (None, true) => Labels::None,
            (None, false) => {
                return Err(Error::config(
                    classes_option,
                    "no class: the model is unconditional (config.json has no num_class_embeds)",
                    format_list(classes),
                ));
            }
            (Some(n), true) => Labels::Null(n as i64 - 1),
            (Some(n), false) => {
                let k = n as i64 - 1; // the real classes 0..K−1; K is the null label
                if let Some(&bad) = classes.iter().find(|&&c| !(0..k).contains(&c)) {
                    let expected = if k == 0 {
                        "no class: the model's only label is the null one (num_class_embeds = 1)"
                            .to_string()
                    } else {
                        format!(
                            "classes in 0..={} (the model's last label, {k}, is the null class)",
                            k - 1
                        )
                    };
                    return Err(Error::config(classes_option, expected, bad));
                }
                Labels::Cycle(classes.to_vec())
            }
        };
        if guidance != 1.0 && !matches!(labels, Labels::Cycle(_)) {
            return Err(Error::config(
                "--guidance",
                "1 unless a class is given (--class or --classes): guidance pulls towards a class",
                guidance,
            ));
        }
        let image = (cfg.in_channels, size, size);
        Ok(GuidedUNet {
            net,
            image,
            prediction,
            labels,
            guidance,
            network_ns: AtomicU64::new(0),
            network_rows: AtomicU64::new(0),
        })
    }

    /// (C, H, W) of one sample.
    pub fn image(&self) -> (usize, usize, usize) {
        self.image
    }

    /// The network.
    pub fn net(&self) -> &UNet {
        &self.net
    }

    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    pub fn guidance(&self) -> f64 {
        self.guidance
    }

    /// Whether a step runs two network rows per state (W ≠ 1 with classes).
    pub fn two_rows(&self) -> bool {
        matches!(self.labels, Labels::Cycle(_)) && self.guidance != 1.0
    }

    /// The conditioning label of sample `k` (None: unconditional model or null label).
    pub fn label_of(&self, k: u64) -> Option<i64> {
        match &self.labels {
            Labels::Cycle(c) => Some(c[(k % c.len() as u64) as usize]),
            _ => None,
        }
    }

    /// Seconds spent inside network forwards so far.
    pub fn network_seconds(&self) -> f64 {
        self.network_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Network rows (images) evaluated so far.
    pub fn network_rows(&self) -> u64 {
        self.network_rows.load(Ordering::Relaxed)
    }

    /// One forward of `rows` copies-in-sequence of the states `x` (rows·D values from `x`
    /// repeated: x once, or x twice for the guided 2B rows).
    fn forward(&self, x: &[f32], copies: usize, t: f32, labels: Option<&[i64]>) -> Result<Tensor> {
        let (c, h, w) = self.image;
        let rows = copies * x.len() / (c * h * w);
        // The input's storage comes from the buffer pool it returns to when dropped (a fresh
        // Vec here would add one buffer to the pool per forward).
        let mut data = crate::tensor::pool::take(copies * x.len());
        for _ in 0..copies {
            data.extend_from_slice(x);
        }
        let input = Tensor::new(vec![rows, c, h, w], data)?; // (rows, C, H, W)
        let ts = vec![t; rows];
        let start = Instant::now();
        let out = self.net.forward(&input, &ts, labels)?;
        self.network_ns
            .fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.network_rows.fetch_add(rows as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// The guided score of states `x` (B, D) on `point` for samples first..first+B into `out`
    /// (B, D).
    fn guided(
        &self,
        x: &[f32],
        point: &GridPoint,
        first: u64,
        out: &mut [f32],
        x0: &mut [f32],
    ) -> Result<()> {
        let d = self.dim();
        let b = x.len() / d;
        if point.sigma.is_nan() || point.sigma <= 0.0 {
            return Err(Error::Unsupported {
                op: "GuidedUNet::scores",
                reason: format!("no score at σ = 0 (t = {})", point.t),
            });
        }
        let t = param::network_timestep(point);
        let pred = self.prediction;
        // The score and x̂₀ of each element from the network's own output, each in f64 and
        // rounded once (x̂₀ straight from the output: see `Scores::denoised`).
        let to_score = |o: &mut [f32], x0: &mut [f32], xv: &[f32], net: &[f32]| {
            for (((o, x0), &xv), &n) in o.iter_mut().zip(x0.iter_mut()).zip(xv).zip(net) {
                *o = pred.to_score(point, xv as f64, n as f64) as f32;
                *x0 = pred.to_x0(point, xv as f64, n as f64) as f32;
            }
        };
        match &self.labels {
            Labels::None => {
                let y = self.forward(x, 1, t, None)?;
                to_score(out, x0, x, &y.data);
            }
            Labels::Null(null) => {
                let y = self.forward(x, 1, t, Some(&vec![*null; b]))?;
                to_score(out, x0, x, &y.data);
            }
            Labels::Cycle(_) => {
                let cond: Vec<i64> = (0..b as u64)
                    .map(|i| self.label_of(first + i).unwrap_or(0))
                    .collect();
                if !self.two_rows() {
                    let y = self.forward(x, 1, t, Some(&cond))?;
                    to_score(out, x0, x, &y.data);
                    return Ok(());
                }
                let null = self.net.config.num_class_embeds.unwrap_or(1) as i64 - 1;
                // (2B, C, H, W): the B states with the null label, then with their classes.
                let mut labels = vec![null; b];
                labels.extend_from_slice(&cond);
                let y = self.forward(x, 2, t, Some(&labels))?;
                let (un, co) = y.data.split_at(b * d);
                let wg = self.guidance;
                // out = u + W (c − u) in f64, then the score, rounded once.
                for i in 0..b * d {
                    let u = un[i] as f64;
                    let g = u + wg * (co[i] as f64 - u);
                    out[i] = pred.to_score(point, x[i] as f64, g) as f32;
                    x0[i] = pred.to_x0(point, x[i] as f64, g) as f32;
                }
            }
        }
        Ok(())
    }
}

fn format_list(v: &[i64]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl ScoreModel for GuidedUNet {
    fn dim(&self) -> usize {
        self.image.0 * self.image.1 * self.image.2
    }
    fn num_classes(&self) -> usize {
        0
    }
    fn class_prior(&self) -> Vec<f64> {
        Vec::new()
    }
    fn scores(&self, x: &[f32], point: &GridPoint, out: &mut Scores) -> Result<()> {
        let ctx = ScoreCtx {
            noise: crate::rng::Noise::new(0),
            first_trajectory: 0,
            step: 0,
            corrector: false,
        };
        self.scores_at(x, point, &ctx, out)
    }
    fn scores_at(
        &self,
        x: &[f32],
        point: &GridPoint,
        ctx: &ScoreCtx,
        out: &mut Scores,
    ) -> Result<()> {
        check_batch("GuidedUNet::scores", x, self.dim(), out)?;
        let mut x0 = out.denoised.take().unwrap_or_default();
        x0.resize(x.len(), 0.0);
        self.guided(x, point, ctx.first_trajectory, &mut out.uncond, &mut x0)?;
        out.denoised = Some(x0);
        out.posterior = None;
        out.divergence = None;
        Ok(())
    }
    fn describe(&self) -> String {
        let (c, h, w) = self.image;
        let labels = match &self.labels {
            Labels::None => "unconditional".to_string(),
            Labels::Null(_) => "null label (unconditional)".to_string(),
            Labels::Cycle(cl) => format!("classes {}", format_list(cl)),
        };
        format!(
            "UNet2DModel ({c}×{h}×{w}, {:?}), {labels}, guidance {}",
            self.prediction, self.guidance
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn net(name: &str) -> UNet {
        UNet::load(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/unet")
                .join(name),
        )
        .unwrap()
    }

    /// A DDPM-like point: ᾱ = 0.4 at timestep 500 (VP: s² + σ² = 1).
    fn point() -> GridPoint {
        let ab: f64 = 0.4;
        GridPoint {
            index: 501,
            t: 0.5,
            s: ab.sqrt(),
            sigma: (1.0 - ab).sqrt(),
            f: 0.0,
            g2: 0.0,
            timestep: 500.0,
        }
    }

    fn states(b: usize, d: usize) -> Vec<f32> {
        let noise = crate::rng::Noise::new(3);
        let mut x = vec![0.0; b * d];
        for (k, row) in x.chunks_mut(d).enumerate() {
            noise.fill_normals(k as u64, 0, row);
        }
        x
    }

    fn ctx(first: u64) -> ScoreCtx {
        ScoreCtx {
            noise: crate::rng::Noise::new(0),
            first_trajectory: first,
            step: 0,
            corrector: false,
        }
    }

    /// max |a − b| / max |b|.
    fn rel(a: &[f32], b: &[f32]) -> f64 {
        let num = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .fold(0.0, f64::max);
        let den = b.iter().map(|y| y.abs() as f64).fold(0.0, f64::max);
        num / den
    }

    #[test]
    fn guided_score_is_the_hand_combination_of_two_forwards() {
        let p = point();
        let (b, first) = (3usize, 1u64);
        for (pred, w) in [
            (Prediction::Epsilon, 2.5),
            (Prediction::VPrediction, 4.0),
            (Prediction::Sample, 0.0),
            (Prediction::Epsilon, 1.0),
        ] {
            let g = GuidedUNet::new(net("tiny-class"), pred, &[3, 7], "--classes", w).unwrap();
            let d = g.dim();
            let x = states(b, d);
            let mut s = Scores::new(b, d, 0);
            g.scores_at(&x, &p, &ctx(first), &mut s).unwrap();
            // By hand: sample k = 1, 2, 3 takes classes[k mod 2] = 7, 3, 7; ∅ = 10.
            let (c, h, wd) = g.image();
            let fwd = |labels: &[i64]| {
                let input = Tensor::new(vec![b, c, h, wd], x.clone()).unwrap();
                g.net()
                    .forward(&input, &[500.0; 3], Some(labels))
                    .unwrap()
                    .data
                    .clone()
            };
            let un = fwd(&[10, 10, 10]);
            let co = fwd(&[7, 3, 7]);
            let want: Vec<f32> = (0..b * d)
                .map(|i| {
                    let o = un[i] as f64 + w * (co[i] as f64 - un[i] as f64);
                    pred.to_score(&p, x[i] as f64, o) as f32
                })
                .collect();
            // One batched forward of 2B rows vs two of B: the same arithmetic per image up to
            // the GEMM's summation order; relative 1e-6 of the largest score.
            let r = rel(&s.uncond, &want);
            assert!(r <= 1e-6, "{pred:?} W = {w}: relative error {r:e}");
            assert_eq!(g.two_rows(), w != 1.0);
            assert_eq!(
                g.network_rows(),
                if w != 1.0 { 2 * b as u64 } else { b as u64 }
            );
        }
    }

    #[test]
    fn without_classes_the_null_label_or_none() {
        let p = point();
        let g =
            GuidedUNet::new(net("tiny-class"), Prediction::Epsilon, &[], "--class", 1.0).unwrap();
        assert_eq!(g.labels(), &Labels::Null(10));
        assert_eq!(g.label_of(5), None);
        let d = g.dim();
        let x = states(2, d);
        let mut s = Scores::new(2, d, 0);
        g.scores_at(&x, &p, &ctx(0), &mut s).unwrap();
        let (c, h, w) = g.image();
        let input = Tensor::new(vec![2, c, h, w], x.clone()).unwrap();
        let eps = g
            .net()
            .forward(&input, &[500.0; 2], Some(&[10, 10]))
            .unwrap()
            .data
            .clone();
        let want: Vec<f32> = eps
            .iter()
            .map(|e| (-(*e as f64) / p.sigma) as f32)
            .collect();
        assert!(
            rel(&s.uncond, &want) <= 1e-7,
            "same forward, same conversion"
        );

        let u =
            GuidedUNet::new(net("tiny-uncond"), Prediction::Epsilon, &[], "--class", 1.0).unwrap();
        assert_eq!(u.labels(), &Labels::None);
        let x = states(2, u.dim());
        let mut s = Scores::new(2, u.dim(), 0);
        u.scores_at(&x, &p, &ctx(0), &mut s).unwrap();
        assert!(s.uncond.iter().all(|v| v.is_finite()));
        // σ = 0 has no score.
        let end = GridPoint {
            sigma: 0.0,
            s: 1.0,
            ..p
        };
        assert!(u.scores_at(&x, &end, &ctx(0), &mut s).is_err());
    }

    #[test]
    fn refusals_name_the_option() {
        let e = |r: Result<GuidedUNet>| r.err().expect("refused").to_string();
        let msg = e(GuidedUNet::new(
            net("tiny-class"),
            Prediction::Epsilon,
            &[10],
            "--class",
            1.0,
        ));
        assert!(
            msg.contains("`--class`") && msg.contains("0..=9") && msg.contains("10"),
            "{msg}"
        );
        let msg = e(GuidedUNet::new(
            net("tiny-class"),
            Prediction::Epsilon,
            &[1, -1],
            "--classes",
            1.0,
        ));
        assert!(msg.contains("`--classes`") && msg.contains("-1"), "{msg}");
        let msg = e(GuidedUNet::new(
            net("tiny-uncond"),
            Prediction::Epsilon,
            &[0],
            "--class",
            1.0,
        ));
        assert!(
            msg.contains("`--class`") && msg.contains("unconditional"),
            "{msg}"
        );
        for w in [f64::NAN, f64::INFINITY] {
            let msg = e(GuidedUNet::new(
                net("tiny-class"),
                Prediction::Epsilon,
                &[1],
                "--class",
                w,
            ));
            assert!(
                msg.contains("`--guidance`") && msg.contains("finite"),
                "{msg}"
            );
        }
        let msg = e(GuidedUNet::new(
            net("tiny-class"),
            Prediction::Epsilon,
            &[],
            "--class",
            3.0,
        ));
        assert!(
            msg.contains("`--guidance`") && msg.contains("class"),
            "{msg}"
        );
    }
}
