//! infodiff: fast diffusion sampling and measurement of how information about a latent label is
//! produced along the generative trajectory.
//!
//! The module map, from the top down (arrows run one way: app → info, diffusion, score, fused →
//! nn → tensor → ops → backend → simd; no module cycles):
//! - [`app`]: the jobs: the measure config through serde, the runner (engine and device choice),
//!   the report and outputs, the SVG plot, the bench harness, `denoise`;
//! - [`info`]: the online Bayesian classifier ([`info::classifier`], its update written once),
//!   H(Y | X_t), its rates, I(Y; X_t) two ways, decision problems, entropy production, and the
//!   sums layout every kernel shares;
//! - [`fused`]: domain kernels apart from the backends (the whole-trajectory mixture kernel, the
//!   neural SDE step), each a plan that sees the domain and bodies that see only the plan;
//! - [`diffusion`]: forward processes (DDPM, VP, cosine VP, sub-VP, VE), grids, the
//!   parameterisation layer ([`diffusion::param`]: ε, x̂₀, v, score), the [`diffusion::Sampler`]
//!   trait with one file per sampler and an observer per step;
//! - [`score`]: the [`score::ScoreModel`] trait, exact Gaussian mixtures, the U-Net score;
//! - [`nn`]: safetensors weights and the UNet2DModel, one walk for every backend;
//! - [`tensor`]: the host f32 tensor;
//! - [`ops`]: the U-Net's ops, one folder each (trait, SIMD CPU body, f64 reference, CUDA launch,
//!   interpreted launch);
//! - [`backend`]: where buffers live ([`backend::Backend`]: [`backend::Cpu`], [`backend::Emu`]
//!   the interpreter of the GPU launches, [`backend::Cuda`] with feature `cuda`, a stub that
//!   reports the GPU unavailable without);
//! - [`simd`]: lanes (AVX-512F, AVX2+FMA, scalar; detected once) and lane math;
//! - [`rng`]: counter-based Philox4x32-10 noise keyed by (seed, trajectory, step, element);
//! - [`io`]: atomic outputs, safetensors read and write, text input;
//! - [`train`]: denoising score matching of the U-Net (AdamW, EMA, checkpoints) over [`data`]
//!   (training sets: mixture samples, digits, procedural shapes, image folders).
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
pub mod data;
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
pub mod train;

pub use error::{Error, Result};
