//! The fused reverse-SDE step's device side as one trait over the backends that run the
//! device-resident neural loop ([`crate::fused::neural`]): the step itself, the probe rows of
//! the network input, and a row replication. [`Emu`] runs the CPU twin
//! ([`crate::fused::sde_step::sde_step`]); [`Cuda`] launches `kernels/sde_step.cu` and
//! `kernels/elementwise.cu`'s `repeat_rows`.

use super::SdeStepParams;
use crate::backend::{Backend, Cuda, Emu};
use crate::error::{Error, Result};

/// The fused step's launches on a backend. Offsets are in elements.
pub trait SdeStepOp: Backend {
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
    fn sde_probe_rows(&self, p: &SdeStepParams, x: &Self::Buf, y: &mut Self::Buf) -> Result<()>;
    /// The fused reverse-SDE step (`kernels/sde_step.cu`), its record at `rec`'s offset.
    fn sde_step(
        &self,
        p: &SdeStepParams,
        x: &mut Self::Buf,
        eps: &Self::Buf,
        log_pi: &mut Self::Buf,
        rec: (&mut Self::Buf, usize),
    ) -> Result<()>;
}

impl SdeStepOp for Emu {
    fn repeat_rows(
        &self,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        d: usize,
        times: usize,
    ) -> Result<()> {
        if x.len() < rows * d || y.len() < rows * times * d {
            return Err(Error::shape(
                "repeat_rows: x (rows, d), y (rows·times, d)",
                (rows * d, rows * times * d),
                (x.len(), y.len()),
            ));
        }
        for (r, out) in y.chunks_mut(d.max(1)).take(rows * times).enumerate() {
            out.copy_from_slice(&x[(r / times) * d..(r / times + 1) * d]);
        }
        Ok(())
    }
    fn sde_step(
        &self,
        p: &SdeStepParams,
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
    fn sde_probe_rows(&self, p: &SdeStepParams, x: &Vec<f32>, y: &mut Vec<f32>) -> Result<()> {
        // the CPU twin stands in for the kernel (tested against each other in tests/cuda.rs)
        let n = p.batch as usize * p.eps_rows() * p.dim as usize;
        let len = y.len();
        let y = y
            .get_mut(..n)
            .ok_or_else(|| Error::shape("Emu::sde_probe_rows: y (B, K+1+2N, D)", n, len))?;
        crate::fused::sde_step::probe_rows(p, x, y)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

    use super::*;
    use crate::backend::cuda::{driver_err, grid_1d};

    impl SdeStepOp for Cuda<'_> {
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
            unsafe { l.launch(grid_1d(n)) }.map_err(driver_err("repeat launch"))?;
            Ok(())
        }
        fn sde_step(
            &self,
            p: &SdeStepParams,
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
            unsafe { l.launch(cfg) }.map_err(driver_err("sde_step launch"))?;
            Ok(())
        }
        fn sde_probe_rows(
            &self,
            p: &SdeStepParams,
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
                .map_err(driver_err("sde_probe_rows launch"))?;
            Ok(())
        }
    }
}

#[cfg(not(feature = "cuda"))]
impl SdeStepOp for Cuda<'_> {
    fn repeat_rows(
        &self,
        _: &Self::Buf,
        _: &mut Self::Buf,
        _: usize,
        _: usize,
        _: usize,
    ) -> Result<()> {
        self.0.unreachable()
    }
    fn sde_probe_rows(&self, _: &SdeStepParams, _: &Self::Buf, _: &mut Self::Buf) -> Result<()> {
        self.0.unreachable()
    }
    fn sde_step(
        &self,
        _: &SdeStepParams,
        _: &mut Self::Buf,
        _: &Self::Buf,
        _: &mut Self::Buf,
        _: (&mut Self::Buf, usize),
    ) -> Result<()> {
        self.0.unreachable()
    }
}
