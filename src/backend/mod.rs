//! Where tensors live and kernels run: one [`Backend`] trait (storage: a buffer type, allocate,
//! upload, download, copy, a name) and its three instances, [`Cpu`] (the hand-written SIMD
//! kernels on pooled host buffers), [`Emu`] (a CPU interpreter of the GPU launches, for testing
//! the device orchestration where no GPU exists) and [`Cuda`] (an opened GPU; without the `cuda`
//! feature a stub that never opens). The operations themselves are traits of [`crate::ops`],
//! implemented per backend.

pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod pool;

pub use cpu::Cpu;
pub use cuda::{
    Cuda, Device, DeviceChoice, Gpu, KernelSource, Unavailable, gpu_for_test, nvrtc_compile_all,
    probe,
};
pub use emu::Emu;

use crate::error::Result;

/// Storage and transfers of one device. Buffers hold f32 values; offsets and lengths are in
/// elements.
pub trait Backend {
    /// A buffer of f32 values on this backend.
    type Buf;
    /// One line naming the backend (and the device, where there is one).
    fn name(&self) -> String;
    /// Values held by `b`.
    fn len(&self, b: &Self::Buf) -> usize;
    /// A buffer of n zeros.
    fn alloc(&self, n: usize) -> Result<Self::Buf>;
    /// A buffer of n unspecified values, for outputs whose every element is written before it
    /// is read (the CPU reuses pooled storage without clearing it).
    fn alloc_stale(&self, n: usize) -> Result<Self::Buf> {
        self.alloc(n)
    }
    /// A buffer holding `v`.
    fn upload(&self, v: &[f32]) -> Result<Self::Buf>;
    /// The values of `b` on the host.
    fn download(&self, b: &Self::Buf) -> Result<Vec<f32>>;
    /// A copy of `b` on this backend.
    fn copy(&self, b: &Self::Buf) -> Result<Self::Buf>;
}

/// How a backend stores the GEMM weights (convolutions and attention projections); biases and
/// normalisation parameters stay f32, and every product accumulates in f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    F32,
    /// bfloat16 (round to nearest even): half the weight bytes (device backends).
    Bf16,
}
