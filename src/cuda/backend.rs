//! The cudarc backend: context and stream of one device, kernels loaded on first use.

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
