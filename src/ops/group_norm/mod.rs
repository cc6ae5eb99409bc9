//! GroupNorm fused with the SiLU that follows it in every ResNet block: per (image, group)
//! slice of C/G channels × S positions, y = (x − μ)/√(σ² + ε)·γ_c + β_c, then y·σ(y) when asked.
//!
//! [`cpu`] holds the SIMD body, [`mod@reference`] its f64 oracle, [`cuda`] the launch of
//! `kernels/group_norm.cu` with its parameter mirror [`GroupNormParams`], [`emu`] the launch
//! interpreted on the CPU.
//!
//! [`backward`]: the CPU training forward (also keeping (μ, 1/σ) per slice) and backward (dx
//! from dy, the slice's x̂ and 1/σ, two more reductions per slice; dγ, dβ summed over images).

pub mod backward;
pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod reference;

pub use cuda::GroupNormParams;

use super::{Act, check_len, u32_of};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// GroupNorm (+SiLU) on a backend.
pub trait GroupNormOp: Backend {
    /// The kernel: GroupNorm(+SiLU) of `slices` (image, group) slices of x into y, γ and β of
    /// `p.channels` values (the caller checks the sizes, as [`GroupNormOp::group_norm_act`]).
    fn group_norm(
        &self,
        p: &GroupNormParams,
        slices: u32,
        x: &Self::Buf,
        y: &mut Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
    ) -> Result<()>;

    /// GroupNorm of x (B, C, H, W) with `groups` groups, γ and β (C), then SiLU when `silu`.
    fn group_norm_act(
        &self,
        x: &Act<Self::Buf>,
        gamma: &Self::Buf,
        beta: &Self::Buf,
        groups: usize,
        eps: f32,
        silu: bool,
    ) -> Result<Act<Self::Buf>> {
        let [b, c, h, w] = x.shape;
        let p = params(c, groups, h * w, eps, silu)?;
        check_len(self, &x.buf, x.numel(), "group_norm: x (B, C, H, W)")?;
        check_len(self, gamma, c, "group_norm: weight (C)")?;
        check_len(self, beta, c, "group_norm: bias (C)")?;
        let mut y = self.alloc_stale(x.numel().max(1))?; // every slice is written by the kernel
        let slices = u32_of(b * groups, "group_norm: B·groups")?;
        self.group_norm(&p, slices, &x.buf, &mut y, gamma, beta)?;
        Ok(Act {
            shape: x.shape,
            buf: y,
        })
    }
}

/// The launch parameters of C channels in `groups` groups over `spatial` positions.
pub fn params(
    c: usize,
    groups: usize,
    spatial: usize,
    eps: f32,
    silu: bool,
) -> Result<GroupNormParams> {
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(
            "group_norm: channels divisible by groups",
            groups,
            c,
        ));
    }
    Ok(GroupNormParams {
        channels: u32_of(c, "group_norm: C")?,
        groups: groups as u32,
        spatial: u32_of(spatial, "group_norm: H·W")?,
        silu: silu as u32,
        eps,
        pad_: 0.0,
    })
}
