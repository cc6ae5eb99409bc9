//! The CPU backend: buffers are host vectors from the buffer [`super::pool`] (returned there
//! when dropped), and the ops run the hand-written SIMD kernels of [`crate::ops`] for the
//! detected ISA, parallel on rayon's pool.

use super::Backend;
use super::pool::Pooled;
use crate::error::Result;

/// The host CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Buf = Pooled;
    fn name(&self) -> String {
        format!("cpu ({})", crate::simd::detected().name())
    }
    fn len(&self, b: &Pooled) -> usize {
        b.0.len()
    }
    fn alloc(&self, n: usize) -> Result<Pooled> {
        Ok(Pooled::zeroed(n))
    }
    fn alloc_stale(&self, n: usize) -> Result<Pooled> {
        Ok(Pooled::stale(n))
    }
    fn upload(&self, v: &[f32]) -> Result<Pooled> {
        let mut b = Pooled(super::pool::take(v.len()));
        b.0.extend_from_slice(v);
        Ok(b)
    }
    fn download(&self, b: &Pooled) -> Result<Vec<f32>> {
        Ok(b.0.clone())
    }
    fn copy(&self, b: &Pooled) -> Result<Pooled> {
        self.upload(&b.0)
    }
}
