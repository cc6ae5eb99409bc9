//! 2-D convolution, y (B, O, Ho, Wo) = x (B, C, H, W) * w (O, C, kh, kw) + b (O), any stride and
//! zero padding (top, bottom, left, right), lowered onto the GEMM as implicit im2col: W
//! (O, C·kh·kw) · im2col(x) (C·kh·kw, Ho·Wo) per image, the im2col matrix never stored.
//!
//! [`cpu`]: weights packed once into GEMM panels ([`cpu::ConvWeight`]), B panels packed
//! straight from the image; [`cuda`]: the GEMM launch with `b_im2col` (NCHW output, per-row
//! bias), for every backend with a [`crate::ops::GemmOp`] (the GPU and its emulator), weights
//! f32 or bfloat16. The f64 oracle is the GEMM's ([`crate::ops::gemm::reference`]) of the
//! explicit im2col matrix.
//!
//! Backward ([`backward`], CPU; its f64 oracle in [`mod@reference`]): dx is the transposed
//! convolution of dy (col2im of Wᵀ·dy), dW = dy · im2col(x)ᵀ, both on the packed GEMM; a device
//! backward would be a method of [`Conv2dOp`].

pub mod backward;
pub mod cpu;
pub mod cuda;
pub mod reference;

use super::Act;
use crate::backend::{Backend, Storage};
use crate::error::{Error, Result};

/// Convolution on a backend, weights in the backend's prepared form.
pub trait Conv2dOp: Backend {
    /// Weights prepared once (packed panels on the CPU; f32 or bf16 device buffers).
    type ConvWeight;
    /// Prepares w (O, C, kh, kw) row-major, stored as `storage` asks.
    fn conv_weight(
        &self,
        w: &[f32],
        shape: [usize; 4],
        storage: Storage,
    ) -> Result<Self::ConvWeight>;
    /// x (B, C, H, W) * w + bias (O), stride, padding (top, bottom, left, right).
    fn conv2d(
        &self,
        x: &Act<Self::Buf>,
        w: &Self::ConvWeight,
        bias: &Self::Buf,
        stride: usize,
        pad: [usize; 4],
    ) -> Result<Act<Self::Buf>>;
}

/// (Ho, Wo) of x (B, C, H, W) under w (O, C, kh, kw), or a shape error (channels that differ,
/// a kernel larger than the padded input, stride 0).
pub fn out_size(
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    [pt, pb, pl, pr]: [usize; 4],
) -> Result<(usize, usize)> {
    let ([_, c, h, wd], [o, wc, kh, kw]) = (x, w);
    if wc != c {
        return Err(Error::shape(
            "conv2d: weight (O, C, kh, kw) vs x (B, C, H, W)",
            (o, c, kh, kw),
            (o, wc, kh, kw),
        ));
    }
    if stride == 0 || h + pt + pb < kh || wd + pl + pr < kw {
        return Err(Error::shape(
            "conv2d: kernel larger than padded input",
            (kh, kw),
            (h + pt + pb, wd + pl + pr),
        ));
    }
    Ok((
        (h + pt + pb - kh) / stride + 1,
        (wd + pl + pr - kw) / stride + 1,
    ))
}
