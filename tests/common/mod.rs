//! Helpers shared by the integration tests (each test file includes this with `mod common;`).

use infodiff::tensor::Tensor;

/// ‖got − want‖₂ / ‖want‖₂ in f64.
pub fn rel_l2(got: &Tensor, want: &Tensor) -> f64 {
    let num: f64 = got
        .data
        .iter()
        .zip(&want.data)
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    let den: f64 = want.data.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den).sqrt()
}
