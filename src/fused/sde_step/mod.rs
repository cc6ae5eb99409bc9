//! The fused `sde_step` kernel: CPU body ([`cpu`]), CUDA launch ([`cuda`], `kernels/sde_step.cu`) and
//! the f64 oracle ([`mod@reference`]).

pub mod backend;
pub mod cpu;
pub mod cuda;
pub mod reference;

pub use cpu::*;
