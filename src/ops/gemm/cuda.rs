//! The GEMM launch of `kernels/gemm.cu` on the [`Cuda`] backend: [`GemmParams`] mirrors the
//! kernel's parameter struct; grid (N/64, M/64, batch) of 256-thread blocks.

use super::GemmOp;
use crate::backend::Cuda;
use crate::error::Result;

/// Mirrors `GemmParams` in kernels/gemm.cu (#[repr(C)]): C (M, N) = [C +] A·B [+ bias],
/// batched over z; element (i, p) of A at a_off + zoff_a(z) + i·a_rs + p·a_cs, likewise B and
/// C; or B the implicit im2col matrix of a batch of images with C written in NCHW.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmParams {
    pub a_rs: i64,
    pub a_cs: i64,
    pub b_rs: i64,
    pub b_cs: i64,
    pub c_rs: i64,
    pub c_cs: i64,
    pub a_outer: i64,
    pub a_inner: i64,
    pub b_outer: i64,
    pub b_inner: i64,
    pub c_outer: i64,
    pub c_inner: i64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub zdiv: u32,
    pub b_im2col: u32,
    /// 0 none, 1 per row of C, 2 per column.
    pub bias_mode: u32,
    pub accumulate: u32,
    /// A holds bfloat16 values packed two per f32 word ([`super::pack_bf16`]).
    pub a_bf16: u32,
    pub ic: u32,
    pub ih: u32,
    pub iw: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad_t: u32,
    pub pad_l: u32,
    pub oh: u32,
    pub ow: u32,
}

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

    use super::*;
    use crate::backend::Backend;
    use crate::backend::cuda::driver_err;

    // SAFETY: #[repr(C)] plain data laid out as the kernel's `struct GemmParams`.
    unsafe impl DeviceRepr for GemmParams {}

    impl GemmOp for Cuda<'_> {
        fn gemm(
            &self,
            p: &GemmParams,
            batch: u32,
            (a, ao): (&CudaSlice<f32>, usize),
            (b, bo): (&CudaSlice<f32>, usize),
            (c, co): (&mut CudaSlice<f32>, usize),
            bias: Option<&CudaSlice<f32>>,
        ) -> Result<()> {
            let f = self.0.function("gemm", "gemm")?;
            let dummy;
            let bias = match bias {
                Some(v) => v,
                None => {
                    dummy = self.alloc(1)?;
                    &dummy
                }
            };
            let (av, bv) = (a.slice(ao..), b.slice(bo..));
            let mut cv = c.slice_mut(co..);
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(p).arg(&av).arg(&bv).arg(&mut cv).arg(bias);
            let cfg = LaunchConfig {
                grid_dim: (
                    p.n.div_ceil(64).max(1),
                    p.m.div_ceil(64).max(1),
                    batch.max(1),
                ),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `gemm(GemmParams, const float*, const float*, float*,
            // const float*)`; the caller's parameters index inside the buffers (checked on the
            // CPU interpreter by the tests for every launch the U-Net makes).
            unsafe { l.launch(cfg) }.map_err(driver_err("gemm launch"))?;
            Ok(())
        }
    }
}

#[cfg(not(feature = "cuda"))]
impl GemmOp for Cuda<'_> {
    fn gemm(
        &self,
        _: &GemmParams,
        _: u32,
        _: (&Self::Buf, usize),
        _: (&Self::Buf, usize),
        _: (&mut Self::Buf, usize),
        _: Option<&Self::Buf>,
    ) -> Result<()> {
        self.0.unreachable()
    }
}
