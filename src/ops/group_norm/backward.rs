//! Backward of GroupNorm(+SiLU) (see [`super`]): per (image, group) slice with x̂ = (x − μ)·r,
//! r = 1/√(σ² + ε), u = γ x̂ + β, y = u (or SiLU(u)): du = dy (or dy·SiLU′(u), SiLU′(u) =
//! σ(u)(1 + u(1 − σ(u)))), dγ += Σ du·x̂, dβ += Σ du, dx = r·(g − mean(g) − x̂·mean(g·x̂)) with
//! g = du·γ. The forward used in training ([`group_norm_forward_save`]) also keeps (μ, r) per
//! slice, so u is recomputed, not stored.
//!
//! Both run per slice in parallel with one SIMD body for every ISA
//! ([`group_norm_forward_save_with`], [`group_norm_backward_with`] take the ISA; the plain names
//! use the detected one). The backward's slice sums Σ du·x̂ and Σ du per channel (f32 lanes
//! folded into f64 every 1024 values) are the per-image partials of dγ, dβ and also give
//! mean(g), mean(g·x̂); the partials are summed over images in image order after the parallel
//! pass, so the result does not depend on the thread count. Slow twins: [`super::reference::group_norm_f64`],
//! [`super::reference::group_norm_backward_f64`].

use rayon::prelude::*;

use super::cpu::{normalise, slice_stats};
use crate::error::{Error, Result};
use crate::simd::isa::{Isa, IsaKind};
use crate::simd::math::exp;

/// Values folded from f32 lanes into f64 at a time.
const FOLD: usize = 1024;

crate::isa_dispatch! {
    /// The training forward of one slice (channels × spatial): y as
    /// [`super::cpu::group_norm_slice`], and (μ, r) into `stats` (2).
    fn forward_slice(x: &[f32], y: &mut [f32], spatial: usize, gamma: &[f32], beta: &[f32], eps: f32, silu: bool, stats: &mut [f32]) -> () => forward_kernel
}

crate::isa_dispatch! {
    /// The backward of one slice: dx from dy, and the slice's per-channel Σ du·x̂ then Σ du
    /// into `part` (2 · channels).
    fn backward_slice(x: &[f32], spatial: usize, gamma: &[f32], beta: &[f32], silu: bool, stats: &[f32], dy: &[f32], dx: &mut [f32], part: &mut [f64]) -> () => backward_kernel
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn forward_kernel<I: Isa>(
    x: &[f32],
    y: &mut [f32],
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
    stats: &mut [f32],
) {
    if x.is_empty() || spatial == 0 {
        stats[0] = 0.0;
        stats[1] = (1.0 / (eps as f64).sqrt()) as f32;
        return;
    }
    // SAFETY: the helpers read/write within the slices (the caller's ISA is available).
    unsafe {
        let (mean, inv) = slice_stats::<I>(x, eps);
        normalise::<I>(x, y, spatial, gamma, beta, (mean, inv), silu);
        stats[0] = mean as f32;
        stats[1] = inv as f32;
    }
}

/// SiLU′(u) = σ(u)·(1 + u·(1 − σ(u))) on lanes.
#[inline(always)]
unsafe fn silu_grad<I: Isa>(u: I::F) -> I::F {
    // SAFETY: register arithmetic only.
    unsafe {
        let one = I::splat(1.0);
        let s = I::div(one, I::add(one, exp::<I>(I::sub(I::splat(0.0), u))));
        I::mul(s, I::fma(u, I::sub(one, s), one))
    }
}

#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn backward_kernel<I: Isa>(
    x: &[f32],
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
    stats: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    part: &mut [f64],
) {
    let n = x.len();
    let cg = gamma.len();
    part.fill(0.0);
    if n == 0 || spatial == 0 {
        return;
    }
    let l = I::LANES;
    let full = spatial / l * l;
    let (mu, r) = (stats[0], stats[1]);
    let mut lanes = [0.0f32; 16];
    // SAFETY: vector accesses stay below `full` ≤ spatial inside each channel row of x, dy, dx
    // (all of length cg·spatial); tails are scalar.
    unsafe {
        let (muv, rv) = (I::splat(mu), I::splat(r));
        // Pass 1: du into dx, per-channel Σ du·x̂ and Σ du.
        for c in 0..cg {
            let (gv, bv) = (I::splat(gamma[c]), I::splat(beta[c]));
            let off = c * spatial;
            let (xc, dyc) = (&x[off..off + spatial], &dy[off..off + spatial]);
            let dxc = &mut dx[off..off + spatial];
            let (mut sdg, mut sdb) = (0.0f64, 0.0f64);
            let mut i = 0;
            while i < full {
                let end = (i + FOLD.max(l) / l * l).min(full);
                let (mut ag, mut ab) = (I::splat(0.0), I::splat(0.0));
                while i < end {
                    let xh = I::mul(I::sub(I::load(xc.as_ptr().add(i)), muv), rv);
                    let mut du = I::load(dyc.as_ptr().add(i));
                    if silu {
                        du = I::mul(du, silu_grad::<I>(I::fma(gv, xh, bv)));
                    }
                    I::store(dxc.as_mut_ptr().add(i), du);
                    ag = I::fma(du, xh, ag);
                    ab = I::add(ab, du);
                    i += l;
                }
                I::store(lanes.as_mut_ptr(), ag);
                sdg += lanes[..l].iter().map(|v| *v as f64).sum::<f64>();
                I::store(lanes.as_mut_ptr(), ab);
                sdb += lanes[..l].iter().map(|v| *v as f64).sum::<f64>();
            }
            for i in full..spatial {
                let xh = (xc[i] - mu) * r;
                let mut du = dyc[i];
                if silu {
                    let u = gamma[c].mul_add(xh, beta[c]);
                    let s = 1.0 / (1.0 + (-u).exp());
                    du *= s * u.mul_add(1.0 - s, 1.0);
                }
                dxc[i] = du;
                sdg += (du * xh) as f64;
                sdb += du as f64;
            }
            part[c] = sdg;
            part[cg + c] = sdb;
        }
        // mean(g) and mean(g·x̂) over the slice, g = du·γ.
        let mg = (0..cg).map(|c| gamma[c] as f64 * part[cg + c]).sum::<f64>() / n as f64;
        let mgx = (0..cg).map(|c| gamma[c] as f64 * part[c]).sum::<f64>() / n as f64;
        // Pass 2: dx = r·γ·du − r·mg − r·mgx·x̂.
        let (k0, k2) = ((-(r as f64) * mg) as f32, (-(r as f64) * mgx) as f32);
        let (k0v, k2v) = (I::splat(k0), I::splat(k2));
        for c in 0..cg {
            let k1 = (r as f64 * gamma[c] as f64) as f32;
            let k1v = I::splat(k1);
            let off = c * spatial;
            let xc = &x[off..off + spatial];
            let dxc = &mut dx[off..off + spatial];
            for i in (0..full).step_by(l) {
                let xh = I::mul(I::sub(I::load(xc.as_ptr().add(i)), muv), rv);
                let du = I::load(dxc.as_ptr().add(i));
                I::store(
                    dxc.as_mut_ptr().add(i),
                    I::fma(k1v, du, I::fma(k2v, xh, k0v)),
                );
            }
            for i in full..spatial {
                let xh = (xc[i] - mu) * r;
                dxc[i] = k1.mul_add(dxc[i], k2.mul_add(xh, k0));
            }
        }
    }
}

/// The sizes of x (B, C, H, W) in `groups` groups: (C/G, H·W, C/G·H·W, B·C·H·W), or a shape
/// error when G does not divide C.
fn sizes(shape: [usize; 4], groups: usize) -> Result<(usize, usize, usize, usize)> {
    let [b, c, h, w] = shape;
    super::params(c, groups, h * w, 1.0, false)?;
    let cg = c / groups;
    Ok((cg, h * w, cg * h * w, b * c * h * w))
}

/// Checks that each (name, length, expected) holds its expected length.
fn check(op: &'static str, lens: &[(usize, usize)]) -> Result<()> {
    if lens.iter().any(|(got, want)| got != want) {
        return Err(Error::shape(
            op,
            lens.iter().map(|l| l.1).collect::<Vec<_>>(),
            lens.iter().map(|l| l.0).collect::<Vec<_>>(),
        ));
    }
    Ok(())
}

/// y = GroupNorm(x)(+SiLU) as [`super::cpu::group_norm`], also writing stats (B·groups·2):
/// (μ, r) per (image, group) slice.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward_save(
    x: &[f32],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
    y: &mut [f32],
    stats: &mut [f32],
) -> Result<()> {
    group_norm_forward_save_with(
        crate::simd::detected(),
        x,
        shape,
        groups,
        gamma,
        beta,
        eps,
        silu,
        y,
        stats,
    )
}

/// [`group_norm_forward_save`] with the SIMD body of `kind`. x, y (B, C, H, W), γ, β (C) and
/// stats (B·groups·2) must have exactly those lengths.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_forward_save_with(
    kind: IsaKind,
    x: &[f32],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
    y: &mut [f32],
    stats: &mut [f32],
) -> Result<()> {
    let (cg, spatial, n, total) = sizes(shape, groups)?;
    let c = shape[1];
    check(
        "group_norm_forward_save: x, y (B, C, H, W), weight, bias (C), stats (B·G·2)",
        &[
            (x.len(), total),
            (y.len(), total),
            (gamma.len(), c),
            (beta.len(), c),
            (stats.len(), shape[0] * groups * 2),
        ],
    )?;
    if n == 0 {
        // Empty slices: (0, 1/√ε) each, as the kernel writes them.
        for s in stats.chunks_mut(2) {
            forward_slice(kind, &[], &mut [], spatial, &[], &[], eps, silu, s);
        }
        return Ok(());
    }
    y.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .zip(stats.par_chunks_mut(2))
        .enumerate()
        .for_each(|(bg, ((out, inp), st))| {
            let g = bg % groups;
            let (ga, be) = (&gamma[g * cg..(g + 1) * cg], &beta[g * cg..(g + 1) * cg]);
            forward_slice(kind, inp, out, spatial, ga, be, eps, silu, st);
        });
    Ok(())
}

/// dx (B, C, H, W) (overwritten), dgamma (C) +=, dbeta (C) += from dy and the forward's x and
/// stats.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward(
    x: &[f32],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
    stats: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    group_norm_backward_with(
        crate::simd::detected(),
        x,
        shape,
        groups,
        gamma,
        beta,
        silu,
        stats,
        dy,
        dx,
        dgamma,
        dbeta,
    )
}

/// [`group_norm_backward`] with the SIMD body of `kind`. x, dy, dx (B, C, H, W), γ, β, dγ, dβ
/// (C) and stats (B·groups·2) must have exactly those lengths. dγ, dβ receive Σ over images
/// (in image order) of each image's f64 slice sums, rounded once to f32 and added.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_with(
    kind: IsaKind,
    x: &[f32],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    silu: bool,
    stats: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> Result<()> {
    let (cg, spatial, n, total) = sizes(shape, groups)?;
    let [b, c, _, _] = shape;
    check(
        "group_norm_backward: x, dy, dx (B, C, H, W), weight, bias, dweight, dbias (C), stats (B·G·2)",
        &[
            (x.len(), total),
            (dy.len(), total),
            (dx.len(), total),
            (gamma.len(), c),
            (beta.len(), c),
            (dgamma.len(), c),
            (dbeta.len(), c),
            (stats.len(), b * groups * 2),
        ],
    )?;
    if n == 0 {
        return Ok(());
    }
    // (B·G, 2·C/G): per slice, Σ du·x̂ per channel then Σ du per channel.
    let mut part = vec![0.0f64; b * groups * 2 * cg];
    dx.par_chunks_mut(n)
        .zip(x.par_chunks(n))
        .zip(dy.par_chunks(n))
        .zip(stats.par_chunks(2))
        .zip(part.par_chunks_mut(2 * cg))
        .enumerate()
        .for_each(|(bg, ((((dxs, xs), dys), st), pt))| {
            let g = bg % groups;
            let (ga, be) = (&gamma[g * cg..(g + 1) * cg], &beta[g * cg..(g + 1) * cg]);
            backward_slice(kind, xs, spatial, ga, be, silu, st, dys, dxs, pt);
        });
    // Image order: Σ_b of slice (b, g)'s sums, per channel.
    for ch in 0..c {
        let (g, j) = (ch / cg, ch % cg);
        let (mut sg, mut sb) = (0.0f64, 0.0f64);
        for img in 0..b {
            let pt = &part[(img * groups + g) * 2 * cg..][..2 * cg];
            sg += pt[j];
            sb += pt[cg + j];
        }
        dgamma[ch] += sg as f32;
        dbeta[ch] += sb as f32;
    }
    Ok(())
}
