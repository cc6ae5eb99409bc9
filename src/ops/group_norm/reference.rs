//! The f64 oracle of GroupNorm (+ SiLU) ([`super::cpu`]): written for clarity, with f64 accumulation.

/// GroupNorm (+ SiLU) of one (batch, group) slice in f64: the oracle of
/// [`super::cpu`]. x: channels × spatial.
pub fn group_norm(
    x: &[f32],
    spatial: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Vec<f32> {
    let n = x.len() as f64;
    let mean = x.iter().map(|v| *v as f64).sum::<f64>() / n;
    let var = x.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps as f64).sqrt();
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let c = i / spatial;
            let z = (*v as f64 - mean) * inv * gamma[c] as f64 + beta[c] as f64;
            (if silu { z / (1.0 + (-z).exp()) } else { z }) as f32
        })
        .collect()
}
