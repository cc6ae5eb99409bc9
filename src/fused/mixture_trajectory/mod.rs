//! The fused `mixture_trajectory` kernel: whole reverse trajectories on an exact Gaussian
//! mixture, x' = a x + c s(x) + √var z with the exact score s(x) = Σ_k r_k(x) Σ_k⁻¹(s_t m_k − x)
//! (r_k the component posterior), the online classifier
//! ln π_y += (c/√var) z·Δ_y − c²‖Δ_y‖²/(2 var) (log-sum-exp normalised, Δ_y = s(x|y) − s(x)),
//! the exact posterior, and every per-point information sum of [`crate::info::InfoSums`].
//!
//! - [`plan`]: [`MixturePlan`], built from the domain (mixture, spec, grid, sampler) into flat
//!   f32 arrays and sizes; the only thing the bodies read;
//! - [`cpu`]: the SIMD body; [`cuda`]: the launch of `kernels/mixture_trajectory.cu`;
//! - [`mod@reference`]: the f64 oracle.

pub mod cpu;
pub mod cuda;
pub mod plan;
pub mod reference;

pub use cpu::*;
pub use plan::*;
