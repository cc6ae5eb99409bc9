//! The CPU spatial attention: the projections packed once ([`AttnWeights`]), images in
//! parallel, per image one packed GEMM for [Qᵀ; Kᵀ; Vᵀ], per head two GEMMs around the SIMD row
//! softmax, one packed GEMM for the output projection onto the residual; all in the (C, HW)
//! layout of an image, so nothing is transposed.

use rayon::prelude::*;

use super::AttentionOp;
use crate::backend::pool::Pooled;
use crate::backend::{Backend, Cpu, Storage};
use crate::error::{Error, Result};
use crate::ops::Act;
use crate::ops::conv2d::cpu::per_image_tasks;
use crate::ops::gemm::{MatRef, PackedA, sgemm, sgemm_packed};
use crate::ops::group_norm::GroupNormOp;
use crate::ops::softmax::cpu::softmax_rows;
use crate::simd::detected;

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
    /// Packs (weight (C, C) row-major, bias (C)) of to_q, to_k, to_v and to_out.
    pub fn new(
        q: (&[f32], &[f32]),
        k: (&[f32], &[f32]),
        v: (&[f32], &[f32]),
        o: (&[f32], &[f32]),
    ) -> Result<AttnWeights> {
        let c = q.1.len();
        for (name, (wt, b)) in [("to_q", q), ("to_k", k), ("to_v", v), ("to_out", o)] {
            if wt.len() != c * c || b.len() != c {
                return Err(Error::shape(
                    if name == "to_out" {
                        "attention: to_out weight (C, C), bias (C)"
                    } else {
                        "attention: to_q/to_k/to_v weight (C, C), bias (C)"
                    },
                    (c, c, c),
                    (wt.len(), b.len()),
                ));
            }
        }
        let wqkv: Vec<f32> = [q.0, k.0, v.0]
            .iter()
            .flat_map(|t| t.iter().copied())
            .collect();
        Ok(AttnWeights {
            c,
            qkv: PackedA::new(detected(), MatRef::row_major(&wqkv, 3 * c, c))?,
            qkv_bias: [q.1, k.1, v.1]
                .iter()
                .flat_map(|t| t.iter().copied())
                .collect(),
            out: PackedA::new(detected(), MatRef::row_major(o.0, c, c))?,
            out_bias: o.1.to_vec(),
        })
    }
}

/// The attention of normalised images hn (B, C, H, W) with `heads` heads accumulated onto out
/// (B, C, H, W), which holds the residual x: out += W_o·Oᵀ + b_o, images in parallel.
pub fn attention(
    hn: &[f32],
    [bn, c, h, w]: [usize; 4],
    heads: usize,
    wts: &AttnWeights,
    out: &mut [f32],
) -> Result<()> {
    let (n, dh) = (h * w, super::head_dim(wts.c, c, heads)?);
    if hn.len() != bn * c * n || out.len() != bn * c * n {
        return Err(Error::shape(
            "attention: x, out (B, C, H, W)",
            bn * c * n,
            (hn.len(), out.len()),
        ));
    }
    if out.is_empty() {
        return Ok(());
    }
    let kind = wts.qkv.kind();
    let (wqkv, wo) = (&wts.qkv, &wts.out);
    let tasks = Some(per_image_tasks(bn));
    let scale = 1.0 / (dh as f32).sqrt();
    out.par_chunks_mut(c * n)
        .zip(hn.par_chunks(c * n))
        .try_for_each(|(ob, xb)| -> Result<()> {
            // (3C, HW): rows 0..C are Qᵀ, C..2C Kᵀ, 2C..3C Vᵀ.
            let mut qkv = Pooled::zeroed(3 * c * n);
            for (row, b) in qkv.0.chunks_mut(n).zip(&wts.qkv_bias) {
                row.fill(*b);
            }
            let xm = MatRef::row_major(xb, c, n);
            sgemm_packed(wqkv, &xm, &mut qkv.0, n, true, tasks)?;
            let mut s = Pooled::zeroed(n * n); // (HW_q, HW_k)
            let mut att = Pooled::zeroed(c * n); // Oᵀ (C, HW)
            let rows = |r0: usize| MatRef::row_major(&qkv.0[r0 * n..(r0 + dh) * n], dh, n);
            for hd in 0..heads {
                // S = Q_h K_hᵀ = (Q_hᵀ)ᵀ K_hᵀ, then row softmax over keys.
                let (qt, kt) = (rows(hd * dh), rows(c + hd * dh));
                sgemm(kind, qt.t(), kt, &mut s.0, n, false)?;
                softmax_rows(kind, &mut s.0, n, scale);
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
        })
}

impl AttentionOp for Cpu {
    type AttnWeight = AttnWeights;
    fn attn_weight(&self, qkvo: [(&[f32], &[f32]); 4], storage: Storage) -> Result<AttnWeights> {
        if storage != Storage::F32 {
            return Err(Error::Unsupported {
                op: "attention (cpu)",
                reason: format!("{storage:?} weights are a device option; the CPU stores f32"),
            });
        }
        let [q, k, v, o] = qkvo;
        AttnWeights::new(q, k, v, o)
    }
    fn attention(
        &self,
        x: &Act<Pooled>,
        heads: usize,
        (gamma, beta, groups, eps): (&Pooled, &Pooled, usize, f32),
        w: &AttnWeights,
    ) -> Result<Act<Pooled>> {
        let hn = self.group_norm_act(x, gamma, beta, groups, eps, false)?;
        let n = x.numel();
        let mut out = self.upload(&x.buf.0[..n.min(x.buf.0.len())])?; // the residual
        attention(&hn.buf.0[..n], x.shape, heads, w, &mut out.0)?;
        Ok(Act {
            shape: x.shape,
            buf: out,
        })
    }
}
