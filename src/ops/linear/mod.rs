//! The linear layer y (N, out) = x (N, in) · Wᵀ + b of the time-embedding MLP and of each
//! ResNet's time projection: a few MFLOP per forward, run on the host ([`cpu`]) for every
//! backend (its f64 oracle is the GEMM's, [`crate::ops::gemm::reference`]).
//!
//! Backward (not implemented): dx = dy · W, dW = dyᵀ · x, db = Σ dy: three more GEMMs.

pub mod backward;
pub mod cpu;

pub use cpu::linear;
