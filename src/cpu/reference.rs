//! Scalar f64 references for the tensor ops: the oracles the SIMD kernels are tested against.
//! Written for clarity, with f64 accumulation.

/// C = A·B (+ C when `accumulate`) with f64 accumulation: the oracle of [`crate::cpu::gemm`].
pub fn gemm(
    a: crate::cpu::gemm::MatRef<'_>,
    b: crate::cpu::gemm::MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    for i in 0..a.rows {
        for j in 0..b.cols {
            let mut s = if accumulate {
                c[i * ldc + j] as f64
            } else {
                0.0
            };
            for p in 0..a.cols {
                s += a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64;
            }
            c[i * ldc + j] = s as f32;
        }
    }
}

/// GroupNorm (+ SiLU) of one (batch, group) slice in f64: the oracle of
/// [`crate::cpu::group_norm`]. x: channels × spatial.
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

/// Row softmax of `x` (rows of `cols`) after scaling, in f64: the oracle of
/// [`crate::cpu::softmax::softmax_rows`].
pub fn softmax_rows(x: &[f32], cols: usize, scale: f32) -> Vec<f32> {
    x.chunks(cols)
        .flat_map(|row| {
            let m = row
                .iter()
                .map(|v| *v as f64 * scale as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row
                .iter()
                .map(|v| (*v as f64 * scale as f64 - m).exp())
                .collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / z) as f32)
        })
        .collect()
}

/// SiLU x·σ(x) in f64: the oracle of [`crate::cpu::softmax::silu`].
pub fn silu(x: &[f32]) -> Vec<f32> {
    x.iter()
        .map(|v| (*v as f64 / (1.0 + (-*v as f64).exp())) as f32)
        .collect()
}

/// y = a + b, element by element (twin of [`crate::cpu::elementwise::add`]).
pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// x + v for every element (twin of [`crate::cpu::elementwise::add_scalar`]).
pub fn add_scalar(x: &[f32], v: f32) -> Vec<f32> {
    x.iter().map(|e| e + v).collect()
}
