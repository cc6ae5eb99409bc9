//! Backward of the element-wise ops (see [`super`]): add routes dy to both operands, the plane
//! add x\[p, ·\] += v\[p\] sums dy over each plane (dv\[p\] = Σ_s dy\[p, s\]), concat splits dy by
//! channels, nearest 2× upsampling sums each 2×2 block (dx\[i, j\] = Σ_{a,b ∈ {0,1}}
//! dy\[2i + a, 2j + b\]), SiLU multiplies by SiLU′(x) = σ(x)(1 + x(1 − σ(x))), the scale divides dy.
//!
//! One body for every ISA, each the same sequence of correctly rounded operations in every
//! instantiation, so every ISA, every thread count and the scalar twins in [`super::reference`]
//! agree bit for bit (SiLU′'s twin is f64: its `exp` is the lane one). The plane sum sends
//! element i to partial sum i mod [`PARTIALS`] and adds the partials in a fixed tree, whatever the
//! lane count; planes, images and chunks run in parallel on rayon's pool, each written by one task.

use rayon::prelude::*;

use super::cpu::add;
use crate::error::{Error, Result};
use crate::simd::detected;
use crate::simd::isa::{Isa, IsaKind, Scalar};
use crate::simd::math::exp;

/// Partial sums of a plane sum: element i adds into partial i mod PARTIALS (a multiple of every
/// ISA's lane count), then partial k += partial k + w for w = 16, 8, 4, 2, 1.
pub const PARTIALS: usize = 32;

/// Values per parallel task (at least one plane or image).
const CHUNK: usize = 1 << 15;

crate::isa_dispatch! {
    /// Σ x in the fixed order of [`PARTIALS`] partial sums and a pairwise tree.
    pub fn plane_sum(x: &[f32]) -> f32 => plane_sum_kernel
}

#[inline(always)]
unsafe fn plane_sum_kernel<I: Isa>(x: &[f32]) -> f32 {
    let nv = PARTIALS / I::LANES;
    let full = x.len() - x.len() % PARTIALS;
    let mut part = [0.0f32; PARTIALS];
    // SAFETY: every vector lies in 0..full ≤ x.len() (loads) or in `part` (stores, nv·LANES =
    // PARTIALS values).
    unsafe {
        let mut acc = [I::splat(0.0); PARTIALS]; // the first nv hold partials k·LANES..
        for i in (0..full).step_by(PARTIALS) {
            for (k, a) in acc.iter_mut().enumerate().take(nv) {
                *a = I::add(*a, I::load(x.as_ptr().add(i + k * I::LANES)));
            }
        }
        for (k, a) in acc.iter().enumerate().take(nv) {
            I::store(part.as_mut_ptr().add(k * I::LANES), *a);
        }
    }
    for (p, v) in part.iter_mut().zip(&x[full..]) {
        *p += v;
    }
    tree_sum(part)
}

/// partial k += partial k + w for w = PARTIALS/2, …, 1; partial 0.
#[inline(always)]
pub(crate) fn tree_sum(mut part: [f32; PARTIALS]) -> f32 {
    let mut w = PARTIALS / 2;
    while w > 0 {
        for k in 0..w {
            part[k] += part[k + w];
        }
        w /= 2;
    }
    part[0]
}

/// v (P) += Σ_s dy[p, s]: the backward of x[p, ·] += v[p] over P planes of `s` values.
pub fn sum_planes(dy: &[f32], s: usize, v: &mut [f32]) -> Result<()> {
    sum_planes_with(detected(), dy, s, v)
}

/// [`sum_planes`] with ISA `kind`.
pub fn sum_planes_with(kind: IsaKind, dy: &[f32], s: usize, v: &mut [f32]) -> Result<()> {
    if dy.len() != v.len() * s {
        return Err(Error::shape(
            "sum_planes: dy (P, S) for v (P)",
            (v.len(), s),
            dy.len(),
        ));
    }
    if s == 0 {
        return Ok(());
    }
    v.par_iter_mut()
        .zip(dy.par_chunks(s))
        .with_min_len((CHUNK / s).max(1))
        .for_each(|(v, plane)| *v += plane_sum(kind, plane));
    Ok(())
}

/// da (B, C1, S), db (B, C2, S) (overwritten) from dy (B, C1 + C2, S).
pub fn split_channels(
    dy: &[f32],
    [b, c1, c2, s]: [usize; 4],
    da: &mut [f32],
    db: &mut [f32],
) -> Result<()> {
    let (na, nb) = (c1 * s, c2 * s);
    if dy.len() != b * (na + nb) || da.len() != b * na || db.len() != b * nb {
        return Err(Error::shape(
            "split_channels: dy (B, C1 + C2, S), da (B, C1, S), db (B, C2, S)",
            (b * (na + nb), b * na, b * nb),
            (dy.len(), da.len(), db.len()),
        ));
    }
    // (An empty part has no chunks to zip with: the other part is all of dy.)
    if na == 0 {
        db.copy_from_slice(dy);
        return Ok(());
    }
    if nb == 0 {
        da.copy_from_slice(dy);
        return Ok(());
    }
    da.par_chunks_mut(na)
        .zip(db.par_chunks_mut(nb))
        .zip(dy.par_chunks(na + nb))
        .with_min_len((CHUNK / (na + nb)).max(1))
        .for_each(|((a, bb), y)| {
            a.copy_from_slice(&y[..na]);
            bb.copy_from_slice(&y[na..]);
        });
    Ok(())
}

/// dx (P, h, w) (overwritten) from dy (P, 2h, 2w).
pub fn upsample2x_backward(dy: &[f32], h: usize, w: usize, dx: &mut [f32]) -> Result<()> {
    upsample2x_backward_with(detected(), dy, h, w, dx)
}

/// [`upsample2x_backward`] with ISA `kind`: per output row, r = dy\[2i, ·\] + dy\[2i + 1, ·\]
/// (lanes), then dx\[i, j\] = r\[2j\] + r\[2j + 1\].
pub fn upsample2x_backward_with(
    kind: IsaKind,
    dy: &[f32],
    h: usize,
    w: usize,
    dx: &mut [f32],
) -> Result<()> {
    let hw = h * w;
    if (hw == 0 && !dx.is_empty()) || (hw > 0 && dx.len() % hw != 0) || dy.len() != 4 * dx.len() {
        return Err(Error::shape(
            "upsample2x_backward: dy (P, 2h, 2w) = 4·dx, dx (P, h, w) of whole planes",
            (4 * dx.len(), h, w),
            (dy.len(), dx.len()),
        ));
    }
    if hw == 0 {
        return Ok(());
    }
    dx.par_chunks_mut(hw)
        .zip(dy.par_chunks(4 * hw))
        .with_min_len((CHUNK / (4 * hw)).max(1))
        .for_each_init(
            || vec![0.0f32; 2 * w], // (2w) the two input rows summed
            |r, (dst, src)| {
                for (i, out) in dst.chunks_exact_mut(w).enumerate() {
                    let rows = &src[4 * i * w..4 * (i + 1) * w];
                    add(kind, &rows[..2 * w], &rows[2 * w..], r);
                    for (o, pair) in out.iter_mut().zip(r.chunks_exact(2)) {
                        *o = pair[0] + pair[1];
                    }
                }
            },
        );
    Ok(())
}

crate::isa_dispatch! {
    /// dx = dy · SiLU′(x) over the shortest of the three.
    pub fn silu_backward_slice(x: &[f32], dy: &[f32], dx: &mut [f32]) -> () => silu_backward_kernel
}

/// dy · σ(x)(1 + x(1 − σ(x))) with σ(x) = 1/(1 + e^−x), per lane.
#[inline(always)]
unsafe fn silu_grad<I: Isa>(x: I::F, dy: I::F) -> I::F {
    // SAFETY: lane arithmetic only, under the caller's ISA contract.
    unsafe {
        let one = I::splat(1.0);
        let sig = I::div(one, I::add(one, exp::<I>(I::sub(I::splat(0.0), x))));
        I::mul(dy, I::mul(sig, I::fma(x, I::sub(one, sig), one)))
    }
}

#[inline(always)]
unsafe fn silu_backward_kernel<I: Isa>(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let l = I::LANES;
    let n = x.len().min(dy.len()).min(dx.len());
    let full = n - n % l;
    // SAFETY: vector accesses stay below `full` ≤ each length; the tail runs the one-lane
    // instantiation of the same operations (so every ISA gives the same bits).
    unsafe {
        for i in (0..full).step_by(l) {
            let g = silu_grad::<I>(I::load(x.as_ptr().add(i)), I::load(dy.as_ptr().add(i)));
            I::store(dx.as_mut_ptr().add(i), g);
        }
        for i in full..n {
            dx[i] = silu_grad::<Scalar>(x[i], dy[i]);
        }
    }
}

/// dx (overwritten) = dy · SiLU′(x) for the pre-activation x.
pub fn silu_backward(x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    silu_backward_with(detected(), x, dy, dx)
}

/// [`silu_backward`] with ISA `kind`, in parallel chunks.
pub fn silu_backward_with(kind: IsaKind, x: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    if x.len() != dy.len() || dx.len() != x.len() {
        return Err(Error::shape(
            "silu_backward: x, dy, dx of one length",
            (x.len(), x.len(), x.len()),
            (x.len(), dy.len(), dx.len()),
        ));
    }
    const C: usize = 1 << 14;
    dx.par_chunks_mut(C)
        .zip(x.par_chunks(C).zip(dy.par_chunks(C)))
        .for_each(|(dx, (x, dy))| silu_backward_slice(kind, x, dy, dx));
    Ok(())
}
