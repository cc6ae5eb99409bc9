//! The f64 oracle of the spatial attention block's training forward and backward
//! ([`super::backward`]), composed from plain loops: per image X = GroupNorm(x) (C, HW);
//! Qᵀ = W_q X + b_q, Kᵀ, Vᵀ alike; per head P_h = softmax(Q_h K_hᵀ/√d_h) (rows over keys),
//! O_h = P_h V_h; y = x + W_o Oᵀ + b_o. The backward differentiates those same loops by hand
//! (see [`super::backward`] for the formulas); the tests check it against central finite
//! differences of [`attention_f64`].

use super::backward::AttnParams;
use crate::ops::group_norm::reference::{group_norm_backward_f64, group_norm_f64};
use crate::ops::softmax::reference::{softmax_rows_backward_f64, softmax_rows_f64};

/// An attention block's parameters in f64, laid out as [`AttnParams`].
#[derive(Clone, Debug)]
pub struct AttnParams64 {
    /// GroupNorm γ, β (C).
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub groups: usize,
    pub eps: f64,
    pub heads: usize,
    /// Weights (C, C) row-major of to_q, to_k, to_v, to_out.0.
    pub w: [Vec<f64>; 4],
    /// Biases (C) of to_q, to_k, to_v, to_out.0.
    pub b: [Vec<f64>; 4],
}

impl AttnParams64 {
    /// The f32 parameters widened.
    pub fn of(p: &AttnParams<'_>) -> AttnParams64 {
        let wide = |v: &[f32]| v.iter().map(|x| *x as f64).collect::<Vec<f64>>();
        AttnParams64 {
            gamma: wide(p.gamma),
            beta: wide(p.beta),
            groups: p.groups,
            eps: p.eps as f64,
            heads: p.heads,
            w: p.qkvo.map(|t| wide(t.0)),
            b: p.qkvo.map(|t| wide(t.1)),
        }
    }
}

/// The gradients of an attention block in f64: dx (B, C, H, W) and the parameters' (as
/// [`AttnParams64`]).
#[derive(Clone, Debug)]
pub struct AttnGrads64 {
    pub dx: Vec<f64>,
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
    pub w: [Vec<f64>; 4],
    pub b: [Vec<f64>; 4],
}

/// W (C, C) · X (C, n) + b, as (C, n).
fn project(w: &[f64], b: &[f64], x: &[f64], c: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; c * n];
    for o in 0..c {
        for i in 0..n {
            let mut acc = b[o];
            for k in 0..c {
                acc += w[o * c + k] * x[k * n + i];
            }
            out[o * n + i] = acc;
        }
    }
    out
}

/// One image's forward intermediates: Qᵀ, Kᵀ, Vᵀ (C, n), P per head (heads, n, n), Oᵀ (C, n).
struct Image {
    qkv: [Vec<f64>; 3],
    p: Vec<Vec<f64>>,
    o: Vec<f64>,
}

fn image_forward(xn: &[f64], c: usize, n: usize, p: &AttnParams64) -> Image {
    let qkv = [0, 1, 2].map(|j| project(&p.w[j], &p.b[j], xn, c, n));
    let dh = c / p.heads;
    let scale = 1.0 / (dh as f64).sqrt();
    let mut o = vec![0.0; c * n];
    let mut probs = Vec::new();
    for h in 0..p.heads {
        let r0 = h * dh;
        // S (n_q, n_k) = Q_h K_hᵀ.
        let mut s = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                s[i * n + j] = (0..dh)
                    .map(|d| qkv[0][(r0 + d) * n + i] * qkv[1][(r0 + d) * n + j])
                    .sum();
            }
        }
        let pm = softmax_rows_f64(&s, n, scale);
        // O_hᵀ[d][i] = Σ_j P_ij V_hᵀ[d][j].
        for d in 0..dh {
            for i in 0..n {
                o[(r0 + d) * n + i] = (0..n)
                    .map(|j| pm[i * n + j] * qkv[2][(r0 + d) * n + j])
                    .sum();
            }
        }
        probs.push(pm);
    }
    Image { qkv, p: probs, o }
}

/// y = x + attention(x) for x (B, C, H, W), in f64.
pub fn attention_f64(x: &[f64], shape: [usize; 4], p: &AttnParams64) -> Vec<f64> {
    let [_, c, h, w] = shape;
    let n = h * w;
    let xn = group_norm_f64(x, shape, p.groups, &p.gamma, &p.beta, p.eps, false);
    let mut y = x.to_vec();
    for (yb, xb) in y.chunks_mut(c * n).zip(xn.chunks(c * n)) {
        let im = image_forward(xb, c, n, p);
        let out = project(&p.w[3], &p.b[3], &im.o, c, n);
        yb.iter_mut().zip(out).for_each(|(y, v)| *y += v);
    }
    y
}

/// The backward of [`attention_f64`] from dy (B, C, H, W), in f64: the oracle of
/// [`super::backward::attention_backward`].
pub fn attention_backward_f64(
    x: &[f64],
    shape: [usize; 4],
    p: &AttnParams64,
    dy: &[f64],
) -> AttnGrads64 {
    let [_, c, h, w] = shape;
    let n = h * w;
    let dh = c / p.heads;
    let scale = 1.0 / (dh as f64).sqrt();
    let xn = group_norm_f64(x, shape, p.groups, &p.gamma, &p.beta, p.eps, false);
    let mut dw: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; c * c]);
    let mut db: [Vec<f64>; 4] = std::array::from_fn(|_| vec![0.0; c]);
    let mut dxn = vec![0.0; x.len()]; // dL/dX
    for ((xb, dyb), dxb) in xn
        .chunks(c * n)
        .zip(dy.chunks(c * n))
        .zip(dxn.chunks_mut(c * n))
    {
        let im = image_forward(xb, c, n, p);
        // Output projection: dW_o[o][k] = Σ_i dY[o][i] Oᵀ[k][i], db_o = Σ_i dY, dOᵀ = W_oᵀ dY.
        let mut dot = vec![0.0; c * n];
        for o in 0..c {
            for i in 0..n {
                let g = dyb[o * n + i];
                db[3][o] += g;
                for k in 0..c {
                    dw[3][o * c + k] += g * im.o[k * n + i];
                    dot[k * n + i] += p.w[3][o * c + k] * g;
                }
            }
        }
        let mut dqkv: [Vec<f64>; 3] = std::array::from_fn(|_| vec![0.0; c * n]);
        let [q, k, v] = &im.qkv;
        for hd in 0..p.heads {
            let (r0, pm) = (hd * dh, &im.p[hd]);
            // dP[i][j] = Σ_d dOᵀ[d][i] Vᵀ[d][j]; dVᵀ[d][j] = Σ_i P[i][j] dOᵀ[d][i].
            let mut dp = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    for d in r0..r0 + dh {
                        dp[i * n + j] += dot[d * n + i] * v[d * n + j];
                        dqkv[2][d * n + j] += pm[i * n + j] * dot[d * n + i];
                    }
                }
            }
            let ds = softmax_rows_backward_f64(pm, &dp, n, scale);
            // dQᵀ[d][i] = Σ_j dS[i][j] Kᵀ[d][j]; dKᵀ[d][j] = Σ_i dS[i][j] Qᵀ[d][i].
            for i in 0..n {
                for j in 0..n {
                    for d in r0..r0 + dh {
                        dqkv[0][d * n + i] += ds[i * n + j] * k[d * n + j];
                        dqkv[1][d * n + j] += ds[i * n + j] * q[d * n + i];
                    }
                }
            }
        }
        // Q/K/V projections: dW[o][k] = Σ_i dZ[o][i] X[k][i], db = Σ_i dZ, dX = Σ Wᵀ dZ.
        for j in 0..3 {
            for o in 0..c {
                for i in 0..n {
                    let g = dqkv[j][o * n + i];
                    db[j][o] += g;
                    for kk in 0..c {
                        dw[j][o * c + kk] += g * xb[kk * n + i];
                        dxb[kk * n + i] += p.w[j][o * c + kk] * g;
                    }
                }
            }
        }
    }
    let gn = group_norm_backward_f64(x, shape, p.groups, &p.gamma, &p.beta, p.eps, false, &dxn);
    AttnGrads64 {
        dx: gn.dx.iter().zip(dy).map(|(a, b)| a + b).collect(),
        gamma: gn.dgamma,
        beta: gn.dbeta,
        w: dw,
        b: db,
    }
}
