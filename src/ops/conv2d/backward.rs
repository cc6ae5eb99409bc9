//! Backward of the convolution y = x * w + b (see [`super`]): with X = im2col(x) (C·kh·kw, Ho·Wo)
//! per image and dY (O, Ho·Wo), dW += dY · Xᵀ, db += Σ_positions dY, dx = col2im(Wᵀ · dY).
//! All three lower onto the packed GEMM; per-image parameter gradients are summed in image
//! order, so the result does not depend on the thread count.

use crate::error::{Error, Result};

/// dx (B, C, H, W) (overwritten, when asked), dw (O, C, kh, kw) += and db (O) += of
/// y = conv2d(x, w, b, stride, pad) for upstream dy (B, O, Ho, Wo).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &[f32],
    xshape: [usize; 4],
    w: &[f32],
    wshape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    let _ = (x, xshape, w, wshape, stride, pad, dy, dx, dw, db);
    Err(Error::Unsupported {
        op: "conv2d_backward",
        reason: "not yet implemented".into(),
    })
}
