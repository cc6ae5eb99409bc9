//! The f64 oracle of the fused neural SDE step.

/// One fused reverse-SDE step of one trajectory `b` in f64 (oracle of
/// [`crate::fused::sde_step::sde_step`] and its GPU twin): returns x', ln π' and the record in
/// the layout of [`crate::fused::sde_step`] (5 + 3K + P values: H(π), Σ π‖Δ‖², flag 0, ‖s‖², the
/// Hutchinson ∇·s, ‖Δ_y‖², ln π, Δ_k·u, partition gaps), everything from π before the update
/// and the coefficients in f64. `eps` is (K+1+2N, D), null label first.
pub fn sde_step(
    p: &crate::fused::sde_step::SdeStepParams,
    b: usize,
    x: &[f32],
    eps: &[f32],
    log_pi: &[f32],
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (k, d) = (p.classes as usize, p.dim as usize);
    let (np, nprobe) = (p.partitions as usize, p.probes as usize);
    let traj = p.traj0 + b as u64;
    let noise = crate::rng::Noise::new(p.key0 as u64 | (p.key1 as u64) << 32);
    let ni = p.neg_inv_sigma as f64;
    let z: Vec<f64> = (0..d)
        .map(|e| {
            if p.sd > 0.0 {
                noise.normal(traj, p.step, e) as f64
            } else {
                0.0
            }
        })
        .collect();
    let su: Vec<f64> = eps[..d].iter().map(|v| *v as f64 * ni).collect();
    let xn = (0..d)
        .map(|e| p.a as f64 * x[e] as f64 + p.c as f64 * su[e] + p.sd as f64 * z[e])
        .collect();
    let mut lp: Vec<f64> = log_pi.iter().map(|v| *v as f64).collect();
    let pi: Vec<f64> = lp.iter().map(|l| l.exp()).collect();
    let delta: Vec<Vec<f64>> = (0..k)
        .map(|y| {
            (0..d)
                .map(|e| eps[(1 + y) * d + e] as f64 * ni - su[e])
                .collect()
        })
        .collect();
    let mut rec = vec![0.0; 5 + 3 * k + np];
    let mut upd = vec![0.0; k];
    for y in 0..k {
        let dot: f64 = delta[y].iter().zip(&z).map(|(a, b)| a * b).sum();
        let d2: f64 = delta[y].iter().map(|a| a * a).sum();
        if pi[y] > 0.0 {
            rec[0] -= pi[y] * lp[y];
        }
        rec[1] += pi[y] * d2;
        rec[5 + y] = d2;
        rec[5 + k + y] = lp[y];
        upd[y] = crate::info::OnlineUpdate {
            cs: p.cs as f64,
            kl: p.kl as f64,
        }
        .increment(dot, d2);
    }
    rec[3] = su.iter().map(|v| v * v).sum();
    let u: Vec<f64> = (0..d)
        .map(|e| {
            (0..k)
                .map(|y| {
                    if pi[y] > 0.0 {
                        pi[y] * lp[y] * delta[y][e]
                    } else {
                        0.0
                    }
                })
                .sum()
        })
        .collect();
    for y in 0..k {
        rec[5 + 2 * k + y] = delta[y].iter().zip(&u).map(|(a, b)| a * b).sum();
    }
    for i in 0..np {
        let (ma, mb) = (p.part_a[i], p.part_b[i]);
        let mass = |m: u32| {
            (0..k)
                .filter(|y| m >> y & 1 != 0)
                .map(|y| pi[y])
                .sum::<f64>()
        };
        let (pa, pb) = (mass(ma), mass(mb));
        if pa > 0.0 && pb > 0.0 {
            rec[5 + 3 * k + i] = (0..d)
                .map(|e| {
                    let g: f64 = (0..k)
                        .map(|y| {
                            let c = if ma >> y & 1 != 0 {
                                pi[y] / pa
                            } else if mb >> y & 1 != 0 {
                                -pi[y] / pb
                            } else {
                                0.0
                            };
                            c * delta[y][e]
                        })
                        .sum();
                    g * g
                })
                .sum();
        }
    }
    if nprobe > 0 {
        // (1/N) Σ_n v_nᵀ(s(x + h v_n) − s(x − h v_n))/(2h), s = −ε̂/σ
        let mut acc = 0.0;
        for n in 0..nprobe {
            for e in 0..d {
                let v = noise.rademacher(traj, p.step, n, e) as f64;
                let diff =
                    eps[(k + 1 + 2 * n) * d + e] as f64 - eps[(k + 2 + 2 * n) * d + e] as f64;
                acc += v * diff * ni;
            }
        }
        rec[4] = acc / (2.0 * p.probe_h as f64 * nprobe as f64);
    }
    if p.sd > 0.0 {
        lp.iter_mut().zip(&upd).for_each(|(l, u)| *l += u);
        let m = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + lp.iter().map(|l| (l - m).exp()).sum::<f64>().ln();
        lp.iter_mut().for_each(|l| *l -= lse);
    }
    (xn, lp, rec)
}
