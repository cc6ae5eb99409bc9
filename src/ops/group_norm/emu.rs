//! The GroupNorm launch interpreted on the CPU ([`Emu`]): per slice, μ and σ² summed in f64,
//! y = (x − μ)·rstd·γ + β in f32 with one fused multiply-add, then SiLU.

use super::{GroupNormOp, GroupNormParams};
use crate::backend::Emu;
use crate::error::{Error, Result};

impl GroupNormOp for Emu {
    fn group_norm(
        &self,
        p: &GroupNormParams,
        slices: u32,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
    ) -> Result<()> {
        let cg = (p.channels / p.groups.max(1)) as usize;
        let n = cg * p.spatial as usize;
        let total = slices as usize * n;
        let c = p.channels as usize;
        if x.len() < total || y.len() < total || gamma.len() < c || beta.len() < c {
            return Err(Error::shape(
                "group_norm: x, y (slices·C/G·S), weight, bias (C)",
                (total, total, c, c),
                (x.len(), y.len(), gamma.len(), beta.len()),
            ));
        }
        for sl in 0..slices as usize {
            let xs = &x[sl * n..(sl + 1) * n];
            let g = sl % p.groups as usize;
            let mean = (xs.iter().map(|v| *v as f64).sum::<f64>() / n as f64) as f32;
            let var = xs.iter().map(|v| ((v - mean) as f64).powi(2)).sum::<f64>() / n as f64;
            let rstd = (1.0 / (var + p.eps as f64).sqrt()) as f32;
            for (e, v) in xs.iter().enumerate() {
                let c = g * cg + e / p.spatial as usize;
                let mut o = ((v - mean) * rstd).mul_add(gamma[c], beta[c]);
                if p.silu != 0 {
                    o /= 1.0 + (-o).exp();
                }
                y[sl * n + e] = o;
            }
        }
        Ok(())
    }
}
