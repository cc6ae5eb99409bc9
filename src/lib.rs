//! infodiff: fast diffusion sampling and measurement of how information about a latent label is
//! produced along the generative trajectory.
//!
//! - [`diffusion`]: forward processes (DDPM, VP, cosine VP, sub-VP, VE), grids, reverse samplers with
//!   an observer per step;
//! - [`score`]: the [`score::ScoreModel`] trait and exact Gaussian mixtures;
//! - [`info`]: the online Bayesian classifier, H(Y | X_t), its rates, I(Y; X_t) two ways,
//!   decision problems, entropy production;
//! - [`rng`]: counter-based Philox4x32-10 noise keyed by (seed, trajectory, step, element);
//! - [`backend`]: where tensors live ([`backend::Backend`]: CPU, the emulator of the GPU
//!   launches, CUDA with feature `cuda`, a stub that reports the GPU unavailable without);
//! - [`ops`]: the U-Net's ops, one folder each (SIMD CPU body, f64 reference, CUDA launch);
//! - [`app`]: the `infodiff measure` job (config, run, outputs).
//!
//! Measuring a two-class mixture with the online classifier:
//!
//! ```
//! use infodiff::info::{Curves, InfoSpec, Tracking, bits, measure_trajectories};
//! use infodiff::rng::Noise;
//! use infodiff::score::{Component, GaussianMixture, ScoreModel};
//! use infodiff::diffusion::{AncestralVariance, Ddpm, Process, SamplerKind};
//! # fn main() -> infodiff::Result<()> {
//! let m = GaussianMixture::new(vec![
//!     Component { weight: 1.0, mean: vec![-1.0], var: vec![0.0], class: 0 },
//!     Component { weight: 1.0, mean: vec![1.0], var: vec![0.0], class: 1 },
//! ])?;
//! let spec = InfoSpec::new(m.class_prior(), vec![])?;
//! let grid = Ddpm::new(1e-4, 0.02, 1000)?.grid(200)?;
//! let sampler = SamplerKind::Ancestral { variance: AncestralVariance::Beta };
//! let sums = measure_trajectories(&m, &spec, &grid, &sampler, Noise::new(0), 0, 1000, 128, Tracking::Online, None)?;
//! let curves = Curves::from_sums(&sums, &spec, &grid, Tracking::Online);
//! assert!((bits(curves.h_online[0]) - 1.0).abs() < 1e-9); // the prior at the noise end
//! assert!(curves.h_online[200] < 1e-3);                    // decided at the data end
//! # Ok(())
//! # }
//! ```

pub mod app;
pub mod backend;
pub mod diffusion;
pub mod error;
pub mod fused;
pub mod info;
pub mod io;
pub mod nn;
pub mod ops;
pub mod rng;
pub mod score;
pub mod simd;
pub mod tensor;

pub use error::{Error, Result};
