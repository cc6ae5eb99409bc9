//! Backward of the row softmax p = softmax(scale·x) (see [`super`]): dx = scale · p ⊙ (dp − Σ_j
//! p_j dp_j) per row.

use crate::error::{Error, Result};

/// dx (rows, cols) (overwritten) from p = softmax(scale·x) and dp, row by row.
pub fn softmax_rows_backward(
    p: &[f32],
    dp: &[f32],
    cols: usize,
    scale: f32,
    dx: &mut [f32],
) -> Result<()> {
    let _ = (p, dp, cols, scale, dx);
    Err(Error::Unsupported {
        op: "softmax_rows_backward",
        reason: "not yet implemented".into(),
    })
}
