//! The row softmax launch of `kernels/softmax.cu` on the [`Cuda`] backend: one 256-thread block
//! per row.

use super::SoftmaxOp;
use crate::backend::Cuda;
use crate::error::Result;

#[cfg(feature = "cuda")]
impl SoftmaxOp for Cuda<'_> {
    fn softmax_rows(&self, x: &mut Self::Buf, rows: u32, n: u32, scale: f32) -> Result<()> {
        use crate::backend::Backend;
        use cudarc::driver::{LaunchConfig, PushKernelArg};
        let len = rows as usize * n as usize;
        if self.len(x) < len {
            return Err(crate::Error::shape(
                "softmax_rows: x (rows, n)",
                len,
                self.len(x),
            ));
        }
        let f = self.0.function("softmax", "softmax_rows")?;
        let mut l = self.0.stream.launch_builder(&f);
        l.arg(x).arg(&n).arg(&scale);
        let cfg = LaunchConfig {
            grid_dim: (rows.max(1), 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match `softmax_rows(float*, unsigned int, float)`; x holds
        // rows · n values (checked above).
        unsafe { l.launch(cfg) }.map_err(crate::backend::cuda::driver_err("softmax launch"))?;
        Ok(())
    }
}

#[cfg(not(feature = "cuda"))]
impl SoftmaxOp for Cuda<'_> {
    fn softmax_rows(&self, _: &mut Self::Buf, _: u32, _: u32, _: f32) -> Result<()> {
        self.0.unreachable()
    }
}
