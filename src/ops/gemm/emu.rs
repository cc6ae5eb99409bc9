//! The GEMM launch interpreted on the CPU ([`Emu`]): `gemm_b` and `gemm_c_index` of
//! kernels/gemm.cu, every index checked, one fused multiply-add per k in ascending k (the
//! kernel's order).

use super::{GemmOp, GemmParams, from_bf16};
use crate::backend::Emu;
use crate::backend::emu::idx;
use crate::error::Result;

fn zoff(z: u32, zdiv: u32, outer: i64, inner: i64) -> i64 {
    (z / zdiv) as i64 * outer + (z % zdiv) as i64 * inner
}

/// `gemm_b` of kernels/gemm.cu.
fn gemm_b(p: &GemmParams, b: &[f32], z: u32, row: u32, col: u32) -> Result<f32> {
    if p.b_im2col == 0 {
        let i = zoff(z, p.zdiv, p.b_outer, p.b_inner) + row as i64 * p.b_rs + col as i64 * p.b_cs;
        return Ok(b[idx(i, b.len(), "gemm: B index")?]);
    }
    let hw = p.oh * p.ow;
    let (img, q) = (col / hw, col % hw);
    let (oy, ox) = (q / p.ow, q % p.ow);
    let (ci, r) = (row / (p.kh * p.kw), row % (p.kh * p.kw));
    let (i, j) = (r / p.kw, r % p.kw);
    let iy = (oy * p.stride + i) as i64 - p.pad_t as i64;
    let ix = (ox * p.stride + j) as i64 - p.pad_l as i64;
    if iy < 0 || ix < 0 || iy >= p.ih as i64 || ix >= p.iw as i64 {
        return Ok(0.0);
    }
    let e = ((img as i64 * p.ic as i64 + ci as i64) * p.ih as i64 + iy) * p.iw as i64 + ix;
    Ok(b[idx(e, b.len(), "gemm: im2col index")?])
}

/// `gemm_c_index` of kernels/gemm.cu.
fn gemm_c_index(p: &GemmParams, z: u32, row: u32, col: u32) -> i64 {
    if p.b_im2col != 0 {
        let hw = (p.oh * p.ow) as i64;
        return ((col as i64 / hw) * p.m as i64 + row as i64) * hw + col as i64 % hw;
    }
    zoff(z, p.zdiv, p.c_outer, p.c_inner) + row as i64 * p.c_rs + col as i64 * p.c_cs
}

impl GemmOp for Emu {
    fn gemm(
        &self,
        p: &GemmParams,
        batch: u32,
        (a, ao): (&Vec<f32>, usize),
        (b, bo): (&Vec<f32>, usize),
        (c, co): (&mut Vec<f32>, usize),
        bias: Option<&Vec<f32>>,
    ) -> Result<()> {
        let (a, b) = (&a[ao..], &b[bo..]);
        let mut col = vec![0.0f32; p.k as usize];
        for z in 0..batch {
            let az = zoff(z, p.zdiv, p.a_outer, p.a_inner);
            for j in 0..p.n {
                // column j of B once, then every row of A against it
                for (q, v) in col.iter_mut().enumerate() {
                    *v = gemm_b(p, b, z, q as u32, j)?;
                }
                for i in 0..p.m {
                    // the kernel's order: one fused multiply-add per k, k ascending
                    let mut acc = 0.0f32;
                    for (q, bv) in col.iter().enumerate() {
                        let ai = az + i as i64 * p.a_rs + q as i64 * p.a_cs;
                        let av = if p.a_bf16 != 0 {
                            let word = a[idx(ai / 2, a.len(), "gemm: A index")?].to_bits();
                            from_bf16(if ai % 2 == 0 {
                                word as u16
                            } else {
                                (word >> 16) as u16
                            })
                        } else {
                            a[idx(ai, a.len(), "gemm: A index")?]
                        };
                        acc = av.mul_add(*bv, acc);
                    }
                    let bias_v = match (p.bias_mode, bias) {
                        (1, Some(v)) => Some(v[i as usize]),
                        (2, Some(v)) => Some(v[j as usize]),
                        _ => None,
                    };
                    if let Some(bv) = bias_v {
                        acc += bv;
                    }
                    let o = co + idx(gemm_c_index(p, z, i, j), c.len() - co, "gemm: C index")?;
                    c[o] = if p.accumulate != 0 { c[o] + acc } else { acc };
                }
            }
        }
        Ok(())
    }
}
