//! Tensor operations (see the module docs of [`crate::tensor`]). Shapes are written where data
//! is declared; statistics accumulate in f64.

use rayon::prelude::*;

use super::Tensor;
use crate::cpu::gemm::{Im2col, MatRef, PackedA, sgemm, sgemm_packed};
use crate::error::{Error, Result};
use crate::simd::detected;

/// y = x · Wᵀ + b for x (N, in), W (out, in), b (out).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (n, fin) = match x.shape[..] {
        [n, f] => (n, f),
        _ => return Err(Error::shape("linear: x", "(N, in)", &x.shape)),
    };
    let (fout, win) = match w.shape[..] {
        [o, i] => (o, i),
        _ => return Err(Error::shape("linear: weight", "(out, in)", &w.shape)),
    };
    if win != fin {
        return Err(Error::shape(
            "linear: weight (out, in) vs x (N, in)",
            (fout, fin),
            (fout, win),
        ));
    }
    if let Some(b) = b {
        if b.shape != [fout] {
            return Err(Error::shape("linear: bias", [fout], &b.shape));
        }
    }
    if n < 8 {
        // A few rows (a time embedding at batch 1): yᵀ (out, N) = W · xᵀ reads W row-major, as
        // the GEMM's A operand, instead of gathering Wᵀ column by column into B panels.
        let mut yt = vec![0.0f32; fout * n]; // (out, N)
        if let Some(b) = b {
            for (row, v) in yt.chunks_mut(n.max(1)).zip(&b.data) {
                row.fill(*v);
            }
        }
        let xt = MatRef::row_major(&x.data, n, fin).t(); // (in, N)
        let wm = MatRef::row_major(&w.data, fout, fin);
        sgemm(detected(), wm, xt, &mut yt, n.max(1), b.is_some())?;
        let mut y = Tensor::stale(vec![n, fout]); // (N, out), every element copied in
        for (i, row) in y.data.chunks_mut(fout.max(1)).enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = yt[j * n + i];
            }
        }
        return Ok(y);
    }
    let mut y = Tensor::zeros(vec![n, fout]); // (N, out)
    if let Some(b) = b {
        y.data
            .chunks_mut(fout)
            .for_each(|row| row.copy_from_slice(&b.data));
    }
    let wt = MatRef::row_major(&w.data, fout, fin).t(); // (in, out)
    sgemm(
        detected(),
        MatRef::row_major(&x.data, n, fin),
        wt,
        &mut y.data,
        fout,
        b.is_some(),
    )?;
    Ok(y)
}

/// 2-D convolution, x (B, C, H, W) * w (O, C, kh, kw) + b (O), stride and zero padding.
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: usize,
) -> Result<Tensor> {
    conv2d_padded(x, w, b, stride, [pad; 4])
}

/// [`conv2d`] with zero padding (top, bottom, left, right), e.g. diffusers' downsampling with
/// `downsample_padding = 0`, which pads only bottom and right by one.
pub fn conv2d_padded(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    stride: usize,
    pad: [usize; 4],
) -> Result<Tensor> {
    conv2d_packed(x, &ConvWeight::new(w)?, b, stride, pad)
}

/// Convolution weights (O, C, kh, kw) packed once into GEMM panels, for layers run many times
/// (a network packs its weights at load).
#[derive(Clone, Debug)]
pub struct ConvWeight {
    packed: PackedA,
    /// (O, C, kh, kw).
    shape: (usize, usize, usize, usize),
}

impl ConvWeight {
    pub fn new(w: &Tensor) -> Result<ConvWeight> {
        let shape = w.dims4("conv2d: weight")?;
        let (o, c, kh, kw) = shape;
        let packed = PackedA::new(detected(), MatRef::row_major(&w.data, o, c * kh * kw))?;
        Ok(ConvWeight { packed, shape })
    }
}

/// [`conv2d_padded`] with weights packed beforehand.
pub fn conv2d_packed(
    x: &Tensor,
    w: &ConvWeight,
    b: Option<&Tensor>,
    stride: usize,
    pad: [usize; 4],
) -> Result<Tensor> {
    let [pt, pb, pl, pr] = pad;
    let (bn, c, h, wd) = x.dims4("conv2d: x")?; // bn: images, run in parallel below
    let (o, wc, kh, kw) = w.shape;
    if wc != c {
        return Err(Error::shape(
            "conv2d: weight (O, C, kh, kw) vs x (B, C, H, W)",
            (o, c, kh, kw),
            (o, wc, kh, kw),
        ));
    }
    if stride == 0 || h + pt + pb < kh || wd + pl + pr < kw {
        return Err(Error::shape(
            "conv2d: kernel larger than padded input",
            (kh, kw),
            (h + pt + pb, wd + pl + pr),
        ));
    }
    let ho = (h + pt + pb - kh) / stride + 1;
    let wo = (wd + pl + pr - kw) / stride + 1;
    let (hw_out, ckk) = (ho * wo, c * kh * kw);
    // (B, O, Ho, Wo): every element is written below (bias fill, or the GEMM's first K block).
    let mut y = Tensor::stale(vec![bn, o, ho, wo]);
    if let Some(bias) = b {
        if bias.shape != [o] {
            return Err(Error::shape("conv2d: bias", [o], &bias.shape));
        }
    }
    // Images run in parallel (each GEMM is parallel too; rayon nests); the GEMM packs its B
    // panels straight from the image (implicit im2col), so no (C·kh·kw, Ho·Wo) copy is made.
    let wpack = &w.packed;
    let tasks = Some(per_image_tasks(bn));
    y.data
        .par_chunks_mut(o * hw_out)
        .zip(x.data.par_chunks(c * h * wd))
        .try_for_each(|(yb, xb)| -> Result<()> {
            if let Some(bias) = b {
                yb.chunks_mut(hw_out)
                    .zip(&bias.data)
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
    Ok(y)
}

/// SiLU in place.
pub fn silu(x: &mut Tensor) {
    let kind = detected();
    x.data
        .par_chunks_mut(1 << 14)
        .for_each(|c| crate::cpu::softmax::silu(kind, c));
}

/// GroupNorm over (C/G, H, W) per (batch, group), then ·γ + β per channel, then SiLU when
/// `silu_after` (the fused pair of every ResNet block). x (B, C, H, W) or (B, C).
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    gamma: &Tensor,
    beta: &Tensor,
    eps: f32,
    silu_after: bool,
) -> Result<Tensor> {
    let (bn, c) = (
        x.shape[0],
        *x.shape
            .get(1)
            .ok_or_else(|| Error::shape("group_norm: x", "(B, C, …)", &x.shape))?,
    );
    if groups == 0 || c % groups != 0 {
        return Err(Error::shape(
            "group_norm: channels divisible by groups",
            groups,
            c,
        ));
    }
    if gamma.shape != [c] || beta.shape != [c] {
        return Err(Error::shape(
            "group_norm: weight/bias",
            [c],
            (&gamma.shape, &beta.shape),
        ));
    }
    let spatial = x.numel() / (bn * c);
    let cg = c / groups;
    // The fused SIMD kernel per (batch, group) slice, slices in parallel.
    let mut y = Tensor::stale(x.shape.clone()); // every slice is written by the kernel
    let kind = crate::simd::detected();
    y.data
        .par_chunks_mut(cg * spatial)
        .zip(x.data.par_chunks(cg * spatial))
        .enumerate()
        .for_each(|(bg, (out, inp))| {
            let g = bg % groups;
            let (ga, be) = (
                &gamma.data[g * cg..(g + 1) * cg],
                &beta.data[g * cg..(g + 1) * cg],
            );
            crate::cpu::group_norm::group_norm_slice(
                kind, inp, out, spatial, ga, be, eps, silu_after,
            );
        });
    Ok(y)
}

/// Element-wise a + b (same shape).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape != b.shape {
        return Err(Error::shape("add", &a.shape, &b.shape));
    }
    let mut y = Tensor::stale(a.shape.clone());
    let kind = detected();
    const CHUNK: usize = 1 << 16;
    y.data
        .par_chunks_mut(CHUNK)
        .zip(a.data.par_chunks(CHUNK).zip(b.data.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| crate::cpu::elementwise::add(kind, a, b, y));
    Ok(y)
}

/// Adds v (B, C) to every position of x (B, C, H, W) in place.
pub fn add_channel_bias(x: &mut Tensor, v: &Tensor) -> Result<()> {
    let (bn, c, h, w) = x.dims4("add_channel_bias: x")?;
    if v.shape != [bn, c] {
        return Err(Error::shape("add_channel_bias: v", [bn, c], &v.shape));
    }
    let kind = detected();
    x.data
        .par_chunks_mut(h * w)
        .zip(&v.data)
        .for_each(|(plane, add)| crate::cpu::elementwise::add_scalar(kind, plane, *add));
    Ok(())
}

/// Concatenation along channels of (B, C1, H, W) and (B, C2, H, W).
pub fn concat_channels(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (bn, c1, h, w) = a.dims4("concat_channels: a")?;
    let (bn2, c2, h2, w2) = b.dims4("concat_channels: b")?;
    if (bn, h, w) != (bn2, h2, w2) {
        return Err(Error::shape(
            "concat_channels: (B, ·, H, W)",
            (bn, h, w),
            (bn2, h2, w2),
        ));
    }
    let (na, nb) = (c1 * h * w, c2 * h * w);
    let mut y = Tensor::stale(vec![bn, c1 + c2, h, w]); // every image's two parts are copied in
    y.data
        .par_chunks_mut((na + nb).max(1))
        .enumerate()
        .for_each(|(i, y)| {
            y[..na].copy_from_slice(&a.data[i * na..(i + 1) * na]);
            y[na..].copy_from_slice(&b.data[i * nb..(i + 1) * nb]);
        });
    Ok(y)
}

/// Nearest-neighbour 2× upsampling of (B, C, H, W).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (bn, c, h, w) = x.dims4("upsample_nearest2x")?;
    let mut y = Tensor::stale(vec![bn, c, 2 * h, 2 * w]); // (B, C, 2H, 2W), all written below
    y.data
        .par_chunks_mut((4 * h * w).max(1))
        .zip(x.data.par_chunks((h * w).max(1)))
        .for_each(|(dst, src)| {
            for (yy, row) in dst.chunks_mut(2 * w).enumerate() {
                let s = &src[(yy / 2) * w..(yy / 2 + 1) * w];
                for (pair, v) in row.chunks_exact_mut(2).zip(s) {
                    pair[0] = *v;
                    pair[1] = *v;
                }
            }
        });
    Ok(y)
}

/// diffusers' sinusoidal timestep embedding of t (B) into `dim` features:
/// freqs_i = exp(−ln(max_period)·i/(half − shift)), emb = [sin(t·f), cos(t·f)] (or [cos, sin]
/// when `flip_sin_to_cos`), zero-padded for odd `dim`. (B, dim)
pub fn timestep_embedding(
    t: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    max_period: f64,
) -> Tensor {
    let half = dim / 2;
    let mut y = Tensor::zeros(vec![t.len(), dim]);
    for (row, &tv) in y.data.chunks_mut(dim).zip(t) {
        for i in 0..half {
            // diffusers computes the exponent, the frequency and t·f in f32 (even in float64 mode).
            let exponent = (-(max_period.ln() as f32) * i as f32) / (half as f64 - shift) as f32;
            let arg = tv * exponent.exp();
            let (s, c) = (arg.sin(), arg.cos());
            if flip_sin_to_cos {
                row[i] = c;
                row[half + i] = s;
            } else {
                row[i] = s;
                row[half + i] = c;
            }
        }
    }
    y
}

/// Rows `ids` of an embedding table (N, D). (len(ids), D)
pub fn embedding(table: &Tensor, ids: &[usize]) -> Result<Tensor> {
    let (n, d) = match table.shape[..] {
        [n, d] => (n, d),
        _ => return Err(Error::shape("embedding: table", "(N, D)", &table.shape)),
    };
    let mut out = Vec::with_capacity(ids.len() * d);
    for &i in ids {
        if i >= n {
            return Err(Error::shape("embedding: index < table rows", n, i));
        }
        out.extend_from_slice(&table.data[i * d..(i + 1) * d]);
    }
    Tensor::new(vec![ids.len(), d], out)
}

/// Multi-head self-attention over the H·W positions of x (B, C, H, W) with `heads` heads:
/// X = GroupNorm(x) as (C, HW); Qᵀ, Kᵀ, Vᵀ = W·X + b; per head softmax(Q_h K_hᵀ/√d_h) V_h; out =
/// x + W_o·Oᵀ + b_o, all in the (C, HW) layout of an image, so nothing is transposed.
///
/// The projection weights are packed once ([`AttnWeights`]); images run in parallel.
#[allow(clippy::too_many_arguments)]
pub fn spatial_attention(
    x: &Tensor,
    heads: usize,
    norm: (&Tensor, &Tensor, usize, f32),
    q: (&Tensor, &Tensor),
    k: (&Tensor, &Tensor),
    v: (&Tensor, &Tensor),
    o: (&Tensor, &Tensor),
) -> Result<Tensor> {
    spatial_attention_packed(x, heads, norm, &AttnWeights::new(q, k, v, o)?)
}

/// The projections of a spatial attention block, (weight (C, C), bias (C)) each, packed once
/// into GEMM panels: [W_q; W_k; W_v] as one (3C, C) operand, and W_o.
#[derive(Clone, Debug)]
pub struct AttnWeights {
    c: usize,
    qkv: PackedA,
    qkv_bias: Vec<f32>,
    out: PackedA,
    out_bias: Vec<f32>,
}

impl AttnWeights {
    pub fn new(
        q: (&Tensor, &Tensor),
        k: (&Tensor, &Tensor),
        v: (&Tensor, &Tensor),
        o: (&Tensor, &Tensor),
    ) -> Result<AttnWeights> {
        let c = q.1.numel();
        for (name, (wt, b)) in [("to_q", q), ("to_k", k), ("to_v", v), ("to_out", o)] {
            if wt.shape != [c, c] || b.shape != [c] {
                return Err(Error::shape(
                    if name == "to_out" {
                        "attention: to_out weight (C, C), bias (C)"
                    } else {
                        "attention: to_q/to_k/to_v weight (C, C), bias (C)"
                    },
                    (c, c, c),
                    (&wt.shape, &b.shape),
                ));
            }
        }
        let wqkv: Vec<f32> = [q.0, k.0, v.0]
            .iter()
            .flat_map(|t| t.data.iter().copied())
            .collect();
        Ok(AttnWeights {
            c,
            qkv: PackedA::new(detected(), MatRef::row_major(&wqkv, 3 * c, c))?,
            qkv_bias: [q.1, k.1, v.1]
                .iter()
                .flat_map(|t| t.data.iter().copied())
                .collect(),
            out: PackedA::new(detected(), MatRef::row_major(&o.0.data, c, c))?,
            out_bias: o.1.data.clone(),
        })
    }
}

/// [`spatial_attention`] with the projections packed beforehand.
pub fn spatial_attention_packed(
    x: &Tensor,
    heads: usize,
    norm: (&Tensor, &Tensor, usize, f32),
    wts: &AttnWeights,
) -> Result<Tensor> {
    let (_, c, h, w) = x.dims4("attention: x")?;
    if wts.c != c {
        return Err(Error::shape(
            "attention: projections (C, C) vs x (B, C, H, W)",
            c,
            wts.c,
        ));
    }
    if heads == 0 || c % heads != 0 {
        return Err(Error::shape(
            "attention: channels divisible by heads",
            heads,
            c,
        ));
    }
    let (n, dh) = (h * w, c / heads);
    let hn = group_norm(x, norm.2, norm.0, norm.1, norm.3, false)?;
    let kind = wts.qkv.kind();
    let (wqkv, wo) = (&wts.qkv, &wts.out);
    let tasks = Some(per_image_tasks(x.shape[0]));
    let scale = 1.0 / (dh as f32).sqrt();
    let mut out = x.clone(); // the residual; W_o·Oᵀ + b_o is accumulated onto it
    out.data
        .par_chunks_mut(c * n)
        .zip(hn.data.par_chunks(c * n))
        .try_for_each(|(ob, xb)| -> Result<()> {
            // (3C, HW): rows 0..C are Qᵀ, C..2C Kᵀ, 2C..3C Vᵀ.
            let mut qkv = super::pool::Scratch::zeroed(3 * c * n);
            for (row, b) in qkv.0.chunks_mut(n).zip(&wts.qkv_bias) {
                row.fill(*b);
            }
            let xm = MatRef::row_major(xb, c, n);
            sgemm_packed(wqkv, &xm, &mut qkv.0, n, true, tasks)?;
            let mut s = super::pool::Scratch::zeroed(n * n); // (HW_q, HW_k)
            let mut att = super::pool::Scratch::zeroed(c * n); // Oᵀ (C, HW)
            let rows = |r0: usize| MatRef::row_major(&qkv.0[r0 * n..(r0 + dh) * n], dh, n);
            for hd in 0..heads {
                // S = Q_h K_hᵀ = (Q_hᵀ)ᵀ K_hᵀ, then row softmax over keys.
                let (qt, kt) = (rows(hd * dh), rows(c + hd * dh));
                sgemm(kind, qt.t(), kt, &mut s.0, n, false)?;
                crate::cpu::softmax::softmax_rows(kind, &mut s.0, n, scale);
                // O_hᵀ (dh, HW_q) = V_hᵀ (dh, HW_k) · Sᵀ.
                let vt = rows(2 * c + hd * dh);
                let st = MatRef::row_major(&s.0, n, n).t();
                sgemm(
                    kind,
                    vt,
                    st,
                    &mut att.0[hd * dh * n..(hd + 1) * dh * n],
                    n,
                    false,
                )?;
            }
            for (row, b) in ob.chunks_mut(n).zip(&wts.out_bias) {
                row.iter_mut().for_each(|y| *y += b);
            }
            sgemm_packed(wo, &MatRef::row_major(&att.0, c, n), ob, n, true, tasks)
        })?;
    Ok(out)
}

/// Parallel tasks each image's GEMM should cut itself into when `images` run side by side:
/// together, about twice the pool's threads.
fn per_image_tasks(images: usize) -> usize {
    (2 * rayon::current_num_threads()).div_ceil(images.max(1))
}
