//! Element-wise kernels of the U-Net: y = a + b (residual joins) and x += v (a per-plane
//! constant: the time-embedding projection added to every position of a channel). Memory-bound:
//! one vector load per operand and one store per LANES elements, no tail masking (the tail is
//! scalar). One body for every ISA; IEEE addition is exactly rounded, so every ISA and the
//! scalar twins in [`crate::cpu::reference`] agree bit for bit.

use crate::simd::isa::Isa;

crate::isa_dispatch! {
    /// y = a + b over the shortest of the three.
    pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) -> () => add_kernel
}

crate::isa_dispatch! {
    /// x += v.
    pub fn add_scalar(x: &mut [f32], v: f32) -> () => add_scalar_kernel
}

#[inline(always)]
unsafe fn add_kernel<I: Isa>(a: &[f32], b: &[f32], y: &mut [f32]) {
    let n = a.len().min(b.len()).min(y.len());
    let full = n - n % I::LANES;
    // SAFETY: every vector lies in 0..full ≤ the length of each slice.
    unsafe {
        for i in (0..full).step_by(I::LANES) {
            let s = I::add(I::load(a.as_ptr().add(i)), I::load(b.as_ptr().add(i)));
            I::store(y.as_mut_ptr().add(i), s);
        }
    }
    for i in full..n {
        y[i] = a[i] + b[i];
    }
}

#[inline(always)]
unsafe fn add_scalar_kernel<I: Isa>(x: &mut [f32], v: f32) {
    let n = x.len();
    let full = n - n % I::LANES;
    // SAFETY: every vector lies in 0..full ≤ x.len().
    unsafe {
        let vv = I::splat(v);
        for i in (0..full).step_by(I::LANES) {
            let p = x.as_mut_ptr().add(i);
            I::store(p, I::add(I::load(p), vv));
        }
    }
    for e in &mut x[full..] {
        *e += v;
    }
}
