//! The linear layer y (N, out) = x (N, in) · Wᵀ + b of the time-embedding MLP and of each
//! ResNet's time projection: a few MFLOP per forward, run on the host ([`cpu`]) for every
//! backend; its f64 oracle, forward and backward, is [`mod@reference`].
//!
//! Backward ([`backward`]): dx = dy · W, dW += dyᵀ · x (two more GEMMs), db += Σ_rows dy.

pub mod backward;
pub mod cpu;
pub mod reference;

pub use cpu::linear;
