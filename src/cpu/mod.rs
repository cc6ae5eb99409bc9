//! CPU kernels of the tensor ops: hand-written SIMD bodies over [`crate::simd::isa::Isa`] and
//! their scalar f64 references ([`mod@reference`]).

pub mod elementwise;
pub mod gemm;
pub mod group_norm;
pub mod reference;
pub mod softmax;
