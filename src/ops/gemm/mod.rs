//! Single-precision GEMM, C (M, N) = [C +] A (M, K) · B (K, N) [+ bias]: the product every
//! convolution, projection and attention score of the U-Net lowers onto.
//!
//! - [`cpu`]: the packed GotoBLAS-style SIMD GEMM ([`sgemm`], [`sgemm_packed`] with
//!   [`PackedA`], any [`BOperand`] such as the implicit im2col matrix [`Im2col`]);
//! - [`mod@reference`]: its f64 oracle;
//! - [`cuda`]: the `#[repr(C)]` mirror [`GemmParams`] of `kernels/gemm.cu` and its launch;
//!   [`emu`]: the same launch interpreted on the CPU. Both implement [`GemmOp`].
//!
//! Backward (not implemented): dA = dC · Bᵀ and dB = Aᵀ · dC are two more [`GemmOp`] launches
//! with swapped strides; they would sit beside `gemm` in [`GemmOp`].

pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod reference;

pub use cpu::{
    BOperand, Blocking, Im2col, MatRef, PackedA, blocking, fma_peak_probe, sgemm, sgemm_packed,
    sgemm_with,
};
pub use cuda::GemmParams;

use crate::backend::Backend;
use crate::error::Result;

/// One batched, strided GEMM launch (the device backends' product): for z in 0..batch,
/// C_z = [C_z +] A_z · B_z [+ bias] as [`GemmParams`] addresses them, A from `a`'s offset, B
/// from `b`'s, C from `c`'s (offsets in elements).
pub trait GemmOp: Backend {
    fn gemm(
        &self,
        p: &GemmParams,
        batch: u32,
        a: (&Self::Buf, usize),
        b: (&Self::Buf, usize),
        c: (&mut Self::Buf, usize),
        bias: Option<&Self::Buf>,
    ) -> Result<()>;
}

/// x rounded to bfloat16 (nearest, ties to even; any NaN becomes the quiet NaN 0x7fc0), as its
/// 16 bits.
pub fn to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    half::bf16::from_f32(x).to_bits()
}

/// bfloat16 bits widened (exactly) to f32, as the kernel widens them (a shift: `half`'s
/// `to_f32` would quiet signalling NaNs, which the kernel keeps bit for bit).
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `v` rounded to bfloat16 and packed two per f32 word (element i in the low half of word i/2
/// when i is even, the GEMM's A layout when `a_bf16` is set).
pub fn pack_bf16(v: &[f32]) -> Vec<f32> {
    v.chunks(2)
        .map(|p| {
            let lo = to_bf16(p[0]) as u32;
            let hi = p.get(1).map_or(0, |x| to_bf16(*x) as u32);
            f32::from_bits(lo | hi << 16)
        })
        .collect()
}
