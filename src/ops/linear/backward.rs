//! Backward of y (N, out) = x (N, in) · Wᵀ + b: dx = dy · W, dW += dyᵀ · x, db += Σ_rows dy.
//!
//! dx and dW are two products on the packed GEMM ([`sgemm`]) with transposed strides (no copy);
//! each element of C sums its K terms in a fixed order (K blocks in order, then the micro-kernel's
//! order), whatever the thread count. db sums the rows of dy serially, in row order. The f64
//! oracle is [`super::reference::linear_backward`].

use crate::error::{Error, Result};
use crate::ops::gemm::{MatRef, sgemm};
use crate::simd::detected;
use crate::simd::isa::IsaKind;

/// dx (N, in) (overwritten, when asked), dw (out, in) += and db (out) += for upstream dy (N, out).
pub fn linear_backward(
    x: &[f32],
    dims: (usize, usize, usize),
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    linear_backward_with(detected(), x, dims, w, dy, dx, dw, db)
}

/// [`linear_backward`] with the GEMM of ISA `kind` (an unavailable kind runs the scalar one).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_with(
    kind: IsaKind,
    x: &[f32],
    (n, fin, fout): (usize, usize, usize),
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    if x.len() != n * fin || w.len() != fout * fin || dy.len() != n * fout {
        return Err(Error::shape(
            "linear_backward: x (N, in), weight (out, in), dy (N, out)",
            (n * fin, fout * fin, n * fout),
            (x.len(), w.len(), dy.len()),
        ));
    }
    if dw.len() != fout * fin || db.len() != fout {
        return Err(Error::shape(
            "linear_backward: dw (out, in), db (out)",
            (fout * fin, fout),
            (dw.len(), db.len()),
        ));
    }
    if let Some(dx) = &dx
        && dx.len() != n * fin
    {
        return Err(Error::shape(
            "linear_backward: dx (N, in)",
            n * fin,
            dx.len(),
        ));
    }
    if let Some(dx) = dx {
        // dx (N, in) = dy (N, out) · W (out, in)
        sgemm(
            kind,
            MatRef::row_major(dy, n, fout),
            MatRef::row_major(w, fout, fin),
            dx,
            fin,
            false,
        )?;
    }
    // dW (out, in) += dyᵀ (out, N) · x (N, in)
    sgemm(
        kind,
        MatRef::row_major(dy, n, fout).t(),
        MatRef::row_major(x, n, fin),
        dw,
        fin,
        true,
    )?;
    // db (out) += Σ_rows dy, rows in order
    for row in dy.chunks_exact(fout.max(1)).take(n) {
        for (d, g) in db.iter_mut().zip(row) {
            *d += g;
        }
    }
    Ok(())
}
