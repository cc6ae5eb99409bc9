//! Denoising score matching on the DDPM (variance-preserving) process of a diffusers scheduler,
//! as diffusers' `train_unconditional.py` computes it: for row b of a batch of clean images x₀,
//! t_b uniform on 0..T−1, ε_b ~ N(0, I),
//!
//! x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε   (`DDPMScheduler.add_noise`),
//!
//! the target ε ([`PredictionType::Epsilon`]), v = √ᾱ_t ε − √(1 − ᾱ_t) x₀
//! ([`PredictionType::VPrediction`], `get_velocity`) or x₀ ([`PredictionType::Sample`]), and
//!
//! L = (1/N) Σ (out − target)²  (`F.mse_loss`, N = every element of the batch),
//! dL/d(out) = (2/N)(out − target).
//!
//! √ᾱ_t and √(1 − ᾱ_t) are formed in f32 from the scheduler's f32 ᾱ table as diffusers does
//! (`alphas_cumprod[t] ** 0.5`, `(1 − alphas_cumprod[t]) ** 0.5`), x_t and v in f32. The network
//! sees t as an f32 (diffusers passes the integer timesteps).
//!
//! Classifier-free guidance training (label dropout): each factor's label of a row is replaced by
//! that factor's null label (the last row of its embedding table) with probability `p_uncond`,
//! independently per factor and row.
//!
//! Every random number is Philox ([`Noise`]) with key `seed ⊕ DSM_KEY` (a stream of its own,
//! apart from the minibatch order's) and counter (c₀, c₁, step) for optimiser step `step`
//! (0-based): ε of row b, element e is the first normal of counter (e, b, step); t_b is
//! ⌊u·T⌋ for the 32-bit word u of counter (2³² − 1, b, step); the dropout of factor j uses the
//! word of counter (2³² − 2 − j, b, step) (drop where u/2³² < p_uncond). So the noise depends on
//! nothing but (seed, step, row, element): not on the threads, the ISA or the network.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::diffusion::{Prediction, Scheduler};
use crate::error::{Error, Result};
use crate::rng::Noise;

/// Xor-ed into the seed for the DSM stream ("DSM_NOIS").
pub const DSM_KEY: u64 = 0x4453_4D5F_4E4F_4953;

/// What the network is trained to predict (diffusers' `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// ε.
    Epsilon,
    /// v = √ᾱ ε − √(1 − ᾱ) x₀.
    VPrediction,
    /// x₀.
    Sample,
}

impl PredictionType {
    /// diffusers' name (`prediction_type` in scheduler_config.json).
    pub fn name(self) -> &'static str {
        match self {
            PredictionType::Epsilon => "epsilon",
            PredictionType::VPrediction => "v_prediction",
            PredictionType::Sample => "sample",
        }
    }

    /// The sampler-side parameterisation.
    pub fn prediction(self) -> Prediction {
        match self {
            PredictionType::Epsilon => Prediction::Epsilon,
            PredictionType::VPrediction => Prediction::VPrediction,
            PredictionType::Sample => Prediction::Sample,
        }
    }
}

/// The DSM sampler of one run: the ᾱ table, the prediction type, the noise stream, the label
/// dropout.
#[derive(Clone, Debug)]
pub struct Dsm {
    pub prediction: PredictionType,
    /// ᾱ_t as f32 (T).
    alphas_cumprod: Vec<f32>,
    noise: Noise,
    pub p_uncond: f64,
    /// The null label of each factor (empty: an unconditional network).
    pub nulls: Vec<i64>,
}

/// One batch's DSM inputs, targets and labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DsmBatch {
    /// x_t (B, C, H, W).
    pub x_t: Vec<f32>,
    /// t_b as the network sees it (B).
    pub t: Vec<f32>,
    /// t_b (B).
    pub timesteps: Vec<usize>,
    /// ε (B, C, H, W).
    pub noise: Vec<f32>,
    /// The regression target (B, C, H, W).
    pub target: Vec<f32>,
    /// The labels after dropout (B, F), row-major; empty for an unconditional network.
    pub labels: Vec<i64>,
}

impl Dsm {
    /// The DSM of `scheduler`'s process (its f32 ᾱ table) with `prediction`, noise keyed by
    /// `seed`, label dropout `p_uncond` to each factor's null label `nulls[j]`.
    pub fn new(
        scheduler: &Scheduler,
        prediction: PredictionType,
        seed: u64,
        p_uncond: f64,
        nulls: Vec<i64>,
    ) -> Result<Dsm> {
        if !(p_uncond.is_finite() && (0.0..=1.0).contains(&p_uncond)) {
            return Err(Error::config("--p-uncond", "a number in [0, 1]", p_uncond));
        }
        if scheduler.alphas_cumprod.is_empty() {
            return Err(Error::config(
                "scheduler: num_train_timesteps",
                "at least one timestep",
                0,
            ));
        }
        if let Some(n) = nulls.iter().find(|&&n| n < 0) {
            return Err(Error::config(
                "label tables",
                "at least one row each",
                n + 1,
            ));
        }
        Ok(Dsm {
            prediction,
            alphas_cumprod: scheduler.alphas_cumprod.iter().map(|&a| a as f32).collect(),
            noise: Noise::new(seed ^ DSM_KEY),
            p_uncond,
            nulls,
        })
    }

    /// Number of training timesteps T.
    pub fn timesteps(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// (√ᾱ_t, √(1 − ᾱ_t)) in f32 as diffusers forms them.
    pub fn coefficients(&self, t: usize) -> (f32, f32) {
        let ab = self.alphas_cumprod[t];
        (ab.sqrt(), (1.0 - ab).sqrt())
    }

    /// t_b of optimiser step `step` (0-based), row `row`: ⌊u·T⌋ of a 32-bit Philox word.
    pub fn timestep(&self, step: u64, row: usize) -> usize {
        let u = self.noise.words(step, u32::MAX, row as u32)[0];
        ((u as u64 * self.timesteps() as u64) >> 32) as usize
    }

    /// Whether factor `j`'s label of row `row` at step `step` is dropped (replaced by the null).
    pub fn dropped(&self, step: u64, row: usize, j: usize) -> bool {
        if self.p_uncond <= 0.0 {
            return false;
        }
        let u = self.noise.words(step, u32::MAX - 1 - j as u32, row as u32)[0];
        (u as f64) * (1.0 / 4_294_967_296.0) < self.p_uncond
    }

    /// Fills `out` for optimiser step `step` (0-based) from the clean batch `x0` (B rows of `d`
    /// values, (B, C, H, W)) and its labels (B rows of F = [`Dsm::nulls`]`.len()` labels,
    /// (B, F); ignored for an unconditional network). A label outside 0..null of its factor
    /// is refused naming the factor. Rows in parallel (each row's numbers depend only on its
    /// own counter).
    pub fn prepare(
        &self,
        step: u64,
        x0: &[f32],
        labels: &[i64],
        d: usize,
        out: &mut DsmBatch,
    ) -> Result<()> {
        if d == 0 || x0.len() % d != 0 {
            return Err(Error::shape(
                "Dsm::prepare: x0 (B·D)",
                format!("rows of {d}"),
                x0.len(),
            ));
        }
        if d >= (u32::MAX / 2) as usize {
            return Err(Error::shape("Dsm::prepare: D", "below 2³¹", d));
        }
        let b = x0.len() / d;
        let f = self.nulls.len();
        if f > 0 {
            if labels.len() != b * f {
                return Err(Error::shape(
                    "Dsm::prepare: labels (B·F)",
                    b * f,
                    labels.len(),
                ));
            }
            for (i, &y) in labels.iter().enumerate() {
                let j = i % f;
                if !(0..self.nulls[j]).contains(&y) {
                    return Err(Error::config(
                        format!("data: label of factor {j} (example row {})", i / f),
                        format!(
                            "a label in 0..{} (the network's table has {} rows, the last the null label)",
                            self.nulls[j],
                            self.nulls[j] + 1
                        ),
                        y,
                    ));
                }
            }
        }
        out.x_t.resize(b * d, 0.0);
        out.noise.resize(b * d, 0.0);
        out.target.resize(b * d, 0.0);
        out.t.resize(b, 0.0);
        out.timesteps.resize(b, 0);
        for (row, ts) in out.timesteps.iter_mut().enumerate() {
            *ts = self.timestep(step, row);
        }
        for (t, ts) in out.t.iter_mut().zip(&out.timesteps) {
            *t = *ts as f32;
        }
        let timesteps = &out.timesteps;
        out.x_t
            .par_chunks_mut(d)
            .zip(out.noise.par_chunks_mut(d))
            .zip(out.target.par_chunks_mut(d))
            .zip(x0.par_chunks(d))
            .enumerate()
            .for_each(|(row, (((xt, eps), target), x0))| {
                // Counter (e, row, step): fill_normals' step argument 4·row selects c₁ = row.
                self.noise.fill_normals(step, 4 * row as u32, eps);
                let (a, s) = self.coefficients(timesteps[row]);
                for i in 0..d {
                    xt[i] = a * x0[i] + s * eps[i];
                    target[i] = match self.prediction {
                        PredictionType::Epsilon => eps[i],
                        PredictionType::VPrediction => a * eps[i] - s * x0[i],
                        PredictionType::Sample => x0[i],
                    };
                }
            });
        out.labels.clear();
        if f > 0 {
            out.labels.extend_from_slice(labels);
            for row in 0..b {
                for j in 0..f {
                    if self.dropped(step, row, j) {
                        out.labels[row * f + j] = self.nulls[j];
                    }
                }
            }
        }
        Ok(())
    }
}

/// The mean squared error L = (1/N) Σ (out − target)² over all N elements (f64, per-row partial
/// sums of `d` values added in row order) and dout = (2/N)(out − target) in f32. Returns L and
/// the per-row partials Σ_row (out − target)² (for naming a non-finite row).
pub fn mse(out: &[f32], target: &[f32], d: usize, dout: &mut [f32]) -> Result<(f64, Vec<f64>)> {
    let n = target.len();
    if out.len() != n {
        return Err(Error::shape("mse: network output (B·D)", n, out.len()));
    }
    if d == 0 || n % d != 0 {
        return Err(Error::shape("mse: rows", format!("rows of {d}"), n));
    }
    if dout.len() != n {
        return Err(Error::shape("mse: dout (B·D)", n, dout.len()));
    }
    let scale = (2.0 / n as f64) as f32;
    let rows: Vec<f64> = dout
        .par_chunks_mut(d)
        .zip(out.par_chunks(d).zip(target.par_chunks(d)))
        .map(|(g, (o, t))| {
            let mut s = 0.0f64;
            for i in 0..d {
                let diff = o[i] - t[i];
                g[i] = scale * diff;
                s += (diff as f64) * (diff as f64);
            }
            s
        })
        .collect();
    let loss = rows.iter().sum::<f64>() / n as f64;
    Ok((loss, rows))
}
