//! The emulator backend: a CPU interpreter of the GPU launches (same parameters, same index
//! arithmetic, the products summed in the kernel's order; the interpreters live beside each
//! op's launch, `ops/*/emu.rs`), so the device forward's orchestration (shapes, strides,
//! offsets of every launch) is tested where no GPU exists. Buffers are host vectors.

use super::Backend;
use crate::error::Result;

/// The CPU interpreter of the kernels (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Emu;

impl Backend for Emu {
    type Buf = Vec<f32>;
    fn name(&self) -> String {
        "emu (CPU interpreter of the GPU kernels)".into()
    }
    fn len(&self, b: &Vec<f32>) -> usize {
        b.len()
    }
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
}

/// Index `i` of a buffer of `len` values, or a shape error naming `op` (the interpreters check
/// every index a launch computes).
pub(crate) fn idx(i: i64, len: usize, op: &'static str) -> crate::Result<usize> {
    if i < 0 || i as usize >= len {
        return Err(crate::Error::shape(op, len, i));
    }
    Ok(i as usize)
}
