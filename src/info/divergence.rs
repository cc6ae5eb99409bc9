//! Hutchinson estimate of the score divergence for any [`ScoreModel`]:
//! ∇·s(x) ≈ (1/P) Σ_p v_pᵀ (s(x + h v_p) − s(x − h v_p)) / (2h), v_p Rademacher.
//! Unbiased up to O(h²) for the Jacobian trace; its variance is 2 Σ_{i≠j} J_ij² per probe (zero
//! for a diagonal Jacobian, e.g. in one dimension).

use crate::diffusion::GridPoint;
use crate::error::Result;
use crate::rng::Noise;
use crate::score::{ScoreModel, Scores};

/// ```
/// use infodiff::info::hutchinson_divergence;
/// use infodiff::rng::Noise;
/// use infodiff::score::{Component, GaussianMixture, ScoreModel, Scores};
/// use infodiff::diffusion::{Process, Vp};
/// let m = GaussianMixture::new(vec![
///     Component { weight: 1.0, mean: vec![-1.0, 0.5], var: vec![0.2, 0.1], class: 0 },
///     Component { weight: 1.0, mean: vec![1.0, -0.5], var: vec![0.0, 0.3], class: 1 },
/// ]).unwrap();
/// let p = Vp::new(0.1, 20.0).unwrap().grid(10).unwrap().points[5];
/// let x = [0.3f32, -0.2];
/// let mut s = Scores::new(1, 2, 2);
/// m.scores(&x, &p, &mut s).unwrap();
/// let exact = s.divergence.unwrap()[0];
/// let est = hutchinson_divergence(&m, &x, &p, 2000, 1e-2 * p.sigma, &Noise::new(3)).unwrap()[0];
/// assert!((est - exact).abs() < 0.05 * exact.abs());
/// ```
///
/// Per-state Hutchinson divergence of `model` at `x` (B, D) with `probes` probes and step `h`
/// (choose h well above the f32 resolution of x, e.g. 1e-2·σ_t). Probes come from `noise` (trajectory = row,
/// step = probe index), so the estimate is reproducible. Returns (B).
pub fn hutchinson_divergence<M: ScoreModel + ?Sized>(
    model: &M,
    x: &[f32],
    point: &GridPoint,
    probes: usize,
    h: f64,
    noise: &Noise,
) -> Result<Vec<f64>> {
    let d = model.dim();
    let b = x.len() / d;
    let k = model.num_classes();
    let mut out = vec![0.0f64; b];
    let mut xp = vec![0.0f32; b * d];
    let mut xm = vec![0.0f32; b * d];
    let mut v = vec![0.0f32; b * d];
    let (mut sp, mut sm) = (Scores::new(b, d, k), Scores::new(b, d, k));
    for p in 0..probes {
        for (row, vr) in v.chunks_mut(d).enumerate() {
            for (e, ve) in vr.iter_mut().enumerate() {
                let bit = noise.words(row as u64, p as u32, (e / 128) as u32)[(e / 32) % 4]
                    >> (e % 32)
                    & 1;
                *ve = if bit == 1 { 1.0 } else { -1.0 };
            }
        }
        for i in 0..b * d {
            xp[i] = (x[i] as f64 + h * v[i] as f64) as f32;
            xm[i] = (x[i] as f64 - h * v[i] as f64) as f32;
        }
        model.scores(&xp, point, &mut sp)?;
        model.scores(&xm, point, &mut sm)?;
        for r in 0..b {
            let mut acc = 0.0f64;
            for e in 0..d {
                let i = r * d + e;
                acc += (sp.uncond[i] as f64 - sm.uncond[i] as f64) * v[i] as f64;
            }
            out[r] += acc / (2.0 * h) / probes as f64;
        }
    }
    Ok(out)
}
