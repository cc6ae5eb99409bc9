//! Host side of the fused mixture kernel (`kernels/mixture_trajectory.cu`; CPU twin
//! [`crate::fused::mixture_trajectory`]): the plan uploaded once, two launches (the run, then
//! the replay that weights every point by each trajectory's final posterior), one download of
//! the (points, W) sums. No host synchronisation inside the trajectory loop: it is inside the
//! kernel.

use crate::backend::Gpu;
use crate::error::Result;
use crate::fused::mixture_trajectory::MixturePlan;
use crate::info::InfoSums;

/// Threads per block (`MIX_THREADS`).
pub const THREADS: u32 = 128;

/// Runs trajectories `first..first + n` on the GPU; returns their sums and, with `final_x`
/// (n·D), the final states. Trajectories are the CPU kernel's: same noise, same arithmetic.
pub fn run(
    gpu: &Gpu,
    plan: &MixturePlan,
    first: u64,
    n: usize,
    final_x: Option<&mut [f32]>,
) -> Result<InfoSums> {
    imp::run(gpu, plan, first, n, final_x)
}

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

    use super::*;
    use crate::error::Error;

    /// Mirrors `MixParams` in the kernel.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct MixParams {
        dim: u32,
        classes: u32,
        comps: u32,
        parts: u32,
        steps: u32,
        one_per_class: u32,
        key0: u32,
        key1: u32,
        first: u64,
        count: u64,
    }
    // SAFETY: #[repr(C)] plain data laid out as the kernel's `struct MixParams`.
    unsafe impl DeviceRepr for MixParams {}

    /// Mirrors `MixPlan`: 19 device pointers in its field order.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct MixPlanPtrs([u64; 19]);
    // SAFETY: #[repr(C)] array of device addresses, laid out as the kernel's `struct MixPlan`
    // (19 pointers of 8 bytes).
    unsafe impl DeviceRepr for MixPlanPtrs {}

    fn err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
        move |e| Error::Unsupported {
            op,
            reason: format!("CUDA driver: {e:?}"),
        }
    }

    pub fn run(
        gpu: &Gpu,
        plan: &MixturePlan,
        first: u64,
        n: usize,
        final_x: Option<&mut [f32]>,
    ) -> Result<InfoSums> {
        use cudarc::driver::DevicePtr;
        let f = plan.flat()?;
        let [d, k, _, _, steps] = f.dims.map(|v| v as usize);
        if let Some(x) = &final_x {
            if x.len() != n * d {
                return Err(Error::shape(
                    "cuda::mixture_trajectory::run",
                    n * d,
                    x.len(),
                ));
            }
        }
        let func = gpu.function("mixture_trajectory", "mixture_trajectory")?;
        let s = &gpu.stream;
        let up = err("mixture_trajectory: upload");
        let f32s: Vec<_> = f
            .f32s
            .iter()
            .map(|a| s.clone_htod(&pad(a)))
            .collect::<std::result::Result<_, _>>()
            .map_err(&up)?;
        let u32s: Vec<_> = [&f.class_of, &f.part_a, &f.part_b]
            .iter()
            .map(|a| s.clone_htod(&pad(a)))
            .collect::<std::result::Result<_, _>>()
            .map_err(&up)?;
        let i32s: Vec<_> = [&f.part_a_single, &f.part_b_single]
            .iter()
            .map(|a| s.clone_htod(&pad(a)))
            .collect::<std::result::Result<_, _>>()
            .map_err(&up)?;
        let covers = s.clone_htod(&pad(&f.part_covers_all)).map_err(&up)?;
        let inv_mass = s.clone_htod(&pad(&f.part_inv_mass)).map_err(&up)?;
        let mut ptrs = [0u64; 19];
        {
            let mut i = 0;
            let mut put = |p: u64| {
                ptrs[i] = p;
                i += 1;
            };
            for a in &f32s {
                put(a.device_ptr(s).0);
            }
            for a in &u32s {
                put(a.device_ptr(s).0);
            }
            for a in &i32s {
                put(a.device_ptr(s).0);
            }
            put(covers.device_ptr(s).0);
            put(inv_mass.device_ptr(s).0);
        }
        let ptrs = MixPlanPtrs(ptrs);
        let width = f.layout.width();
        let alloc = err("mixture_trajectory: alloc");
        let mut sums = s.alloc_zeros::<f64>((steps + 1) * width).map_err(&alloc)?;
        let mut final_pi = s.alloc_zeros::<f32>((n * k).max(1)).map_err(&alloc)?;
        let mut xs = s.alloc_zeros::<f32>((n * d).max(1)).map_err(&alloc)?;
        let mut bad = s.alloc_zeros::<u32>(n.max(1)).map_err(&alloc)?;
        let p = MixParams {
            dim: f.dims[0],
            classes: f.dims[1],
            comps: f.dims[2],
            parts: f.dims[3],
            steps: f.dims[4],
            one_per_class: f.one_per_class as u32,
            key0: f.key[0],
            key1: f.key[1],
            first,
            count: n as u64,
        };
        let blocks = (n as u64).div_ceil(THREADS as u64);
        if blocks > u32::MAX as u64 {
            return Err(Error::config(
                "trajectories",
                "fewer than 2^32 blocks of 128",
                n,
            ));
        }
        let cfg = LaunchConfig {
            grid_dim: (blocks.max(1) as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        for replay in [0u32, 1] {
            let mut l = s.launch_builder(&func);
            l.arg(&p)
                .arg(&ptrs)
                .arg(&replay)
                .arg(&mut sums)
                .arg(&mut final_pi)
                .arg(&mut xs)
                .arg(&mut bad);
            // SAFETY: arguments match `mixture_trajectory(MixParams, MixPlan, unsigned int,
            // double*, float*, float*, unsigned int*)`; the plan arrays hold the sizes the
            // kernel indexes (the dims of `f`), the outputs n·K, n·D and n entries.
            unsafe { l.launch(cfg) }.map_err(err("mixture_trajectory: launch"))?;
        }
        let down = err("mixture_trajectory: download");
        let bad = s.clone_dtoh(&bad).map_err(&down)?;
        if let Some((i, step)) = bad
            .iter()
            .take(n)
            .enumerate()
            .filter(|(_, s)| **s != u32::MAX)
            .min_by_key(|(_, s)| **s)
        {
            return Err(Error::NonFinite {
                op: "mixture_trajectory (GPU)",
                step: *step as usize,
                t: plan.time(*step as usize + 1),
                what: format!("state of trajectory {}", first + i as u64),
            });
        }
        let mut out = InfoSums::new(f.layout, steps + 1);
        s.memcpy_dtoh(&sums, &mut out.data).map_err(&down)?;
        if let Some(x) = final_x {
            if n > 0 {
                s.memcpy_dtoh(&xs.slice(..n * d), x).map_err(&down)?;
            }
        }
        s.synchronize()
            .map_err(err("mixture_trajectory: synchronize"))?;
        Ok(out)
    }

    /// A copy with at least one element (empty arrays still get a valid device pointer).
    fn pad<T: Copy + Default>(a: &[T]) -> Vec<T> {
        if a.is_empty() {
            vec![T::default()]
        } else {
            a.to_vec()
        }
    }
}

#[cfg(not(feature = "cuda"))]
mod imp {
    use super::*;

    pub fn run(
        gpu: &Gpu,
        _: &MixturePlan,
        _: u64,
        _: usize,
        _: Option<&mut [f32]>,
    ) -> Result<InfoSums> {
        gpu.unreachable()
    }
}
