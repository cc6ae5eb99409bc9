//! GroupNorm(+SiLU) and row-softmax training kernels against their f64 twins: the training
//! forward equals the inference forward, each f64 backward equals central finite differences of
//! its f64 forward, the SIMD backward of every ISA equals the f64 backward, and the parameter
//! gradients are bit-identical on any thread count. Odd sizes throughout.

use infodiff::ops::group_norm::backward::{
    group_norm_backward, group_norm_backward_with, group_norm_forward_save,
    group_norm_forward_save_with,
};
use infodiff::ops::group_norm::cpu::{group_norm, group_norm_slice};
use infodiff::ops::group_norm::params;
use infodiff::ops::group_norm::reference::{
    group_norm_backward_f64, group_norm_f64, group_norm_stats_f64,
};
use infodiff::ops::softmax::backward::{softmax_rows_backward, softmax_rows_backward_with};
use infodiff::ops::softmax::cpu::softmax_rows;
use infodiff::ops::softmax::reference::{
    softmax_rows_backward as softmax_backward_twin, softmax_rows_backward_f64, softmax_rows_f64,
};
use infodiff::simd::IsaKind;

/// n values in [lo, hi) from a hash of (index, seed).
fn fill(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = ((i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503))
                .wrapping_mul(2246822519)
                >> 8) as f32
                / 16_777_216.0;
            lo + (hi - lo) * u
        })
        .collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// max |got − want| / max |want| (0/0 = 0).
fn rel_max(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let e = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    let s = max_abs(want);
    if s == 0.0 { e } else { e / s }
}

/// Central differences of L(v) = Σ w·f(v) with respect to every element of v (step h).
fn fd(v: &[f64], h: f64, loss: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut p = v.to_vec();
    (0..v.len())
        .map(|i| {
            p[i] = v[i] + h;
            let up = loss(&p);
            p[i] = v[i] - h;
            let down = loss(&p);
            p[i] = v[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// (shape (B, C, H, W), groups): odd sizes; one spatial size past the 1024-value fold, one
/// with a single position per channel.
const CASES: [([usize; 4], usize); 5] = [
    ([3, 6, 5, 7], 3),
    ([2, 8, 3, 3], 4),
    ([1, 4, 1, 17], 2),
    ([2, 3, 1, 1], 3),
    ([1, 2, 37, 31], 1),
];

struct Case {
    shape: [usize; 4],
    groups: usize,
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dy: Vec<f32>,
}

fn case(shape: [usize; 4], groups: usize, seed: u32) -> Case {
    let n: usize = shape.iter().product();
    let c = shape[1];
    Case {
        shape,
        groups,
        // an offset mean, as activations have
        x: fill(n, seed, -0.7, 1.3),
        gamma: fill(c, seed + 1, 0.5, 1.5),
        beta: fill(c, seed + 2, -0.5, 0.5),
        dy: fill(n, seed + 3, -1.0, 1.0),
    }
}

const EPS: f32 = 1e-5;

#[test]
fn forward_save_equals_the_forward_and_its_stats_the_f64_ones() {
    for (k, (shape, groups)) in CASES.into_iter().enumerate() {
        let t = case(shape, groups, 10 * k as u32);
        let [b, c, h, w] = shape;
        let (n, cg) = (c / groups * h * w, c / groups);
        for silu in [false, true] {
            let mut y = vec![f32::NAN; t.x.len()];
            let mut stats = vec![f32::NAN; b * groups * 2];
            group_norm_forward_save(
                &t.x, shape, groups, &t.gamma, &t.beta, EPS, silu, &mut y, &mut stats,
            )
            .unwrap();
            let p = params(c, groups, h * w, EPS, silu).unwrap();
            let mut want = vec![0.0f32; t.x.len()];
            group_norm(&p, (b * groups) as u32, &t.x, &mut want, &t.gamma, &t.beta).unwrap();
            // The same SIMD body with the same operations: bit-identical.
            assert_eq!(y, want, "{shape:?} silu={silu}");
            let s64 = group_norm_stats_f64(&wide(&t.x), shape, groups, EPS as f64);
            for (i, (got, want)) in stats.chunks(2).zip(s64.chunks(2)).enumerate() {
                // μ: the f32 rounding of an f64 mean of f32-lane partial sums (≤ 1024 values
                // per lane before the f64 fold): 1e-6 of |μ| + σ. r: f32 rounding of the f64
                // value, whose variance comes from the same lane sums: relative 1e-6.
                let sigma = 1.0 / want[1];
                assert!(
                    (got[0] as f64 - want[0]).abs() <= 1e-6 * (want[0].abs() + sigma),
                    "{shape:?} slice {i}: μ {} vs {}",
                    got[0],
                    want[0]
                );
                assert!(
                    (got[1] as f64 - want[1]).abs() <= 1e-6 * want[1],
                    "{shape:?} slice {i}: r {} vs {}",
                    got[1],
                    want[1]
                );
            }
            for kind in IsaKind::all_available() {
                let mut yk = vec![f32::NAN; t.x.len()];
                let mut sk = vec![f32::NAN; b * groups * 2];
                group_norm_forward_save_with(
                    kind, &t.x, shape, groups, &t.gamma, &t.beta, EPS, silu, &mut yk, &mut sk,
                )
                .unwrap();
                let mut wk = vec![0.0f32; t.x.len()];
                for (bg, (xs, ys)) in t.x.chunks(n).zip(wk.chunks_mut(n)).enumerate() {
                    let g = bg % groups;
                    let r = g * cg..(g + 1) * cg;
                    group_norm_slice(
                        kind,
                        xs,
                        ys,
                        h * w,
                        &t.gamma[r.clone()],
                        &t.beta[r],
                        EPS,
                        silu,
                    );
                }
                // The slice kernel of that ISA: bit-identical.
                assert_eq!(yk, wk, "{kind:?} {shape:?} silu={silu}");
            }
        }
    }
}

#[test]
fn f64_backward_matches_finite_differences() {
    for (shape, groups) in [([3, 6, 5, 7], 3), ([2, 4, 3, 1], 2)] {
        let t = case(shape, groups, 7);
        let (x, ga, be, dy) = (wide(&t.x), wide(&t.gamma), wide(&t.beta), wide(&t.dy));
        let eps = 1e-3; // large enough that the ε term is exercised, not drowned
        for silu in [false, true] {
            let g = group_norm_backward_f64(&x, shape, groups, &ga, &be, eps, silu, &dy);
            let h = 1e-5;
            let fx = fd(&x, h, |v| {
                dot(&dy, &group_norm_f64(v, shape, groups, &ga, &be, eps, silu))
            });
            let fg = fd(&ga, h, |v| {
                dot(&dy, &group_norm_f64(&x, shape, groups, v, &be, eps, silu))
            });
            let fb = fd(&be, h, |v| {
                dot(&dy, &group_norm_f64(&x, shape, groups, &ga, v, eps, silu))
            });
            // Central differences in f64 with h = 1e-5: truncation h²·|L'''|/6 (slices of 6
            // values and ε = 1e-3 make |L'''| ~ r³ large) and rounding 1e-16·|L|/h ≈ 1e-11:
            // measured ≤ 2e-8 of the largest gradient; bound 1e-7, far below any formula
            // error (a wrong term is O(1) of the gradient).
            for (name, got, want) in [
                ("dx", &g.dx, &fx),
                ("dgamma", &g.dgamma, &fg),
                ("dbeta", &g.dbeta, &fb),
            ] {
                let e = rel_max(got, want);
                assert!(e <= 1e-7, "{shape:?} silu={silu} {name}: rel err {e:e}");
            }
        }
    }
}

#[test]
fn simd_backward_matches_f64_on_every_isa() {
    for (k, (shape, groups)) in CASES.into_iter().chain([([2, 32, 9, 11], 8)]).enumerate() {
        let t = case(shape, groups, 100 + k as u32);
        let [b, c, _, _] = shape;
        for silu in [false, true] {
            let g64 = group_norm_backward_f64(
                &wide(&t.x),
                shape,
                groups,
                &wide(&t.gamma),
                &wide(&t.beta),
                EPS as f64,
                silu,
                &wide(&t.dy),
            );
            for kind in IsaKind::all_available() {
                let mut y = vec![0.0f32; t.x.len()];
                let mut stats = vec![0.0f32; b * groups * 2];
                group_norm_forward_save_with(
                    kind, &t.x, shape, groups, &t.gamma, &t.beta, EPS, silu, &mut y, &mut stats,
                )
                .unwrap();
                let mut dx = vec![f32::NAN; t.x.len()]; // overwritten
                let (g0, b0) = (fill(c, 5, -1.0, 1.0), fill(c, 6, -1.0, 1.0)); // +=
                let (mut dg, mut db) = (g0.clone(), b0.clone());
                group_norm_backward_with(
                    kind, &t.x, shape, groups, &t.gamma, &t.beta, silu, &stats, &t.dy, &mut dx,
                    &mut dg, &mut db,
                )
                .unwrap();
                let sub = |a: &[f32], z: &[f32]| -> Vec<f64> {
                    a.iter()
                        .zip(z)
                        .map(|(a, z)| *a as f64 - *z as f64)
                        .collect()
                };
                // dx = r·(g − mean g − x̂·mean(g x̂)) in f32 from f32 (μ, r): each of its three
                // terms is rounded at ≲ 2 ulp of its size, at most r·|γ|·|dy|·SiLU′ (the
                // natural scale of dx before the cancellation; 1.1 bounds SiLU′), plus the
                // means' f32 lane sums (≤ 1024 values before the f64 fold). Measured ≤ 6e-7 of
                // that scale; bound 3e-6. (The slices of one value, where dx is 0 up to
                // rounding, are why the scale is not max |dx|.)
                let rmax = stats.chunks(2).fold(0.0f32, |m, s| m.max(s[1])) as f64;
                let gmax = max_abs(&wide(&t.gamma)) * max_abs(&wide(&t.dy));
                let dx_scale = rmax * gmax * if silu { 1.1 } else { 1.0 };
                let e = wide(&dx)
                    .iter()
                    .zip(&g64.dx)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()))
                    / dx_scale;
                assert!(e <= 3e-6, "{kind:?} {shape:?} silu={silu} dx: err {e:e}");
                // dγ, dβ: f64 sums of per-channel f32 lane sums (≤ 1024 products each) of du·x̂
                // and du, rounded to f32 and added to the start value: measured ≤ 7e-7 of the
                // largest (after subtracting the start); bound 1e-5.
                for (name, got, want) in [
                    ("dgamma", sub(&dg, &g0), &g64.dgamma),
                    ("dbeta", sub(&db, &b0), &g64.dbeta),
                ] {
                    let e = rel_max(&got, want);
                    assert!(
                        e <= 1e-5,
                        "{kind:?} {shape:?} silu={silu} {name}: rel err {e:e}"
                    );
                }
            }
        }
    }
}

/// (y, stats, dx, dγ, dβ) of the default-ISA kernels on the current rayon pool.
fn run_all(t: &Case, silu: bool) -> [Vec<f32>; 5] {
    let [b, c, _, _] = t.shape;
    let mut y = vec![0.0f32; t.x.len()];
    let mut stats = vec![0.0f32; b * t.groups * 2];
    group_norm_forward_save(
        &t.x, t.shape, t.groups, &t.gamma, &t.beta, EPS, silu, &mut y, &mut stats,
    )
    .unwrap();
    let mut dx = vec![0.0f32; t.x.len()];
    let (mut dg, mut db) = (vec![0.25f32; c], vec![-0.5f32; c]);
    group_norm_backward(
        &t.x, t.shape, t.groups, &t.gamma, &t.beta, silu, &stats, &t.dy, &mut dx, &mut dg, &mut db,
    )
    .unwrap();
    [y, stats, dx, dg, db]
}

#[test]
fn backward_is_bit_identical_on_any_thread_count() {
    let t = case([5, 32, 9, 11], 8, 3);
    for silu in [false, true] {
        let runs: Vec<[Vec<f32>; 5]> = [1, 2, 3]
            .into_iter()
            .map(|threads| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| run_all(&t, silu))
            })
            .collect();
        for r in &runs[1..] {
            for (i, (a, b)) in runs[0].iter().zip(r).enumerate() {
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(a), bits(b), "output {i} silu={silu}");
            }
        }
    }
}

#[test]
fn group_norm_shape_errors_are_errors() {
    let t = case([2, 6, 3, 5], 3, 1);
    let (n, c) = (t.x.len(), 6);
    let mut y = vec![0.0; n];
    let mut st = vec![0.0; 12];
    let f = |x: &[f32], groups, ga: &[f32], y: &mut [f32], st: &mut [f32]| {
        group_norm_forward_save(x, t.shape, groups, ga, &t.beta, EPS, true, y, st)
    };
    assert!(f(&t.x, 3, &t.gamma, &mut y, &mut st).is_ok());
    assert!(f(&t.x[1..], 3, &t.gamma, &mut y, &mut st).is_err());
    assert!(f(&t.x, 4, &t.gamma, &mut y, &mut st).is_err()); // 4 ∤ 6
    assert!(f(&t.x, 0, &t.gamma, &mut y, &mut st).is_err());
    assert!(f(&t.x, 3, &t.gamma[1..], &mut y, &mut st).is_err());
    assert!(f(&t.x, 3, &t.gamma, &mut y[1..], &mut st).is_err());
    assert!(f(&t.x, 3, &t.gamma, &mut y, &mut st[1..]).is_err());
    let mut dx = vec![0.0; n];
    let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
    assert!(
        group_norm_backward(
            &t.x, t.shape, 3, &t.gamma, &t.beta, true, &st, &t.dy, &mut dx, &mut dg, &mut db
        )
        .is_ok()
    );
    assert!(
        group_norm_backward(
            &t.x,
            t.shape,
            3,
            &t.gamma,
            &t.beta,
            true,
            &st,
            &t.dy[1..],
            &mut dx,
            &mut dg,
            &mut db
        )
        .is_err()
    );
    assert!(
        group_norm_backward(
            &t.x,
            t.shape,
            3,
            &t.gamma,
            &t.beta,
            true,
            &st,
            &t.dy,
            &mut dx,
            &mut dg[1..],
            &mut db
        )
        .is_err()
    );
    assert!(
        group_norm_backward(
            &t.x,
            t.shape,
            3,
            &t.gamma,
            &t.beta,
            true,
            &st[2..],
            &t.dy,
            &mut dx,
            &mut dg,
            &mut db
        )
        .is_err()
    );
}

#[test]
fn softmax_backward_matches_finite_differences_and_its_twin() {
    let scale = 0.37;
    for cols in [1usize, 7, 17, 33, 1031] {
        let rows = 3;
        let x = wide(&fill(rows * cols, cols as u32, -4.0, 4.0));
        let w = wide(&fill(rows * cols, 1 + cols as u32, -1.0, 1.0));
        let p = softmax_rows_f64(&x, cols, scale);
        let got = softmax_rows_backward_f64(&p, &w, cols, scale);
        let want = fd(&x, 1e-5, |v| dot(&w, &softmax_rows_f64(v, cols, scale)));
        // f64 central differences, h = 1e-5: truncation h²·|L'''|/6 and rounding
        // 1e-16·|L|/h: measured ≤ 3e-10 (absolute; the gradients are O(0.1)); bound 1e-8.
        let e = got
            .iter()
            .zip(&want)
            .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
        assert!(e <= 1e-8, "cols={cols}: FD abs err {e:e}");

        // The SIMD body on f32 softmax rows against its f64 twin.
        let mut pf: Vec<f32> = x.iter().map(|v| *v as f32).collect();
        softmax_rows(infodiff::simd::detected(), &mut pf, cols, scale as f32);
        let dp = fill(rows * cols, 2 + cols as u32, -1.0, 1.0);
        let twin = softmax_backward_twin(&pf, &dp, cols, scale as f32);
        for kind in IsaKind::all_available() {
            let mut dx = vec![f32::NAN; rows * cols];
            softmax_rows_backward_with(kind, &pf, &dp, cols, scale as f32, &mut dx).unwrap();
            for (i, (a, b)) in dx.iter().zip(&twin).enumerate() {
                // dx = s·p·(dp − Σ p dp): the f32 rounding of Σ p·dp (|Σ| ≤ max|dp| = 1),
                // of dp − Σ and of two products: a few ulp of s·p·|dp − Σ| ≤ 2·s·p. Measured
                // ≤ 2e-7·s·p; bound 1e-6·s·p (+1e-30 for underflowed p).
                let tol = 1e-6 * scale as f32 * pf[i] + 1e-30;
                assert!(
                    (a - b).abs() <= tol,
                    "{kind:?} cols={cols} at {i}: {a} vs {b}"
                );
            }
        }
    }
    // Shape errors.
    let p = vec![0.5f32; 6];
    let mut dx = vec![0.0f32; 6];
    assert!(softmax_rows_backward(&p, &p, 3, 1.0, &mut dx).is_ok());
    assert!(softmax_rows_backward(&p, &p, 4, 1.0, &mut dx).is_err());
    assert!(softmax_rows_backward(&p, &p[1..], 3, 1.0, &mut dx).is_err());
    assert!(softmax_rows_backward(&p, &p, 0, 1.0, &mut dx).is_err());
}
