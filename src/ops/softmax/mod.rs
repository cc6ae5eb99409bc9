//! Row softmax with a scale, y_j = exp(s·x_j − max_k s·x_k) / Σ_k exp(s·x_k − max): the
//! attention's normalisation of its scores over keys.
//!
//! [`cpu`] holds the SIMD body, [`mod@reference`] its f64 oracle, [`cuda`] the launch of
//! `kernels/softmax.cu`, [`emu`] the launch interpreted on the CPU.
//!
//! [`backward`]: the CPU backward dx_j = s·y_j·(dy_j − Σ_k y_k dy_k), one more row pass.

pub mod backward;
pub mod cpu;
pub mod cuda;
pub mod emu;
pub mod reference;

use crate::backend::Backend;
use crate::error::Result;

/// Row softmax on a backend.
pub trait SoftmaxOp: Backend {
    /// Softmax in place of each of the first `rows` rows (length n) of x, after scaling.
    fn softmax_rows(&self, x: &mut Self::Buf, rows: u32, n: u32, scale: f32) -> Result<()>;
}
