//! Backward of the element-wise ops (see [`super`]): add routes dy to both operands, the plane
//! add sums dy over each plane, concat splits dy by channels, nearest 2× upsampling sums each
//! 2×2 block, SiLU multiplies by σ(x)(1 + x(1 − σ(x))), the scale divides dy.

use crate::error::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::Unsupported {
        op,
        reason: "not yet implemented".into(),
    }
}

/// v (P) += Σ_s dy[p, s]: the backward of x[p, ·] += v[p] over P planes of `s` values.
pub fn sum_planes(dy: &[f32], s: usize, v: &mut [f32]) -> Result<()> {
    let _ = (dy, s, v);
    Err(todo("sum_planes"))
}

/// da (B, C1, S), db (B, C2, S) (overwritten) from dy (B, C1 + C2, S).
pub fn split_channels(
    dy: &[f32],
    [b, c1, c2, s]: [usize; 4],
    da: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    let _ = (dy, b, c1, c2, s, da, db);
    Err(todo("split_channels"))
}

/// dx (P, h, w) (overwritten) from dy (P, 2h, 2w).
pub fn upsample2x_backward(dy: &[f32], h: usize, w: usize, dx: &mut [f32]) -> Result<()> {
    let _ = (dy, h, w, dx);
    Err(todo("upsample2x_backward"))
}

/// dx (overwritten) = dy · SiLU′(x) for the pre-activation x.
pub fn silu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let _ = (x, dy, dx);
    Err(todo("silu_backward"))
}
