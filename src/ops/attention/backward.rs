//! Training forward and backward of the spatial attention block (see [`super`]): the forward
//! keeps what the backward needs in a caller's buffer of [`saved_len`] values; the backward runs
//! through the output projection, the per-head products and softmax, the Q/K/V projections and
//! the GroupNorm, parameter gradients summed in image order.
//!
//! Per image, in the (C, HW) layout of [`super::cpu`] (X the normalised image, Oᵀ the heads'
//! outputs, dY the incoming gradient):
//!
//! - dW_o += dY·O, db_o += Σ_i dY, dOᵀ = W_oᵀ·dY;
//! - per head, with P_h = softmax(s·Q_h K_hᵀ) recomputed: dP_h = dO_h V_hᵀ,
//!   dV_hᵀ = dO_hᵀ·P_h, dS_h = s·P_h ⊙ (dP_h − rowsum(P_h ⊙ dP_h)), dQ_hᵀ = K_hᵀ·dS_hᵀ,
//!   dK_hᵀ = Q_hᵀ·dS_h;
//! - dW_{q,k,v} += d[Qᵀ;Kᵀ;Vᵀ]·Xᵀ, db_{q,k,v} += Σ_i, dX = [W_q;W_k;W_v]ᵀ·d[Qᵀ;Kᵀ;Vᵀ];
//! - dx = GroupNorm backward of dX (which also gives dγ, dβ) + dY (the residual).
//!
//! Memory: `saved` holds, in this order, the GroupNorm stats (B·G·2), X (B·C·HW), [Qᵀ;Kᵀ;Vᵀ]
//! (B·3C·HW) and Oᵀ (B·C·HW): 2·B·G + 5·B·C·HW values, no HW² term: the softmax P is
//! recomputed per head in the backward (one more HW×HW×d_h GEMM and a row softmax per head,
//! bit-identical to the forward's P). The backward's scratch is dX (B·C·HW), per image in flight
//! 4·C·HW + 2·HW², and per-image parameter partials (4C² + 4C) for at most 2·threads images at
//! a time; the partials are added to the gradients in image order, so the result does not depend
//! on the thread count. Every product is the packed SIMD GEMM ([`sgemm`], transposes as strides),
//! images in parallel. Slow twin: [`super::reference`].

use rayon::prelude::*;

use crate::backend::pool::Pooled;
use crate::error::{Error, Result};
use crate::ops::conv2d::cpu::per_image_tasks;
use crate::ops::gemm::{MatRef, PackedA, sgemm, sgemm_packed};
use crate::ops::group_norm::backward::{group_norm_backward_with, group_norm_forward_save_with};
use crate::ops::softmax::backward::softmax_rows_backward_in_place;
use crate::ops::softmax::cpu::softmax_rows;
use crate::simd::isa::IsaKind;

/// The parameters of one attention block, raw (row-major), as diffusers names them.
#[derive(Clone, Copy)]
pub struct AttnParams<'a> {
    /// group_norm.weight, group_norm.bias (C).
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub groups: usize,
    pub eps: f32,
    pub heads: usize,
    /// (weight (C, C), bias (C)) of to_q, to_k, to_v, to_out.0.
    pub qkvo: [(&'a [f32], &'a [f32]); 4],
}

/// Gradients of one attention block's parameters, accumulated (+=), laid out as [`AttnParams`].
pub struct AttnGrads<'a> {
    pub gamma: &'a mut [f32],
    pub beta: &'a mut [f32],
    pub qkvo: [(&'a mut [f32], &'a mut [f32]); 4],
}

/// Values the training forward keeps for x of `shape` (B, C, H, W) with `heads` heads:
/// 2·B·groups (GroupNorm stats) + 5·B·C·H·W (X, Qᵀ, Kᵀ, Vᵀ, Oᵀ); independent of `heads`.
pub fn saved_len(shape: [usize; 4], heads: usize, groups: usize) -> usize {
    let _ = heads;
    let [b, c, h, w] = shape;
    2 * b * groups + 5 * b * c * h * w
}

/// The sizes of one block over x (B, C, H, W).
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    c: usize,
    /// H·W.
    n: usize,
    /// C / heads.
    dh: usize,
}

impl Dims {
    fn total(&self) -> usize {
        self.b * self.c * self.n
    }
}

/// Checks the parameters against x (B, C, H, W) of `x_len` values.
fn dims(op: &'static str, x_len: usize, shape: [usize; 4], p: &AttnParams<'_>) -> Result<Dims> {
    let [b, c, h, w] = shape;
    let n = h * w;
    let dh = super::head_dim(p.qkvo[0].1.len(), c, p.heads)?;
    crate::ops::group_norm::params(c, p.groups, n, p.eps, false)?;
    let mut lens = vec![(x_len, b * c * n), (p.gamma.len(), c), (p.beta.len(), c)];
    for (wt, bias) in p.qkvo {
        lens.push((wt.len(), c * c));
        lens.push((bias.len(), c));
    }
    check(op, &lens)?;
    Ok(Dims { b, c, n, dh })
}

/// A shape error naming `op` unless each (found, expected) pair agrees.
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

/// [W_q; W_k; W_v] (3C, C) and [b_q; b_k; b_v] (3C).
fn stacked(p: &AttnParams<'_>) -> (Vec<f32>, Vec<f32>) {
    let w = p.qkvo[..3]
        .iter()
        .flat_map(|t| t.0.iter().copied())
        .collect();
    let b = p.qkvo[..3]
        .iter()
        .flat_map(|t| t.1.iter().copied())
        .collect();
    (w, b)
}

/// The saved buffer split as (stats, X, [Qᵀ;Kᵀ;Vᵀ], Oᵀ).
fn split_saved(saved: &[f32], b: usize, groups: usize, total: usize) -> [&[f32]; 4] {
    let (stats, rest) = saved.split_at(2 * b * groups);
    let (xs, rest) = rest.split_at(total);
    let (qkv, o) = rest.split_at(3 * total);
    [stats, xs, qkv, o]
}

/// y = x + attention(x) as [`super::cpu`], keeping [`saved_len`] values in `saved`.
pub fn attention_forward_save(
    x: &[f32],
    shape: [usize; 4],
    p: &AttnParams<'_>,
    y: &mut [f32],
    saved: &mut [f32],
) -> Result<()> {
    attention_forward_save_with(crate::simd::detected(), x, shape, p, y, saved)
}

/// [`attention_forward_save`] with the SIMD bodies of `kind`. x, y (B, C, H, W) and `saved`
/// ([`saved_len`]) must have exactly those lengths.
pub fn attention_forward_save_with(
    kind: IsaKind,
    x: &[f32],
    shape: [usize; 4],
    p: &AttnParams<'_>,
    y: &mut [f32],
    saved: &mut [f32],
) -> Result<()> {
    let op = "attention_forward_save: x, y (B, C, H, W), saved (saved_len)";
    let d = dims(op, x.len(), shape, p)?;
    let (c, n, dh, total) = (d.c, d.n, d.dh, d.total());
    check(
        op,
        &[
            (y.len(), total),
            (saved.len(), saved_len(shape, p.heads, p.groups)),
        ],
    )?;
    let (stats, rest) = saved.split_at_mut(2 * d.b * p.groups);
    let (xs, rest) = rest.split_at_mut(total);
    let (qkv, o) = rest.split_at_mut(3 * total);
    group_norm_forward_save_with(
        kind, x, shape, p.groups, p.gamma, p.beta, p.eps, false, xs, stats,
    )?;
    y.copy_from_slice(x); // the residual
    if total == 0 {
        return Ok(());
    }
    let (wqkv, bqkv) = stacked(p);
    let pq = PackedA::new(kind, MatRef::row_major(&wqkv, 3 * c, c))?;
    let po = PackedA::new(kind, MatRef::row_major(p.qkvo[3].0, c, c))?;
    let bo = p.qkvo[3].1;
    let kind = pq.kind();
    let tasks = Some(per_image_tasks(d.b));
    let scale = 1.0 / (dh as f32).sqrt();
    y.par_chunks_mut(c * n)
        .zip(xs.par_chunks(c * n))
        .zip(qkv.par_chunks_mut(3 * c * n))
        .zip(o.par_chunks_mut(c * n))
        .try_for_each(|(((yb, xb), qb), ob)| -> Result<()> {
            // (3C, HW): rows 0..C are Qᵀ, C..2C Kᵀ, 2C..3C Vᵀ.
            for (row, b) in qb.chunks_mut(n).zip(&bqkv) {
                row.fill(*b);
            }
            sgemm_packed(&pq, &MatRef::row_major(xb, c, n), qb, n, true, tasks)?;
            let qb = &*qb;
            let rows = |r0: usize| MatRef::row_major(&qb[r0 * n..(r0 + dh) * n], dh, n);
            let mut s = Pooled::stale(n * n); // (HW_q, HW_k)
            for hd in 0..p.heads {
                let (qt, kt, vt) = (rows(hd * dh), rows(c + hd * dh), rows(2 * c + hd * dh));
                sgemm(kind, qt.t(), kt, &mut s.0, n, false)?;
                softmax_rows(kind, &mut s.0, n, scale);
                let st = MatRef::row_major(&s.0, n, n).t();
                sgemm(
                    kind,
                    vt,
                    st,
                    &mut ob[hd * dh * n..(hd + 1) * dh * n],
                    n,
                    false,
                )?;
            }
            for (row, b) in yb.chunks_mut(n).zip(bo) {
                row.iter_mut().for_each(|v| *v += b);
            }
            sgemm_packed(&po, &MatRef::row_major(ob, c, n), yb, n, true, tasks)
        })
}

/// dx (overwritten) and the parameter gradients (+=) from dy, the forward's x and `saved`.
pub fn attention_backward(
    x: &[f32],
    shape: [usize; 4],
    p: &AttnParams<'_>,
    saved: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    g: &mut AttnGrads<'_>,
) -> Result<()> {
    attention_backward_with(crate::simd::detected(), x, shape, p, saved, dy, dx, g)
}

/// [`attention_backward`] with the SIMD bodies of `kind`. x, dy, dx (B, C, H, W), `saved`
/// ([`saved_len`]) and the gradients (as the parameters) must have exactly those lengths.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_with(
    kind: IsaKind,
    x: &[f32],
    shape: [usize; 4],
    p: &AttnParams<'_>,
    saved: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    g: &mut AttnGrads<'_>,
) -> Result<()> {
    let op =
        "attention_backward: x, dy, dx (B, C, H, W), saved (saved_len), gradients as parameters";
    let d = dims(op, x.len(), shape, p)?;
    let (b, c, n, total) = (d.b, d.c, d.n, d.total());
    let mut lens = vec![
        (dy.len(), total),
        (dx.len(), total),
        (saved.len(), saved_len(shape, p.heads, p.groups)),
        (g.gamma.len(), c),
        (g.beta.len(), c),
    ];
    for (wt, bias) in &g.qkvo {
        lens.push((wt.len(), c * c));
        lens.push((bias.len(), c));
    }
    check(op, &lens)?;
    if total == 0 {
        return Ok(());
    }
    let [stats, xs, qkv, o] = split_saved(saved, b, p.groups, total);
    let (wqkv, _) = stacked(p);
    // [W_q; W_k; W_v]ᵀ (C, 3C) and W_oᵀ (C, C), packed once for every image.
    let pqt = PackedA::new(kind, MatRef::row_major(&wqkv, 3 * c, c).t())?;
    let pot = PackedA::new(kind, MatRef::row_major(p.qkvo[3].0, c, c).t())?;
    let kind = pqt.kind();
    let ctx = Ctx {
        kind,
        d,
        heads: p.heads,
        pqt: &pqt,
        pot: &pot,
        tasks: Some(per_image_tasks(b)),
        scale: 1.0 / (d.dh as f32).sqrt(),
    };
    let mut dxn = Pooled::stale(total); // dL/dX (B, C, HW)
    // Per image: [dW_q; dW_k; dW_v; dW_o] (4C, C), then [db_q; db_k; db_v; db_o] (4C).
    let plen = 4 * c * c + 4 * c;
    let chunk = (2 * rayon::current_num_threads()).clamp(1, b);
    let mut part = Pooled::stale(chunk * plen);
    let img = c * n;
    for b0 in (0..b).step_by(chunk) {
        let nb = chunk.min(b - b0);
        part.0[..nb * plen]
            .par_chunks_mut(plen)
            .zip(dxn.0[b0 * img..(b0 + nb) * img].par_chunks_mut(img))
            .enumerate()
            .try_for_each(|(k, (pt, dxb))| {
                let i = b0 + k;
                ctx.image(
                    &xs[i * img..][..img],
                    &qkv[3 * i * img..][..3 * img],
                    &o[i * img..][..img],
                    &dy[i * img..][..img],
                    dxb,
                    pt,
                )
            })?;
        // Image order, whatever the chunk: g += partial of image b0, b0 + 1, …
        for pt in part.0.chunks(plen).take(nb) {
            let (pw, pb) = pt.split_at(4 * c * c);
            for (j, (gw, gb)) in g.qkvo.iter_mut().enumerate() {
                add(gw, &pw[j * c * c..(j + 1) * c * c]);
                add(gb, &pb[j * c..(j + 1) * c]);
            }
        }
    }
    group_norm_backward_with(
        kind, x, shape, p.groups, p.gamma, p.beta, false, stats, &dxn.0, dx, g.gamma, g.beta,
    )?;
    dx.par_iter_mut().zip(dy).for_each(|(a, b)| *a += b); // the residual
    Ok(())
}

/// a += b.
fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

/// Σ over each row (length `n`) of `m`, in f64, into `out` (rows).
fn row_sums(m: &[f32], n: usize, out: &mut [f32]) {
    for (row, s) in m.chunks(n).zip(out) {
        *s = row.iter().map(|v| *v as f64).sum::<f64>() as f32;
    }
}

/// What every image's backward shares.
struct Ctx<'a> {
    kind: IsaKind,
    d: Dims,
    heads: usize,
    /// [W_q; W_k; W_v]ᵀ (C, 3C).
    pqt: &'a PackedA,
    /// W_oᵀ (C, C).
    pot: &'a PackedA,
    tasks: Option<usize>,
    scale: f32,
}

impl Ctx<'_> {
    /// One image's backward: dX (C, HW) into `dxb`, its parameter gradients into `pt` (layout
    /// as in [`attention_backward_with`]). xs, o, dy (C, HW); qkv (3C, HW).
    fn image(
        &self,
        xs: &[f32],
        qkv: &[f32],
        o: &[f32],
        dy: &[f32],
        dxb: &mut [f32],
        pt: &mut [f32],
    ) -> Result<()> {
        let (kind, c, n, dh) = (self.kind, self.d.c, self.d.n, self.d.dh);
        let (pw, pb) = pt.split_at_mut(4 * c * c);
        let dym = MatRef::row_major(dy, c, n);
        // dW_o (C, C) = dY (C, HW) · O (HW, C); db_o = Σ_i dY.
        sgemm(
            kind,
            dym,
            MatRef::row_major(o, c, n).t(),
            &mut pw[3 * c * c..],
            c,
            false,
        )?;
        row_sums(dy, n, &mut pb[3 * c..]);
        // dOᵀ (C, HW) = W_oᵀ · dY.
        let mut dot = Pooled::stale(c * n);
        sgemm_packed(self.pot, &dym, &mut dot.0, n, false, self.tasks)?;
        let mut dqkv = Pooled::stale(3 * c * n); // d[Qᵀ; Kᵀ; Vᵀ] (3C, HW)
        let mut pm = Pooled::stale(n * n); // P_h (HW_q, HW_k)
        let mut dpm = Pooled::stale(n * n); // dP_h, then dS_h
        let rows = |r0: usize| MatRef::row_major(&qkv[r0 * n..(r0 + dh) * n], dh, n);
        for hd in 0..self.heads {
            let (qt, kt, vt) = (rows(hd * dh), rows(c + hd * dh), rows(2 * c + hd * dh));
            sgemm(kind, qt.t(), kt, &mut pm.0, n, false)?;
            softmax_rows(kind, &mut pm.0, n, self.scale);
            let doh = MatRef::row_major(&dot.0[hd * dh * n..(hd + 1) * dh * n], dh, n);
            // dP_h (HW_q, HW_k) = dO_h (HW_q, d_h) · V_hᵀ (d_h, HW_k).
            sgemm(kind, doh.t(), vt, &mut dpm.0, n, false)?;
            // dV_hᵀ (d_h, HW_k) = dO_hᵀ · P_h.
            let (dq, rest) = dqkv.0.split_at_mut(c * n);
            let (dk, dv) = rest.split_at_mut(c * n);
            let hs = hd * dh * n..(hd + 1) * dh * n;
            let pmat = MatRef::row_major(&pm.0, n, n);
            sgemm(kind, doh, pmat, &mut dv[hs.clone()], n, false)?;
            // dS_h = s·P ⊙ (dP − rowsum(P ⊙ dP)), in place of dP.
            softmax_rows_backward_in_place(kind, &pm.0, &mut dpm.0, n, self.scale);
            let ds = MatRef::row_major(&dpm.0, n, n);
            // dQ_hᵀ (d_h, HW_q) = K_hᵀ · dS_hᵀ; dK_hᵀ (d_h, HW_k) = Q_hᵀ · dS_h.
            sgemm(kind, kt, ds.t(), &mut dq[hs.clone()], n, false)?;
            sgemm(kind, qt, ds, &mut dk[hs], n, false)?;
        }
        // dW_{q,k,v} (3C, C) = d[Qᵀ;Kᵀ;Vᵀ] (3C, HW) · X (HW, C); db = Σ_i.
        let dm = MatRef::row_major(&dqkv.0, 3 * c, n);
        sgemm(
            kind,
            dm,
            MatRef::row_major(xs, c, n).t(),
            &mut pw[..3 * c * c],
            c,
            false,
        )?;
        row_sums(&dqkv.0, n, &mut pb[..3 * c]);
        // dX (C, HW) = [W_q; W_k; W_v]ᵀ · d[Qᵀ;Kᵀ;Vᵀ].
        sgemm_packed(self.pqt, &dm, dxb, n, false, self.tasks)
    }
}
