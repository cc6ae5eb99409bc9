//! conv2d backward: the f64 reference against central finite differences of the f64 forward,
//! the fast backward against the reference on odd sizes and every ISA, its accumulation
//! semantics, its determinism across thread counts, and its shape errors.

use infodiff::ops::conv2d::backward::{conv2d_backward, conv2d_backward_with};
use infodiff::ops::conv2d::cpu::{ConvWeight, conv2d};
use infodiff::ops::conv2d::{out_size, reference};
use infodiff::simd::IsaKind;

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

/// One layer: x (B, C, H, W), w (O, C, kh, kw), stride, pad (top, bottom, left, right).
#[derive(Clone, Copy, Debug)]
struct Case {
    x: [usize; 4],
    w: [usize; 4],
    stride: usize,
    pad: [usize; 4],
}

const fn case(
    [b, c, h, w]: [usize; 4],
    o: usize,
    (kh, kw): (usize, usize),
    stride: usize,
    pad: [usize; 4],
) -> Case {
    Case {
        x: [b, c, h, w],
        w: [o, c, kh, kw],
        stride,
        pad,
    }
}

/// Odd sizes covering every path of the fast backward (small enough for finite differences).
const SMALL: [Case; 7] = [
    case([3, 5, 9, 7], 7, (3, 3), 1, [1, 1, 1, 1]),
    // diffusers' downsampling conv: stride 2, padding (0, 1, 0, 1)
    case([3, 5, 9, 7], 7, (3, 3), 2, [0, 1, 0, 1]),
    case([3, 5, 9, 7], 7, (1, 1), 1, [0, 0, 0, 0]),
    case([3, 5, 9, 7], 7, (3, 3), 2, [1, 1, 1, 1]),
    // non-square kernel, asymmetric padding, non-square image
    case([2, 3, 8, 11], 4, (3, 2), 1, [2, 0, 0, 1]),
    // padding wider than the kernel (stride 1 through the col2im path)
    case([2, 3, 5, 6], 4, (1, 1), 1, [1, 0, 1, 1]),
    // stride 3, a 2×3 kernel
    case([2, 3, 10, 9], 5, (2, 3), 3, [1, 0, 2, 1]),
];

/// Larger odd sizes: several GEMM K blocks (C·kh·kw = 333, B·Ho·Wo = 429), one image per
/// weight-gradient product (Ho·Wo = 1089 ≥ 1024), row blocks of more than one MC (150 rows).
const LARGE: [Case; 5] = [
    case([3, 37, 11, 13], 6, (3, 3), 1, [1, 1, 1, 1]),
    case([2, 29, 13, 11], 5, (3, 3), 2, [0, 1, 0, 1]),
    case([2, 3, 33, 33], 5, (3, 3), 1, [1, 1, 1, 1]),
    case([1, 150, 5, 7], 151, (3, 3), 1, [1, 1, 1, 1]),
    case([2, 150, 5, 7], 151, (1, 1), 1, [0, 0, 0, 0]),
];

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    dy: Vec<f32>,
    ho: usize,
    wo: usize,
}

fn data(c: &Case) -> Data {
    let (ho, wo) = out_size(c.x, c.w, c.stride, c.pad).unwrap();
    let [b, _, _, _] = c.x;
    Data {
        x: fill(c.x.iter().product(), 1),
        w: fill(c.w.iter().product(), 2),
        dy: fill(b * c.w[0] * ho * wo, 3),
        ho,
        wo,
    }
}

/// The reference forward agrees with the crate's fast forward (tested elsewhere against direct
/// loops), so the oracle below differentiates the convolution the network runs.
#[test]
fn reference_forward_matches_fast_forward() {
    for c in SMALL.iter().chain(&LARGE) {
        let d = data(c);
        let bias = fill(c.w[0], 4);
        let want = reference::conv2d(&d.x, c.x, &d.w, c.w, Some(&bias), c.stride, c.pad);
        let absx: Vec<f32> = d.x.iter().map(|v| v.abs()).collect();
        let absw: Vec<f32> = d.w.iter().map(|v| v.abs()).collect();
        let absb: Vec<f32> = bias.iter().map(|v| v.abs()).collect();
        let mag = reference::conv2d(&absx, c.x, &absw, c.w, Some(&absb), c.stride, c.pad);
        let mut y = vec![f32::NAN; want.len()];
        let wp = ConvWeight::new(&d.w, c.w).unwrap();
        conv2d(&d.x, c.x, &wp, Some(&bias), c.stride, c.pad, &mut y).unwrap();
        // f32 accumulation of C·kh·kw + 1 terms: |err| ≤ n·2⁻²⁴·Σ|terms| (Higham's γ_n), ×2 slack
        let n = (c.w[1] * c.w[2] * c.w[3] + 2) as f64;
        for k in 0..y.len() {
            let err = (y[k] as f64 - want[k]).abs();
            assert!(
                err <= 2.0 * n * f32::EPSILON as f64 / 2.0 * mag[k] + 1e-30,
                "{c:?} y[{k}]: {} vs {}",
                y[k],
                want[k]
            );
        }
    }
}

/// Σ dy ⊙ conv2d(x, w, b) in f64.
fn loss(c: &Case, x: &[f32], w: &[f32], b: &[f32], dy: &[f32]) -> f64 {
    reference::conv2d(x, c.x, w, c.w, Some(b), c.stride, c.pad)
        .iter()
        .zip(dy)
        .map(|(y, g)| y * *g as f64)
        .sum()
}

/// Central difference of `loss` along element k of `v` (the step taken as the f32 values it
/// lands on, so the quotient is that of the points actually evaluated).
fn central(v: &mut [f32], k: usize, f: &mut impl FnMut(&[f32]) -> f64) -> f64 {
    let v0 = v[k];
    let h = 1.0 / 64.0;
    v[k] = v0 + h;
    let (up, xp) = (f(v), v[k] as f64);
    v[k] = v0 - h;
    let (down, xm) = (f(v), v[k] as f64);
    v[k] = v0;
    (up - down) / (xp - xm)
}

/// The loss is linear in each of x, w, b, so the central difference is exact up to f64
/// rounding: |fd − analytic| ≤ 1e-9·(1 + |analytic|) (sums of ~10³ terms of size ~1 rounded at
/// 2⁻⁵³, divided by a step of 2⁻⁵, leave ~1e-11).
#[test]
fn reference_backward_matches_finite_differences() {
    for c in &SMALL {
        let mut d = data(c);
        let mut bias = fill(c.w[0], 4);
        let (dx, dw, db) = reference::conv2d_backward(&d.x, c.x, &d.w, c.w, c.stride, c.pad, &d.dy);
        let close = |fd: f64, an: f64, what: &str, k: usize| {
            assert!(
                (fd - an).abs() <= 1e-9 * (1.0 + an.abs()),
                "{c:?} {what}[{k}]: finite difference {fd} vs {an}"
            );
        };
        let (w0, b0, dy0) = (d.w.clone(), bias.clone(), d.dy.clone());
        for k in 0..d.x.len() {
            let fd = central(&mut d.x, k, &mut |x| loss(c, x, &w0, &b0, &dy0));
            close(fd, dx[k], "dx", k);
        }
        let x0 = d.x.clone();
        for k in 0..d.w.len() {
            let fd = central(&mut d.w, k, &mut |w| loss(c, &x0, w, &b0, &dy0));
            close(fd, dw[k], "dw", k);
        }
        for k in 0..bias.len() {
            let fd = central(&mut bias, k, &mut |b| loss(c, &x0, &w0, b, &dy0));
            close(fd, db[k], "db", k);
        }
    }
}

/// Checks the fast backward of `c` on `kind` against the reference, starting from dw0 and db0
/// (accumulated into) and a dx full of NaN (overwritten).
///
/// Bound per element: each output is an f32 sum of n products (dw, db: n = B·Ho·Wo plus the
/// one add onto dw0/db0; dx: n = O·kh·kw through the GEMM plus kh·kw col2im adds), so
/// |err| ≤ γ_n·Σ|terms| with γ_n ≈ n·2⁻²⁴ (Higham, recursive summation with FMA); the test
/// allows twice that. Σ|terms| is the reference backward of |x|, |w|, |dy| (+ |dw0|, |db0|).
fn check_fast(kind: IsaKind, c: &Case, with_dx: bool, dw0: &[f32], db0: &[f32]) {
    let d = data(c);
    let (rdx, rdw, rdb) = reference::conv2d_backward(&d.x, c.x, &d.w, c.w, c.stride, c.pad, &d.dy);
    let abs = |v: &[f32]| v.iter().map(|t| t.abs()).collect::<Vec<f32>>();
    let (mdx, mdw, mdb) = reference::conv2d_backward(
        &abs(&d.x),
        c.x,
        &abs(&d.w),
        c.w,
        c.stride,
        c.pad,
        &abs(&d.dy),
    );
    let mut dx = vec![f32::NAN; d.x.len()];
    let mut dw = dw0.to_vec();
    let mut db = db0.to_vec();
    conv2d_backward_with(
        kind,
        &d.x,
        c.x,
        &d.w,
        c.w,
        c.stride,
        c.pad,
        &d.dy,
        with_dx.then_some(&mut dx[..]),
        &mut dw,
        &mut db,
    )
    .unwrap();
    let [b, _, _, _] = c.x;
    let [o, _, kh, kw] = c.w;
    let u = f32::EPSILON as f64 / 2.0;
    let n_param = (b * d.ho * d.wo + 2) as f64;
    let n_dx = (o * kh * kw + kh * kw + 2) as f64;
    let near = |got: f32, want: f64, mag: f64, n: f64, what: &str, k: usize| {
        let err = (got as f64 - want).abs();
        assert!(
            err <= 2.0 * n * u * mag + 1e-30,
            "{kind:?} {c:?} {what}[{k}]: {got} vs {want} (|terms| {mag})"
        );
    };
    for k in 0..dw.len() {
        let want = dw0[k] as f64 + rdw[k];
        near(dw[k], want, mdw[k] + dw0[k].abs() as f64, n_param, "dw", k);
    }
    for k in 0..db.len() {
        let want = db0[k] as f64 + rdb[k];
        near(db[k], want, mdb[k] + db0[k].abs() as f64, n_param, "db", k);
    }
    if with_dx {
        for k in 0..dx.len() {
            near(dx[k], rdx[k], mdx[k], n_dx, "dx", k);
        }
    } else {
        assert!(dx.iter().all(|v| v.is_nan()), "dx = None wrote dx");
    }
}

#[test]
fn fast_backward_matches_reference_on_every_isa() {
    for kind in IsaKind::all_available() {
        for c in SMALL.iter().chain(&LARGE) {
            let zeros_w = vec![0.0; c.w.iter().product()];
            let zeros_b = vec![0.0; c.w[0]];
            check_fast(kind, c, true, &zeros_w, &zeros_b);
        }
    }
}

/// dw and db are accumulated into (+=), dx is overwritten (its NaN fill never shows), and
/// dx = None leaves it alone while still giving dw and db.
#[test]
fn backward_accumulates_parameter_gradients_and_overwrites_dx() {
    let kind = infodiff::simd::detected();
    for c in [SMALL[0], SMALL[1], LARGE[0]] {
        let dw0 = fill(c.w.iter().product(), 7);
        let db0 = fill(c.w[0], 8);
        check_fast(kind, &c, true, &dw0, &db0);
        check_fast(kind, &c, false, &dw0, &db0);
    }
    // Two calls accumulate: dw after (a, then a again) is 2·dw(a) up to one rounding per add.
    let c = SMALL[0];
    let d = data(&c);
    let (mut dw, mut db) = (vec![0.0f32; c.w.iter().product()], vec![0.0f32; c.w[0]]);
    let run = |dw: &mut [f32], db: &mut [f32]| {
        conv2d_backward(&d.x, c.x, &d.w, c.w, c.stride, c.pad, &d.dy, None, dw, db).unwrap()
    };
    run(&mut dw, &mut db);
    let (once_w, once_b) = (dw.clone(), db.clone());
    run(&mut dw, &mut db);
    // doubling is exact in f32, and the second call adds the same value onto the first:
    // once + once is what a deterministic second pass must give, bit for bit, when its K loop
    // fits one block (B·Ho·Wo = 189 ≤ 256 here)
    for (k, (a, b)) in dw.iter().zip(&once_w).enumerate() {
        assert_eq!(*a, 2.0 * b, "dw[{k}]");
    }
    for (k, (a, b)) in db.iter().zip(&once_b).enumerate() {
        assert_eq!(*a, 2.0 * b, "db[{k}]");
    }
}

/// The result is bit-identical inside rayon pools of 1, 2 and 3 threads (grouped and
/// ungrouped weight-gradient products, the transposed-convolution and col2im dx paths).
#[test]
fn backward_is_bit_identical_on_any_thread_count() -> Result<(), Box<dyn std::error::Error>> {
    let cases = [
        case([4, 16, 16, 16], 24, (3, 3), 1, [1, 1, 1, 1]),
        case([4, 16, 16, 16], 24, (3, 3), 2, [0, 1, 0, 1]),
        case([2, 8, 33, 33], 12, (3, 3), 1, [1, 1, 1, 1]),
        case([3, 20, 9, 9], 300, (1, 1), 1, [0, 0, 0, 0]),
    ];
    for c in cases {
        let d = data(&c);
        let run = || {
            let mut dx = vec![0.0f32; d.x.len()];
            let mut dw = fill(c.w.iter().product(), 5);
            let mut db = fill(c.w[0], 6);
            conv2d_backward(
                &d.x,
                c.x,
                &d.w,
                c.w,
                c.stride,
                c.pad,
                &d.dy,
                Some(&mut dx),
                &mut dw,
                &mut db,
            )
            .unwrap();
            (dx, dw, db)
        };
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            results.push((threads, pool.install(run)));
        }
        let bits = |v: &[f32]| v.iter().map(|t| t.to_bits()).collect::<Vec<u32>>();
        let (_, first) = &results[0];
        for (threads, r) in &results[1..] {
            assert_eq!(
                bits(&r.0),
                bits(&first.0),
                "{c:?} dx, {threads} threads vs 1"
            );
            assert_eq!(
                bits(&r.1),
                bits(&first.1),
                "{c:?} dw, {threads} threads vs 1"
            );
            assert_eq!(
                bits(&r.2),
                bits(&first.2),
                "{c:?} db, {threads} threads vs 1"
            );
        }
    }
    Ok(())
}

/// Mismatched shapes and impossible geometries are errors, not panics.
#[test]
fn shape_errors_are_errors() {
    let c = SMALL[0];
    let d = data(&c);
    let nw: usize = c.w.iter().product();
    let nx = d.x.len();
    let (o, xs, ws) = (c.w[0], c.x, c.w);
    let call = |x: &[f32],
                xshape: [usize; 4],
                w: &[f32],
                wshape: [usize; 4],
                stride: usize,
                dy: &[f32],
                dx: Option<&mut [f32]>,
                dw: &mut [f32],
                db: &mut [f32]| {
        conv2d_backward(x, xshape, w, wshape, stride, c.pad, dy, dx, dw, db)
    };
    let (mut dx, mut dw, mut db) = (vec![0.0; nx], vec![0.0; nw], vec![0.0; o]);
    // the well-formed call succeeds
    assert!(
        call(
            &d.x,
            xs,
            &d.w,
            ws,
            1,
            &d.dy,
            Some(&mut dx),
            &mut dw,
            &mut db
        )
        .is_ok()
    );
    let short_x = &d.x[..nx - 1];
    assert!(call(short_x, xs, &d.w, ws, 1, &d.dy, None, &mut dw, &mut db).is_err());
    assert!(
        call(
            &d.x,
            xs,
            &d.w[..nw - 1],
            ws,
            1,
            &d.dy,
            None,
            &mut dw,
            &mut db
        )
        .is_err()
    );
    assert!(call(&d.x, xs, &d.w, ws, 1, &d.dy[1..], None, &mut dw, &mut db).is_err());
    let mut short_dx = vec![0.0; nx - 1];
    assert!(
        call(
            &d.x,
            xs,
            &d.w,
            ws,
            1,
            &d.dy,
            Some(&mut short_dx),
            &mut dw,
            &mut db
        )
        .is_err()
    );
    assert!(call(&d.x, xs, &d.w, ws, 1, &d.dy, None, &mut dw[1..], &mut db).is_err());
    assert!(call(&d.x, xs, &d.w, ws, 1, &d.dy, None, &mut dw, &mut db[1..]).is_err());
    // channels that differ between x and w
    let ws_bad = [ws[0], ws[1] + 1, ws[2], ws[3]];
    assert!(call(&d.x, xs, &d.w, ws_bad, 1, &d.dy, None, &mut dw, &mut db).is_err());
    // stride 0, a kernel larger than the padded input
    assert!(call(&d.x, xs, &d.w, ws, 0, &d.dy, None, &mut dw, &mut db).is_err());
    let ws_big = [ws[0], ws[1], 12, 3];
    let mut dw_big = vec![0.0; ws_big.iter().product()];
    let w_big = vec![0.0; dw_big.len()];
    assert!(
        call(
            &d.x,
            xs,
            &w_big,
            ws_big,
            1,
            &d.dy,
            None,
            &mut dw_big,
            &mut db
        )
        .is_err()
    );
    // stride 2 changes (Ho, Wo): the stride-1 dy no longer fits
    assert!(call(&d.x, xs, &d.w, ws, 2, &d.dy, None, &mut dw, &mut db).is_err());
}

/// Degenerate but well-formed shapes (no images, no output channels) return without panicking.
#[test]
fn empty_shapes_are_handled() {
    for (xshape, wshape) in [
        ([0, 3, 5, 5], [4, 3, 3, 3]),
        ([2, 3, 5, 5], [0, 3, 3, 3]),
        ([2, 0, 5, 5], [4, 0, 3, 3]),
    ] {
        let (ho, wo) = out_size(xshape, wshape, 1, [1; 4]).unwrap();
        let x = vec![1.0; xshape.iter().product()];
        let w = vec![1.0; wshape.iter().product()];
        let dy = vec![1.0; xshape[0] * wshape[0] * ho * wo];
        let mut dx = vec![f32::NAN; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; wshape[0]];
        conv2d_backward(
            &x,
            xshape,
            &w,
            wshape,
            1,
            [1; 4],
            &dy,
            Some(&mut dx),
            &mut dw,
            &mut db,
        )
        .unwrap();
        // no output channels: nothing flows back, dx is zero
        assert!(dx.iter().all(|v| *v == 0.0), "{xshape:?} {wshape:?}");
    }
}
