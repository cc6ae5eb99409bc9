//! infodiff: fast diffusion sampling and measurement of how information about a latent label is
//! produced along the generative trajectory.
//!
//! - [`sde`]: forward processes (DDPM, VP, cosine VP, sub-VP, VE), grids, reverse samplers with
//!   an observer per step;
//! - [`score`]: the [`score::ScoreModel`] trait and exact Gaussian mixtures;
//! - [`info`]: the online Bayesian classifier, H(Y | X_t), its rates, I(Y; X_t) two ways,
//!   decision problems, entropy production;
//! - [`rng`]: counter-based Philox4x32-10 noise keyed by (seed, trajectory, step, element);
//! - [`cpu`]: the scalar reference and the hand-written SIMD kernels;
//! - [`measure`]: the `infodiff measure` job (config, run, outputs).

pub mod cpu;
pub mod error;
pub mod info;
pub mod measure;
pub mod rng;
pub mod score;
pub mod sde;

pub use error::{Error, Result};
