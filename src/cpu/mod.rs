//! CPU kernels: a scalar reference ([`mod@reference`]) and hand-written SIMD kernels, one file per
//! fused op, each one generic body over [`isa::Isa`] instantiated for AVX-512F, AVX2+FMA and
//! scalar, with the ISA detected once ([`isa::detected`]).

pub mod elementwise;
pub mod gemm;
pub mod group_norm;
pub mod isa;
pub mod math;
pub mod mixture_trajectory;
pub mod reference;
pub mod sde_step;
pub mod softmax;

pub use isa::{IsaKind, detected};
