//! The row softmax launch interpreted on the CPU ([`Emu`]): max, exp(scale·(x − max)) in f32,
//! the sum in f64, one multiply by its inverse.

use super::SoftmaxOp;
use crate::backend::Emu;
use crate::error::{Error, Result};

impl SoftmaxOp for Emu {
    fn softmax_rows(&self, x: &mut Vec<f32>, rows: u32, n: u32, scale: f32) -> Result<()> {
        let len = rows as usize * n as usize;
        if x.len() < len {
            return Err(Error::shape("softmax_rows: x (rows, n)", len, x.len()));
        }
        for row in x.chunks_mut(n.max(1) as usize).take(rows as usize) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = (scale * (*v - m)).exp());
            let s: f64 = row.iter().map(|v| *v as f64).sum();
            let inv = (1.0 / s) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
        Ok(())
    }
}
