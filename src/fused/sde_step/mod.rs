//! The fused `sde_step` kernel: one reverse step of a network-scored batch,
//! s = −ε̂_∅/σ, s_y = −ε̂_y/σ, Δ_y = s_y − s, x' = a x + c s + √var z (z Philox noise),
//! ln π_y += (c/√var) Σ_e Δ_y z − c²/(2 var) ‖Δ_y‖² (log-sum-exp normalised), and a record of
//! 5 + 3K + P values per trajectory (see [`cpu`]).
//!
//! - [`plan`]: [`SdeStepParams`], the flat parameters built and checked from the step's
//!   coefficients, shapes, decision problems and probes; the only thing the bodies see;
//! - [`cpu`]: the SIMD body; [`cuda`]: the launch of `kernels/sde_step.cu`;
//! - [`mod@reference`]: the f64 oracle.

pub mod backend;
pub mod cpu;
pub mod cuda;
pub mod plan;
pub mod reference;

pub use cpu::*;
pub use plan::*;
