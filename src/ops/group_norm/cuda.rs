//! The GroupNorm launch of `kernels/group_norm.cu` on the [`Cuda`] backend: one 256-thread
//! block per (image, group) slice.

use super::GroupNormOp;
use crate::backend::Cuda;
use crate::error::Result;

/// Mirrors `GroupNormParams` in kernels/group_norm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupNormParams {
    pub channels: u32,
    pub groups: u32,
    pub spatial: u32,
    pub silu: u32,
    pub eps: f32,
    pub pad_: f32,
}

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

    use super::*;
    use crate::backend::cuda::driver_err;

    // SAFETY: #[repr(C)] plain data laid out as the kernel's `struct GroupNormParams`.
    unsafe impl DeviceRepr for GroupNormParams {}

    impl GroupNormOp for Cuda<'_> {
        fn group_norm(
            &self,
            p: &GroupNormParams,
            slices: u32,
            x: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            gamma: &CudaSlice<f32>,
            beta: &CudaSlice<f32>,
        ) -> Result<()> {
            let f = self.0.function("group_norm", "group_norm")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(p).arg(x).arg(y).arg(gamma).arg(beta);
            let cfg = LaunchConfig {
                grid_dim: (slices.max(1), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `group_norm(GroupNormParams, const float*, float*, const
            // float*, const float*)`; x and y hold slices · (C/G)·S values, γ and β C (checked
            // by `group_norm_act`).
            unsafe { l.launch(cfg) }.map_err(driver_err("group_norm launch"))?;
            Ok(())
        }
    }
}

#[cfg(not(feature = "cuda"))]
impl GroupNormOp for Cuda<'_> {
    fn group_norm(
        &self,
        _: &GroupNormParams,
        _: u32,
        _: &Self::Buf,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &Self::Buf,
    ) -> Result<()> {
        self.0.unreachable()
    }
}
