//! The f64 oracles of GroupNorm (+ SiLU) ([`super::cpu`]) and of its training forward and
//! backward ([`super::backward`]): written for clarity, with f64 accumulation.

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

/// (μ, r = 1/√(σ² + ε)) of every (image, group) slice of x (B, C, H, W) in f64, as (B·G·2).
pub fn group_norm_stats_f64(x: &[f64], shape: [usize; 4], groups: usize, eps: f64) -> Vec<f64> {
    let [_, c, h, w] = shape;
    let n = c / groups * h * w;
    x.chunks(n.max(1))
        .flat_map(|s| {
            let mean = s.iter().sum::<f64>() / n as f64;
            let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
            [mean, 1.0 / (var + eps).sqrt()]
        })
        .collect()
}

/// GroupNorm (+ SiLU) of x (B, C, H, W) with `groups` groups, γ, β (C), all in f64: the oracle
/// of [`super::backward::group_norm_forward_save`] and the forward whose finite differences
/// check [`group_norm_backward_f64`].
#[allow(clippy::too_many_arguments)]
pub fn group_norm_f64(
    x: &[f64],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    silu: bool,
) -> Vec<f64> {
    let [_, c, h, w] = shape;
    let (s, n) = (h * w, c / groups * h * w);
    let stats = group_norm_stats_f64(x, shape, groups, eps);
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let (slice, ch) = (i / n, (i / s) % c);
            let u = (v - stats[2 * slice]) * stats[2 * slice + 1] * gamma[ch] + beta[ch];
            if silu { u / (1.0 + (-u).exp()) } else { u }
        })
        .collect()
}

/// The gradients of a GroupNorm (+ SiLU) in f64: dx (B, C, H, W), dγ, dβ (C).
#[derive(Clone, Debug)]
pub struct GroupNormGrads64 {
    pub dx: Vec<f64>,
    pub dgamma: Vec<f64>,
    pub dbeta: Vec<f64>,
}

/// The backward of [`group_norm_f64`] from dy (B, C, H, W), in f64: the oracle of
/// [`super::backward::group_norm_backward`]. Per slice of N values, x̂ = (x − μ)·r, u = γx̂ + β,
/// du = dy·SiLU′(u) (or dy), g = du·γ, dx = r·(g − mean g − x̂·mean(g·x̂)), dγ = Σ du·x̂,
/// dβ = Σ du (over every image).
#[allow(clippy::too_many_arguments)]
pub fn group_norm_backward_f64(
    x: &[f64],
    shape: [usize; 4],
    groups: usize,
    gamma: &[f64],
    beta: &[f64],
    eps: f64,
    silu: bool,
    dy: &[f64],
) -> GroupNormGrads64 {
    let [_, c, h, w] = shape;
    let (s, n) = (h * w, c / groups * h * w);
    let stats = group_norm_stats_f64(x, shape, groups, eps);
    let mut out = GroupNormGrads64 {
        dx: vec![0.0; x.len()],
        dgamma: vec![0.0; c],
        dbeta: vec![0.0; c],
    };
    for slice in 0..x.len() / n.max(1) {
        let (mean, r) = (stats[2 * slice], stats[2 * slice + 1]);
        let idx = slice * n..(slice + 1) * n;
        let ch = |i: usize| (i / s) % c;
        let xh: Vec<f64> = idx.clone().map(|i| (x[i] - mean) * r).collect();
        let du: Vec<f64> = idx
            .clone()
            .zip(&xh)
            .map(|(i, xh)| {
                let u = gamma[ch(i)] * xh + beta[ch(i)];
                let sig = 1.0 / (1.0 + (-u).exp());
                if silu {
                    dy[i] * sig * (1.0 + u * (1.0 - sig))
                } else {
                    dy[i]
                }
            })
            .collect();
        let g: Vec<f64> = idx
            .clone()
            .zip(&du)
            .map(|(i, d)| d * gamma[ch(i)])
            .collect();
        let mg = g.iter().sum::<f64>() / n as f64;
        let mgx = g.iter().zip(&xh).map(|(g, x)| g * x).sum::<f64>() / n as f64;
        for (k, i) in idx.enumerate() {
            out.dx[i] = r * (g[k] - mg - xh[k] * mgx);
            out.dgamma[ch(i)] += du[k] * xh[k];
            out.dbeta[ch(i)] += du[k];
        }
    }
    out
}
