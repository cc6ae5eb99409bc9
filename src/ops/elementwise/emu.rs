//! The element-wise launches interpreted on the CPU ([`Emu`]), element by element as the kernels
//! index them (the provided methods of [`ElementwiseOp`] check the sizes).

use super::ElementwiseOp;
use crate::backend::Emu;
use crate::error::Result;

impl ElementwiseOp for Emu {
    fn add(&self, a: &Vec<f32>, b: &Vec<f32>, y: &mut Vec<f32>, n: usize) -> Result<()> {
        (0..n).for_each(|i| y[i] = a[i] + b[i]);
        Ok(())
    }
    fn add_plane(&self, x: &mut Vec<f32>, v: &Vec<f32>, n: usize, s: u32) -> Result<()> {
        (0..n).for_each(|i| x[i] += v[i / s as usize]);
        Ok(())
    }
    fn concat(
        &self,
        a: &Vec<f32>,
        b: &Vec<f32>,
        y: &mut Vec<f32>,
        n: usize,
        c1: u32,
        c2: u32,
        s: u32,
    ) -> Result<()> {
        let (c1, c2, s) = (c1 as usize, c2 as usize, s as usize);
        let per = (c1 + c2) * s;
        for i in 0..n {
            let (img, r) = (i / per, i % per);
            y[i] = if r < c1 * s {
                a[img * c1 * s + r]
            } else {
                b[img * c2 * s + r - c1 * s]
            };
        }
        Ok(())
    }
    fn upsample2x(&self, x: &Vec<f32>, y: &mut Vec<f32>, n: usize, h: u32, w: u32) -> Result<()> {
        let (h, w) = (h as usize, w as usize);
        for i in 0..n {
            let (plane, r) = (i / (4 * h * w), i % (4 * h * w));
            let (yy, xx) = (r / (2 * w), r % (2 * w));
            y[i] = x[plane * h * w + (yy / 2) * w + xx / 2];
        }
        Ok(())
    }
    fn scale_div(&self, x: &mut Vec<f32>, n: usize, s: f64) -> Result<()> {
        let s = s as f32; // the kernel divides in f32
        x[..n].iter_mut().for_each(|v| *v /= s);
        Ok(())
    }
}
