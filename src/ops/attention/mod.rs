//! Multi-head self-attention over the H·W positions of x (B, C, H, W) with `heads` heads, as in
//! diffusers' attention blocks: X = GroupNorm(x) as (C, HW); [Qᵀ; Kᵀ; Vᵀ] = [W_q; W_k; W_v]·X
//! + b; per head O_h = softmax(Q_h K_hᵀ/√d_h) V_h; out = x + W_o·Oᵀ + b_o.
//!
//! [`cpu`]: the packed per-image composition with the SIMD softmax; [`cuda`]: the same as
//! batched GEMM launches around the row-softmax launch, for every backend with the device
//! kernels (the GPU and its emulator); [`backward`]: the CPU training forward (keeping what the
//! backward needs) and backward; [`mod@reference`]: the f64 oracle of those two.

pub mod backward;
pub mod cpu;
pub mod cuda;
pub mod reference;

use super::Act;
use crate::backend::{Backend, Storage};
use crate::error::{Error, Result};

/// Spatial attention on a backend, projections in the backend's prepared form.
pub trait AttentionOp: Backend {
    /// The projections prepared once.
    type AttnWeight;
    /// Prepares (weight (C, C) row-major, bias (C)) of to_q, to_k, to_v, to_out, the weights
    /// stored as `storage` asks.
    fn attn_weight(
        &self,
        qkvo: [(&[f32], &[f32]); 4],
        storage: Storage,
    ) -> Result<Self::AttnWeight>;
    /// x + the attention of x (B, C, H, W); `norm`: the GroupNorm's γ, β (C), groups and ε.
    fn attention(
        &self,
        x: &Act<Self::Buf>,
        heads: usize,
        norm: (&Self::Buf, &Self::Buf, usize, f32),
        w: &Self::AttnWeight,
    ) -> Result<Act<Self::Buf>>;
}

/// d_h = C / heads for projections of `wc` channels over x of C channels, or a shape error.
pub(crate) fn head_dim(wc: usize, c: usize, heads: usize) -> Result<usize> {
    if wc != c {
        return Err(Error::shape(
            "attention: projections (C, C) vs x (B, C, H, W)",
            c,
            wc,
        ));
    }
    if heads == 0 || c % heads != 0 {
        return Err(Error::shape(
            "attention: channels divisible by heads",
            heads,
            c,
        ));
    }
    Ok(c / heads)
}
