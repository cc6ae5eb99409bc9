//! Backward of the convolution y = x * w + b (see [`super`]): with X_b = im2col(x_b)
//! (C·kh·kw, Ho·Wo) per image and dY_b (O, Ho·Wo),
//!
//! dW (O, C·kh·kw) += Σ_b dY_b · X_bᵀ,   db (O) += Σ_b Σ_positions dY_b,   dx_b = col2im(Wᵀ · dY_b),
//!
//! where col2im adds every column entry back onto the input pixel it was read from (entries
//! read from the zero padding are dropped). All lower onto the packed GEMM:
//!
//! - dW: one product per run of images, dY (O, images·Ho·Wo) · [`Im2colT`], whose B panels are
//!   gathered straight from the images (no im2col copy); images with few positions are grouped
//!   (their dY rows copied side by side, at least [`GROUP_POSITIONS`] per product) so the
//!   GEMM's K stays long. The runs go in image order and each product accumulates into dW in
//!   its fixed K order, so dW does not depend on the thread count.
//! - db: per channel, 16 interleaved partial sums per image row in a fixed order, images summed
//!   in order (the same on every ISA and thread count).
//! - dx, stride 1 (and pad_top < kh, pad_left < kw): dx_b is the convolution of dY_b with the
//!   flipped, transposed kernel W′[c, (o, i, j)] = w[o, c, kh−1−i, kw−1−j] under padding
//!   (kh−1−pt, kw−1−pl): the forward's packed GEMM over the implicit im2col of dY_b, writing
//!   dx_b directly. Other strides: the columns Wᵀ · dY_b (C·kh·kw, Ho·Wo) into per-image
//!   scratch, then col2im. Images run in parallel (each dx_b is independent).

use rayon::prelude::*;

use super::cpu::per_image_tasks;
use crate::backend::pool;
use crate::error::{Error, Result};
use crate::ops::gemm::cpu::Im2colT;
use crate::ops::gemm::{Im2col, MatRef, PackedA, sgemm_packed, sgemm_with};
use crate::simd::isa::IsaKind;

/// The least number of output positions (images × Ho·Wo) one weight-gradient product takes:
/// layers with fewer per image group images, so the K loop of the micro-kernel is long.
pub const GROUP_POSITIONS: usize = 1024;

/// dx (B, C, H, W) (overwritten, when asked), dw (O, C, kh, kw) += and db (O) += of
/// y = conv2d(x, w, b, stride, pad) for upstream dy (B, O, Ho, Wo).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward(
    x: &[f32],
    xshape: [usize; 4],
    w: &[f32],
    wshape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    conv2d_backward_with(
        crate::simd::detected(),
        x,
        xshape,
        w,
        wshape,
        stride,
        pad,
        dy,
        dx,
        dw,
        db,
    )
}

/// [`conv2d_backward`] with the GEMM's ISA given (an unavailable one runs the scalar kernel).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_backward_with(
    kind: IsaKind,
    x: &[f32],
    xshape: [usize; 4],
    w: &[f32],
    wshape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    let [bn, c, h, wd] = xshape;
    let [o, _, kh, kw] = wshape;
    let (ho, wo) = super::out_size(xshape, wshape, stride, pad)?;
    let nx = bn * c * h * wd;
    let nw = o * c * kh * kw;
    let ny = bn * o * ho * wo;
    if x.len() != nx || w.len() != nw || dy.len() != ny {
        return Err(Error::shape(
            "conv2d_backward: x (B, C, H, W), w (O, C, kh, kw), dy (B, O, Ho, Wo)",
            (nx, nw, ny),
            (x.len(), w.len(), dy.len()),
        ));
    }
    if dw.len() != nw || db.len() != o {
        return Err(Error::shape(
            "conv2d_backward: dw (O, C, kh, kw), db (O)",
            (nw, o),
            (dw.len(), db.len()),
        ));
    }
    if let Some(dx) = &dx
        && dx.len() != nx
    {
        return Err(Error::shape(
            "conv2d_backward: dx (B, C, H, W)",
            nx,
            dx.len(),
        ));
    }
    let geom = Geom {
        bn,
        c,
        h,
        w: wd,
        o,
        kh,
        kw,
        stride,
        pad,
        ho,
        wo,
    };
    bias_grad(&geom, dy, db);
    weight_grad(kind, &geom, x, dy, dw)?;
    if let Some(dx) = dx {
        input_grad(kind, &geom, w, dy, dx)?;
    }
    Ok(())
}

/// Shapes of one backward call: x (bn, c, h, w), w (o, c, kh, kw), dy (bn, o, ho, wo).
struct Geom {
    bn: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    kh: usize,
    kw: usize,
    stride: usize,
    pad: [usize; 4],
    ho: usize,
    wo: usize,
}

/// db[o] += Σ_b Σ_q dy[b, o, q]: channels in parallel, each in a fixed order.
fn bias_grad(g: &Geom, dy: &[f32], db: &mut [f32]) {
    let hwo = g.ho * g.wo;
    db.par_iter_mut().enumerate().for_each(|(oc, d)| {
        let mut s = 0.0f32;
        for b in 0..g.bn {
            s += sum_fixed(&dy[(b * g.o + oc) * hwo..][..hwo]);
        }
        *d += s;
    });
}

/// Σ v in a fixed order: 16 interleaved partial sums, then a fixed pairwise tree (the same
/// operations whatever the ISA, so the sum is bit-identical on every machine).
fn sum_fixed(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for ch in &mut chunks {
        for (a, x) in acc.iter_mut().zip(ch) {
            *a += *x;
        }
    }
    for (a, x) in acc.iter_mut().zip(chunks.remainder()) {
        *a += *x;
    }
    let mut width = 8;
    while width > 0 {
        for l in 0..width {
            acc[l] += acc[l + width];
        }
        width /= 2;
    }
    acc[0]
}

/// dW (O, C·kh·kw) += dY (O, images·Ho·Wo) · im2col(x)ᵀ, one product per run of images, runs in
/// image order.
fn weight_grad(kind: IsaKind, g: &Geom, x: &[f32], dy: &[f32], dw: &mut [f32]) -> Result<()> {
    let hwo = g.ho * g.wo;
    let (chw, ckk) = (g.c * g.h * g.w, g.c * g.kh * g.kw);
    if dw.is_empty() || g.bn == 0 {
        return Ok(());
    }
    let group = GROUP_POSITIONS.div_ceil(hwo).clamp(1, g.bn);
    // (O, group·Ho·Wo): the dY rows of a run of images side by side (runs of one image read dy
    // in place).
    let mut cat = if group > 1 {
        pool::take_stale(g.o * group * hwo)
    } else {
        Vec::new()
    };
    let mut result = Ok(());
    for b0 in (0..g.bn).step_by(group) {
        let gi = group.min(g.bn - b0);
        let k = gi * hwo;
        let a = if gi == 1 {
            MatRef::row_major(&dy[b0 * g.o * hwo..][..g.o * hwo], g.o, hwo)
        } else {
            cat[..g.o * k]
                .par_chunks_mut(k)
                .enumerate()
                .for_each(|(oc, row)| {
                    for (bi, seg) in row.chunks_mut(hwo).enumerate() {
                        seg.copy_from_slice(&dy[((b0 + bi) * g.o + oc) * hwo..][..hwo]);
                    }
                });
            MatRef::row_major(&cat[..g.o * k], g.o, k)
        };
        let cols = Im2colT {
            x: &x[b0 * chw..(b0 + gi) * chw],
            images: gi,
            c: g.c,
            h: g.h,
            w: g.w,
            kh: g.kh,
            kw: g.kw,
            stride: g.stride,
            pad_top: g.pad[0],
            pad_left: g.pad[2],
            ho: g.ho,
            wo: g.wo,
        };
        result = sgemm_with(kind, a, &cols, dw, ckk, true);
        if result.is_err() {
            break;
        }
    }
    pool::give(cat);
    result
}

/// dx = col2im(Wᵀ · dY) per image, images in parallel.
fn input_grad(kind: IsaKind, g: &Geom, w: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let [pt, _, pl, _] = g.pad;
    let (hw, hwo) = (g.h * g.w, g.ho * g.wo);
    let (chw, ckk, okk) = (g.c * hw, g.c * g.kh * g.kw, g.o * g.kh * g.kw);
    if dx.is_empty() {
        return Ok(());
    }
    if g.o == 0 {
        dx.fill(0.0); // no outputs: nothing flows back
        return Ok(());
    }
    let tasks = Some(per_image_tasks(g.bn));
    if g.stride == 1 && pt < g.kh && pl < g.kw {
        // W′ (C, O·kh·kw), W′[ci, (oc, i, j)] = w[oc, ci, kh−1−i, kw−1−j]
        let mut wf = vec![0.0f32; g.c * okk];
        for (ci, row) in wf.chunks_mut(okk).enumerate() {
            for (r, v) in row.iter_mut().enumerate() {
                let (oc, i, j) = (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw);
                *v = w[((oc * g.c + ci) * g.kh + (g.kh - 1 - i)) * g.kw + (g.kw - 1 - j)];
            }
        }
        let wp = PackedA::new(kind, MatRef::row_major(&wf, g.c, okk))?;
        let plain = g.kh == 1 && g.kw == 1 && g.pad == [0; 4]; // dx_b = Wᵀ · dY_b exactly
        return dx
            .par_chunks_mut(chw)
            .zip(dy.par_chunks(g.o * hwo))
            .try_for_each(|(dxb, dyb)| {
                if plain {
                    let dym = MatRef::row_major(dyb, g.o, hwo);
                    sgemm_packed(&wp, &dym, dxb, hw, false, tasks)
                } else {
                    // im2col of dY_b (O, Ho, Wo) under padding (kh−1−pt, kw−1−pl), H × W outputs
                    let cols = Im2col {
                        x: dyb,
                        c: g.o,
                        h: g.ho,
                        w: g.wo,
                        kh: g.kh,
                        kw: g.kw,
                        stride: 1,
                        pad_top: g.kh - 1 - pt,
                        pad_left: g.kw - 1 - pl,
                        ho: g.h,
                        wo: g.w,
                    };
                    sgemm_packed(&wp, &cols, dxb, hw, false, tasks)
                }
            });
    }
    // Any stride: columns Wᵀ · dY_b (C·kh·kw, Ho·Wo), then col2im.
    let wt = PackedA::new(kind, MatRef::row_major(w, g.o, ckk).t())?; // (C·kh·kw, O)
    dx.par_chunks_mut(chw)
        .zip(dy.par_chunks(g.o * hwo))
        .try_for_each(|(dxb, dyb)| {
            let mut cols = pool::take_stale(ckk * hwo); // every element written by the GEMM
            let dym = MatRef::row_major(dyb, g.o, hwo);
            let r = sgemm_packed(&wt, &dym, &mut cols, hwo, false, tasks);
            if r.is_ok() {
                col2im(g, &cols, dxb);
            }
            pool::give(cols);
            r
        })
}

/// dxb (C, H, W) = the columns (C·kh·kw, Ho·Wo) added back onto the pixels they were read from,
/// padding entries dropped; each pixel sums its entries in row order.
fn col2im(g: &Geom, cols: &[f32], dxb: &mut [f32]) {
    let [pt, _, pl, _] = g.pad;
    let (s, w, hwo) = (g.stride, g.w, g.ho * g.wo);
    dxb.fill(0.0);
    for (ci, dxc) in dxb.chunks_mut(g.h * w).enumerate() {
        for i in 0..g.kh {
            for j in 0..g.kw {
                let r = (ci * g.kh + i) * g.kw + j;
                // Valid ox (0 ≤ ox·s + j − pl < w): lo..hi.
                let lo = pl.saturating_sub(j).div_ceil(s);
                let hi = if w + pl > j {
                    ((w + pl - j - 1) / s + 1).min(g.wo)
                } else {
                    0
                };
                if hi <= lo {
                    continue;
                }
                for oy in 0..g.ho {
                    let iy = (oy * s + i) as isize - pt as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let dxr = &mut dxc[iy as usize * w..(iy as usize + 1) * w];
                    let cr = &cols[r * hwo + oy * g.wo..][..g.wo];
                    for ox in lo..hi {
                        dxr[ox * s + j - pl] += cr[ox];
                    }
                }
            }
        }
    }
}
