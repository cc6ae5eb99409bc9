//! The device convolution, for every backend with a GEMM launch ([`GemmOp`]: [`crate::backend::Cuda`]
//! and [`crate::backend::Emu`]): one `kernels/gemm.cu` launch with B the implicit im2col
//! matrix of the batch, C written in NCHW, the bias per row; weights uploaded once, f32 or
//! bfloat16 packed two per word ([`crate::ops::gemm::pack_bf16`]).

use super::{Conv2dOp, out_size};
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::ops::gemm::{GemmOp, GemmParams, pack_bf16};
use crate::ops::{Act, check_len, u32_of};

/// Convolution (or projection) weights on a device: (O, C, kh, kw) row-major, f32 or packed
/// bf16.
pub struct DevWeight<B> {
    pub buf: B,
    /// (O, C, kh, kw).
    pub shape: [usize; 4],
    pub storage: Storage,
}

/// Uploads w (O, C, kh, kw) in `storage`.
pub fn upload_weight<D: GemmOp>(
    d: &D,
    w: &[f32],
    shape: [usize; 4],
    storage: Storage,
) -> Result<DevWeight<D::Buf>> {
    if w.len() != shape.iter().product::<usize>() {
        return Err(Error::shape(
            "conv2d: weight (O, C, kh, kw)",
            shape,
            w.len(),
        ));
    }
    let buf = match storage {
        Storage::F32 => d.upload(w)?,
        Storage::Bf16 => d.upload(&pack_bf16(w))?,
    };
    Ok(DevWeight {
        buf,
        shape,
        storage,
    })
}

/// The GEMM of a convolution with `m` output channels over x (B, C, H, W) as implicit im2col:
/// kernel (kh, kw), stride, padding (top, bottom, left, right), output (Ho, Wo), per-channel
/// bias, NCHW output, weights in `storage`.
pub fn conv_params(
    m: usize,
    [b, c, h, w]: [usize; 4],
    (kh, kw): (usize, usize),
    stride: usize,
    pad: [usize; 4],
    (ho, wo): (usize, usize),
    storage: Storage,
) -> Result<GemmParams> {
    let k = c * kh * kw;
    Ok(GemmParams {
        a_rs: k as i64,
        a_cs: 1,
        m: u32_of(m, "conv: output channels")?,
        n: u32_of(b * ho * wo, "conv: B·Ho·Wo")?,
        k: u32_of(k, "conv: C·kh·kw")?,
        zdiv: 1,
        b_im2col: 1,
        bias_mode: 1,
        a_bf16: (storage == Storage::Bf16) as u32,
        ic: u32_of(c, "conv: C")?,
        ih: u32_of(h, "conv: H")?,
        iw: u32_of(w, "conv: W")?,
        kh: u32_of(kh, "conv: kh")?,
        kw: u32_of(kw, "conv: kw")?,
        stride: u32_of(stride, "conv: stride")?,
        pad_t: u32_of(pad[0], "conv: padding")?,
        pad_l: u32_of(pad[2], "conv: padding")?,
        oh: u32_of(ho, "conv: Ho")?,
        ow: u32_of(wo, "conv: Wo")?,
        ..Default::default()
    })
}

impl<D: GemmOp> Conv2dOp for D {
    type ConvWeight = DevWeight<D::Buf>;
    fn conv_weight(
        &self,
        w: &[f32],
        shape: [usize; 4],
        storage: Storage,
    ) -> Result<DevWeight<D::Buf>> {
        upload_weight(self, w, shape, storage)
    }
    fn conv2d(
        &self,
        x: &Act<D::Buf>,
        w: &DevWeight<D::Buf>,
        bias: &D::Buf,
        stride: usize,
        pad: [usize; 4],
    ) -> Result<Act<D::Buf>> {
        let [o, _, kh, kw] = w.shape;
        let (ho, wo) = out_size(x.shape, w.shape, stride, pad)?;
        check_len(self, &x.buf, x.numel(), "conv2d: x (B, C, H, W)")?;
        check_len(self, bias, o, "conv2d: bias (O)")?;
        let p = conv_params(o, x.shape, (kh, kw), stride, pad, (ho, wo), w.storage)?;
        let shape = [x.shape[0], o, ho, wo];
        let mut y = self.alloc(shape.iter().product::<usize>().max(1))?;
        self.gemm(&p, 1, (&w.buf, 0), (&x.buf, 0), (&mut y, 0), Some(bias))?;
        Ok(Act { shape, buf: y })
    }
}
