//! An f32 tensor (row-major, NCHW for images) on the host and the operations a diffusers UNet2DModel needs on it (the kernels are in [`crate::ops`]):
//! conv2d (any kernel, stride, padding) through im2col and the packed GEMM, GroupNorm fused with
//! the SiLU that follows it, SiLU, linear, multi-head self-attention over spatial positions,
//! nearest 2× upsampling, add, channel concatenation, the sinusoidal timestep embedding and
//! embedding lookup. Every op checks shapes and returns `Result`.

pub mod ops;

pub use crate::backend::pool;

use crate::backend::pool::Pooled;
use crate::error::{Error, Result};
use crate::ops::Act;

/// A dense f32 tensor. Its storage returns to the buffer [`pool`] when dropped, so the layers
/// of a network reuse activation memory instead of asking the allocator (and the kernel, for
/// fresh pages) every time.
#[derive(Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Clone for Tensor {
    fn clone(&self) -> Tensor {
        let mut data = pool::take(self.data.len());
        data.extend_from_slice(&self.data);
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        pool::give(std::mem::take(&mut self.data));
    }
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
    /// A zero tensor whose storage comes from the buffer [`pool`].
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: pool::take_zeroed(n),
        }
    }
    /// A tensor of `shape` whose values are unspecified (pooled storage keeps old values), for
    /// ops that write every element before reading any.
    pub fn stale(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor {
            shape,
            data: pool::take_stale(n),
        }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// A 4-D tensor as a CPU activation (its storage moved, not copied).
    pub fn into_act(mut self) -> Result<Act<Pooled>> {
        let (b, c, h, w) = self.dims4("Tensor::into_act")?;
        Ok(Act {
            shape: [b, c, h, w],
            buf: Pooled(std::mem::take(&mut self.data)),
        })
    }
    /// A CPU activation as a tensor (its storage moved; any values past B·C·H·W dropped).
    pub fn from_act(a: Act<Pooled>) -> Tensor {
        let n = a.numel();
        let mut data = a.buf.into_vec();
        data.truncate(n);
        Tensor {
            shape: a.shape.to_vec(),
            data,
        }
    }
    /// (B, C, H, W) of a 4-D tensor, or a shape error naming `op`.
    pub fn dims4(&self, op: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.shape[..] {
            [b, c, h, w] => Ok((b, c, h, w)),
            _ => Err(Error::shape(op, "(B, C, H, W)", &self.shape)),
        }
    }
}
