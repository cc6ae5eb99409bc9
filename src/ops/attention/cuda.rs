//! The device attention, for every backend with the GEMM, GroupNorm and softmax launches (the
//! GPU and its emulator): [Qᵀ; Kᵀ; Vᵀ] of the batch as one 1×1-convolution GEMM, the scores of
//! all (image, head) pairs as one batched GEMM, one row-softmax launch, the per-head outputs as
//! one batched GEMM, the output projection accumulated onto a copy of x.

use super::AttentionOp;
use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::ops::conv2d::cuda::conv_params;
use crate::ops::gemm::{GemmOp, GemmParams, pack_bf16};
use crate::ops::group_norm::GroupNormOp;
use crate::ops::softmax::SoftmaxOp;
use crate::ops::{Act, check_len, u32_of};

/// An attention block's projections on a device: [W_q; W_k; W_v] (3C, C) and W_o (C, C) in
/// `storage`, their biases (3C) and (C) in f32.
pub struct DevAttnWeight<B> {
    pub c: usize,
    pub qkv: B,
    pub qkv_bias: B,
    pub out: B,
    pub out_bias: B,
    pub storage: Storage,
}

impl<D: GemmOp + GroupNormOp + SoftmaxOp> AttentionOp for D {
    type AttnWeight = DevAttnWeight<D::Buf>;
    fn attn_weight(
        &self,
        [q, k, v, o]: [(&[f32], &[f32]); 4],
        storage: Storage,
    ) -> Result<DevAttnWeight<D::Buf>> {
        let c = q.1.len();
        for (wt, b) in [q, k, v, o] {
            if wt.len() != c * c || b.len() != c {
                return Err(Error::shape(
                    "attention: projections weight (C, C), bias (C)",
                    (c * c, c),
                    (wt.len(), b.len()),
                ));
            }
        }
        let up = |w: &[f32]| match storage {
            Storage::F32 => self.upload(w),
            Storage::Bf16 => self.upload(&pack_bf16(w)),
        };
        let cat = |i: usize| -> Vec<f32> {
            [q, k, v]
                .iter()
                .flat_map(|p| if i == 0 { p.0 } else { p.1 }.iter().copied())
                .collect()
        };
        Ok(DevAttnWeight {
            c,
            qkv: up(&cat(0))?,
            qkv_bias: self.upload(&cat(1))?,
            out: up(o.0)?,
            out_bias: self.upload(o.1)?,
            storage,
        })
    }

    fn attention(
        &self,
        x: &Act<D::Buf>,
        heads: usize,
        (gamma, beta, groups, eps): (&D::Buf, &D::Buf, usize, f32),
        wts: &DevAttnWeight<D::Buf>,
    ) -> Result<Act<D::Buf>> {
        let [b, c, h, w] = x.shape;
        let n = h * w;
        let dh = super::head_dim(wts.c, c, heads)?;
        check_len(self, &x.buf, x.numel(), "attention: x (B, C, H, W)")?;
        let hn = self.group_norm_act(x, gamma, beta, groups, eps, false)?;
        let (cn, nn) = ((c * n) as i64, n as i64);
        // Qᵀ, Kᵀ, Vᵀ: (B, 3C, HW) = [W_q; W_k; W_v] · X per image (a 1×1 convolution).
        let conv1x1 = |m: usize| conv_params(m, x.shape, (1, 1), 1, [0; 4], (h, w), wts.storage);
        let mut qkv = Act {
            shape: [b, 3 * c, h, w],
            buf: self.alloc((b * 3 * c * n).max(1))?,
        };
        self.gemm(
            &conv1x1(3 * c)?,
            1,
            (&wts.qkv, 0),
            (&hn.buf, 0),
            (&mut qkv.buf, 0),
            Some(&wts.qkv_bias),
        )?;
        // S (B·heads, HW, HW): S[z][i][j] = Σ_c Q[b][h·dh + c][i] · K[b][h·dh + c][j].
        let zb = u32_of(b * heads, "attention: B·heads")?;
        let mut s = self.alloc((b * heads * n * n).max(1))?;
        let ps = GemmParams {
            a_rs: 1,
            a_cs: nn,
            b_rs: nn,
            b_cs: 1,
            c_rs: nn,
            c_cs: 1,
            a_outer: 3 * cn,
            a_inner: dh as i64 * nn,
            b_outer: 3 * cn,
            b_inner: dh as i64 * nn,
            c_outer: heads as i64 * nn * nn,
            c_inner: nn * nn,
            m: n as u32,
            n: n as u32,
            k: dh as u32,
            zdiv: heads as u32,
            ..Default::default()
        };
        self.gemm(&ps, zb, (&qkv.buf, 0), (&qkv.buf, c * n), (&mut s, 0), None)?;
        self.softmax_rows(
            &mut s,
            u32_of(b * heads * n, "attention: rows")?,
            n as u32,
            1.0 / (dh as f32).sqrt(),
        )?;
        // Oᵀ (B, C, HW): O_hᵀ[c][i] = Σ_j V[b][h·dh + c][j] · S[z][i][j].
        let mut att = Act {
            shape: x.shape,
            buf: self.alloc(x.numel().max(1))?,
        };
        let po = GemmParams {
            a_rs: nn,
            a_cs: 1,
            b_rs: 1,
            b_cs: nn,
            c_rs: nn,
            c_cs: 1,
            a_outer: 3 * cn,
            a_inner: dh as i64 * nn,
            b_outer: heads as i64 * nn * nn,
            b_inner: nn * nn,
            c_outer: cn,
            c_inner: dh as i64 * nn,
            m: dh as u32,
            n: n as u32,
            k: n as u32,
            zdiv: heads as u32,
            ..Default::default()
        };
        self.gemm(
            &po,
            zb,
            (&qkv.buf, 2 * c * n),
            (&s, 0),
            (&mut att.buf, 0),
            None,
        )?;
        // out = x + W_o · Oᵀ + b_o.
        let mut out = Act {
            shape: x.shape,
            buf: self.copy(&x.buf)?,
        };
        let pout = GemmParams {
            accumulate: 1,
            ..conv1x1(c)?
        };
        self.gemm(
            &pout,
            1,
            (&wts.out, 0),
            (&att.buf, 0),
            (&mut out.buf, 0),
            Some(&wts.out_bias),
        )?;
        Ok(out)
    }
}
