//! `infodiff train`: denoising score matching of a U-Net on a [`crate::data::Dataset`], with
//! AdamW ([`optim`]), an EMA of the weights (what is saved and sampled), the DSM loss for ε-, v-
//! and x̂₀-prediction ([`loss`]), atomic checkpoints that resume bit for bit ([`checkpoint`]).
//! Deterministic: the same seed and data give the same weights on any thread count.
//!
//! One optimiser step k = s + 1 (s = 0, 1, … the steps done), as diffusers'
//! `train_unconditional.py` runs it:
//!
//! x₀, y = minibatch s ([`Batches::indices`]); (x_t, t, target, ỹ) = DSM(x₀, y; seed, s);
//! L = mean (f_θ(x_t, t, ỹ) − target)²; g = ∇_θ L; g ← clip(g, c);
//! θ, m, v ← AdamW(θ, m, v, g; η·f(s), k); θ̄ ← EMA(θ̄, θ; k).
//!
//! A non-finite loss or gradient stops the run with [`Error::NonFinite`] naming the step,
//! before anything of the state changed.

pub mod checkpoint;
pub mod loss;
pub mod optim;

use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Batches, Dataset};
use crate::diffusion::Scheduler;
use crate::error::{Error, Result};
use crate::nn::unet::grad::UNetGrad;
use loss::{Dsm, DsmBatch, PredictionType};
use optim::{AdamW, Ema, LrSchedule};

/// A trainable network at a fixed batch size, with [`UNetGrad`]'s semantics: `forward` keeps
/// what `backward` needs; `backward` overwrites `grads` with dL/dθ for the upstream gradient
/// `dout` of the last forward.
pub trait Network {
    /// Number of parameters (the length of every flat vector of the training state).
    fn n_params(&self) -> usize;
    /// The batch size the network was planned for.
    fn batch(&self) -> usize;
    /// out (B, C_out, H, W) for x (B, C, H, W), timesteps (B), labels (B·F) where conditional.
    fn forward(
        &mut self,
        params: &[f32],
        x: &[f32],
        timesteps: &[f32],
        labels: Option<&[i64]>,
    ) -> Result<&[f32]>;
    /// grads (overwritten) = dL/dθ for dout = dL/d(out) of the last forward.
    fn backward(&mut self, params: &[f32], dout: &[f32], grads: &mut [f32]) -> Result<()>;
}

impl Network for UNetGrad {
    fn n_params(&self) -> usize {
        self.layout().len()
    }
    fn batch(&self) -> usize {
        UNetGrad::batch(self)
    }
    fn forward(
        &mut self,
        params: &[f32],
        x: &[f32],
        timesteps: &[f32],
        labels: Option<&[i64]>,
    ) -> Result<&[f32]> {
        UNetGrad::forward(self, params, x, timesteps, labels)
    }
    fn backward(&mut self, params: &[f32], dout: &[f32], grads: &mut [f32]) -> Result<()> {
        UNetGrad::backward(self, params, dout, grads)
    }
}

/// Most optimiser steps of one run.
pub const MAX_STEPS: u64 = 1 << 32;
/// Largest minibatch.
pub const MAX_BATCH: usize = 4096;

/// What one run trains with (saved in every checkpoint; a resume must match it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimiser steps in all.
    pub steps: u64,
    /// Images per step.
    pub batch: usize,
    /// The peak learning rate η.
    pub lr: f64,
    /// Linear warm-up steps W.
    pub warmup: u64,
    pub schedule: LrSchedule,
    /// Seed of the minibatch order and of the DSM noise.
    pub seed: u64,
    /// Label-dropout probability per factor (classifier-free guidance training).
    pub p_uncond: f64,
    pub ema: Ema,
    pub prediction: PredictionType,
    /// Global gradient-norm clipping (None: off).
    pub clip: Option<f64>,
    /// A checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
    pub adamw: AdamW,
}

impl Default for TrainConfig {
    fn default() -> TrainConfig {
        TrainConfig {
            steps: 1000,
            batch: 64,
            lr: 1e-3,
            warmup: 100,
            schedule: LrSchedule::Cosine,
            seed: 0,
            p_uncond: 0.1,
            ema: Ema::default(),
            prediction: PredictionType::Epsilon,
            clip: Some(1.0),
            checkpoint_every: 500,
            adamw: AdamW::default(),
        }
    }
}

impl TrainConfig {
    /// Checks every value (named by its command-line option where it has one).
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(Error::config(
                "--steps",
                format!("a whole number in 1..={MAX_STEPS}"),
                self.steps,
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(Error::config(
                "--batch",
                format!("a whole number in 1..={MAX_BATCH}"),
                self.batch,
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config("--lr", "a finite number > 0", self.lr));
        }
        if !(self.p_uncond.is_finite() && (0.0..=1.0).contains(&self.p_uncond)) {
            return Err(Error::config(
                "--p-uncond",
                "a number in [0, 1]",
                self.p_uncond,
            ));
        }
        if let Some(c) = self.clip
            && !(c.is_finite() && c > 0.0)
        {
            return Err(Error::config("--clip", "a finite number > 0", c));
        }
        self.ema.validate().map_err(|e| match e {
            Error::Config {
                field,
                expected,
                found,
            } if field == "ema.decay" => Error::Config {
                field: "--ema".into(),
                expected,
                found,
            },
            e => e,
        })?;
        self.adamw.validate()
    }

    /// The learning rate of update k = s + 1.
    pub fn lr_at(&self, s: u64) -> f64 {
        self.lr * self.schedule.factor(s, self.warmup, self.steps)
    }
}

/// One row of the training log (`loss.csv`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogRow {
    /// The step k (1-based) this row reports.
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Images per second of this step (wall clock; not part of the deterministic state).
    pub images_per_s: f64,
}

/// Everything a resume needs: the parameters, AdamW's moments, the EMA, the steps done and
/// the log so far (all flat vectors in the network's parameter layout).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainState {
    /// Steps done.
    pub step: u64,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub ema: Vec<f32>,
    pub log: Vec<LogRow>,
}

impl TrainState {
    /// Step 0: the initial parameters, zero moments, the EMA a copy of the parameters.
    pub fn new(params: Vec<f32>) -> TrainState {
        let n = params.len();
        TrainState {
            step: 0,
            ema: params.clone(),
            params,
            m: vec![0.0; n],
            v: vec![0.0; n],
            log: Vec::new(),
        }
    }
}

/// The training loop over one network, dataset and config.
pub struct Trainer<'a, N: Network> {
    pub cfg: TrainConfig,
    pub net: N,
    data: &'a dyn Dataset,
    batches: Batches,
    dsm: Dsm,
    pub state: TrainState,
    /// D = C·H·W of every image.
    d: usize,
    grads: Vec<f32>,
    x0: Vec<f32>,
    labels: Vec<i64>,
    batch: DsmBatch,
    dout: Vec<f32>,
}

impl<'a, N: Network> Trainer<'a, N> {
    /// A trainer from `state` (a fresh [`TrainState::new`] or a checkpoint's), training `net`
    /// on `data` with the process of `scheduler`. `nulls`: the null label of each factor the
    /// network is conditioned on (empty: unconditional), one per data factor.
    pub fn new(
        cfg: TrainConfig,
        net: N,
        data: &'a dyn Dataset,
        scheduler: &Scheduler,
        nulls: Vec<i64>,
        state: TrainState,
    ) -> Result<Trainer<'a, N>> {
        cfg.validate()?;
        if net.batch() != cfg.batch {
            return Err(Error::shape(
                "Trainer: the network's planned batch",
                cfg.batch,
                net.batch(),
            ));
        }
        let n = net.n_params();
        for (name, len) in [
            ("params", state.params.len()),
            ("m", state.m.len()),
            ("v", state.v.len()),
            ("ema", state.ema.len()),
        ] {
            if len != n {
                return Err(Error::shape(
                    if name == "params" {
                        "Trainer: parameters"
                    } else {
                        "Trainer: optimiser state"
                    },
                    n,
                    len,
                ));
            }
        }
        if data.is_empty() {
            return Err(Error::config(
                "--data",
                "a dataset with examples",
                data.name(),
            ));
        }
        if !nulls.is_empty() && nulls.len() != data.factors().len() {
            return Err(Error::config(
                "--data",
                format!(
                    "{} label factor(s), as the network is conditioned on",
                    nulls.len()
                ),
                format!("{} with {} factor(s)", data.name(), data.factors().len()),
            ));
        }
        let [c, h, w] = data.shape();
        let d = c * h * w;
        let dsm = Dsm::new(scheduler, cfg.prediction, cfg.seed, cfg.p_uncond, nulls)?;
        let batches = Batches {
            len: data.len(),
            seed: cfg.seed,
        };
        let b = cfg.batch;
        let f = data.factors().len();
        Ok(Trainer {
            grads: vec![0.0; n],
            x0: vec![0.0; b * d],
            // (B, max(F, 1)): one dummy column for label-free data keeps one chunk per row.
            labels: vec![0; b * f.max(1)],
            dout: vec![0.0; b * d],
            batch: DsmBatch::default(),
            cfg,
            net,
            data,
            batches,
            dsm,
            state,
            d,
        })
    }

    /// The DSM sampler (noise, timesteps, label dropout).
    pub fn dsm(&self) -> &Dsm {
        &self.dsm
    }

    /// The DSM batch of the last step.
    pub fn last_batch(&self) -> &DsmBatch {
        &self.batch
    }

    /// Whether every configured step is done.
    pub fn done(&self) -> bool {
        self.state.step >= self.cfg.steps
    }

    /// One optimiser step (see the module docs); returns its log row. On an error nothing of
    /// the state has changed.
    pub fn step(&mut self) -> Result<LogRow> {
        let start = Instant::now();
        let s = self.state.step;
        let k = s + 1;
        let b = self.cfg.batch;
        let d = self.d;
        let f = self.data.factors().len();
        let idx = self.batches.indices(s, b);
        if idx.len() != b {
            return Err(Error::shape("Trainer: minibatch indices", b, idx.len()));
        }
        let data = self.data;
        self.x0
            .par_chunks_mut(d)
            .zip(self.labels.par_chunks_mut(f.max(1)))
            .zip(idx.par_iter())
            .try_for_each(|((x, y), &i)| data.example(i, x, &mut y[..f]))?;
        self.dsm
            .prepare(s, &self.x0, &self.labels[..b * f], d, &mut self.batch)?;
        let labels = (!self.dsm.nulls.is_empty()).then_some(self.batch.labels.as_slice());
        let out = self
            .net
            .forward(&self.state.params, &self.batch.x_t, &self.batch.t, labels)?;
        let (loss, rows) = loss::mse(out, &self.batch.target, d, &mut self.dout)?;
        if !loss.is_finite() {
            let row = rows.iter().position(|r| !r.is_finite()).unwrap_or(0);
            return Err(Error::NonFinite {
                op: "train",
                step: k as usize,
                t: self.batch.timesteps[row] as f64,
                what: format!("loss (batch row {row}, the first non-finite; t is its timestep)"),
            });
        }
        self.net
            .backward(&self.state.params, &self.dout, &mut self.grads)?;
        let grad_norm = optim::clip_grad_norm(&mut self.grads, self.cfg.clip);
        if !grad_norm.is_finite() {
            let i = self.grads.iter().position(|g| !g.is_finite()).unwrap_or(0);
            return Err(Error::NonFinite {
                op: "train",
                step: k as usize,
                t: f64::NAN,
                what: format!(
                    "gradient (global norm {grad_norm}; parameter {i} is the first non-finite; \
                     the loss was {loss})"
                ),
            });
        }
        let lr = self.cfg.lr_at(s);
        let st = &mut self.state;
        self.cfg
            .adamw
            .step(lr, k, &mut st.params, &mut st.m, &mut st.v, &self.grads)?;
        self.cfg.ema.update(k, &mut st.ema, &st.params)?;
        st.step = k;
        let secs = start.elapsed().as_secs_f64();
        let images_per_s = if secs > 0.0 { b as f64 / secs } else { 0.0 };
        let row = LogRow {
            step: k,
            loss,
            lr,
            grad_norm,
            images_per_s,
        };
        st.log.push(row);
        Ok(row)
    }

    /// Steps until `until` steps are done (at most the configured steps).
    pub fn run_until(&mut self, until: u64) -> Result<()> {
        while self.state.step < until.min(self.cfg.steps) {
            self.step()?;
        }
        Ok(())
    }
}
