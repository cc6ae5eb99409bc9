//! The CPU convolution: weights packed once into GEMM panels ([`ConvWeight`]), images in
//! parallel, each a packed GEMM whose B panels are packed straight from the image (implicit
//! im2col, [`Im2col`]); 1×1 stride-1 convolutions read the image as a stored matrix.

use rayon::prelude::*;

use super::Conv2dOp;
use crate::backend::pool::Pooled;
use crate::backend::{Cpu, Storage};
use crate::error::{Error, Result};
use crate::ops::Act;
use crate::ops::gemm::{Im2col, MatRef, PackedA, sgemm_packed};
use crate::simd::detected;

/// Convolution weights (O, C, kh, kw) packed once into GEMM panels, for layers run many times
/// (a network packs its weights at load).
#[derive(Clone, Debug)]
pub struct ConvWeight {
    packed: PackedA,
    /// (O, C, kh, kw).
    shape: [usize; 4],
}

impl ConvWeight {
    /// Packs w (O, C, kh, kw), row-major.
    pub fn new(w: &[f32], shape: [usize; 4]) -> Result<ConvWeight> {
        let [o, c, kh, kw] = shape;
        if w.len() != o * c * kh * kw {
            return Err(Error::shape(
                "conv2d: weight (O, C, kh, kw)",
                shape,
                w.len(),
            ));
        }
        let packed = PackedA::new(detected(), MatRef::row_major(w, o, c * kh * kw))?;
        Ok(ConvWeight { packed, shape })
    }
    /// (O, C, kh, kw).
    pub fn shape(&self) -> [usize; 4] {
        self.shape
    }
}

/// y (B, O, Ho, Wo) = x (B, C, H, W) * w + bias (O) with weights packed beforehand; y holds
/// B·O·Ho·Wo values, every one written (bias fill, or the GEMM's first K block).
pub fn conv2d(
    x: &[f32],
    xshape: [usize; 4],
    w: &ConvWeight,
    b: Option<&[f32]>,
    stride: usize,
    pad: [usize; 4],
    y: &mut [f32],
) -> Result<(usize, usize)> {
    let [pt, _, pl, _] = pad;
    let [bn, c, h, wd] = xshape; // bn: images, run in parallel below
    let [o, _, kh, kw] = w.shape;
    let (ho, wo) = super::out_size(xshape, w.shape, stride, pad)?;
    let (hw_out, ckk) = (ho * wo, c * kh * kw);
    if x.len() != bn * c * h * wd || y.len() != bn * o * hw_out {
        return Err(Error::shape(
            "conv2d: x (B, C, H, W), y (B, O, Ho, Wo)",
            (bn * c * h * wd, bn * o * hw_out),
            (x.len(), y.len()),
        ));
    }
    if let Some(bias) = b {
        if bias.len() != o {
            return Err(Error::shape("conv2d: bias", [o], bias.len()));
        }
    }
    if y.is_empty() {
        return Ok((ho, wo));
    }
    // Images run in parallel (each GEMM is parallel too; rayon nests); the GEMM packs its B
    // panels straight from the image (implicit im2col), so no (C·kh·kw, Ho·Wo) copy is made.
    let wpack = &w.packed;
    let tasks = Some(per_image_tasks(bn));
    y.par_chunks_mut(o * hw_out)
        .zip(x.par_chunks((c * h * wd).max(1)))
        .try_for_each(|(yb, xb)| -> Result<()> {
            if let Some(bias) = b {
                yb.chunks_mut(hw_out)
                    .zip(bias)
                    .for_each(|(row, v)| row.fill(*v));
            }
            if kh == 1 && kw == 1 && stride == 1 && pad == [0; 4] {
                let xm = MatRef::row_major(xb, ckk, hw_out);
                sgemm_packed(wpack, &xm, yb, hw_out, b.is_some(), tasks)
            } else {
                let cols = Im2col {
                    x: xb,
                    c,
                    h,
                    w: wd,
                    kh,
                    kw,
                    stride,
                    pad_top: pt,
                    pad_left: pl,
                    ho,
                    wo,
                };
                sgemm_packed(wpack, &cols, yb, hw_out, b.is_some(), tasks)
            }
        })?;
    Ok((ho, wo))
}

/// Parallel tasks each image's GEMM should cut itself into when `images` run side by side:
/// together, about twice the pool's threads.
pub(crate) fn per_image_tasks(images: usize) -> usize {
    (2 * rayon::current_num_threads()).div_ceil(images.max(1))
}

impl Conv2dOp for Cpu {
    type ConvWeight = ConvWeight;
    fn conv_weight(&self, w: &[f32], shape: [usize; 4], storage: Storage) -> Result<ConvWeight> {
        if storage != Storage::F32 {
            return Err(Error::Unsupported {
                op: "conv2d (cpu)",
                reason: format!("{storage:?} weights are a device option; the CPU stores f32"),
            });
        }
        ConvWeight::new(w, shape)
    }
    fn conv2d(
        &self,
        x: &Act<Pooled>,
        w: &ConvWeight,
        bias: &Pooled,
        stride: usize,
        pad: [usize; 4],
    ) -> Result<Act<Pooled>> {
        let [b, _, _, _] = x.shape;
        let (ho, wo) = super::out_size(x.shape, w.shape, stride, pad)?;
        let shape = [b, w.shape[0], ho, wo];
        let mut y = Pooled::stale(shape.iter().product()); // every element written
        let n = x.numel();
        let xs = x
            .buf
            .0
            .get(..n)
            .ok_or_else(|| Error::shape("conv2d: x", n, x.buf.0.len()))?;
        conv2d(xs, x.shape, w, Some(&bias.0), stride, pad, &mut y.0)?;
        Ok(Act { shape, buf: y })
    }
}
