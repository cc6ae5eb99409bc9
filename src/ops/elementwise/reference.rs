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

// ---- Backward twins (of [`super::backward`]) and the f64 forwards their finite differences
// ---- check.

/// v (P) += Σ_s dy[p, s], each plane summed as [`super::backward::plane_sum`] sums it: element i
/// into partial i mod PARTIALS, then the pairwise tree (twin, bit for bit).
pub fn sum_planes(dy: &[f32], s: usize, v: &mut [f32]) {
    use super::backward::PARTIALS;
    for (p, out) in v.iter_mut().enumerate() {
        let mut part = [0.0f32; PARTIALS];
        for (i, e) in dy[p * s..(p + 1) * s].iter().enumerate() {
            part[i % PARTIALS] += e;
        }
        *out += super::backward::tree_sum(part);
    }
}

/// da (B, C1, S), db (B, C2, S) from dy (B, C1 + C2, S), element by element (twin of
/// [`super::backward::split_channels`]).
pub fn split_channels(dy: &[f32], [b, c1, c2, s]: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let (mut da, mut db) = (Vec::new(), Vec::new());
    for bi in 0..b {
        for c in 0..c1 + c2 {
            for e in 0..s {
                let v = dy[(bi * (c1 + c2) + c) * s + e];
                if c < c1 { da.push(v) } else { db.push(v) }
            }
        }
    }
    (da, db)
}

/// dx (P, h, w) = (dy[2i, 2j] + dy[2i + 1, 2j]) + (dy[2i, 2j + 1] + dy[2i + 1, 2j + 1]) from
/// dy (P, 2h, 2w) (twin of [`super::backward::upsample2x_backward`], the same order).
pub fn upsample2x_backward(dy: &[f32], h: usize, w: usize) -> Vec<f32> {
    let planes = dy.len() / (4 * h * w).max(1);
    let mut dx = vec![0.0f32; planes * h * w]; // (P, h, w)
    for p in 0..planes {
        let g = |y: usize, x: usize| dy[(p * 2 * h + y) * 2 * w + x];
        for i in 0..h {
            for j in 0..w {
                dx[(p * h + i) * w + j] = (g(2 * i, 2 * j) + g(2 * i + 1, 2 * j))
                    + (g(2 * i, 2 * j + 1) + g(2 * i + 1, 2 * j + 1));
            }
        }
    }
    dx
}

/// dy · σ(x)(1 + x(1 − σ(x))) in f64: the oracle of [`super::backward::silu_backward`].
pub fn silu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    x.iter()
        .zip(dy)
        .map(|(&x, &g)| {
            let (x, g) = (x as f64, g as f64);
            let s = 1.0 / (1.0 + (-x).exp());
            (g * s * (1.0 + x * (1.0 - s))) as f32
        })
        .collect()
}

/// x (P, S) + v (P) per plane, in f64 (the forward of the plane add).
pub fn add_planes_f64(x: &[f64], v: &[f64], s: usize) -> Vec<f64> {
    x.iter().enumerate().map(|(i, e)| e + v[i / s]).collect()
}

/// y (B, C1 + C2, S) from a (B, C1, S) and b (B, C2, S), in f64.
pub fn concat_f64(a: &[f64], b: &[f64], [bn, c1, c2, s]: [usize; 4]) -> Vec<f64> {
    let mut y = Vec::with_capacity(bn * (c1 + c2) * s); // (B, C1 + C2, S)
    for i in 0..bn {
        y.extend_from_slice(&a[i * c1 * s..(i + 1) * c1 * s]);
        y.extend_from_slice(&b[i * c2 * s..(i + 1) * c2 * s]);
    }
    y
}

/// y (P, 2h, 2w) the nearest 2× upsampling of x (P, h, w), in f64.
pub fn upsample2x_f64(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    let planes = x.len() / (h * w).max(1);
    let mut y = vec![0.0; planes * 4 * h * w]; // (P, 2h, 2w)
    for p in 0..planes {
        for yy in 0..2 * h {
            for xx in 0..2 * w {
                y[(p * 2 * h + yy) * 2 * w + xx] = x[(p * h + yy / 2) * w + xx / 2];
            }
        }
    }
    y
}

/// x·σ(x) in f64.
pub fn silu_f64(x: &[f64]) -> Vec<f64> {
    x.iter().map(|v| v / (1.0 + (-v).exp())).collect()
}
