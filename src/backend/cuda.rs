//! The GPU backend: a device handle ([`Gpu`]) opened through cudarc (driver API, loaded at run
//! time) with kernels from `kernels/*.cu` (PTX built by build.rs, or NVRTC at run time), and
//! [`Cuda`], the [`Backend`] whose buffers live on it (each op one kernel launch on the handle's
//! stream, no synchronisation). Without the `cuda` feature the same names exist, [`probe`]
//! reports the GPU as unavailable ("rebuild with `--features cuda`") and no [`Gpu`] (so no
//! [`Cuda`]) is ever constructed, so `cfg` stays at this boundary.
//!
//! Opening never panics: no driver library, no device, or a failing driver call gives a typed
//! [`Unavailable`] with the reason.

use super::Backend;
use crate::error::Result;

#[cfg(feature = "cuda")]
mod gpu {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
    use cudarc::nvrtc::{CompileOptions, Ptx};

    use super::{KernelSource, Unavailable};
    use crate::error::{Error, Result};

    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

    /// One opened GPU: its context, a stream every op of this handle is queued on, and the kernel
    /// modules loaded so far.
    pub struct Gpu {
        pub(crate) ctx: Arc<CudaContext>,
        pub(crate) stream: Arc<CudaStream>,
        name: String,
        cc: (i32, i32),
        modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    }

    fn driver_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
        move |e| Error::Unsupported {
            op,
            reason: format!("CUDA driver: {e:?}"),
        }
    }

    impl Gpu {
        /// Opens device `ordinal`; probes for the driver library first (cudarc panics without it).
        pub fn open(ordinal: usize) -> std::result::Result<Gpu, Unavailable> {
            // SAFETY: only tries to load the driver library (dlopen), calling nothing in it.
            if !unsafe { cudarc::driver::sys::is_culib_present() } {
                return Err(Unavailable::new(
                    "no CUDA driver library (libcuda) on this machine",
                ));
            }
            let n = CudaContext::device_count()
                .map_err(|e| Unavailable::new(format!("cuDeviceGetCount: {e:?}")))?;
            if n <= ordinal as i32 {
                return Err(Unavailable::new(format!(
                    "no CUDA device {ordinal} ({n} device(s))"
                )));
            }
            let ctx = CudaContext::new(ordinal).map_err(|e| {
                Unavailable::new(format!("creating a context on device {ordinal}: {e:?}"))
            })?;
            let name = ctx.name().unwrap_or_else(|_| "unnamed GPU".to_string());
            let cc = ctx
                .compute_capability()
                .map_err(|e| Unavailable::new(format!("compute capability: {e:?}")))?;
            let stream = ctx
                .new_stream()
                .map_err(|e| Unavailable::new(format!("creating a stream: {e:?}")))?;
            Ok(Gpu {
                ctx,
                stream,
                name,
                cc,
                modules: Mutex::new(HashMap::new()),
            })
        }

        /// Name and compute capability.
        pub fn describe(&self) -> String {
            format!(
                "{}, compute capability {}.{}, kernels built for {BUILD_ARCH}",
                self.name, self.cc.0, self.cc.1
            )
        }

        /// Kernel `func` of module `module` (kernels/`module`.cu), loading the module on first use.
        pub(crate) fn function(&self, module: &'static str, func: &str) -> Result<CudaFunction> {
            let mut mods = self.modules.lock().unwrap_or_else(|e| e.into_inner());
            let m = match mods.get(module) {
                Some(m) => m.clone(),
                None => {
                    let src = KERNELS.iter().find(|k| k.name == module).ok_or_else(|| {
                        Error::Unsupported {
                            op: "cuda",
                            reason: format!("no kernel module `{module}` in this build"),
                        }
                    })?;
                    let ptx = match src.ptx {
                        Some(p) => Ptx::from_src(p),
                        None => self.nvrtc(module, src.cuda)?,
                    };
                    let m = self
                        .ctx
                        .load_module(ptx)
                        .map_err(driver_err("cuda: loading a module"))?;
                    mods.insert(module, m.clone());
                    m
                }
            };
            m.load_function(func)
                .map_err(driver_err("cuda: loading a kernel"))
        }

        /// Compiles CUDA source with NVRTC for this device.
        fn nvrtc(&self, module: &str, code: &str) -> Result<Ptx> {
            let arch: &'static str =
                Box::leak(format!("sm_{}{}", self.cc.0, self.cc.1).into_boxed_str());
            nvrtc(module, code, arch)
        }
    }

    /// NVRTC on one kernel's source (`--fmad=false`, as nvcc builds them).
    fn nvrtc(module: &str, code: &str, arch: &'static str) -> Result<Ptx> {
        // SAFETY: only tries to load the NVRTC library (dlopen).
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(Error::Unsupported {
                op: "cuda",
                reason: format!(
                    "kernel `{module}` needs NVRTC (libnvrtc), absent here; or build with nvcc"
                ),
            });
        }
        let opts = CompileOptions {
            fmad: Some(false),
            arch: Some(arch),
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(code, opts).map_err(|e| Error::Unsupported {
            op: "cuda: NVRTC",
            reason: format!("kernel `{module}`: {e:?}"),
        })
    }

    /// Compiles every kernel's embedded source with NVRTC for `arch` (e.g. "sm_90"); no GPU
    /// needed: the run-time path of builds made without nvcc. Returns (kernel, PTX bytes); the
    /// library's absence is `Unavailable`, and so is a kernel that does not compile (with NVRTC's log).
    pub fn nvrtc_compile_all(
        arch: &'static str,
    ) -> std::result::Result<Vec<(&'static str, usize)>, Unavailable> {
        // SAFETY: only tries to load the NVRTC library (dlopen).
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(Unavailable::new(
                "no NVRTC library (libnvrtc) on this machine",
            ));
        }
        KERNELS
            .iter()
            .map(|k| {
                let ptx = nvrtc(k.name, k.cuda, arch)
                    .map_err(|e| Unavailable::new(format!("NVRTC failed: {e}")))?;
                Ok((k.name, ptx.to_src().len()))
            })
            .collect()
    }
}
#[cfg(feature = "cuda")]
pub use gpu::{Gpu, nvrtc_compile_all};

#[cfg(not(feature = "cuda"))]
mod stub {
    //! The GPU handle when infodiff is built without the `cuda` feature: it never opens.
    use super::Unavailable;

    /// A GPU (never constructed in this build).
    pub struct Gpu {
        _never: std::convert::Infallible,
    }

    impl Gpu {
        pub fn open(_ordinal: usize) -> Result<Gpu, Unavailable> {
            Err(Unavailable::new(
                "this build has no GPU backend (rebuild with `--features cuda`)",
            ))
        }
        pub fn describe(&self) -> String {
            self.unreachable()
        }
        /// No value of this type exists, so no code taking one runs.
        pub(crate) fn unreachable(&self) -> ! {
            match self._never {}
        }
    }

    /// NVRTC needs the `cuda` feature.
    pub fn nvrtc_compile_all(
        _arch: &'static str,
    ) -> Result<Vec<(&'static str, usize)>, Unavailable> {
        Err(Unavailable::new(
            "this build has no GPU backend (rebuild with `--features cuda`)",
        ))
    }
}
#[cfg(not(feature = "cuda"))]
pub use stub::{Gpu, nvrtc_compile_all};

/// Why no GPU can be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CUDA unavailable: {}", self.reason)
    }
}

impl Unavailable {
    pub fn new(reason: impl Into<String>) -> Unavailable {
        Unavailable {
            reason: reason.into(),
        }
    }
}

/// A kernel module's code: PTX from nvcc at build time where nvcc was found, and always its
/// CUDA C++ source with the headers inlined, for NVRTC.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// The file stem in kernels/.
    pub name: &'static str,
    pub ptx: Option<&'static str>,
    pub cuda: &'static str,
}

/// The device a command runs on (`--device auto|cpu|cuda`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The GPU when one can be opened, else the CPU.
    Auto,
    Cpu,
    Cuda,
}

/// What a command got: the CPU, or an opened GPU (and, for `Auto`, why not the GPU).
pub enum Device {
    Cpu { why_not_gpu: Option<Unavailable> },
    Cuda(Gpu),
}

impl Device {
    /// Resolves a choice: `Cuda` fails when no GPU opens; `Auto` falls back to the CPU.
    pub fn open(choice: DeviceChoice) -> std::result::Result<Device, Unavailable> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu { why_not_gpu: None }),
            DeviceChoice::Cuda => Gpu::open(0).map(Device::Cuda),
            DeviceChoice::Auto => Ok(match Gpu::open(0) {
                Ok(g) => Device::Cuda(g),
                Err(e) => Device::Cpu {
                    why_not_gpu: Some(e),
                },
            }),
        }
    }

    /// One line naming the device used (and why not the GPU, when it was wanted).
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu { why_not_gpu: None } => {
                format!("device: cpu ({})", crate::simd::detected().name())
            }
            Device::Cpu {
                why_not_gpu: Some(e),
            } => format!("device: cpu ({}; {e})", crate::simd::detected().name()),
            Device::Cuda(g) => format!("device: cuda ({})", g.describe()),
        }
    }
}

/// Whether a GPU opens here, and if not why (for tests and `--device auto`).
pub fn probe() -> std::result::Result<Gpu, Unavailable> {
    Gpu::open(0)
}

/// For GPU tests: the GPU, or a panic saying why none opens. The GPU tests are `#[ignore]`d
/// unless built with `INFODIFF_REQUIRE_CUDA=1` (build.rs's `infodiff_require_cuda` cfg), so a
/// test that calls this runs only where a GPU was asked for, and fails where none opens.
pub fn gpu_for_test(test: &str) -> Gpu {
    probe().unwrap_or_else(|e| panic!("{test}: a GPU test was asked for but {e}"))
}

/// The [`Backend`] of an opened GPU: buffers in device memory, ops launched on its stream.
#[derive(Clone, Copy)]
pub struct Cuda<'g>(pub &'g Gpu);

/// A driver error as the crate's error, naming the op.
#[cfg(feature = "cuda")]
pub(crate) fn driver_err(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> crate::Error {
    move |e| crate::Error::Unsupported {
        op,
        reason: format!("CUDA driver: {e:?}"),
    }
}

/// A 1-D grid of 256-thread blocks covering n elements (the kernels loop past the grid).
#[cfg(feature = "cuda")]
pub(crate) fn grid_1d(n: usize) -> cudarc::driver::LaunchConfig {
    cudarc::driver::LaunchConfig {
        grid_dim: (n.div_ceil(256).clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    }
}

#[cfg(feature = "cuda")]
impl Backend for Cuda<'_> {
    type Buf = cudarc::driver::CudaSlice<f32>;
    fn name(&self) -> String {
        format!("cuda ({})", self.0.describe())
    }
    fn len(&self, b: &Self::Buf) -> usize {
        b.len()
    }
    fn alloc(&self, n: usize) -> Result<Self::Buf> {
        self.0
            .stream
            .alloc_zeros(n.max(1))
            .map_err(driver_err("alloc"))
    }
    fn upload(&self, v: &[f32]) -> Result<Self::Buf> {
        if v.is_empty() {
            return self.alloc(1);
        }
        self.0.stream.clone_htod(v).map_err(driver_err("upload"))
    }
    fn download(&self, b: &Self::Buf) -> Result<Vec<f32>> {
        self.0.stream.clone_dtoh(b).map_err(driver_err("download"))
    }
    fn copy(&self, b: &Self::Buf) -> Result<Self::Buf> {
        self.0.stream.clone_dtod(b).map_err(driver_err("copy"))
    }
}

/// Without the `cuda` feature no [`Gpu`] exists, so none of these runs.
#[cfg(not(feature = "cuda"))]
impl Backend for Cuda<'_> {
    type Buf = std::convert::Infallible;
    fn name(&self) -> String {
        self.0.unreachable()
    }
    fn len(&self, _: &Self::Buf) -> usize {
        self.0.unreachable()
    }
    fn alloc(&self, _: usize) -> Result<Self::Buf> {
        self.0.unreachable()
    }
    fn upload(&self, _: &[f32]) -> Result<Self::Buf> {
        self.0.unreachable()
    }
    fn download(&self, _: &Self::Buf) -> Result<Vec<f32>> {
        self.0.unreachable()
    }
    fn copy(&self, _: &Self::Buf) -> Result<Self::Buf> {
        self.0.unreachable()
    }
}
