//! The U-Net's device operations, behind one trait ([`Dev`]) with two implementations: the GPU
//! (launches of `kernels/gemm.cu`, `group_norm.cu`, `softmax.cu`, `elementwise.cu`; feature
//! `cuda`) and [`Emu`], a CPU interpreter of the same launches (same parameters, same index
//! arithmetic, the products summed in the kernel's order) that lets the GPU forward's
//! orchestration (shapes, strides, offsets of every launch) be tested where no GPU exists.

use crate::error::{Error, Result};

/// Mirrors `GemmParams` in kernels/gemm.cu (#[repr(C)]): C (M, N) = [C +] A·B [+ bias],
/// batched over z; element (i, p) of A at a_off + zoff_a(z) + i·a_rs + p·a_cs, likewise B and
/// C; or B the implicit im2col matrix of a batch of images with C written in NCHW.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GemmParams {
    pub a_rs: i64,
    pub a_cs: i64,
    pub b_rs: i64,
    pub b_cs: i64,
    pub c_rs: i64,
    pub c_cs: i64,
    pub a_outer: i64,
    pub a_inner: i64,
    pub b_outer: i64,
    pub b_inner: i64,
    pub c_outer: i64,
    pub c_inner: i64,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub zdiv: u32,
    pub b_im2col: u32,
    /// 0 none, 1 per row of C, 2 per column.
    pub bias_mode: u32,
    pub accumulate: u32,
    /// A holds bfloat16 values packed two per f32 word ([`pack_bf16`]).
    pub a_bf16: u32,
    pub ic: u32,
    pub ih: u32,
    pub iw: u32,
    pub kh: u32,
    pub kw: u32,
    pub stride: u32,
    pub pad_t: u32,
    pub pad_l: u32,
    pub oh: u32,
    pub ow: u32,
}

/// Mirrors `GroupNormParams` in kernels/group_norm.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GroupNormParams {
    pub channels: u32,
    pub groups: u32,
    pub spatial: u32,
    pub silu: u32,
    pub eps: f32,
    pub pad_: f32,
}

/// x rounded to bfloat16 (nearest, ties to even), as its 16 bits.
pub fn to_bf16(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7fc0;
    }
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bfloat16 bits widened (exactly) to f32.
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// `v` rounded to bfloat16 and packed two per f32 word (element i in the low half of word i/2
/// when i is even, the GEMM's A layout when `a_bf16` is set).
pub fn pack_bf16(v: &[f32]) -> Vec<f32> {
    v.chunks(2)
        .map(|p| {
            let lo = to_bf16(p[0]) as u32;
            let hi = p.get(1).map_or(0, |x| to_bf16(*x) as u32);
            f32::from_bits(lo | hi << 16)
        })
        .collect()
}

/// A device that runs the U-Net's kernels on its buffers. Offsets are in elements.
pub trait Dev {
    type Buf;
    fn alloc(&self, n: usize) -> Result<Self::Buf>;
    fn upload(&self, v: &[f32]) -> Result<Self::Buf>;
    fn download(&self, b: &Self::Buf) -> Result<Vec<f32>>;
    fn copy(&self, b: &Self::Buf) -> Result<Self::Buf>;
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        p: &GemmParams,
        batch: u32,
        a: (&Self::Buf, usize),
        b: (&Self::Buf, usize),
        c: (&mut Self::Buf, usize),
        bias: Option<&Self::Buf>,
    ) -> Result<()>;
    /// GroupNorm(+SiLU) of `slices` (image, group) slices of x into y.
    fn group_norm(
        &self,
        p: &GroupNormParams,
        slices: u32,
        x: &Self::Buf,
        y: &mut Self::Buf,
        gamma: &Self::Buf,
        beta: &Self::Buf,
    ) -> Result<()>;
    fn softmax_rows(&self, x: &mut Self::Buf, rows: u32, n: u32, scale: f32) -> Result<()>;
    fn add(&self, a: &Self::Buf, b: &Self::Buf, y: &mut Self::Buf, n: usize) -> Result<()>;
    /// x\[i\] += v\[i / s\] for i < n.
    fn add_plane(&self, x: &mut Self::Buf, v: &Self::Buf, n: usize, s: u32) -> Result<()>;
    #[allow(clippy::too_many_arguments)]
    fn concat(
        &self,
        a: &Self::Buf,
        b: &Self::Buf,
        y: &mut Self::Buf,
        n: usize,
        c1: u32,
        c2: u32,
        s: u32,
    ) -> Result<()>;
    fn upsample2x(&self, x: &Self::Buf, y: &mut Self::Buf, n: usize, h: u32, w: u32) -> Result<()>;
    /// x\[i\] /= s for i < n.
    fn scale_div(&self, x: &mut Self::Buf, n: usize, s: f32) -> Result<()>;
    /// y (rows·times, d): each row of x (rows, d) `times` times in a row.
    fn repeat_rows(
        &self,
        x: &Self::Buf,
        y: &mut Self::Buf,
        rows: usize,
        d: usize,
        times: usize,
    ) -> Result<()>;
    /// The network input of a fused step (`sde_probe_rows` in `kernels/sde_step.cu`): y (B,
    /// K+1+2N, D), each state of x (B, D) K + 1 times, then x ± h v_n per Hutchinson probe.
    fn sde_probe_rows(
        &self,
        p: &crate::fused::sde_step::SdeStepParams,
        x: &Self::Buf,
        y: &mut Self::Buf,
    ) -> Result<()>;
    /// The fused reverse-SDE step (`kernels/sde_step.cu`), its record at `rec`'s offset.
    fn sde_step(
        &self,
        p: &crate::fused::sde_step::SdeStepParams,
        x: &mut Self::Buf,
        eps: &Self::Buf,
        log_pi: &mut Self::Buf,
        rec: (&mut Self::Buf, usize),
    ) -> Result<()>;
}

/// The CPU interpreter of the kernels (see the module docs).
pub struct Emu;

fn zoff(z: u32, zdiv: u32, outer: i64, inner: i64) -> i64 {
    (z / zdiv) as i64 * outer + (z % zdiv) as i64 * inner
}

fn idx(i: i64, len: usize, op: &'static str) -> Result<usize> {
    if i < 0 || i as usize >= len {
        return Err(Error::shape(op, len, i));
    }
    Ok(i as usize)
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

impl Dev for Emu {
    type Buf = Vec<f32>;
    fn alloc(&self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }
    fn upload(&self, v: &[f32]) -> Result<Vec<f32>> {
        Ok(v.to_vec())
    }
    fn download(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(b.clone())
    }
    fn copy(&self, b: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(b.clone())
    }
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
    fn group_norm(
        &self,
        p: &GroupNormParams,
        slices: u32,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
    ) -> Result<()> {
        let cg = (p.channels / p.groups) as usize;
        let n = cg * p.spatial as usize;
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
    fn softmax_rows(&self, x: &mut Vec<f32>, rows: u32, n: u32, scale: f32) -> Result<()> {
        for row in x.chunks_mut(n as usize).take(rows as usize) {
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v = (scale * (*v - m)).exp());
            let s: f64 = row.iter().map(|v| *v as f64).sum();
            let inv = (1.0 / s) as f32;
            row.iter_mut().for_each(|v| *v *= inv);
        }
        Ok(())
    }
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
    fn scale_div(&self, x: &mut Vec<f32>, n: usize, s: f32) -> Result<()> {
        x[..n].iter_mut().for_each(|v| *v /= s);
        Ok(())
    }
    fn repeat_rows(
        &self,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        d: usize,
        times: usize,
    ) -> Result<()> {
        for (r, out) in y.chunks_mut(d).take(rows * times).enumerate() {
            out.copy_from_slice(&x[(r / times) * d..(r / times + 1) * d]);
        }
        Ok(())
    }
    fn sde_step(
        &self,
        p: &crate::fused::sde_step::SdeStepParams,
        x: &mut Vec<f32>,
        eps: &Vec<f32>,
        log_pi: &mut Vec<f32>,
        (rec, off): (&mut Vec<f32>, usize),
    ) -> Result<()> {
        // the CPU twin stands in for the kernel (tested against each other in tests/cuda.rs)
        let w = p.batch as usize * p.record_width();
        let kind = crate::simd::detected();
        let n = p.batch as usize * p.eps_rows() * p.dim as usize;
        let len = rec.len();
        let rec = rec
            .get_mut(off..off + w)
            .ok_or_else(|| Error::shape("Emu::sde_step: record from offset", off + w, len))?;
        let eps = eps
            .get(..n)
            .ok_or_else(|| Error::shape("Emu::sde_step: eps (B, K+1+2N, D)", n, eps.len()))?;
        crate::fused::sde_step::sde_step(kind, p, x, eps, log_pi, rec)
    }
    fn sde_probe_rows(
        &self,
        p: &crate::fused::sde_step::SdeStepParams,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        // the CPU twin stands in for the kernel (tested against each other in tests/cuda.rs)
        let n = p.batch as usize * p.eps_rows() * p.dim as usize;
        let len = y.len();
        let y = y
            .get_mut(..n)
            .ok_or_else(|| Error::shape("Emu::sde_probe_rows: y (B, K+1+2N, D)", n, len))?;
        crate::fused::sde_step::probe_rows(p, x, y)
    }
}

/// The GPU: each operation one kernel launch on the handle's stream (no synchronisation).
#[cfg(feature = "cuda")]
pub struct CudaDev<'g>(pub &'g super::Gpu);

#[cfg(feature = "cuda")]
mod cuda_dev {
    use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

    use super::*;

    // SAFETY: #[repr(C)] plain data laid out as the kernel's `struct GemmParams`.
    unsafe impl DeviceRepr for GemmParams {}
    // SAFETY: #[repr(C)] plain data laid out as the kernel's `struct GroupNormParams`.
    unsafe impl DeviceRepr for GroupNormParams {}

    fn err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
        move |e| Error::Unsupported {
            op,
            reason: format!("CUDA driver: {e:?}"),
        }
    }

    /// A 1-D grid of 256-thread blocks covering n elements (the kernels loop past the grid).
    fn grid_1d(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    impl Dev for CudaDev<'_> {
        type Buf = CudaSlice<f32>;
        fn alloc(&self, n: usize) -> Result<CudaSlice<f32>> {
            self.0.stream.alloc_zeros(n.max(1)).map_err(err("alloc"))
        }
        fn upload(&self, v: &[f32]) -> Result<CudaSlice<f32>> {
            if v.is_empty() {
                return self.alloc(1);
            }
            self.0.stream.clone_htod(v).map_err(err("upload"))
        }
        fn download(&self, b: &CudaSlice<f32>) -> Result<Vec<f32>> {
            self.0.stream.clone_dtoh(b).map_err(err("download"))
        }
        fn copy(&self, b: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
            self.0.stream.clone_dtod(b).map_err(err("copy"))
        }
        fn gemm(
            &self,
            p: &GemmParams,
            batch: u32,
            (a, ao): (&CudaSlice<f32>, usize),
            (b, bo): (&CudaSlice<f32>, usize),
            (c, co): (&mut CudaSlice<f32>, usize),
            bias: Option<&CudaSlice<f32>>,
        ) -> Result<()> {
            let f = self.0.function("gemm", "gemm")?;
            let dummy;
            let bias = match bias {
                Some(v) => v,
                None => {
                    dummy = self.alloc(1)?;
                    &dummy
                }
            };
            let (av, bv) = (a.slice(ao..), b.slice(bo..));
            let mut cv = c.slice_mut(co..);
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(p).arg(&av).arg(&bv).arg(&mut cv).arg(bias);
            let cfg = LaunchConfig {
                grid_dim: (
                    p.n.div_ceil(64).max(1),
                    p.m.div_ceil(64).max(1),
                    batch.max(1),
                ),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `gemm(GemmParams, const float*, const float*, float*,
            // const float*)`; the caller's parameters index inside the buffers (checked on the
            // CPU interpreter by the tests for every launch the U-Net makes).
            unsafe { l.launch(cfg) }.map_err(err("gemm launch"))?;
            Ok(())
        }
        fn group_norm(
            &self,
            p: &GroupNormParams,
            slices: u32,
            x: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            gamma: &CudaSlice<f32>,
            beta: &CudaSlice<f32>,
        ) -> Result<()> {
            let f = self.0.function("group_norm", "group_norm")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(p).arg(x).arg(y).arg(gamma).arg(beta);
            let cfg = LaunchConfig {
                grid_dim: (slices.max(1), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `group_norm(GroupNormParams, const float*, float*, const
            // float*, const float*)`; x and y hold slices · (C/G)·S values, γ and β C.
            unsafe { l.launch(cfg) }.map_err(err("group_norm launch"))?;
            Ok(())
        }
        fn softmax_rows(
            &self,
            x: &mut CudaSlice<f32>,
            rows: u32,
            n: u32,
            scale: f32,
        ) -> Result<()> {
            let f = self.0.function("softmax", "softmax_rows")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(&n).arg(&scale);
            let cfg = LaunchConfig {
                grid_dim: (rows.max(1), 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `softmax_rows(float*, unsigned int, float)`; x holds
            // rows · n values.
            unsafe { l.launch(cfg) }.map_err(err("softmax launch"))?;
            Ok(())
        }
        fn add(
            &self,
            a: &CudaSlice<f32>,
            b: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            n: usize,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "add")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(a).arg(b).arg(y).arg(&n);
            // SAFETY: arguments match `add(const float*, const float*, float*, size_t)`; the
            // buffers hold n values.
            unsafe { l.launch(grid_1d(n)) }.map_err(err("add launch"))?;
            Ok(())
        }
        fn add_plane(
            &self,
            x: &mut CudaSlice<f32>,
            v: &CudaSlice<f32>,
            n: usize,
            s: u32,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "add_plane")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(v).arg(&n).arg(&s);
            // SAFETY: arguments match `add_plane(float*, const float*, size_t, unsigned int)`;
            // x holds n values, v n / s.
            unsafe { l.launch(grid_1d(n)) }.map_err(err("add_plane launch"))?;
            Ok(())
        }
        fn concat(
            &self,
            a: &CudaSlice<f32>,
            b: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            n: usize,
            c1: u32,
            c2: u32,
            s: u32,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "concat")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(a).arg(b).arg(y).arg(&n).arg(&c1).arg(&c2).arg(&s);
            // SAFETY: arguments match `concat(const float*, const float*, float*, size_t,
            // unsigned int ×3)`; y holds n = B·(C1+C2)·S values, a and b their parts.
            unsafe { l.launch(grid_1d(n)) }.map_err(err("concat launch"))?;
            Ok(())
        }
        fn upsample2x(
            &self,
            x: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            n: usize,
            h: u32,
            w: u32,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "upsample2x")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(y).arg(&n).arg(&h).arg(&w);
            // SAFETY: arguments match `upsample2x(const float*, float*, size_t, unsigned int,
            // unsigned int)`; y holds n = 4·planes·h·w values, x a quarter.
            unsafe { l.launch(grid_1d(n)) }.map_err(err("upsample launch"))?;
            Ok(())
        }
        fn repeat_rows(
            &self,
            x: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
            rows: usize,
            d: usize,
            times: usize,
        ) -> Result<()> {
            let f = self.0.function("elementwise", "repeat_rows")?;
            let n = rows * times * d;
            let (d32, t32) = (d as u32, times as u32);
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(y).arg(&n).arg(&d32).arg(&t32);
            // SAFETY: arguments match `repeat_rows(const float*, float*, size_t, unsigned int,
            // unsigned int)`; y holds rows·times·d values, x rows·d.
            unsafe { l.launch(grid_1d(n)) }.map_err(err("repeat launch"))?;
            Ok(())
        }
        fn sde_step(
            &self,
            p: &crate::fused::sde_step::SdeStepParams,
            x: &mut CudaSlice<f32>,
            eps: &CudaSlice<f32>,
            log_pi: &mut CudaSlice<f32>,
            (rec, off): (&mut CudaSlice<f32>, usize),
        ) -> Result<()> {
            let f = self.0.function("sde_step", "sde_step")?;
            let mut rv = rec.slice_mut(off..);
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(p).arg(x).arg(eps).arg(log_pi).arg(&mut rv);
            let cfg = LaunchConfig {
                grid_dim: (p.batch.max(1), 1, 1),
                block_dim: (crate::fused::sde_step::cuda::THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `sde_step(SdeStepParams, float*, const float*, float*,
            // float*)`; x, ε̂, ln π and the record from `off` hold B·D, B·(K+1+2N)·D, B·K and
            // B·(5+3K+P) values (the caller sizes them from p).
            unsafe { l.launch(cfg) }.map_err(err("sde_step launch"))?;
            Ok(())
        }
        fn sde_probe_rows(
            &self,
            p: &crate::fused::sde_step::SdeStepParams,
            x: &CudaSlice<f32>,
            y: &mut CudaSlice<f32>,
        ) -> Result<()> {
            let n = p.batch as usize * p.eps_rows() * p.dim as usize;
            if x.len() < p.batch as usize * p.dim as usize || y.len() < n {
                return Err(Error::shape(
                    "sde_probe_rows: x (B, D), y (B, K+1+2N, D)",
                    (p.batch as usize * p.dim as usize, n),
                    (x.len(), y.len()),
                ));
            }
            let f = self.0.function("sde_step", "sde_probe_rows")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(p).arg(x).arg(y);
            // SAFETY: arguments match `sde_probe_rows(SdeStepParams, const float*, float*)`; x
            // holds ≥ B·D and y ≥ B·(K+1+2N)·D values (checked above).
            unsafe { l.launch(crate::fused::sde_step::cuda::imp::rows_cfg(n)) }
                .map_err(err("sde_probe_rows launch"))?;
            Ok(())
        }
        fn scale_div(&self, x: &mut CudaSlice<f32>, n: usize, s: f32) -> Result<()> {
            let f = self.0.function("elementwise", "scale_div")?;
            let mut l = self.0.stream.launch_builder(&f);
            l.arg(x).arg(&n).arg(&s);
            // SAFETY: arguments match `scale_div(float*, size_t, float)`; x holds n values.
            unsafe { l.launch(grid_1d(n)) }.map_err(err("scale launch"))?;
            Ok(())
        }
    }
}
