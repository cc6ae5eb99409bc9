//! GEMM on every ISA against the f64 reference, on odd sizes, strided and transposed operands.

use infodiff::ops::gemm::reference;
use infodiff::ops::gemm::{MatRef, sgemm};
use infodiff::simd::IsaKind;

fn fill(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

/// Relative error of C against the reference, in f64: |C − C_ref| ≤ 1e-5 · (Σ_p |a||b| + |C₀|)
/// per element (f32 accumulation of K products in a different order).
fn check(
    kind: IsaKind,
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    let a_data = fill(m * k, 1);
    let b_data = fill(k * n, 2);
    let a = if trans_a {
        MatRef::row_major(&a_data, k, m).t()
    } else {
        MatRef::row_major(&a_data, m, k)
    };
    let b = if trans_b {
        MatRef::row_major(&b_data, n, k).t()
    } else {
        MatRef::row_major(&b_data, k, n)
    };
    let ldc = n + 3; // a padded C
    let c0 = fill(m * ldc, 3);
    let mut c = c0.clone();
    let mut want = c0.clone();
    sgemm(kind, a, b, &mut c, ldc, accumulate).unwrap();
    reference::gemm(a, b, &mut want, ldc, accumulate);
    for i in 0..m {
        for j in 0..n {
            let bound: f64 = (0..k)
                .map(|p| {
                    (a.data[i * a.rs + p * a.cs] as f64 * b.data[p * b.rs + j * b.cs] as f64).abs()
                })
                .sum::<f64>()
                + if accumulate {
                    c0[i * ldc + j].abs() as f64
                } else {
                    0.0
                };
            let err = (c[i * ldc + j] as f64 - want[i * ldc + j] as f64).abs();
            assert!(
                err <= 1e-5 * bound + 1e-30,
                "{kind:?} {m}x{n}x{k} tA={trans_a} tB={trans_b} acc={accumulate} at ({i},{j}): {} vs {}",
                c[i * ldc + j],
                want[i * ldc + j]
            );
        }
        // the padding of C is untouched
        for j in n..ldc {
            assert_eq!(c[i * ldc + j], c0[i * ldc + j]);
        }
    }
}

#[test]
fn gemm_matches_reference_on_odd_sizes_for_every_isa() {
    for kind in IsaKind::all_available() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (7, 5, 3),
            (13, 33, 17),
            (37, 65, 300),
            (150, 70, 257),
            (289, 1025, 31),
            // 128 and 250 rows take the 12-row AVX-512 tile, 150 and 289 the 14-row one
            (128, 97, 260),
            (250, 40, 9),
            (5, 3, 0),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                check(kind, m, n, k, ta, tb, false);
            }
            check(kind, m, n, k, false, false, true);
        }
    }
}

#[test]
fn gemm_refuses_mismatched_shapes() {
    let a = vec![0.0f32; 6];
    let b = vec![0.0f32; 6];
    let mut c = vec![0.0f32; 4];
    let e = sgemm(
        infodiff::simd::detected(),
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&b, 2, 3),
        &mut c,
        2,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sgemm"), "{e}");
    let e = sgemm(
        infodiff::simd::detected(),
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&b, 3, 2),
        &mut c[..3],
        2,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("C (M, N)"), "{e}");
}

/// The implicit im2col operand and pre-packed weights give bit-for-bit the product of the
/// explicit im2col matrix (built naively here) with the stored weights, on every ISA: same
/// panels, same kernel. Geometries cover stride 2, asymmetric padding, output rows shorter and
/// longer than a panel, and K crossing the K-block size.
#[test]
fn implicit_im2col_and_packed_weights_match_explicit_gemm_for_every_isa() {
    use infodiff::ops::gemm::{Im2col, PackedA, sgemm_packed};
    // (C, H, W, kh, kw, stride, (top, bottom, left, right), O)
    let cases = [
        (3, 7, 9, 3, 3, 1, (1, 1, 1, 1), 5),
        (37, 11, 13, 3, 3, 1, (1, 1, 1, 1), 17),
        (5, 9, 8, 3, 3, 2, (0, 1, 0, 1), 3),
        (4, 6, 41, 3, 3, 1, (2, 0, 0, 2), 15),
        (2, 5, 5, 1, 1, 2, (0, 0, 0, 0), 29),
        (31, 3, 2, 3, 3, 1, (1, 1, 1, 1), 4),
    ];
    for kind in IsaKind::all_available() {
        for &(c, h, w, kh, kw, s, (pt, pb, pl, pr), o) in &cases {
            let x = fill(c * h * w, 4);
            let wt = fill(o * c * kh * kw, 5);
            let (ho, wo) = ((h + pt + pb - kh) / s + 1, (w + pl + pr - kw) / s + 1);
            let (k, n) = (c * kh * kw, ho * wo);
            let mut cols = vec![0.0f32; k * n]; // (C·kh·kw, Ho·Wo)
            for ci in 0..c {
                for i in 0..kh {
                    for j in 0..kw {
                        for oy in 0..ho {
                            for ox in 0..wo {
                                let iy = (oy * s + i) as isize - pt as isize;
                                let ix = (ox * s + j) as isize - pl as isize;
                                if (0..h as isize).contains(&iy) && (0..w as isize).contains(&ix) {
                                    cols[((ci * kh + i) * kw + j) * n + oy * wo + ox] =
                                        x[(ci * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                }
            }
            let wmat = MatRef::row_major(&wt, o, k);
            let mut want = vec![0.0f32; o * n];
            sgemm(
                kind,
                wmat,
                MatRef::row_major(&cols, k, n),
                &mut want,
                n,
                false,
            )
            .unwrap();
            let implicit = Im2col {
                x: &x,
                c,
                h,
                w,
                kh,
                kw,
                stride: s,
                pad_top: pt,
                pad_left: pl,
                ho,
                wo,
            };
            let packed = PackedA::new(kind, wmat).unwrap();
            let mut got = vec![0.0f32; o * n];
            sgemm_packed(&packed, &implicit, &mut got, n, false, None).unwrap();
            // exact: the same packed panels through the same kernel
            assert_eq!(
                got,
                want,
                "{kind:?} case {:?}",
                (c, h, w, kh, s, (pt, pb, pl, pr), o)
            );
        }
    }
}

/// The bf16 conversions (on the `half` crate) round exactly like the hand-written bit trick
/// they replaced (nearest, ties to even; NaN to 0x7fc0) and like the kernels' widening: bit for
/// bit over a sweep of every exponent and many mantissas, signs, ties, subnormals, infinities.
#[test]
fn bf16_conversions_match_the_bit_trick() {
    use infodiff::ops::gemm::{from_bf16, pack_bf16, to_bf16};
    let trick = |x: f32| -> u16 {
        if x.is_nan() {
            return 0x7fc0;
        }
        let b = x.to_bits();
        ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
    };
    let mut bits: Vec<u32> = (0..u32::MAX / 9973).map(|i| i * 9973).collect();
    for hi in [0u32, 1, 0x7f7f, 0x7f80, 0x8000, 0x3f80, 0x0080] {
        for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
            bits.push(hi << 16 | lo);
            bits.push((hi | 0x8000) << 16 | lo);
        }
    }
    for b in bits {
        let x = f32::from_bits(b);
        assert_eq!(to_bf16(x), trick(x), "to_bf16({x:e}) bits {b:#010x}");
        let h = (b >> 16) as u16;
        assert_eq!(
            from_bf16(h).to_bits(),
            (h as u32) << 16,
            "from_bf16({h:#06x})"
        );
    }
    let v = [1.0f32, -2.5, 3.0e-3, 7.0];
    let p = pack_bf16(&v);
    assert_eq!(p.len(), 2);
    assert_eq!(
        p[0].to_bits(),
        trick(v[0]) as u32 | (trick(v[1]) as u32) << 16
    );
}
