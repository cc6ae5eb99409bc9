//! The element-wise launches of `kernels/elementwise.cu` on the [`Cuda`] backend: 1-D grids of
//! 256-thread blocks, each kernel looping past its grid.

use super::ElementwiseOp;
use crate::backend::Cuda;
use crate::error::Result;

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::{CudaSlice, PushKernelArg};

    use super::*;
    use crate::backend::cuda::{driver_err, grid_1d};

    impl ElementwiseOp for Cuda<'_> {
        fn add(
            &self,
            a: &CudaSlice<f32>,
            b: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            n: usize,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "add")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(a).arg(b).arg(y).arg(&n);
            // SAFETY: arguments match `add(const float*, const float*, float*, size_t)`; the
            // buffers hold n values.
            unsafe { l.launch(grid_1d(n)) }.map_err(driver_err("add launch"))?;
            Ok(())
        }
        fn add_plane(
            &self,
            x: &mut CudaSlice<f32>,
            v: &CudaSlice<f32>,
            n: usize,
            s: u32,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "add_plane")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(v).arg(&n).arg(&s);
            // SAFETY: arguments match `add_plane(float*, const float*, size_t, unsigned int)`;
            // x holds n values, v n / s.
            unsafe { l.launch(grid_1d(n)) }.map_err(driver_err("add_plane launch"))?;
            Ok(())
        }
        fn concat(
            &self,
            a: &CudaSlice<f32>,
            b: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            n: usize,
            c1: u32,
            c2: u32,
            s: u32,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "concat")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(a).arg(b).arg(y).arg(&n).arg(&c1).arg(&c2).arg(&s);
            // SAFETY: arguments match `concat(const float*, const float*, float*, size_t,
            // unsigned int ×3)`; y holds n = B·(C1+C2)·S values, a and b their parts.
            unsafe { l.launch(grid_1d(n)) }.map_err(driver_err("concat launch"))?;
            Ok(())
        }
        fn upsample2x(
            &self,
            x: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            n: usize,
            h: u32,
            w: u32,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "upsample2x")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(y).arg(&n).arg(&h).arg(&w);
            // SAFETY: arguments match `upsample2x(const float*, float*, size_t, unsigned int,
            // unsigned int)`; y holds n = 4·planes·h·w values, x a quarter.
            unsafe { l.launch(grid_1d(n)) }.map_err(driver_err("upsample launch"))?;
            Ok(())
        }
        fn scale_div(&self, x: &mut CudaSlice<f32>, n: usize, s: f64) -> Result<()> {
            let s = s as f32; // the kernel divides in f32
            let f = self.0.function("elementwise", "scale_div")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(&n).arg(&s);
            // SAFETY: arguments match `scale_div(float*, size_t, float)`; x holds n values.
            unsafe { l.launch(grid_1d(n)) }.map_err(driver_err("scale launch"))?;
            Ok(())
        }
    }
}

#[cfg(not(feature = "cuda"))]
impl ElementwiseOp for Cuda<'_> {
    fn add(&self, _: &Self::Buf, _: &Self::Buf, _: &mut Self::Buf, _: usize) -> Result<()> {
        self.0.unreachable()
    }
    fn add_plane(&self, _: &mut Self::Buf, _: &Self::Buf, _: usize, _: u32) -> Result<()> {
        self.0.unreachable()
    }
    fn concat(
        &self,
        _: &Self::Buf,
        _: &Self::Buf,
        _: &mut Self::Buf,
        _: usize,
        _: u32,
        _: u32,
        _: u32,
    ) -> Result<()> {
        self.0.unreachable()
    }
    fn upsample2x(&self, _: &Self::Buf, _: &mut Self::Buf, _: usize, _: u32, _: u32) -> Result<()> {
        self.0.unreachable()
    }
    fn scale_div(&self, _: &mut Self::Buf, _: usize, _: f64) -> Result<()> {
        self.0.unreachable()
    }
}
