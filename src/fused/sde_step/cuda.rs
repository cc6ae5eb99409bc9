//! Host side of the fused reverse-SDE step (`kernels/sde_step.cu`; CPU twin
//! [`crate::fused::sde_step`]): one launch per step, grid = trajectories, 256 threads over D,
//! noise drawn in the kernel, no host synchronisation between steps.

use crate::backend::Gpu;
use crate::error::Result;
use crate::fused::sde_step::SdeStepParams;

/// Threads per block of the kernel (`SDE_STEP_THREADS`, shared through the generated header).
pub const THREADS: u32 = crate::info::sums::consts::SDE_STEP_THREADS as u32;

/// One step on host buffers (uploaded, stepped, downloaded): for tests against the CPU twin.
/// x (B, D), ε̂ (B, K+1+2N, D) null label first, ln π (B, K), record (B, 5 + 3K + P).
pub fn sde_step_host(
    gpu: &Gpu,
    p: &SdeStepParams,
    x: &mut [f32],
    eps: &[f32],
    log_pi: &mut [f32],
    rec: &mut [f32],
) -> Result<()> {
    p.check(x.len(), eps.len(), log_pi.len(), rec.len())?;
    imp::sde_step_host(gpu, p, x, eps, log_pi, rec)
}

/// The `sde_probe_rows` kernel on host buffers: the network input (B, K+1+2N, D) of a step from
/// the states x (B, D), for tests against [`crate::fused::sde_step::probe_rows`].
pub fn probe_rows_host(gpu: &Gpu, p: &SdeStepParams, x: &[f32], y: &mut [f32]) -> Result<()> {
    let (b, d) = (p.batch as usize, p.dim as usize);
    if x.len() != b * d || y.len() != b * p.eps_rows() * d {
        return Err(crate::error::Error::shape(
            "probe_rows_host: x (B, D), y (B, K+1+2N, D)",
            (b * d, b * p.eps_rows() * d),
            (x.len(), y.len()),
        ));
    }
    imp::probe_rows_host(gpu, p, x, y)
}

/// Device-resident throughput: `steps` launches on a batch of (B, K+1, D) network outputs kept
/// on the GPU, one synchronisation at the end. Returns (seconds per step, bytes moved per step:
/// ε̂ read once, x read and written, ln π read and written and the record written).
pub fn bench_sde_step(
    gpu: &Gpu,
    batch: usize,
    classes: usize,
    dim: usize,
    steps: usize,
) -> Result<(f64, f64)> {
    imp::bench(gpu, batch, classes, dim, steps)
}

/// The device's measured memory bandwidth, bytes/s: the best of 5 device-to-device copies of
/// 1 GiB (read + write counted) after one warm-up copy, both buffers allocated before any
/// timing: the yardstick of the step kernel's efficiency.
pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
    imp::copy_bandwidth(gpu)
}

#[cfg(feature = "cuda")]
pub(crate) mod imp {
    use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

    use super::*;
    use crate::error::Error;

    // SAFETY: `SdeStepParams` is #[repr(C)] plain data (f32, u32, u64 fields), laid out as the
    // kernel's `struct SdeStepParams`.
    unsafe impl DeviceRepr for SdeStepParams {}

    fn err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
        move |e| Error::Unsupported {
            op,
            reason: format!("CUDA driver: {e:?}"),
        }
    }

    /// `sde_probe_rows`: 256-thread blocks over the n outputs (the kernel loops past the grid).
    pub(crate) fn rows_cfg(n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn cfg(p: &SdeStepParams) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (p.batch, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    pub fn sde_step_host(
        gpu: &Gpu,
        p: &SdeStepParams,
        x: &mut [f32],
        eps: &[f32],
        log_pi: &mut [f32],
        rec: &mut [f32],
    ) -> Result<()> {
        let f = gpu.function("sde_step", "sde_step")?;
        let s = &gpu.stream;
        let mut xd = s.clone_htod(&*x).map_err(err("sde_step: upload"))?;
        let ed = s.clone_htod(eps).map_err(err("sde_step: upload"))?;
        let mut ld = s.clone_htod(&*log_pi).map_err(err("sde_step: upload"))?;
        let mut rd = s
            .alloc_zeros::<f32>(rec.len())
            .map_err(err("sde_step: alloc"))?;
        let mut l = s.launch_builder(&f);
        l.arg(p).arg(&mut xd).arg(&ed).arg(&mut ld).arg(&mut rd);
        // SAFETY: the argument list matches `sde_step(SdeStepParams, float*, const float*,
        // float*, float*)`; buffer lengths were checked against p (B, K, D) by the caller.
        unsafe { l.launch(cfg(p)) }.map_err(err("sde_step: launch"))?;
        s.memcpy_dtoh(&xd, x).map_err(err("sde_step: download"))?;
        s.memcpy_dtoh(&ld, log_pi)
            .map_err(err("sde_step: download"))?;
        s.memcpy_dtoh(&rd, rec).map_err(err("sde_step: download"))?;
        s.synchronize().map_err(err("sde_step: synchronize"))?;
        Ok(())
    }

    pub fn probe_rows_host(gpu: &Gpu, p: &SdeStepParams, x: &[f32], y: &mut [f32]) -> Result<()> {
        let f = gpu.function("sde_step", "sde_probe_rows")?;
        let s = &gpu.stream;
        let xd = s.clone_htod(x).map_err(err("sde_probe_rows: upload"))?;
        let mut yd = s
            .alloc_zeros::<f32>(y.len())
            .map_err(err("sde_probe_rows: alloc"))?;
        let mut l = s.launch_builder(&f);
        l.arg(p).arg(&xd).arg(&mut yd);
        // SAFETY: the argument list matches `sde_probe_rows(SdeStepParams, const float*,
        // float*)`; x holds B·D and y B·(K+1+2N)·D values (checked by the caller).
        unsafe { l.launch(rows_cfg(y.len())) }.map_err(err("sde_probe_rows: launch"))?;
        s.memcpy_dtoh(&yd, y)
            .map_err(err("sde_probe_rows: download"))?;
        s.synchronize()
            .map_err(err("sde_probe_rows: synchronize"))?;
        Ok(())
    }

    pub fn bench(
        gpu: &Gpu,
        batch: usize,
        classes: usize,
        dim: usize,
        steps: usize,
    ) -> Result<(f64, f64)> {
        let f = gpu.function("sde_step", "sde_step")?;
        let s = &gpu.stream;
        let eps: Vec<f32> = (0..batch * (classes + 1) * dim)
            .map(|i| ((i * 2654435761) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let ed = s.clone_htod(&eps).map_err(err("sde_step: upload"))?;
        let mut xd = s
            .alloc_zeros::<f32>(batch * dim)
            .map_err(err("sde_step: alloc"))?;
        let lp = vec![-(classes as f32).ln(); batch * classes];
        let mut ld = s.clone_htod(&lp).map_err(err("sde_step: upload"))?;
        let width = SdeStepParams::new(
            (1.0, 0.0, 0.0),
            1.0,
            crate::rng::Noise::new(0),
            0,
            0,
            (batch, classes, dim),
        )?
        .record_width();
        let mut rd = s
            .alloc_zeros::<f32>(batch * width)
            .map_err(err("sde_step: alloc"))?;
        let noise = crate::rng::Noise::new(1);
        let run = |n: usize, xd: &mut _, ld: &mut _, rd: &mut _| -> Result<f64> {
            let t = std::time::Instant::now();
            for step in 0..n {
                let p = SdeStepParams::new(
                    (0.999, 1e-3, 1e-4),
                    0.5,
                    noise,
                    0,
                    step as u32,
                    (batch, classes, dim),
                )?;
                let mut l = s.launch_builder(&f);
                l.arg(&p).arg(&mut *xd).arg(&ed).arg(&mut *ld).arg(&mut *rd);
                // SAFETY: as in `sde_step_host`; buffers sized for (B, K, D) above.
                unsafe { l.launch(cfg(&p)) }.map_err(err("sde_step: launch"))?;
            }
            s.synchronize().map_err(err("sde_step: synchronize"))?;
            Ok(t.elapsed().as_secs_f64())
        };
        run(3, &mut xd, &mut ld, &mut rd)?; // warm-up (module load, clocks)
        let secs = run(steps, &mut xd, &mut ld, &mut rd)? / steps as f64;
        let bytes = 4.0
            * (batch * (classes + 1) * dim + 2 * batch * dim + batch * (width + 2 * classes))
                as f64;
        Ok((secs, bytes))
    }

    pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
        let s = &gpu.stream;
        let n = 1usize << 28; // 1 GiB of f32
        let src = s
            .alloc_zeros::<f32>(n)
            .map_err(err("copy bandwidth: alloc"))?;
        // the destination is allocated once, outside the timed copies
        let mut dst = s
            .alloc_zeros::<f32>(n)
            .map_err(err("copy bandwidth: alloc"))?;
        s.synchronize()
            .map_err(err("copy bandwidth: synchronize"))?;
        let mut best = f64::INFINITY;
        for rep in 0..6 {
            let t = std::time::Instant::now();
            s.memcpy_dtod(&src, &mut dst)
                .map_err(err("copy bandwidth: copy"))?;
            s.synchronize()
                .map_err(err("copy bandwidth: synchronize"))?;
            if rep > 0 {
                // the first copy warms up
                best = best.min(t.elapsed().as_secs_f64());
            }
        }
        Ok(2.0 * 4.0 * n as f64 / best)
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub fn sde_step_host(
        gpu: &Gpu,
        _: &SdeStepParams,
        _: &mut [f32],
        _: &[f32],
        _: &mut [f32],
        _: &mut [f32],
    ) -> Result<()> {
        gpu.unreachable()
    }

    pub fn probe_rows_host(gpu: &Gpu, _: &SdeStepParams, _: &[f32], _: &mut [f32]) -> Result<()> {
        gpu.unreachable()
    }

    pub fn bench(gpu: &Gpu, _: usize, _: usize, _: usize, _: usize) -> Result<(f64, f64)> {
        gpu.unreachable()
    }

    pub fn copy_bandwidth(gpu: &Gpu) -> Result<f64> {
        gpu.unreachable()
    }
}
