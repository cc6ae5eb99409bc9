//! Training forward and backward of the spatial attention block (see [`super`]): the forward
//! keeps what the backward needs in a caller's buffer of [`saved_len`] values; the backward runs
//! through the output projection, the per-head products and softmax, the Q/K/V projections and
//! the GroupNorm, parameter gradients summed in image order.

use crate::error::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::Unsupported {
        op,
        reason: "not yet implemented".into(),
    }
}

/// The parameters of one attention block, raw (row-major), as diffusers names them.
#[derive(Clone, Copy)]
pub struct AttnParams<'a> {
    /// group_norm.weight, group_norm.bias (C).
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub groups: usize,
    pub eps: f32,
    pub heads: usize,
    /// (weight (C, C), bias (C)) of to_q, to_k, to_v, to_out.0.
    pub qkvo: [(&'a [f32], &'a [f32]); 4],
}

/// Gradients of one attention block's parameters, accumulated (+=), laid out as [`AttnParams`].
pub struct AttnGrads<'a> {
    pub gamma: &'a mut [f32],
    pub beta: &'a mut [f32],
    pub qkvo: [(&'a mut [f32], &'a mut [f32]); 4],
}

/// Values the training forward keeps for x of `shape` (B, C, H, W) with `heads` heads.
pub fn saved_len(shape: [usize; 4], heads: usize, groups: usize) -> usize {
    let _ = (shape, heads, groups);
    0
}

/// y = x + attention(x) as [`super::cpu`], keeping [`saved_len`] values in `saved`.
pub fn attention_forward_save(
    x: &[f32],
    shape: [usize; 4],
    p: &AttnParams<'_>,
    y: &mut [f32],
    saved: &mut [f32],
) -> Result<()> {
    let _ = (x, shape, p, y, saved);
    Err(todo("attention_forward_save"))
}

/// dx (overwritten) and the parameter gradients (+=) from dy, the forward's x and `saved`.
pub fn attention_backward(
    x: &[f32],
    shape: [usize; 4],
    p: &AttnParams<'_>,
    saved: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    g: &mut AttnGrads<'_>,
) -> Result<()> {
    let _ = (x, shape, p, saved, dy, dx, g);
    Err(todo("attention_backward"))
}
