//! The f64 oracle of the row softmax ([`super::cpu`]): written for clarity, with f64 accumulation.

/// Row softmax of `x` (rows of `cols`) after scaling, in f64: the oracle of
/// [`super::cpu::softmax_rows`].
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

/// Row softmax of `x` (rows of `cols`) after scaling, all in f64: the forward whose finite
/// differences check [`softmax_rows_backward_f64`].
pub fn softmax_rows_f64(x: &[f64], cols: usize, scale: f64) -> Vec<f64> {
    x.chunks(cols.max(1))
        .flat_map(|row| {
            let m = row
                .iter()
                .map(|v| v * scale)
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v * scale - m).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(move |v| v / z)
        })
        .collect()
}

/// dx = scale·p ⊙ (dp − Σ_j p_j dp_j) per row of `cols`, in f64: the backward of
/// [`softmax_rows_f64`] given its output p.
pub fn softmax_rows_backward_f64(p: &[f64], dp: &[f64], cols: usize, scale: f64) -> Vec<f64> {
    p.chunks(cols.max(1))
        .zip(dp.chunks(cols.max(1)))
        .flat_map(|(p, dp)| {
            let dot: f64 = p.iter().zip(dp).map(|(a, b)| a * b).sum();
            p.iter()
                .zip(dp)
                .map(move |(p, d)| scale * p * (d - dot))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// [`softmax_rows_backward_f64`] of f32 p, dp, rounded to f32: the oracle of
/// [`super::backward::softmax_rows_backward`].
pub fn softmax_rows_backward(p: &[f32], dp: &[f32], cols: usize, scale: f32) -> Vec<f32> {
    let wide = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<_>>();
    softmax_rows_backward_f64(&wide(p), &wide(dp), cols, scale as f64)
        .into_iter()
        .map(|v| v as f32)
        .collect()
}
