//! Backward of the row softmax p = softmax(scale·x) (see [`super`]): dx = scale · p ⊙ (dp − Σ_j
//! p_j dp_j) per row.
//!
//! One SIMD body for every ISA ([`softmax_rows_backward_in_place`]): the row's Σ p·dp on f32
//! lanes folded into f64 every 1024 values, then dx = (scale·p)·(dp − Σ) on lanes. Its slow
//! twin is [`super::reference::softmax_rows_backward`].

use crate::error::{Error, Result};
use crate::simd::isa::{Isa, IsaKind};

crate::isa_dispatch! {
    /// In place: `g` holds dp (rows of `cols`) on entry and dx on return, p the softmax rows.
    pub fn softmax_rows_backward_in_place(p: &[f32], g: &mut [f32], cols: usize, scale: f32) -> () => kernel
}

#[inline(always)]
unsafe fn kernel<I: Isa>(p: &[f32], g: &mut [f32], cols: usize, scale: f32) {
    if cols == 0 {
        return;
    }
    let l = I::LANES;
    let full = cols / l * l;
    let mut lanes = [0.0f32; 16];
    for (pr, gr) in p.chunks_exact(cols).zip(g.chunks_exact_mut(cols)) {
        let mut dot = 0.0f64;
        // SAFETY: vector accesses stay below `full` ≤ cols in both rows; the tail is scalar.
        unsafe {
            let mut i = 0;
            while i < full {
                let end = (i + 1024usize.max(l) / l * l).min(full);
                let mut acc = I::splat(0.0);
                while i < end {
                    acc = I::fma(
                        I::load(pr.as_ptr().add(i)),
                        I::load(gr.as_ptr().add(i)),
                        acc,
                    );
                    i += l;
                }
                I::store(lanes.as_mut_ptr(), acc);
                dot += lanes[..l].iter().map(|v| *v as f64).sum::<f64>();
            }
            for i in full..cols {
                dot += (pr[i] * gr[i]) as f64;
            }
            let d = dot as f32;
            let (dv, sv) = (I::splat(d), I::splat(scale));
            for i in (0..full).step_by(l) {
                let sp = I::mul(I::load(pr.as_ptr().add(i)), sv);
                let dg = I::sub(I::load(gr.as_ptr().add(i)), dv);
                I::store(gr.as_mut_ptr().add(i), I::mul(sp, dg));
            }
            for i in full..cols {
                gr[i] = (pr[i] * scale) * (gr[i] - d);
            }
        }
    }
}

/// dx (rows, cols) (overwritten) from p = softmax(scale·x) and dp, row by row.
pub fn softmax_rows_backward(
    p: &[f32],
    dp: &[f32],
    cols: usize,
    scale: f32,
    dx: &mut [f32],
) -> Result<()> {
    softmax_rows_backward_with(crate::simd::detected(), p, dp, cols, scale, dx)
}

/// [`softmax_rows_backward`] with the SIMD body of `kind`; p, dp and dx must have the same
/// length, a multiple of `cols`.
pub fn softmax_rows_backward_with(
    kind: IsaKind,
    p: &[f32],
    dp: &[f32],
    cols: usize,
    scale: f32,
    dx: &mut [f32],
) -> Result<()> {
    let n = p.len();
    if dp.len() != n || dx.len() != n || (cols == 0 && n != 0) || (cols != 0 && n % cols != 0) {
        return Err(Error::shape(
            "softmax_rows_backward: p, dp, dx (rows, cols)",
            (n, n, n, cols),
            (p.len(), dp.len(), dx.len(), cols),
        ));
    }
    dx.copy_from_slice(dp);
    softmax_rows_backward_in_place(kind, p, dx, cols, scale);
    Ok(())
}
