//! Element-wise kernels of the U-Net: y = a + b (residual joins), x += v (a per-plane
//! constant: the time-embedding projection added to every position of a channel), SiLU x·σ(x)
//! with the lane `exp`, and the copies of concatenation and upsampling. Memory-bound: one vector
//! load per operand and one store per LANES elements, no tail masking (the tail is scalar). One
//! body for every ISA; IEEE addition is exactly rounded, so every ISA and the scalar twins in
//! [`super::reference`] agree bit for bit. The `*_par` functions split the work over rayon's
//! pool; [`Cpu`]'s [`ElementwiseOp`] runs them.

use rayon::prelude::*;

use super::ElementwiseOp;
use crate::backend::Cpu;
use crate::backend::pool::Pooled;
use crate::error::{Error, Result};
use crate::simd::detected;
use crate::simd::isa::Isa;
use crate::simd::math::exp;

crate::isa_dispatch! {
    /// y = a + b over the shortest of the three.
    pub fn add(a: &[f32], b: &[f32], y: &mut [f32]) -> () => add_kernel
}

crate::isa_dispatch! {
    /// x += v.
    pub fn add_scalar(x: &mut [f32], v: f32) -> () => add_scalar_kernel
}

#[inline(always)]
unsafe fn add_kernel<I: Isa>(a: &[f32], b: &[f32], y: &mut [f32]) {
    let n = a.len().min(b.len()).min(y.len());
    let full = n - n % I::LANES;
    // SAFETY: every vector lies in 0..full ≤ the length of each slice.
    unsafe {
        for i in (0..full).step_by(I::LANES) {
            let s = I::add(I::load(a.as_ptr().add(i)), I::load(b.as_ptr().add(i)));
            I::store(y.as_mut_ptr().add(i), s);
        }
    }
    for i in full..n {
        y[i] = a[i] + b[i];
    }
}

#[inline(always)]
unsafe fn add_scalar_kernel<I: Isa>(x: &mut [f32], v: f32) {
    let n = x.len();
    let full = n - n % I::LANES;
    // SAFETY: every vector lies in 0..full ≤ x.len().
    unsafe {
        let vv = I::splat(v);
        for i in (0..full).step_by(I::LANES) {
            let p = x.as_mut_ptr().add(i);
            I::store(p, I::add(I::load(p), vv));
        }
    }
    for e in &mut x[full..] {
        *e += v;
    }
}

crate::isa_dispatch! {
    /// SiLU in place.
    pub fn silu(x: &mut [f32]) -> () => silu_kernel
}

#[inline(always)]
unsafe fn silu_kernel<I: Isa>(x: &mut [f32]) {
    let l = I::LANES;
    let full = x.len() / l * l;
    // SAFETY: vector accesses stay below `full`; the tail is scalar.
    unsafe {
        let (zero, one) = (I::splat(0.0), I::splat(1.0));
        for i in (0..full).step_by(l) {
            let v = I::load(x.as_ptr().add(i));
            I::store(
                x.as_mut_ptr().add(i),
                I::div(v, I::add(one, exp::<I>(I::sub(zero, v)))),
            );
        }
    }
    for v in &mut x[full..] {
        *v /= 1.0 + (-*v).exp();
    }
}

/// Chunk of the parallel additions.
const CHUNK: usize = 1 << 16;

/// y = a + b over the shortest of the three, in parallel chunks.
pub fn add_par(a: &[f32], b: &[f32], y: &mut [f32]) {
    let kind = detected();
    y.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(y, (a, b))| add(kind, a, b, y));
}

/// Each plane of `s` values of x plus its v, planes in parallel.
pub fn add_planes_par(x: &mut [f32], v: &[f32], s: usize) {
    let kind = detected();
    x.par_chunks_mut(s.max(1))
        .zip(v)
        .for_each(|(plane, add)| add_scalar(kind, plane, *add));
}

/// y (B, na + nb) from a (B, na) and b (B, nb), images in parallel.
pub fn concat_par(a: &[f32], b: &[f32], y: &mut [f32], na: usize, nb: usize) {
    y.par_chunks_mut((na + nb).max(1))
        .enumerate()
        .for_each(|(i, y)| {
            y[..na].copy_from_slice(&a[i * na..(i + 1) * na]);
            y[na..].copy_from_slice(&b[i * nb..(i + 1) * nb]);
        });
}

/// y (P, 2h, 2w) the nearest 2× upsampling of x (P, h, w), planes in parallel.
pub fn upsample2x_par(x: &[f32], y: &mut [f32], h: usize, w: usize) {
    y.par_chunks_mut((4 * h * w).max(1))
        .zip(x.par_chunks((h * w).max(1)))
        .for_each(|(dst, src)| {
            for (yy, row) in dst.chunks_mut((2 * w).max(1)).enumerate() {
                let s = &src[(yy / 2) * w..(yy / 2 + 1) * w];
                for (pair, v) in row.chunks_exact_mut(2).zip(s) {
                    pair[0] = *v;
                    pair[1] = *v;
                }
            }
        });
}

/// SiLU in place, in parallel chunks.
pub fn silu_par(x: &mut [f32]) {
    let kind = detected();
    x.par_chunks_mut(1 << 14).for_each(|c| silu(kind, c));
}

/// The first n values of a buffer, or a shape error naming `op`.
fn head<'a>(b: &'a [f32], n: usize, op: &'static str) -> Result<&'a [f32]> {
    b.get(..n).ok_or_else(|| Error::shape(op, n, b.len()))
}

/// [`head`] of a buffer written to.
fn head_mut<'a>(b: &'a mut [f32], n: usize, op: &'static str) -> Result<&'a mut [f32]> {
    let len = b.len();
    b.get_mut(..n).ok_or_else(|| Error::shape(op, n, len))
}

impl ElementwiseOp for Cpu {
    fn add(&self, a: &Pooled, b: &Pooled, y: &mut Pooled, n: usize) -> Result<()> {
        let (a, b) = (head(&a.0, n, "add: a")?, head(&b.0, n, "add: b")?);
        add_par(a, b, head_mut(&mut y.0, n, "add: y")?);
        Ok(())
    }
    fn add_plane(&self, x: &mut Pooled, v: &Pooled, n: usize, s: u32) -> Result<()> {
        let planes = n / (s.max(1) as usize);
        let v = head(&v.0, planes, "add_plane: v")?;
        add_planes_par(head_mut(&mut x.0, n, "add_plane: x")?, v, s as usize);
        Ok(())
    }
    fn concat(
        &self,
        a: &Pooled,
        b: &Pooled,
        y: &mut Pooled,
        n: usize,
        c1: u32,
        c2: u32,
        s: u32,
    ) -> Result<()> {
        let (na, nb) = (c1 as usize * s as usize, c2 as usize * s as usize);
        let images = n / (na + nb).max(1);
        let (a, b) = (
            head(&a.0, images * na, "concat: a")?,
            head(&b.0, images * nb, "concat: b")?,
        );
        concat_par(a, b, head_mut(&mut y.0, n, "concat: y")?, na, nb);
        Ok(())
    }
    fn upsample2x(&self, x: &Pooled, y: &mut Pooled, n: usize, h: u32, w: u32) -> Result<()> {
        let x = head(&x.0, n / 4, "upsample2x: x")?;
        upsample2x_par(
            x,
            head_mut(&mut y.0, n, "upsample2x: y")?,
            h as usize,
            w as usize,
        );
        Ok(())
    }
    fn scale_div(&self, x: &mut Pooled, n: usize, s: f64) -> Result<()> {
        head_mut(&mut x.0, n, "scale: x")?
            .iter_mut()
            .for_each(|v| *v = (*v as f64 / s) as f32);
        Ok(())
    }
}
