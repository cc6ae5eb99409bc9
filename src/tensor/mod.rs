//! An f32 tensor (row-major, NCHW for images) and the operations a diffusers UNet2DModel needs:
//! conv2d (any kernel, stride, padding) through im2col and the packed GEMM, GroupNorm fused with
//! the SiLU that follows it, SiLU, linear, multi-head self-attention over spatial positions,
//! nearest 2× upsampling, add, channel concatenation, the sinusoidal timestep embedding and
//! embedding lookup. Every op checks shapes and returns `Result`.

pub mod ops;

use crate::error::{Error, Result};

/// A dense f32 tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` holding `data` (row-major); the sizes must agree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape("Tensor::new", n, data.len()));
        }
        Ok(Tensor { shape, data })
    }
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: vec![0.0; n],
        }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// (B, C, H, W) of a 4-D tensor, or a shape error naming `op`.
    pub fn dims4(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [b, c, h, w] => Ok((b, c, h, w)),
            _ => Err(Error::shape(op, "(B, C, H, W)", &self.shape)),
        }
    }
}
