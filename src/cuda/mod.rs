//! The GPU backend: a device handle ([`Gpu`]) opened through cudarc (driver API, loaded at run
//! time), kernels from `kernels/*.cu` (PTX built by build.rs, or NVRTC at run time), and one
//! host module per fused op ([`sde_step`]). Without the `cuda` feature the same names exist and
//! [`probe`] reports the GPU as unavailable, so `cfg` stays at this boundary.
//!
//! Opening never panics: no driver library, no device, or a failing driver call gives a typed
//! [`Unavailable`] with the reason.

pub mod ops;

pub mod unet;

#[cfg(feature = "cuda")]
mod backend;
#[cfg(feature = "cuda")]
pub use backend::{Gpu, nvrtc_compile_all};

#[cfg(not(feature = "cuda"))]
mod stub;
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
