//! Elementary functions on lanes, built only from correctly rounded primitives of [`Isa`], so
//! that every instantiation returns bit-identical results:
//! `exp`, `ln`, `cos(2πu)`/`sin(2πu)`, Philox4x32-10 and the Box–Muller normal transform.
//!
//! Accuracy (checked against f64 libm in `tests/kernels.rs`): `exp` and `ln` within 3 ulp on
//! their domains, sin/cos within 3e-7 absolute.
//!
//! # Safety
//! Every `unsafe fn` here may only be called where the ISA `I` is available (inside a function
//! compiled with its target features, after detection): the contract of [`Isa`].

#![allow(clippy::missing_safety_doc)]

use super::isa::Isa;

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// e^x for x in [−86, 88]; inputs outside are clamped (e^−86 ≈ 4e−38 stands in for 0).
#[inline(always)]
pub unsafe fn exp<I: Isa>(x: I::F) -> I::F {
    unsafe {
        let x = I::min(I::max(x, I::splat(-86.0)), I::splat(88.0));
        let n = I::round_i(I::mul(x, I::splat(LOG2E)));
        let nf = I::i_to_f(n);
        let r = I::fma(nf, I::splat(-LN2_HI), x);
        let r = I::fma(nf, I::splat(-LN2_LO), r);
        let mut p = I::splat(1.987_569_1e-4);
        p = I::fma(p, r, I::splat(1.398_2e-3));
        p = I::fma(p, r, I::splat(8.333_452e-3));
        p = I::fma(p, r, I::splat(4.166_579_6e-2));
        p = I::fma(p, r, I::splat(1.666_666_5e-1));
        p = I::fma(p, r, I::splat(0.5)); // Cephes' 5.0000001201e-1, rounded to f32
        let r2 = I::mul(r, r);
        p = I::fma(p, r2, r);
        p = I::add(p, I::splat(1.0));
        // Multiply by 2^n through the exponent field (n in [−124, 127] keeps the result normal).
        I::u_bits(I::u_add(I::f_bits(p), I::u_shl23(n)))
    }
}

/// ln x for positive normal x.
#[inline(always)]
pub unsafe fn ln<I: Isa>(x: I::F) -> I::F {
    unsafe {
        let bits = I::f_bits(x);
        // x = m · 2^e with m in [0.5, 1).
        let e_raw = I::u_shr23(bits);
        let m = I::u_bits(I::u_or(
            I::u_and(bits, I::splat_u(0x007f_ffff)),
            I::splat_u(0x3f00_0000),
        ));
        let e = I::sub(I::i_to_f(e_raw), I::splat(126.0));
        // Move m to [√½, √2) − 1.
        let small = I::lt(m, I::splat(std::f32::consts::FRAC_1_SQRT_2));
        let e = I::select(small, I::sub(e, I::splat(1.0)), e);
        let m = I::select(
            small,
            I::sub(I::add(m, m), I::splat(1.0)),
            I::sub(m, I::splat(1.0)),
        );
        let z = I::mul(m, m);
        let mut y = I::splat(7.037_683_6e-2);
        y = I::fma(y, m, I::splat(-1.151_461e-1));
        y = I::fma(y, m, I::splat(1.167_699_9e-1));
        y = I::fma(y, m, I::splat(-1.242_014_1e-1));
        y = I::fma(y, m, I::splat(1.424_932_3e-1));
        y = I::fma(y, m, I::splat(-1.666_805_8e-1));
        y = I::fma(y, m, I::splat(2.000_071_4e-1));
        y = I::fma(y, m, I::splat(-2.499_999_4e-1));
        y = I::fma(y, m, I::splat(3.333_333e-1));
        y = I::mul(I::mul(y, m), z);
        y = I::fma(e, I::splat(LN2_LO), y);
        y = I::fma(z, I::splat(-0.5), y);
        let r = I::add(m, y);
        I::fma(e, I::splat(LN2_HI), r)
    }
}

/// (cos 2πu, sin 2πu) for |u| < 2^22.
#[inline(always)]
pub unsafe fn sincos_2pi<I: Isa>(u: I::F) -> (I::F, I::F) {
    unsafe {
        let zero = I::splat(0.0);
        // v in [−½, ½]: the fraction of a turn.
        let v = I::sub(u, I::i_to_f(I::round_i(u)));
        let neg = I::lt(v, zero);
        let a = I::max(v, I::sub(zero, v)); // |v| in [0, ½]
        // cos(2πa) = −cos(2π(½ − a)), sin(2πa) = sin(2π(½ − a)).
        let flip = I::lt(I::splat(0.25), a);
        let a = I::select(flip, I::sub(I::splat(0.5), a), a); // [0, ¼]
        // cos(2πa) = sin(2π(¼ − a)), and the reverse.
        let swap = I::lt(I::splat(0.125), a);
        let b = I::select(swap, I::sub(I::splat(0.25), a), a); // [0, ⅛]
        let th = I::mul(b, I::splat(std::f32::consts::TAU)); // [0, π/4]
        let t2 = I::mul(th, th);
        let mut s = I::splat(-1.951_529_6e-4);
        s = I::fma(s, t2, I::splat(8.332_161e-3));
        s = I::fma(s, t2, I::splat(-1.666_665_5e-1));
        s = I::fma(I::mul(s, t2), th, th);
        let mut c = I::splat(2.443_315_7e-5);
        c = I::fma(c, t2, I::splat(-1.388_731_6e-3));
        c = I::fma(c, t2, I::splat(4.166_664_6e-2));
        c = I::fma(I::mul(c, t2), t2, I::fma(t2, I::splat(-0.5), I::splat(1.0)));
        let (c, s) = (I::select(swap, s, c), I::select(swap, c, s));
        let c = I::select(flip, I::sub(zero, c), c);
        let s = I::select(neg, I::sub(zero, s), s);
        (c, s)
    }
}

/// Philox4x32-10 multipliers and Weyl key increments (Salmon et al. 2011).
pub const PHILOX_M0: u32 = 0xD251_1F53;
pub const PHILOX_M1: u32 = 0xCD9E_8D57;
pub const PHILOX_W0: u32 = 0x9E37_79B9;
pub const PHILOX_W1: u32 = 0xBB67_AE85;

/// Philox4x32-10 on lanes: counter (c0, c1, c2, c3), key (k0, k1).
#[inline(always)]
pub unsafe fn philox<I: Isa>(c: [I::U; 4], key: [u32; 2]) -> [I::U; 4] {
    unsafe {
        let [mut c0, mut c1, mut c2, mut c3] = c;
        let [mut k0, mut k1] = key;
        for _ in 0..10 {
            let (hi0, lo0) = I::mul_hilo(c0, PHILOX_M0);
            let (hi1, lo1) = I::mul_hilo(c2, PHILOX_M1);
            let n0 = I::u_xor(I::u_xor(hi1, c1), I::splat_u(k0));
            let n2 = I::u_xor(I::u_xor(hi0, c3), I::splat_u(k1));
            c0 = n0;
            c1 = lo1;
            c2 = n2;
            c3 = lo0;
            k0 = k0.wrapping_add(PHILOX_W0);
            k1 = k1.wrapping_add(PHILOX_W1);
        }
        [c0, c1, c2, c3]
    }
}

/// Box–Muller: a pair of 32-bit words to a pair of standard normals.
/// u₁ = ((w₀ ≫ 8) + ½)·2⁻²⁴ ∈ (0, 1), u₂ = (w₁ ≫ 8)·2⁻²⁴ ∈ [0, 1); r = √(−2 ln u₁);
/// z = (r cos 2πu₂, r sin 2πu₂). Every value is exact up to the rounding of ln, sqrt, sin, cos;
/// |z| ≤ 5.9 (the transform's largest radius with 24-bit uniforms).
#[inline(always)]
pub unsafe fn box_muller<I: Isa>(w0: I::U, w1: I::U) -> (I::F, I::F) {
    unsafe {
        let scale = I::splat(1.0 / 16_777_216.0);
        let u1 = I::mul(I::add(I::i_to_f(I::u_shr8(w0)), I::splat(0.5)), scale);
        let u2 = I::mul(I::i_to_f(I::u_shr8(w1)), scale);
        let r = I::sqrt(I::mul(I::splat(-2.0), ln::<I>(u1)));
        let (c, s) = sincos_2pi::<I>(u2);
        (I::mul(r, c), I::mul(r, s))
    }
}

/// An elementary function of this module, for slice evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathFn {
    Exp,
    Ln,
    Cos2Pi,
    Sin2Pi,
}

crate::isa_dispatch! {
    /// Evaluates `f` on every element of `x` into `out` with the given ISA (tail lanes padded),
    /// for tests and benchmarks of the lane functions.
    pub fn eval_slice(f: MathFn, x: &[f32], out: &mut [f32]) -> () => eval_slice_kernel
}

#[inline(always)]
unsafe fn eval_slice_kernel<I: Isa>(f: MathFn, x: &[f32], out: &mut [f32]) {
    let l = I::LANES;
    let mut buf = [1.0f32; 16];
    for (xi, oi) in x.chunks(l).zip(out.chunks_mut(l)) {
        buf[..xi.len()].copy_from_slice(xi);
        // SAFETY: `buf` holds 16 ≥ LANES elements.
        unsafe {
            let v = I::load(buf.as_ptr());
            let r = match f {
                MathFn::Exp => exp::<I>(v),
                MathFn::Ln => ln::<I>(v),
                MathFn::Cos2Pi => sincos_2pi::<I>(v).0,
                MathFn::Sin2Pi => sincos_2pi::<I>(v).1,
            };
            I::store(buf.as_mut_ptr(), r);
        }
        oi.copy_from_slice(&buf[..oi.len()]);
    }
}
