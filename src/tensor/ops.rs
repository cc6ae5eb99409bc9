//! Tensor operations on the CPU (see the module docs of [`crate::tensor`]): shape checks on
//! [`Tensor`]s around the kernels of [`crate::ops`] (`ops/*/cpu.rs`). Shapes are written where
//! data is declared; statistics accumulate in f64.

use super::Tensor;
use crate::error::{Error, Result};
pub use crate::ops::attention::cpu::AttnWeights;
pub use crate::ops::conv2d::cpu::ConvWeight;
use crate::ops::{
    attention, conv2d as conv, elementwise, embedding as emb, group_norm as gn, linear as lin,
};

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
    if let Some(b) = b
        && b.shape != [fout]
    {
        return Err(Error::shape("linear: bias", [fout], &b.shape));
    }
    let mut y = Tensor::stale(vec![n, fout]); // (N, out), every element written
    lin::linear(
        &x.data,
        (n, fin),
        &w.data,
        fout,
        b.map(|b| &b.data[..]),
        &mut y.data,
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
    conv2d_packed(x, &conv_weight(w)?, b, stride, pad)
}

/// A (O, C, kh, kw) weight tensor packed into GEMM panels, for layers run many times.
pub fn conv_weight(w: &Tensor) -> Result<ConvWeight> {
    let (o, c, kh, kw) = w.dims4("conv2d: weight")?;
    ConvWeight::new(&w.data, [o, c, kh, kw])
}

/// [`conv2d_padded`] with weights packed beforehand.
pub fn conv2d_packed(
    x: &Tensor,
    w: &ConvWeight,
    b: Option<&Tensor>,
    stride: usize,
    pad: [usize; 4],
) -> Result<Tensor> {
    let (bn, c, h, wd) = x.dims4("conv2d: x")?;
    let (ho, wo) = conv::out_size([bn, c, h, wd], w.shape(), stride, pad)?;
    if let Some(bias) = b
        && bias.shape != [w.shape()[0]]
    {
        return Err(Error::shape("conv2d: bias", [w.shape()[0]], &bias.shape));
    }
    // (B, O, Ho, Wo): every element is written (bias fill, or the GEMM's first K block).
    let mut y = Tensor::stale(vec![bn, w.shape()[0], ho, wo]);
    conv::cpu::conv2d(
        &x.data,
        [bn, c, h, wd],
        w,
        b.map(|b| &b.data[..]),
        stride,
        pad,
        &mut y.data,
    )?;
    Ok(y)
}

/// SiLU in place.
pub fn silu(x: &mut Tensor) {
    elementwise::cpu::silu_par(&mut x.data);
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
    if gamma.shape != [c] || beta.shape != [c] {
        return Err(Error::shape(
            "group_norm: weight/bias",
            [c],
            (&gamma.shape, &beta.shape),
        ));
    }
    let spatial = x.numel() / (bn * c).max(1);
    let p = gn::params(c, groups, spatial, eps, silu_after)?;
    let mut y = Tensor::stale(x.shape.clone()); // every slice is written by the kernel
    let slices = u32::try_from(bn * groups)
        .map_err(|_| Error::shape("group_norm: B·G", u32::MAX, bn * groups))?;
    gn::cpu::group_norm(&p, slices, &x.data, &mut y.data, &gamma.data, &beta.data)?;
    Ok(y)
}

/// Element-wise a + b (same shape).
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.shape != b.shape {
        return Err(Error::shape("add", &a.shape, &b.shape));
    }
    let mut y = Tensor::stale(a.shape.clone());
    elementwise::cpu::add_par(&a.data, &b.data, &mut y.data);
    Ok(y)
}

/// Adds v (B, C) to every position of x (B, C, H, W) in place.
pub fn add_channel_bias(x: &mut Tensor, v: &Tensor) -> Result<()> {
    let (bn, c, h, w) = x.dims4("add_channel_bias: x")?;
    if v.shape != [bn, c] {
        return Err(Error::shape("add_channel_bias: v", [bn, c], &v.shape));
    }
    elementwise::cpu::add_planes_par(&mut x.data, &v.data, h * w);
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
    let mut y = Tensor::stale(vec![bn, c1 + c2, h, w]); // every image's two parts are copied in
    elementwise::cpu::concat_par(&a.data, &b.data, &mut y.data, c1 * h * w, c2 * h * w);
    Ok(y)
}

/// Nearest-neighbour 2× upsampling of (B, C, H, W).
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    let (bn, c, h, w) = x.dims4("upsample_nearest2x")?;
    let mut y = Tensor::stale(vec![bn, c, 2 * h, 2 * w]); // (B, C, 2H, 2W), all written below
    elementwise::cpu::upsample2x_par(&x.data, &mut y.data, h, w);
    Ok(y)
}

/// diffusers' sinusoidal timestep embedding of t (B) into `dim` features (see
/// [`crate::ops::embedding::timestep_embedding`]). (B, dim)
pub fn timestep_embedding(
    t: &[f32],
    dim: usize,
    flip_sin_to_cos: bool,
    shift: f64,
    max_period: f64,
) -> Tensor {
    let mut y = Tensor::zeros(vec![t.len(), dim]);
    emb::timestep_embedding(t, dim, flip_sin_to_cos, shift, max_period, &mut y.data);
    y
}

/// Rows `ids` of an embedding table (N, D). (len(ids), D)
pub fn embedding(table: &Tensor, ids: &[usize]) -> Result<Tensor> {
    let (n, d) = match table.shape[..] {
        [n, d] => (n, d),
        _ => return Err(Error::shape("embedding: table", "(N, D)", &table.shape)),
    };
    Tensor::new(
        vec![ids.len(), d],
        emb::embedding(&table.data, (n, d), ids)?,
    )
}

/// Multi-head self-attention over the H·W positions of x (B, C, H, W) with `heads` heads (see
/// [`crate::ops::attention`]); `norm`: the GroupNorm's γ, β (C), groups, ε; q, k, v, o:
/// (weight (C, C), bias (C)).
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
    fn p<'a>((w, b): (&'a Tensor, &'a Tensor)) -> (&'a [f32], &'a [f32]) {
        (&w.data, &b.data)
    }
    spatial_attention_packed(x, heads, norm, &AttnWeights::new(p(q), p(k), p(v), p(o))?)
}

/// [`spatial_attention`] with the projections packed beforehand.
pub fn spatial_attention_packed(
    x: &Tensor,
    heads: usize,
    norm: (&Tensor, &Tensor, usize, f32),
    wts: &AttnWeights,
) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4("attention: x")?;
    let hn = group_norm(x, norm.2, norm.0, norm.1, norm.3, false)?;
    let mut out = x.clone(); // the residual; W_o·Oᵀ + b_o is accumulated onto it
    attention::cpu::attention(&hn.data, [b, c, h, w], heads, wts, &mut out.data)?;
    Ok(out)
}
