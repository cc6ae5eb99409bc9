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
