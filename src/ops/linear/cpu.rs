//! The CPU linear layer y (N, out) = x (N, in) · Wᵀ + b on the packed GEMM: W read row-major as
//! the GEMM's A operand for a few rows (a time embedding at batch 1), as Wᵀ otherwise.

use crate::error::{Error, Result};
use crate::ops::gemm::{MatRef, sgemm};
use crate::simd::detected;

/// y (N, out) = x (N, in) · Wᵀ (W (out, in)) + b (out); y holds N·out values, all written.
pub fn linear(
    x: &[f32],
    (n, fin): (usize, usize),
    w: &[f32],
    fout: usize,
    b: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    if x.len() != n * fin || w.len() != fout * fin || y.len() != n * fout {
        return Err(Error::shape(
            "linear: x (N, in), weight (out, in), y (N, out)",
            (n * fin, fout * fin, n * fout),
            (x.len(), w.len(), y.len()),
        ));
    }
    if let Some(b) = b
        && b.len() != fout
    {
        return Err(Error::shape("linear: bias", [fout], b.len()));
    }
    if n < 8 {
        // A few rows (a time embedding at batch 1): yᵀ (out, N) = W · xᵀ reads W row-major, as
        // the GEMM's A operand, instead of gathering Wᵀ column by column into B panels.
        let mut yt = vec![0.0f32; fout * n]; // (out, N)
        if let Some(b) = b {
            for (row, v) in yt.chunks_mut(n.max(1)).zip(b) {
                row.fill(*v);
            }
        }
        let xt = MatRef::row_major(x, n, fin).t(); // (in, N)
        let wm = MatRef::row_major(w, fout, fin);
        sgemm(detected(), wm, xt, &mut yt, n.max(1), b.is_some())?;
        for (i, row) in y.chunks_mut(fout.max(1)).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = yt[j * n + i];
            }
        }
        return Ok(());
    }
    match b {
        Some(b) => y
            .chunks_mut(fout.max(1))
            .for_each(|row| row.copy_from_slice(b)),
        None => y.fill(0.0),
    }
    let wt = MatRef::row_major(w, fout, fin).t(); // (in, out)
    sgemm(
        detected(),
        MatRef::row_major(x, n, fin),
        wt,
        y,
        fout,
        b.is_some(),
    )
}
