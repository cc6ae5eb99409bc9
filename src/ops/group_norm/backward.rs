//! Backward of GroupNorm(+SiLU) (see [`super`]): per (image, group) slice with x̂ = (x − μ)·r,
//! r = 1/√(σ² + ε), u = γ x̂ + β, y = u (or SiLU(u)): du = dy (or dy·SiLU′(u)), dγ += Σ du·x̂,
//! dβ += Σ du, dx = r·(g − mean(g) − x̂·mean(g·x̂)) with g = du·γ. The forward used in training
//! ([`group_norm_forward_save`]) also keeps (μ, r) per slice, so u is recomputed, not stored.

use crate::error::{Error, Result};

fn todo(op: &'static str) -> Error {
    Error::Unsupported {
        op,
        reason: "not yet implemented".into(),
    }
}

/// y = GroupNorm(x)(+SiLU) as [`super::cpu::group_norm`], also writing stats (B·groups·2):
/// (μ, r) per (image, group) slice.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward_save(
    x: &[f32],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
    y: &mut [f32],
    stats: &mut [f32],
) -> Result<()> {
    let _ = (x, shape, groups, gamma, beta, eps, silu, y, stats);
    Err(todo("group_norm_forward_save"))
}

/// dx (B, C, H, W) (overwritten), dgamma (C) +=, dbeta (C) += from dy and the forward's x and
/// stats.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: &[f32],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
    stats: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let _ = (
        x, shape, groups, gamma, beta, silu, stats, dy, dx, dgamma, dbeta,
    );
    Err(todo("group_norm_backward"))
}
