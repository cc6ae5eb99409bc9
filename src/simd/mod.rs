//! The lane abstraction: one kernel body generic over [`isa::Isa`], instantiated for AVX-512F,
//! AVX2+FMA and scalar, with the ISA detected once ([`isa::detected`]); lane math (exp, ln,
//! Philox, Box–Muller) in [`math`], its f64 oracles in [`mod@reference`].

pub mod isa;
pub mod math;
pub mod reference;

pub use isa::{IsaKind, detected};
