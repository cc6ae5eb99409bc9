//! The f64 oracle of the GEMM ([`super::cpu`]): written for clarity, with f64 accumulation.

/// C = A·B (+ C when `accumulate`) with f64 accumulation: the oracle of [`super::cpu`].
pub fn gemm(
    a: super::MatRef<'_>,
    b: super::MatRef<'_>,
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
