//! The small backward ops (linear, element-wise, embedding) against their twins and against
//! central finite differences.
//!
//! For a forward y = f(x) and upstream g, the backward is ∇ₓ L of L(x) = Σ g·f(x); the finite
//! difference is (L(x + h eᵢ) − L(x − h eᵢ)) / 2h in f64 on the f64 forward of each op's
//! reference module. Every fast body runs on every ISA this machine has, on odd sizes (tails
//! shorter than a vector, planes not a multiple of the partial sums), including sizes past one
//! parallel chunk.

use infodiff::ops::elementwise::{backward as ew, cpu as ew_cpu, reference as ew_ref};
use infodiff::ops::embedding::{embedding, embedding_backward};
use infodiff::ops::linear::{backward::linear_backward_with, cpu::linear, reference as lin_ref};
use infodiff::simd::isa::IsaKind;

/// f32 unit roundoff.
const U: f64 = f32::EPSILON as f64 / 2.0;

/// Deterministic values in [−0.5, 0.5) (a multiplicative hash of the index and seed).
fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503)))
                >> 8) as f32
                / 16_777_216.0
                - 0.5
        })
        .collect()
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

/// Central differences of the scalar `l` at x, each coordinate with step h.
fn fd_grad(l: impl Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            xp[i] = x[i] + h;
            let up = l(&xp);
            xp[i] = x[i] - h;
            let down = l(&xp);
            xp[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Asserts |got − want| ≤ tol(i) element by element.
fn assert_close(what: &str, got: &[f64], want: &[f64], tol: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol(i),
            "{what}[{i}]: got {g}, want {w}, |Δ| = {:e} > {:e}",
            (g - w).abs(),
            tol(i)
        );
    }
}

// ---------------------------------------------------------------- linear

/// (N, in, out): N below and above the forward's 8-row switch, in and out odd, out = 300 spans
/// two GEMM K blocks of dx = dy·W, N = 37 several MR tiles of dW = dyᵀ·x.
const LINEAR_SIZES: [(usize, usize, usize); 5] = [
    (1, 5, 7),
    (3, 17, 9),
    (9, 33, 13),
    (37, 21, 11),
    (5, 13, 300),
];

#[test]
fn linear_backward_matches_the_f64_reference_on_every_isa() {
    for (n, fin, fout) in LINEAR_SIZES {
        let (x, w, dy) = (fill(n * fin, 1), fill(fout * fin, 2), fill(n * fout, 3));
        let (dw0, db0) = (fill(fout * fin, 4), fill(fout, 5)); // accumulated into
        let want = lin_ref::linear_backward(&f64s(&x), (n, fin, fout), &f64s(&w), &f64s(&dy));
        // Σ|terms| per output: the scale of a sum's rounding error.
        let abs = |v: &[f32]| v.iter().map(|e| e.abs() as f64).collect::<Vec<_>>();
        let mag = lin_ref::linear_backward(&abs(&x), (n, fin, fout), &abs(&w), &abs(&dy));
        for kind in IsaKind::all_available() {
            let mut dx = vec![f32::NAN; n * fin]; // overwritten
            let (mut dw, mut db) = (dw0.clone(), db0.clone());
            linear_backward_with(
                kind,
                &x,
                (n, fin, fout),
                &w,
                &dy,
                Some(&mut dx),
                &mut dw,
                &mut db,
            )
            .unwrap();
            // A K-term f32 sum plus the accumulate is within (K + 1)·u·(Σ|terms| + |C₀|) of the
            // exact value (the worst-case bound of recursive summation); the output rounding
            // adds u·|value|.
            let what = format!("{} ({n}, {fin}, {fout})", kind.name());
            assert_close(&format!("dx {what}"), &f64s(&dx), &want.dx, |i| {
                (fout as f64 + 2.0) * U * mag.dx[i]
            });
            let want_dw: Vec<f64> = want
                .dw
                .iter()
                .zip(&dw0)
                .map(|(g, c)| g + *c as f64)
                .collect();
            assert_close(&format!("dw {what}"), &f64s(&dw), &want_dw, |i| {
                (n as f64 + 2.0) * U * (mag.dw[i] + dw0[i].abs() as f64)
            });
            let want_db: Vec<f64> = want
                .db
                .iter()
                .zip(&db0)
                .map(|(g, c)| g + *c as f64)
                .collect();
            assert_close(&format!("db {what}"), &f64s(&db), &want_db, |i| {
                (n as f64 + 2.0) * U * (mag.db[i] + db0[i].abs() as f64)
            });
            // Without dx: the same parameter gradients, bit for bit.
            let (mut dw2, mut db2) = (dw0.clone(), db0.clone());
            linear_backward_with(kind, &x, (n, fin, fout), &w, &dy, None, &mut dw2, &mut db2)
                .unwrap();
            assert_eq!((dw2, db2), (dw, db), "{what}: dx skipped");
        }
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    for (n, fin, fout) in [(3, 5, 7), (9, 7, 5)] {
        let (x, w, b, g) = (
            f64s(&fill(n * fin, 11)),
            f64s(&fill(fout * fin, 12)),
            f64s(&fill(fout, 13)),
            f64s(&fill(n * fout, 14)),
        );
        let want = lin_ref::linear_backward(&x, (n, fin, fout), &w, &g);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            dot(&g, &lin_ref::linear(x, (n, fin), w, fout, Some(b)))
        };
        // L is linear in each argument: the central difference is exact but for the rounding
        // of L (|L| < 10, ε ≈ 1e−16, over 2h = 2e−3: ~1e−12); 1e−9 leaves room.
        let h = 1e-3;
        assert_close("dx", &want.dx, &fd_grad(|v| loss(v, &w, &b), &x, h), |_| {
            1e-9
        });
        assert_close("dw", &want.dw, &fd_grad(|v| loss(&x, v, &b), &w, h), |_| {
            1e-9
        });
        assert_close("db", &want.db, &fd_grad(|v| loss(&x, &w, v), &b, h), |_| {
            1e-9
        });

        // The fast forward is the reference's (so the backward checked is of the forward used):
        // an `in`-term sum plus the bias, (in + 2)·u·Σ|terms|.
        let (xf, wf, bf): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            x.iter().map(|v| *v as f32).collect(),
            w.iter().map(|v| *v as f32).collect(),
            b.iter().map(|v| *v as f32).collect(),
        );
        let mut y = vec![0.0f32; n * fout];
        linear(&xf, (n, fin), &wf, fout, Some(&bf), &mut y).unwrap();
        let yr = lin_ref::linear(&x, (n, fin), &w, fout, Some(&b));
        let abs = |v: &[f64]| v.iter().map(|e| e.abs()).collect::<Vec<_>>();
        let mag = lin_ref::linear(&abs(&x), (n, fin), &abs(&w), fout, Some(&abs(&b)));
        assert_close("forward", &f64s(&y), &yr, |i| {
            (fin as f64 + 2.0) * U * mag[i]
        });
    }
}

#[test]
fn linear_backward_refuses_mismatched_shapes() {
    let (n, fin, fout) = (3, 5, 7);
    let (x, w, dy) = (fill(n * fin, 1), fill(fout * fin, 2), fill(n * fout, 3));
    let (mut dx, mut dw, mut db) = (vec![0.0; n * fin], vec![0.0; fout * fin], vec![0.0; fout]);
    let k = IsaKind::Scalar;
    let d = (n, fin, fout);
    assert!(linear_backward_with(k, &x[1..], d, &w, &dy, None, &mut dw, &mut db).is_err());
    assert!(linear_backward_with(k, &x, d, &w[1..], &dy, None, &mut dw, &mut db).is_err());
    assert!(linear_backward_with(k, &x, d, &w, &dy[1..], None, &mut dw, &mut db).is_err());
    assert!(linear_backward_with(k, &x, d, &w, &dy, Some(&mut dx[1..]), &mut dw, &mut db).is_err());
    assert!(linear_backward_with(k, &x, d, &w, &dy, None, &mut dw[1..], &mut db).is_err());
    assert!(linear_backward_with(k, &x, d, &w, &dy, None, &mut dw, &mut db[1..]).is_err());
    assert!(linear_backward_with(k, &x, d, &w, &dy, Some(&mut dx), &mut dw, &mut db).is_ok());
}

// ---------------------------------------------------------------- sum_planes (plane add)

/// (P, S): planes shorter than one vector, than the partial sums, not multiples of either,
/// and 61 × 1089 = 66 429 values (past one parallel chunk).
const PLANE_SIZES: [(usize, usize); 6] = [(1, 1), (3, 7), (5, 31), (7, 33), (3, 97), (61, 1089)];

#[test]
fn sum_planes_matches_its_twin_bit_for_bit_on_every_isa() {
    for (p, s) in PLANE_SIZES {
        let dy = fill(p * s, 21);
        let v0 = fill(p, 22);
        let mut want = v0.clone();
        ew_ref::sum_planes(&dy, s, &mut want);
        for kind in IsaKind::all_available() {
            let mut v = v0.clone();
            ew::sum_planes_with(kind, &dy, s, &mut v).unwrap();
            // Exact: the same additions in the same order (partials, tree) on every ISA.
            assert_eq!(
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                "{} ({p}, {s})",
                kind.name()
            );
        }
        // And the twin against the exact f64 sum: an S-term f32 sum plus the accumulate is
        // within (S + 1)·u·(Σ|dy| + |v₀|).
        for (i, (got, v0)) in want.iter().zip(&v0).enumerate() {
            let plane = &dy[i * s..(i + 1) * s];
            let exact = *v0 as f64 + plane.iter().map(|e| *e as f64).sum::<f64>();
            let mag = v0.abs() as f64 + plane.iter().map(|e| e.abs() as f64).sum::<f64>();
            assert!(
                (*got as f64 - exact).abs() <= (s as f64 + 2.0) * U * mag,
                "({p}, {s}) plane {i}: {got} vs {exact}"
            );
        }
    }
}

#[test]
fn sum_planes_is_the_backward_of_the_plane_add() {
    let (p, s) = (5, 13);
    let (x, v, g) = (f64s(&fill(p * s, 31)), f64s(&fill(p, 32)), fill(p * s, 33));
    let gd = f64s(&g);
    let fd = fd_grad(|v| dot(&gd, &ew_ref::add_planes_f64(&x, v, s)), &v, 1e-3);
    let mut got = vec![0.0f32; p];
    ew::sum_planes(&g, s, &mut got).unwrap();
    // L is linear in v (FD exact to ~1e−12); the f32 sum of 13 terms is within 15·u·Σ|g| < 4e−6.
    assert_close("dv", &f64s(&got), &fd, |_| 4e-6);
    // The fast forward is the f64 one (exact: one f32 addition per element, rounded once).
    let xf: Vec<f32> = x.iter().map(|e| *e as f32).collect();
    let vf: Vec<f32> = v.iter().map(|e| *e as f32).collect();
    let mut y = xf.clone();
    ew_cpu::add_planes_par(&mut y, &vf, s);
    let want: Vec<f32> = ew_ref::add_planes_f64(&x, &v, s)
        .iter()
        .map(|e| *e as f32)
        .collect();
    assert_eq!(y, want);
}

#[test]
fn sum_planes_refuses_mismatched_shapes() {
    let mut v = vec![0.0f32; 3];
    assert!(ew::sum_planes(&[0.0; 20], 7, &mut v).is_err());
    assert!(ew::sum_planes(&[0.0; 22], 7, &mut v).is_err());
    assert!(ew::sum_planes(&[0.0; 1], 0, &mut v).is_err());
    assert!(ew::sum_planes(&[], 0, &mut v).is_ok());
    assert!(ew::sum_planes(&[0.0; 21], 7, &mut v).is_ok());
}

// ---------------------------------------------------------------- split_channels (concat)

#[test]
fn split_channels_matches_its_twin_and_finite_differences() {
    // [B, C1, C2, S]: empty parts, odd sizes, and 3 × 37 × 31 × 33 = 70 587 values (past one
    // parallel chunk).
    for dims @ [b, c1, c2, s] in [
        [1, 1, 1, 1],
        [3, 5, 7, 9],
        [2, 0, 3, 5],
        [2, 3, 0, 5],
        [3, 37, 31, 33],
    ] {
        let dy = fill(b * (c1 + c2) * s, 41);
        let (mut da, mut db) = (vec![f32::NAN; b * c1 * s], vec![f32::NAN; b * c2 * s]);
        ew::split_channels(&dy, dims, &mut da, &mut db).unwrap();
        let (wa, wb) = ew_ref::split_channels(&dy, dims);
        assert_eq!((&da, &db), (&wa, &wb), "{dims:?}"); // copies: exact
        if b * (c1 + c2) * s < 1000 {
            let (a, bb) = (f64s(&fill(b * c1 * s, 42)), f64s(&fill(b * c2 * s, 43)));
            let g = f64s(&dy);
            let fa = fd_grad(|v| dot(&g, &ew_ref::concat_f64(v, &bb, dims)), &a, 1e-3);
            let fb = fd_grad(|v| dot(&g, &ew_ref::concat_f64(&a, v, dims)), &bb, 1e-3);
            // L is linear (the central difference exact to ~1e−13); the gradient a copy of g.
            assert_close("da", &f64s(&da), &fa, |_| 1e-10);
            assert_close("db", &f64s(&db), &fb, |_| 1e-10);
        }
    }
    let (mut da, mut db) = (vec![0.0f32; 6], vec![0.0f32; 4]);
    assert!(ew::split_channels(&[0.0; 10], [2, 3, 2, 1], &mut da, &mut db).is_ok());
    assert!(ew::split_channels(&[0.0; 9], [2, 3, 2, 1], &mut da, &mut db).is_err());
    assert!(ew::split_channels(&[0.0; 10], [2, 3, 2, 1], &mut da[1..], &mut db).is_err());
    assert!(ew::split_channels(&[0.0; 10], [2, 3, 2, 1], &mut da, &mut db[1..]).is_err());
}

// ---------------------------------------------------------------- upsample2x_backward

/// (P, h, w): single pixels, odd planes and rows (odd 2w tails of the row sums), and
/// 23 × 27 × 29 planes (4 × 18 009 inputs, past one parallel chunk).
const UPSAMPLE_SIZES: [(usize, usize, usize); 5] =
    [(1, 1, 1), (3, 1, 5), (5, 7, 9), (2, 17, 3), (23, 27, 29)];

#[test]
fn upsample2x_backward_matches_its_twin_bit_for_bit_on_every_isa() {
    for (p, h, w) in UPSAMPLE_SIZES {
        let dy = fill(4 * p * h * w, 51);
        let want = ew_ref::upsample2x_backward(&dy, h, w);
        for kind in IsaKind::all_available() {
            let mut dx = vec![f32::NAN; p * h * w];
            ew::upsample2x_backward_with(kind, &dy, h, w, &mut dx).unwrap();
            // Exact: the same three additions in the same order on every ISA.
            assert_eq!(dx, want, "{} ({p}, {h}, {w})", kind.name());
        }
    }
}

#[test]
fn upsample2x_backward_matches_finite_differences() {
    for (p, h, w) in [(3, 1, 5), (2, 5, 3)] {
        let x = f64s(&fill(p * h * w, 52));
        let g = fill(4 * p * h * w, 53);
        let gd = f64s(&g);
        let fd = fd_grad(|v| dot(&gd, &ew_ref::upsample2x_f64(v, h, w)), &x, 1e-3);
        let mut dx = vec![0.0f32; p * h * w];
        ew::upsample2x_backward(&g, h, w, &mut dx).unwrap();
        // L linear (FD exact to ~1e−12); three f32 additions of |g| ≤ 0.5 err by ≤ 3·u·2 < 4e−7.
        assert_close("dx", &f64s(&dx), &fd, |_| 4e-7);
        // The fast forward is the f64 one (copies).
        let xf: Vec<f32> = x.iter().map(|e| *e as f32).collect();
        let mut y = vec![0.0f32; 4 * p * h * w];
        ew_cpu::upsample2x_par(&xf, &mut y, h, w);
        assert_eq!(f64s(&y), ew_ref::upsample2x_f64(&x, h, w));
    }
}

#[test]
fn upsample2x_backward_refuses_mismatched_shapes() {
    let mut dx = vec![0.0f32; 12];
    assert!(ew::upsample2x_backward(&[0.0; 48], 2, 3, &mut dx).is_ok());
    assert!(ew::upsample2x_backward(&[0.0; 47], 2, 3, &mut dx).is_err());
    assert!(ew::upsample2x_backward(&[0.0; 48], 5, 1, &mut dx[..10]).is_err()); // not whole planes
    assert!(ew::upsample2x_backward(&[0.0; 48], 0, 3, &mut dx).is_err());
    assert!(ew::upsample2x_backward(&[], 0, 3, &mut []).is_ok());
}

// ---------------------------------------------------------------- silu_backward

/// x in [−10, 10) (past the saturation of σ both ways; the cancellation of 1 + x(1 − σ) near
/// x ≈ −1.28), dy in [−0.5, 0.5).
fn silu_inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
    (fill(n, 61).iter().map(|v| 20.0 * v).collect(), fill(n, 62))
}

#[test]
fn silu_backward_matches_the_f64_reference_on_every_isa() {
    // Lengths: shorter than a vector, odd tails, and 50 001 (several parallel chunks).
    for n in [1, 7, 15, 17, 33, 1001, 50_001] {
        let (x, dy) = silu_inputs(n);
        let want = ew_ref::silu_backward(&x, &dy);
        let mut first: Option<Vec<f32>> = None;
        for kind in IsaKind::all_available() {
            let mut dx = vec![f32::NAN; n];
            ew::silu_backward_with(kind, &x, &dy, &mut dx).unwrap();
            // The lane exp is within 3 ulp, σ and 1 − σ then carry ~4u relative (1 − σ an
            // absolute 4u), x(1 − σ) an absolute 4u·|x|, so |Δ| ≤ 8u·(2 + |x|)·|dy|·max(σ, …)
            // ≤ 16u·(2 + |x|)·|dy|: about 2e−5·|dy| at |x| = 10.
            for i in 0..n {
                let tol = 16.0 * U * (2.0 + x[i].abs() as f64) * dy[i].abs() as f64 + 1e-30;
                let d = (dx[i] as f64 - want[i] as f64).abs();
                assert!(
                    d <= tol,
                    "{} n = {n}, x = {}: {} vs {} (|Δ| {d:e} > {tol:e})",
                    kind.name(),
                    x[i],
                    dx[i],
                    want[i]
                );
            }
            // Every ISA gives the same bits (tails run the one-lane body of the same operations).
            match &first {
                None => first = Some(dx),
                Some(f) => assert_eq!(&dx, f, "{} n = {n}", kind.name()),
            }
        }
    }
}

#[test]
fn silu_backward_matches_finite_differences() {
    let (x, g) = silu_inputs(257);
    let (xd, gd) = (f64s(&x), f64s(&g));
    let fd = fd_grad(|v| dot(&gd, &ew_ref::silu_f64(v)), &xd, 1e-4);
    let mut dx = vec![0.0f32; x.len()];
    ew::silu_backward(&x, &g, &mut dx).unwrap();
    // FD truncation h²/6·|g·SiLU‴| ≤ 1e−8/6·0.5·0.5 < 1e−9 (|SiLU‴| ≤ 0.5); the f32 gradient as
    // bounded above, ≤ 16u·12·0.5 ≈ 1.2e−5: 2e−5 bounds both.
    assert_close("dx", &f64s(&dx), &fd, |_| 2e-5);
    // The fast forward against the f64 one (the lane exp within 3 ulp: a few u relative).
    let mut y = x.clone();
    ew_cpu::silu_par(&mut y);
    let yr = ew_ref::silu_f64(&xd);
    assert_close("forward", &f64s(&y), &yr, |i| {
        8.0 * U * (1.0 + xd[i].abs()) + 1e-30
    });
}

#[test]
fn silu_backward_refuses_mismatched_shapes() {
    let mut dx = vec![0.0f32; 5];
    assert!(ew::silu_backward(&[0.0; 5], &[0.0; 5], &mut dx).is_ok());
    assert!(ew::silu_backward(&[0.0; 4], &[0.0; 5], &mut dx).is_err());
    assert!(ew::silu_backward(&[0.0; 5], &[0.0; 4], &mut dx).is_err());
    assert!(ew::silu_backward(&[0.0; 5], &[0.0; 5], &mut dx[1..]).is_err());
}

// ---------------------------------------------------------------- embedding_backward

#[test]
fn embedding_backward_matches_finite_differences_and_accumulates_in_row_order() {
    let (n, d) = (7, 5);
    // Repeated ids (row 3 three times, row 0 twice), one row never drawn.
    let ids = [3, 0, 6, 3, 2, 0, 3, 5, 1];
    let table = f64s(&fill(n * d, 71));
    let g = fill(ids.len() * d, 72);
    let gd = f64s(&g);
    // The forward in f64: rows ids of t, (len(ids), D).
    let gather = |t: &[f64]| -> Vec<f64> {
        ids.iter()
            .flat_map(|&i| t[i * d..(i + 1) * d].to_vec())
            .collect()
    };
    let tf: Vec<f32> = table.iter().map(|v| *v as f32).collect();
    assert_eq!(f64s(&embedding(&tf, (n, d), &ids).unwrap()), gather(&table)); // the fast forward
    let loss = |t: &[f64]| dot(&gd, &gather(t));
    let fd = fd_grad(loss, &table, 1e-3);
    let d0 = fill(n * d, 73); // accumulated into
    let mut dt = d0.clone();
    embedding_backward(&g, (n, d), &ids, &mut dt).unwrap();
    // Up to three f32 additions of values below 0.5: ≤ 3·u·2 < 4e−7 (FD exact to ~1e−12).
    let want: Vec<f64> = fd.iter().zip(&d0).map(|(g, c)| g + *c as f64).collect();
    assert_close("dtable", &f64s(&dt), &want, |_| 4e-7);
    // Row order: row 3 is ((d0 + g0) + g3) + g6, exactly.
    for k in 0..d {
        assert_eq!(
            dt[3 * d + k],
            ((d0[3 * d + k] + g[k]) + g[3 * d + k]) + g[6 * d + k]
        );
    }
}

#[test]
fn embedding_backward_refuses_bad_ids_and_shapes() {
    let (n, d) = (4, 3);
    let g = fill(2 * d, 81);
    let mut dt = vec![0.0f32; n * d];
    assert!(embedding_backward(&g, (n, d), &[1, 4], &mut dt).is_err()); // id 4 of 4 rows
    assert!(
        dt.iter().all(|v| *v == 0.0),
        "an error leaves dtable as it was"
    );
    assert!(embedding_backward(&g[1..], (n, d), &[1, 2], &mut dt).is_err());
    assert!(embedding_backward(&g, (n, d), &[1, 2], &mut dt[1..]).is_err());
    assert!(embedding_backward(&g, (n, d), &[1], &mut dt).is_err());
    assert!(embedding_backward(&g, (n, d), &[1, 2], &mut dt).is_ok());
}

// ---------------------------------------------------------------- thread counts

#[test]
fn parameter_gradients_do_not_depend_on_the_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            // dW of a (37 × 300) · (37 × 45) product, big enough to split over tasks.
            let (n, fin, fout) = (37, 45, 300);
            let (x, w, dy) = (fill(n * fin, 1), fill(fout * fin, 2), fill(n * fout, 3));
            let (mut dw, mut db) = (fill(fout * fin, 4), fill(fout, 5));
            linear_backward_with(
                infodiff::simd::detected(),
                &x,
                (n, fin, fout),
                &w,
                &dy,
                None,
                &mut dw,
                &mut db,
            )
            .unwrap();
            let mut v = fill(61, 6);
            ew::sum_planes(&fill(61 * 1089, 7), 1089, &mut v).unwrap();
            (dw, db, v)
        })
    };
    let one = run(1);
    for threads in [2, 3, 5] {
        assert!(run(threads) == one, "{threads} threads");
    }
}
