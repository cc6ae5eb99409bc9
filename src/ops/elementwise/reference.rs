//! Scalar twins of the element-wise kernels ([`super::cpu`]): IEEE addition is exactly rounded,
//! so they agree bit for bit; SiLU in f64.

/// SiLU x·σ(x) in f64: the oracle of [`super::cpu::silu`].
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|v| (*v as f64 / (1.0 + (-*v as f64).exp())) as f32)
        .collect()
}

/// y = a + b, element by element (twin of [`super::cpu::add`]).
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// x + v for every element (twin of [`super::cpu::add_scalar`]).
pub fn add_scalar(x: &[f32], v: f32) -> Vec<f32> {
    x.iter().map(|e| e + v).collect()
}
