//! Host side of the fused mixture kernel (`kernels/mixture_trajectory.cu`; CPU twin
//! [`crate::fused::mixture_trajectory`]): the plan uploaded once, two launches (the run, then
//! the replay that weights every point by each trajectory's final posterior), one download of
//! the (points, W) sums. No host synchronisation inside the trajectory loop: it is inside the
//! kernel.

use crate::backend::Gpu;
use crate::error::Result;
use crate::fused::mixture_trajectory::MixturePlan;
use crate::info::InfoSums;

/// Threads per block (`MIX_THREADS`, shared through the generated header).
pub const THREADS: u32 = crate::info::sums::consts::MIX_THREADS as u32;

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

/// The kernel's scalar parameters; mirrors `struct MixParams` in
/// kernels/mixture_trajectory.cu field for field (`#[repr(C)]`, 48 bytes; tests/cuda.rs checks
/// size and offsets against the kernel's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixParams {
    /// D, K, components, decision problems, steps S.
    pub dim: u32,
    pub classes: u32,
    pub comps: u32,
    pub parts: u32,
    pub steps: u32,
    /// 1 when each class is one component.
    pub one_per_class: u32,
    /// Philox key.
    pub key0: u32,
    pub key1: u32,
    /// Trajectories `first..first + count`.
    pub first: u64,
    pub count: u64,
}

/// The device addresses of the plan's arrays; mirrors `struct MixPlan` (19 pointers, in its
/// field order: the 12 f32 arrays of [`crate::fused::mixture_trajectory::FlatPlan`], class_of,
/// part_a, part_b, part_a_single, part_b_single, part_covers_all, part_inv_mass).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixPlanPtrs(pub [u64; MIX_PLAN_ARRAYS]);

/// Arrays of `struct MixPlan`.
pub const MIX_PLAN_ARRAYS: usize = MIX_PLAN_FIELDS.len();

/// The fields of `struct MixPlan`, in the order `run` fills [`MixPlanPtrs`].
pub const MIX_PLAN_FIELDS: [&str; 19] = [
    "sm",
    "inv",
    "lognorm",
    "dtrace",
    "d_over_s2",
    "coef",
    "gw",
    "init_mean",
    "init_sd",
    "cum",
    "prior",
    "log_prior",
    "class_of",
    "part_a",
    "part_b",
    "part_a_single",
    "part_b_single",
    "part_covers_all",
    "part_inv_mass",
];

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::{DeviceRepr, LaunchConfig, PushKernelArg};

    use super::*;
    use crate::error::Error;

    // SAFETY: #[repr(C)] plain data laid out as the kernel's `struct MixParams` (size and
    // offsets checked against it by tests/cuda.rs).
    unsafe impl DeviceRepr for MixParams {}
    // SAFETY: #[repr(C)] array of device addresses, laid out as the kernel's `struct MixPlan`
    // (19 pointers of 8 bytes; checked by tests/cuda.rs).
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
        let mut ptrs = [0u64; MIX_PLAN_ARRAYS];
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
