//! Row softmax with a scale, y_j = exp(s·x_j − max_k s·x_k) / Σ_k exp(s·x_k − max), and SiLU
//! x·σ(x), on lanes with the lane `exp`. One body for every ISA; the slow twins are
//! [`crate::cpu::reference::softmax_rows`] and [`crate::cpu::reference::silu`].

use crate::simd::isa::Isa;
use crate::simd::math::exp;

crate::isa_dispatch! {
    /// Softmax of every row (length `cols`) of `x` in place, after multiplying by `scale`.
    pub fn softmax_rows(x: &mut [f32], cols: usize, scale: f32) -> () => softmax_kernel
}

crate::isa_dispatch! {
    /// SiLU in place.
    pub fn silu(x: &mut [f32]) -> () => silu_kernel
}

#[inline(always)]
unsafe fn softmax_kernel<I: Isa>(x: &mut [f32], cols: usize, scale: f32) {
    if cols == 0 {
        return;
    }
    let l = I::LANES;
    for row in x.chunks_mut(cols) {
        let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b * scale));
        let full = cols / l * l;
        let mut lanes = [0.0f32; 16];
        let mut z = 0.0f64;
        // SAFETY: vector accesses stay below `full` ≤ row.len(); the tail is scalar.
        unsafe {
            let (sv, mv) = (I::splat(scale), I::splat(m));
            let mut acc = I::splat(0.0);
            for i in (0..full).step_by(l) {
                let e = exp::<I>(I::fma(
                    I::load(row.as_ptr().add(i)),
                    sv,
                    I::sub(I::splat(0.0), mv),
                ));
                I::store(row.as_mut_ptr().add(i), e);
                acc = I::add(acc, e);
            }
            I::store(lanes.as_mut_ptr(), acc);
        }
        z += lanes[..l].iter().map(|v| *v as f64).sum::<f64>();
        for v in &mut row[full..] {
            *v = (v.mul_add(scale, -m)).exp();
            z += *v as f64;
        }
        let inv = (1.0 / z) as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

#[inline(always)]
unsafe fn silu_kernel<I: Isa>(x: &mut [f32]) {
    let l = I::LANES;
    let full = x.len() / l * l;
    // SAFETY: vector accesses stay below `full`; the tail is scalar.
    unsafe {
        let (zero, one) = (I::splat(0.0), I::splat(1.0));
        for i in (0..full).step_by(l) {
            let v = I::load(x.as_ptr().add(i));
            I::store(
                x.as_mut_ptr().add(i),
                I::div(v, I::add(one, exp::<I>(I::sub(zero, v)))),
            );
        }
    }
    for v in &mut x[full..] {
        *v /= 1.0 + (-*v).exp();
    }
}
