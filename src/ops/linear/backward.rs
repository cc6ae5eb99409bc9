//! Backward of y (N, out) = x (N, in) · Wᵀ + b: dx = dy · W, dW += dyᵀ · x, db += Σ_rows dy.

use crate::error::{Error, Result};

/// dx (N, in) (overwritten, when asked), dw (out, in) += and db (out) += for upstream dy (N, out).
pub fn linear_backward(
    x: &[f32],
    (n, fin, fout): (usize, usize, usize),
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    let _ = (x, n, fin, fout, w, dy, dx, dw, db);
    Err(Error::Unsupported {
        op: "linear_backward",
        reason: "not yet implemented".into(),
    })
}
