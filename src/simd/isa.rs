//! Lane abstraction for the hand-written SIMD kernels: one kernel body, generic over [`Isa`],
//! instantiated for AVX-512F (16 lanes), AVX2+FMA (8 lanes) and scalar (1 lane).
//!
//! Every primitive is an IEEE-754 correctly rounded operation (add, sub, mul, div, sqrt, fused
//! multiply-add, round-to-nearest-even conversion) or exact bit manipulation, and the kernels use
//! no approximate reciprocals. The same sequence of operations therefore gives bit-identical
//! results in every instantiation: a trajectory does not depend on the ISA, on the batch it
//! runs in, or on its lane.
//!
//! The ISA is detected once per process ([`detected`]); `INFODIFF_ISA=scalar|avx2|avx512`
//! restricts it (for tests and benchmarks).

#![allow(clippy::missing_safety_doc)]

use std::sync::OnceLock;

/// The instruction sets a kernel can be instantiated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IsaKind {
    Avx512,
    Avx2Fma,
    Scalar,
}

impl IsaKind {
    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Avx512 => "avx512f",
            IsaKind::Avx2Fma => "avx2+fma",
            IsaKind::Scalar => "scalar",
        }
    }

    /// Whether this machine can run kernels of this kind.
    pub fn available(self) -> bool {
        match self {
            IsaKind::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx2Fma => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            IsaKind::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every kind this machine can run, best first.
    pub fn all_available() -> Vec<IsaKind> {
        [IsaKind::Avx512, IsaKind::Avx2Fma, IsaKind::Scalar]
            .into_iter()
            .filter(|k| k.available())
            .collect()
    }
}

/// The best ISA of this machine, detected once (restricted by `INFODIFF_ISA` when set).
pub fn detected() -> IsaKind {
    static KIND: OnceLock<IsaKind> = OnceLock::new();
    *KIND.get_or_init(|| {
        let wanted = match std::env::var("INFODIFF_ISA").ok().as_deref() {
            Some("scalar") => Some(IsaKind::Scalar),
            Some("avx2") => Some(IsaKind::Avx2Fma),
            Some("avx512") => Some(IsaKind::Avx512),
            _ => None,
        };
        match wanted {
            Some(k) if k.available() => k,
            _ => IsaKind::all_available()[0],
        }
    })
}

/// Lanes of f32 (`F`), of u32 (`U`) and a lane mask (`M`).
///
/// # Safety
/// Methods may only be called where the ISA is available (inside a function compiled with the
/// matching `#[target_feature]`, reached after [`IsaKind::available`] returned true). Pointer
/// arguments must be valid for `LANES` elements.
pub trait Isa: Copy + Send + Sync + 'static {
    const LANES: usize;
    type F: Copy;
    type U: Copy;
    type M: Copy;

    unsafe fn splat(x: f32) -> Self::F;
    unsafe fn splat_u(x: u32) -> Self::U;
    /// Lane indices 0, 1, …, LANES−1.
    unsafe fn iota_u() -> Self::U;
    unsafe fn load(p: *const f32) -> Self::F;
    unsafe fn store(p: *mut f32, v: Self::F);
    unsafe fn store_u(p: *mut u32, v: Self::U);

    unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn div(a: Self::F, b: Self::F) -> Self::F;
    /// a·b + c with one rounding.
    unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
    unsafe fn sqrt(a: Self::F) -> Self::F;
    unsafe fn min(a: Self::F, b: Self::F) -> Self::F;
    unsafe fn max(a: Self::F, b: Self::F) -> Self::F;

    unsafe fn lt(a: Self::F, b: Self::F) -> Self::M;
    /// `m ? a : b` per lane.
    unsafe fn select(m: Self::M, a: Self::F, b: Self::F) -> Self::F;
    /// Whether every lane is finite (not NaN, not ±∞).
    unsafe fn all_finite(a: Self::F) -> bool;

    /// Round to nearest, ties to even, as i32 (stored in u32 lanes).
    unsafe fn round_i(a: Self::F) -> Self::U;
    /// i32 lanes to f32.
    unsafe fn i_to_f(a: Self::U) -> Self::F;
    unsafe fn f_bits(a: Self::F) -> Self::U;
    unsafe fn u_bits(a: Self::U) -> Self::F;

    unsafe fn u_add(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn u_xor(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn u_and(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn u_or(a: Self::U, b: Self::U) -> Self::U;
    unsafe fn u_shr8(a: Self::U) -> Self::U;
    unsafe fn u_shr23(a: Self::U) -> Self::U;
    unsafe fn u_shl23(a: Self::U) -> Self::U;
    /// (high, low) 32-bit halves of the 64-bit product a·m per lane.
    unsafe fn mul_hilo(a: Self::U, m: u32) -> (Self::U, Self::U);
}

/// One lane: the scalar instantiation. Correctly rounded `mul_add` keeps it bit-identical to the
/// vector ones.
#[derive(Clone, Copy)]
pub struct Scalar;

impl Isa for Scalar {
    const LANES: usize = 1;
    type F = f32;
    type U = u32;
    type M = bool;

    #[inline(always)]
    unsafe fn splat(x: f32) -> f32 {
        x
    }
    #[inline(always)]
    unsafe fn splat_u(x: u32) -> u32 {
        x
    }
    #[inline(always)]
    unsafe fn iota_u() -> u32 {
        0
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is valid for one element.
        unsafe { *p }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is valid for one element.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn store_u(p: *mut u32, v: u32) {
        // SAFETY: the caller guarantees `p` is valid for one element.
        unsafe { *p = v }
    }
    #[inline(always)]
    unsafe fn add(a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    unsafe fn sub(a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    unsafe fn mul(a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    unsafe fn div(a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    unsafe fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    #[inline(always)]
    unsafe fn sqrt(a: f32) -> f32 {
        a.sqrt()
    }
    #[inline(always)]
    unsafe fn min(a: f32, b: f32) -> f32 {
        // Same operand order semantics as minps: returns b unless a < b.
        if a < b { a } else { b }
    }
    #[inline(always)]
    unsafe fn max(a: f32, b: f32) -> f32 {
        if a > b { a } else { b }
    }
    #[inline(always)]
    unsafe fn lt(a: f32, b: f32) -> bool {
        a < b
    }
    #[inline(always)]
    unsafe fn select(m: bool, a: f32, b: f32) -> f32 {
        if m { a } else { b }
    }
    #[inline(always)]
    unsafe fn all_finite(a: f32) -> bool {
        a.is_finite()
    }
    #[inline(always)]
    unsafe fn round_i(a: f32) -> u32 {
        a.round_ties_even() as i32 as u32
    }
    #[inline(always)]
    unsafe fn i_to_f(a: u32) -> f32 {
        a as i32 as f32
    }
    #[inline(always)]
    unsafe fn f_bits(a: f32) -> u32 {
        a.to_bits()
    }
    #[inline(always)]
    unsafe fn u_bits(a: u32) -> f32 {
        f32::from_bits(a)
    }
    #[inline(always)]
    unsafe fn u_add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    unsafe fn u_xor(a: u32, b: u32) -> u32 {
        a ^ b
    }
    #[inline(always)]
    unsafe fn u_and(a: u32, b: u32) -> u32 {
        a & b
    }
    #[inline(always)]
    unsafe fn u_or(a: u32, b: u32) -> u32 {
        a | b
    }
    #[inline(always)]
    unsafe fn u_shr8(a: u32) -> u32 {
        a >> 8
    }
    #[inline(always)]
    unsafe fn u_shr23(a: u32) -> u32 {
        a >> 23
    }
    #[inline(always)]
    unsafe fn u_shl23(a: u32) -> u32 {
        a << 23
    }
    #[inline(always)]
    unsafe fn mul_hilo(a: u32, m: u32) -> (u32, u32) {
        let p = a as u64 * m as u64;
        ((p >> 32) as u32, p as u32)
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2Fma, Avx512};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Isa;
    use std::arch::x86_64::*;

    /// AVX2 + FMA, 8 lanes.
    #[derive(Clone, Copy)]
    pub struct Avx2Fma;

    // SAFETY (whole impl): every method is an intrinsic of AVX/AVX2/FMA; the trait's contract
    // says they are only reached inside functions compiled with those features after detection.
    impl Isa for Avx2Fma {
        const LANES: usize = 8;
        type F = __m256;
        type U = __m256i;
        type M = __m256;

        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn splat_u(x: u32) -> __m256i {
            unsafe { _mm256_set1_epi32(x as i32) }
        }
        #[inline(always)]
        unsafe fn iota_u() -> __m256i {
            unsafe { _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 valid elements at `p`.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m256) {
            // SAFETY: the caller guarantees 8 valid elements at `p`.
            unsafe { _mm256_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_u(p: *mut u32, v: __m256i) {
            // SAFETY: the caller guarantees 8 valid elements at `p`.
            unsafe { _mm256_storeu_si256(p as *mut __m256i, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sqrt(a: __m256) -> __m256 {
            unsafe { _mm256_sqrt_ps(a) }
        }
        #[inline(always)]
        unsafe fn min(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn lt(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_cmp_ps::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        unsafe fn select(m: __m256, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(b, a, m) }
        }
        #[inline(always)]
        unsafe fn all_finite(a: __m256) -> bool {
            unsafe {
                let exp = _mm256_and_si256(_mm256_castps_si256(a), _mm256_set1_epi32(0x7f80_0000));
                let bad = _mm256_cmpeq_epi32(exp, _mm256_set1_epi32(0x7f80_0000));
                _mm256_testz_si256(bad, bad) == 1
            }
        }
        #[inline(always)]
        unsafe fn round_i(a: __m256) -> __m256i {
            // Default MXCSR rounding: to nearest, ties to even.
            unsafe { _mm256_cvtps_epi32(a) }
        }
        #[inline(always)]
        unsafe fn i_to_f(a: __m256i) -> __m256 {
            unsafe { _mm256_cvtepi32_ps(a) }
        }
        #[inline(always)]
        unsafe fn f_bits(a: __m256) -> __m256i {
            unsafe { _mm256_castps_si256(a) }
        }
        #[inline(always)]
        unsafe fn u_bits(a: __m256i) -> __m256 {
            unsafe { _mm256_castsi256_ps(a) }
        }
        #[inline(always)]
        unsafe fn u_add(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_add_epi32(a, b) }
        }
        #[inline(always)]
        unsafe fn u_xor(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_xor_si256(a, b) }
        }
        #[inline(always)]
        unsafe fn u_and(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_and_si256(a, b) }
        }
        #[inline(always)]
        unsafe fn u_or(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_or_si256(a, b) }
        }
        #[inline(always)]
        unsafe fn u_shr8(a: __m256i) -> __m256i {
            unsafe { _mm256_srli_epi32::<8>(a) }
        }
        #[inline(always)]
        unsafe fn u_shr23(a: __m256i) -> __m256i {
            unsafe { _mm256_srli_epi32::<23>(a) }
        }
        #[inline(always)]
        unsafe fn u_shl23(a: __m256i) -> __m256i {
            unsafe { _mm256_slli_epi32::<23>(a) }
        }
        #[inline(always)]
        unsafe fn mul_hilo(a: __m256i, m: u32) -> (__m256i, __m256i) {
            unsafe {
                let mv = _mm256_set1_epi32(m as i32);
                let even = _mm256_mul_epu32(a, mv); // 64-bit products of lanes 0, 2, 4, 6
                let odd = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), mv); // lanes 1, 3, 5, 7
                let hi = _mm256_blend_epi32::<0b1010_1010>(_mm256_srli_epi64::<32>(even), odd);
                let lo = _mm256_mullo_epi32(a, mv);
                (hi, lo)
            }
        }
    }

    /// AVX-512F, 16 lanes.
    #[derive(Clone, Copy)]
    pub struct Avx512;

    // SAFETY (whole impl): every method is an AVX-512F intrinsic, reached only inside functions
    // compiled with `avx512f` after detection (the trait's contract).
    impl Isa for Avx512 {
        const LANES: usize = 16;
        type F = __m512;
        type U = __m512i;
        type M = __mmask16;

        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        unsafe fn splat_u(x: u32) -> __m512i {
            unsafe { _mm512_set1_epi32(x as i32) }
        }
        #[inline(always)]
        unsafe fn iota_u() -> __m512i {
            unsafe { _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15) }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees 16 valid elements at `p`.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: __m512) {
            // SAFETY: the caller guarantees 16 valid elements at `p`.
            unsafe { _mm512_storeu_ps(p, v) }
        }
        #[inline(always)]
        unsafe fn store_u(p: *mut u32, v: __m512i) {
            // SAFETY: the caller guarantees 16 valid elements at `p`.
            unsafe { _mm512_storeu_si512(p as *mut __m512i, v) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn div(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn sqrt(a: __m512) -> __m512 {
            unsafe { _mm512_sqrt_ps(a) }
        }
        #[inline(always)]
        unsafe fn min(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn max(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn lt(a: __m512, b: __m512) -> __mmask16 {
            unsafe { _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, b) }
        }
        #[inline(always)]
        unsafe fn select(m: __mmask16, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mask_blend_ps(m, b, a) }
        }
        #[inline(always)]
        unsafe fn all_finite(a: __m512) -> bool {
            unsafe {
                let exp = _mm512_and_si512(_mm512_castps_si512(a), _mm512_set1_epi32(0x7f80_0000));
                _mm512_cmpeq_epi32_mask(exp, _mm512_set1_epi32(0x7f80_0000)) == 0
            }
        }
        #[inline(always)]
        unsafe fn round_i(a: __m512) -> __m512i {
            unsafe { _mm512_cvtps_epi32(a) }
        }
        #[inline(always)]
        unsafe fn i_to_f(a: __m512i) -> __m512 {
            unsafe { _mm512_cvtepi32_ps(a) }
        }
        #[inline(always)]
        unsafe fn f_bits(a: __m512) -> __m512i {
            unsafe { _mm512_castps_si512(a) }
        }
        #[inline(always)]
        unsafe fn u_bits(a: __m512i) -> __m512 {
            unsafe { _mm512_castsi512_ps(a) }
        }
        #[inline(always)]
        unsafe fn u_add(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_add_epi32(a, b) }
        }
        #[inline(always)]
        unsafe fn u_xor(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_xor_si512(a, b) }
        }
        #[inline(always)]
        unsafe fn u_and(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_and_si512(a, b) }
        }
        #[inline(always)]
        unsafe fn u_or(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_or_si512(a, b) }
        }
        #[inline(always)]
        unsafe fn u_shr8(a: __m512i) -> __m512i {
            unsafe { _mm512_srli_epi32::<8>(a) }
        }
        #[inline(always)]
        unsafe fn u_shr23(a: __m512i) -> __m512i {
            unsafe { _mm512_srli_epi32::<23>(a) }
        }
        #[inline(always)]
        unsafe fn u_shl23(a: __m512i) -> __m512i {
            unsafe { _mm512_slli_epi32::<23>(a) }
        }
        #[inline(always)]
        unsafe fn mul_hilo(a: __m512i, m: u32) -> (__m512i, __m512i) {
            unsafe {
                let mv = _mm512_set1_epi32(m as i32);
                let even = _mm512_mul_epu32(a, mv); // 64-bit products of even lanes
                let odd = _mm512_mul_epu32(_mm512_srli_epi64::<32>(a), mv); // odd lanes
                let hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64::<32>(even), odd);
                let lo = _mm512_mullo_epi32(a, mv);
                (hi, lo)
            }
        }
    }
}

/// Defines `$vis fn $name(kind: IsaKind, args…) -> R` that runs the generic kernel
/// `$kernel::<I>(args…)` (an `#[inline(always)] unsafe fn`) inside a function compiled with the
/// target features of `kind`, so the whole kernel body is compiled for that ISA.
#[macro_export]
#[doc(hidden)]
macro_rules! isa_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty => $kernel:ident) => {
        $(#[$m])*
        $vis fn $name(kind: $crate::simd::isa::IsaKind, $($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f")]
            unsafe fn avx512($($arg: $ty),*) -> $ret {
                // SAFETY: reached only when avx512f was detected (see below).
                unsafe { $kernel::<$crate::simd::isa::Avx512>($($arg),*) }
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                // SAFETY: reached only when avx2 and fma were detected (see below).
                unsafe { $kernel::<$crate::simd::isa::Avx2Fma>($($arg),*) }
            }
            match kind {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: an `IsaKind` other than Scalar is only used where `available()` holds;
                // the `if kind.available()` guard keeps that true even for a caller that
                // constructs one by hand (an unavailable kind runs the scalar instantiation).
                $crate::simd::isa::IsaKind::Avx512 if kind.available() => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above, for avx2 and fma.
                $crate::simd::isa::IsaKind::Avx2Fma if kind.available() => unsafe { avx2($($arg),*) },
                // SAFETY: the scalar instantiation needs no target feature.
                _ => unsafe { $kernel::<$crate::simd::isa::Scalar>($($arg),*) },
            }
        }
    };
}
