//! The operations of a diffusers UNet2DModel, one folder per op (dfdx-style): each `mod.rs`
//! holds the op's parameters and its trait over a [`Backend`] (forward, and the documented
//! place of its backward), `cpu.rs` the SIMD body for the [`crate::backend::Cpu`] backend,
//! `reference.rs` its f64 oracle, `cuda.rs` the launch of `kernels/<op>.cu` with its
//! `#[repr(C)]` parameter mirror, `emu.rs` the same launch interpreted on the CPU.
//!
//! [`Ops`] gathers every op trait the U-Net walk ([`crate::nn::unet`]) needs; activations are
//! [`Act`]s: a (B, C, H, W) shape and a backend buffer. The time-embedding MLP ([`linear`],
//! [`embedding`]) is a few MFLOP and runs on the host for every backend.

pub mod attention;
pub mod conv2d;
pub mod elementwise;
pub mod embedding;
pub mod gemm;
pub mod group_norm;
pub mod linear;
pub mod softmax;

pub use attention::AttentionOp;
pub use conv2d::Conv2dOp;
pub use elementwise::ElementwiseOp;
pub use gemm::GemmOp;
pub use group_norm::GroupNormOp;
pub use softmax::SoftmaxOp;

use crate::backend::Backend;
use crate::error::{Error, Result};

/// A (B, C, H, W) activation in a backend buffer (row-major NCHW; the buffer may be longer).
pub struct Act<B> {
    pub shape: [usize; 4],
    pub buf: B,
}

impl<B> Act<B> {
    /// B·C·H·W.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every op a U-Net forward runs on a backend.
pub trait Ops: Backend + Conv2dOp + GroupNormOp + SoftmaxOp + ElementwiseOp + AttentionOp {}

impl<T: Backend + Conv2dOp + GroupNormOp + SoftmaxOp + ElementwiseOp + AttentionOp> Ops for T {}

/// `v` as the u32 a launch takes, or a shape error naming `what`.
pub(crate) fn u32_of(v: usize, what: &'static str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::shape(what, u32::MAX, v))
}

/// A buffer of at least `n` values, or a shape error naming `what`.
pub(crate) fn check_len<B: Backend + ?Sized>(
    be: &B,
    b: &B::Buf,
    n: usize,
    what: &'static str,
) -> Result<()> {
    if be.len(b) < n {
        return Err(Error::shape(what, n, be.len(b)));
    }
    Ok(())
}
