//! Fused GroupNorm + SiLU on one (batch, group) slice of C/G channels × S positions:
//! μ, σ² over the slice (two passes, f32 lanes summed into f64 every 1024 values),
//! y = (x − μ)/√(σ² + ε)·γ_c + β_c, then y·σ(y) when `silu`. One body for every ISA; its slow twin
//! is [`super::reference::group_norm`].

use rayon::prelude::*;

use super::{GroupNormOp, GroupNormParams};
use crate::backend::Cpu;
use crate::backend::pool::Pooled;
use crate::error::{Error, Result};
use crate::simd::isa::Isa;
use crate::simd::math::exp;

crate::isa_dispatch! {
    /// Normalises `x` (channels × spatial) into `y` with per-channel `gamma`, `beta`.
    pub fn group_norm_slice(x: &[f32], y: &mut [f32], spatial: usize, gamma: &[f32], beta: &[f32], eps: f32, silu: bool) -> () => kernel
}

/// Σ f(x_i) over `x` with lanes of f32 partial sums folded into f64 every 1024 values.
#[inline(always)]
unsafe fn sum_lanes<I: Isa>(x: &[f32], shift: f32, square: bool) -> f64 {
    let l = I::LANES;
    let mut total = 0.0f64;
    let mut lanes = [0.0f32; 16];
    // SAFETY: loads cover `l` elements inside `x` (the tail is summed in scalar code).
    unsafe {
        let s = I::splat(shift);
        let full = x.len() / l * l;
        for block in x[..full].chunks(1024.max(l) / l * l) {
            let mut acc = I::splat(0.0);
            for v in block.chunks_exact(l) {
                let d = I::sub(I::load(v.as_ptr()), s);
                acc = if square {
                    I::fma(d, d, acc)
                } else {
                    I::add(acc, d)
                };
            }
            I::store(lanes.as_mut_ptr(), acc);
            total += lanes[..l].iter().map(|v| *v as f64).sum::<f64>();
        }
        for v in &x[full..] {
            let d = (*v - shift) as f64;
            total += if square { d * d } else { d };
        }
    }
    total
}

/// (μ, 1/√(σ² + ε)) of one slice in f64: the mean, then the variance about the (f32) mean.
/// The slice must not be empty.
#[inline(always)]
pub(super) unsafe fn slice_stats<I: Isa>(x: &[f32], eps: f32) -> (f64, f64) {
    let n = x.len();
    // SAFETY: `sum_lanes` reads within `x` (the caller's ISA is available).
    unsafe {
        let mean = sum_lanes::<I>(x, 0.0, false) / n as f64;
        // Second pass about the (f32) mean for an accurate variance.
        let m32 = mean as f32;
        let d = mean - m32 as f64;
        let var = (sum_lanes::<I>(x, m32, true) / n as f64 - d * d).max(0.0);
        (mean, 1.0 / (var + eps as f64).sqrt())
    }
}

/// y = x·a_c + b_c per channel (a_c = γ_c·inv, b_c = β_c − μ·γ_c·inv), then SiLU when `silu`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn normalise<I: Isa>(
    x: &[f32],
    y: &mut [f32],
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    (mean, inv): (f64, f64),
    silu: bool,
) {
    let l = I::LANES;
    // SAFETY: vector accesses stay below `full` ≤ spatial in each channel row; the tail is scalar.
    unsafe {
        for (c, (xc, yc)) in x.chunks(spatial).zip(y.chunks_mut(spatial)).enumerate() {
            let a = (gamma[c] as f64 * inv) as f32;
            let b = (beta[c] as f64 - mean * gamma[c] as f64 * inv) as f32;
            let (av, bv, one) = (I::splat(a), I::splat(b), I::splat(1.0));
            let full = spatial / l * l;
            for i in (0..full).step_by(l) {
                let z = I::fma(I::load(xc.as_ptr().add(i)), av, bv);
                let out = if silu {
                    I::div(z, I::add(one, exp::<I>(I::sub(I::splat(0.0), z))))
                } else {
                    z
                };
                I::store(yc.as_mut_ptr().add(i), out);
            }
            for i in full..spatial {
                let z = xc[i].mul_add(a, b);
                yc[i] = if silu { z / (1.0 + (-z).exp()) } else { z };
            }
        }
    }
}

#[inline(always)]
unsafe fn kernel<I: Isa>(
    x: &[f32],
    y: &mut [f32],
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) {
    if x.is_empty() || spatial == 0 {
        return;
    }
    // SAFETY: both helpers read/write within the slices (tails handled in scalar code).
    unsafe {
        let stats = slice_stats::<I>(x, eps);
        normalise::<I>(x, y, spatial, gamma, beta, stats, silu);
    }
}

/// The kernel over `slices` (image, group) slices of x into y, slices in parallel; γ, β (C).
pub fn group_norm(
    p: &GroupNormParams,
    slices: u32,
    x: &[f32],
    y: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
) -> Result<()> {
    let (c, groups, spatial) = (p.channels as usize, p.groups as usize, p.spatial as usize);
    let cg = c / groups.max(1);
    let n = cg * spatial;
    let total = slices as usize * n;
    if x.len() < total || y.len() < total || gamma.len() < c || beta.len() < c {
        return Err(Error::shape(
            "group_norm: x, y (slices·C/G·S), weight, bias (C)",
            (total, total, c, c),
            (x.len(), y.len(), gamma.len(), beta.len()),
        ));
    }
    if n == 0 {
        return Ok(());
    }
    let kind = crate::simd::detected();
    y[..total]
        .par_chunks_mut(n)
        .zip(x[..total].par_chunks(n))
        .enumerate()
        .for_each(|(bg, (out, inp))| {
            let g = bg % groups;
            let (ga, be) = (&gamma[g * cg..(g + 1) * cg], &beta[g * cg..(g + 1) * cg]);
            group_norm_slice(kind, inp, out, spatial, ga, be, p.eps, p.silu != 0);
        });
    Ok(())
}

impl GroupNormOp for Cpu {
    fn group_norm(
        &self,
        p: &GroupNormParams,
        slices: u32,
        x: &Pooled,
        y: &mut Pooled,
        gamma: &Pooled,
        beta: &Pooled,
    ) -> Result<()> {
        group_norm(p, slices, &x.0, &mut y.0, &gamma.0, &beta.0)
    }
}
