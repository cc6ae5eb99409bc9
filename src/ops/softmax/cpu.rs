//! Row softmax with a scale, y_j = exp(s·x_j − max_k s·x_k) / Σ_k exp(s·x_k − max), on lanes
//! with the lane `exp`. One body for every ISA; the slow twin is
//! [`super::reference::softmax_rows`].

use super::SoftmaxOp;
use crate::backend::Cpu;
use crate::backend::pool::Pooled;
use crate::error::{Error, Result};
use crate::simd::isa::Isa;
use crate::simd::math::exp;

crate::isa_dispatch! {
    /// Softmax of every row (length `cols`) of `x` in place, after multiplying by `scale`.
    pub fn softmax_rows(x: &mut [f32], cols: usize, scale: f32) -> () => softmax_kernel
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

impl SoftmaxOp for Cpu {
    fn softmax_rows(&self, x: &mut Pooled, rows: u32, n: u32, scale: f32) -> Result<()> {
        let len = rows as usize * n as usize;
        if x.0.len() < len {
            return Err(Error::shape("softmax_rows: x (rows, n)", len, x.0.len()));
        }
        softmax_rows(crate::simd::detected(), &mut x.0[..len], n as usize, scale);
        Ok(())
    }
}
