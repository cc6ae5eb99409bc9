//! The U-Net's element-wise ops: y = a + b (residual joins), x += v per (image, channel) plane
//! (the time-embedding projection), channel concatenation (skip connections), nearest 2×
//! upsampling, division by a scale (diffusers' output scale factors), SiLU (the time MLP).
//!
//! [`cpu`] holds the SIMD bodies (parallel over chunks), [`mod@reference`] their scalar twins,
//! [`cuda`] the launches of `kernels/elementwise.cu`, [`emu`] the launches interpreted on the
//! CPU. The kernel methods of [`ElementwiseOp`] take flat buffers; its provided methods check
//! (B, C, H, W) shapes and allocate outputs, once for every backend.
//!
//! Backward ([`backward`], CPU): add and concat route dy unchanged (split for concat), the plane
//! add sums dy over each plane, upsampling sums each 2×2 block, the scale divides dy; a device
//! backward would be one more kernel method here.

pub mod backward;
pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod reference;

use super::{Act, check_len, u32_of};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// The element-wise ops on a backend.
pub trait ElementwiseOp: Backend {
    /// y\[i\] = a\[i\] + b\[i\] for i < n.
    fn add(&self, a: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf, n: usize) -> Result<()>;
    /// x\[i\] += v\[i / s\] for i < n.
    fn add_plane(&self, x: &mut Self::Buf, v: &Self::Buf, n: usize, s: u32) -> Result<()>;
    /// y (B, C1 + C2, S) from a (B, C1, S) and b (B, C2, S), n = B·(C1 + C2)·S.
    #[allow(clippy::too_many_arguments)]
    fn concat(
        &self,
        a: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
        n: usize,
        c1: u32,
        c2: u32,
        s: u32,
    ) -> Result<()>;
    /// y (P, 2h, 2w) from x (P, h, w), n = 4·P·h·w.
    fn upsample2x(&self, x: &Self::Buf, y: &mut Self::Buf, n: usize, h: u32, w: u32) -> Result<()>;
    /// x\[i\] /= s for i < n (the CPU divides in f64, the kernels in f32).
    fn scale_div(&self, x: &mut Self::Buf, n: usize, s: f64) -> Result<()>;

    /// a + b (same shape).
    fn add_tensors(&self, a: &Act<Self::Buf>, b: &Act<Self::Buf>) -> Result<Act<Self::Buf>> {
        if a.shape != b.shape {
            return Err(Error::shape("add", a.shape, b.shape));
        }
        let n = a.numel();
        check_len(self, &a.buf, n, "add: a")?;
        check_len(self, &b.buf, n, "add: b")?;
        let mut y = self.alloc_stale(n.max(1))?;
        self.add(&a.buf, &b.buf, &mut y, n)?;
        Ok(Act {
            shape: a.shape,
            buf: y,
        })
    }

    /// x[b, c, ·] += v[b, c], v a host (B, C) array.
    fn add_channel_bias(&self, x: &mut Act<Self::Buf>, v: &[f32]) -> Result<()> {
        let [b, c, h, w] = x.shape;
        if v.len() != b * c {
            return Err(Error::shape("add_channel_bias: v (B, C)", [b, c], v.len()));
        }
        let n = x.numel();
        check_len(self, &x.buf, n, "add_channel_bias: x")?;
        let vb = self.upload(v)?;
        let s = u32_of(h * w, "add_channel_bias: H·W")?;
        if n == 0 {
            return Ok(());
        }
        self.add_plane(&mut x.buf, &vb, n, s)
    }

    /// Concatenation along channels of (B, C1, H, W) and (B, C2, H, W).
    fn concat_channels(&self, a: &Act<Self::Buf>, b: &Act<Self::Buf>) -> Result<Act<Self::Buf>> {
        let ([bn, c1, h, w], [bn2, c2, h2, w2]) = (a.shape, b.shape);
        if (bn, h, w) != (bn2, h2, w2) {
            return Err(Error::shape(
                "concat_channels: (B, ·, H, W)",
                (bn, h, w),
                (bn2, h2, w2),
            ));
        }
        check_len(self, &a.buf, a.numel(), "concat_channels: a")?;
        check_len(self, &b.buf, b.numel(), "concat_channels: b")?;
        let shape = [bn, c1 + c2, h, w];
        let n = shape.iter().product::<usize>();
        let mut y = self.alloc_stale(n.max(1))?; // every image's two parts are copied in
        let (c1, c2) = (u32_of(c1, "concat: C1")?, u32_of(c2, "concat: C2")?);
        let s = u32_of(h * w, "concat: H·W")?;
        if n > 0 {
            self.concat(&a.buf, &b.buf, &mut y, n, c1, c2, s)?;
        }
        Ok(Act { shape, buf: y })
    }

    /// Nearest-neighbour 2× upsampling of (B, C, H, W).
    fn upsample_nearest2x(&self, x: &Act<Self::Buf>) -> Result<Act<Self::Buf>> {
        let [b, c, h, w] = x.shape;
        check_len(self, &x.buf, x.numel(), "upsample_nearest2x: x")?;
        let shape = [b, c, 2 * h, 2 * w];
        let n = shape.iter().product::<usize>();
        let mut y = self.alloc_stale(n.max(1))?; // (B, C, 2H, 2W), all written
        if n > 0 {
            let (h, w) = (u32_of(h, "upsample: H")?, u32_of(w, "upsample: W")?);
            self.upsample2x(&x.buf, &mut y, n, h, w)?;
        }
        Ok(Act { shape, buf: y })
    }

    /// x / s in place.
    fn divide(&self, x: &mut Act<Self::Buf>, s: f64) -> Result<()> {
        let n = x.numel();
        check_len(self, &x.buf, n, "scale: x")?;
        self.scale_div(&mut x.buf, n, s)
    }
}
