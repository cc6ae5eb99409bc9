//! The fused `mixture_trajectory` kernel: CPU body ([`cpu`]), CUDA launch ([`cuda`], `kernels/mixture_trajectory.cu`) and
//! the f64 oracle ([`mod@reference`]).

pub mod cpu;
pub mod cuda;
pub mod reference;

pub use cpu::*;
