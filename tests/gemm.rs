//! GEMM on every ISA against the f64 reference, on odd sizes, strided and transposed operands.

use infodiff::cpu::IsaKind;
use infodiff::cpu::gemm::{MatRef, sgemm};
use infodiff::cpu::reference;

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
        infodiff::cpu::detected(),
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&b, 2, 3),
        &mut c,
        2,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("sgemm"), "{e}");
    let e = sgemm(
        infodiff::cpu::detected(),
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&b, 3, 2),
        &mut c[..3],
        2,
        false,
    )
    .unwrap_err();
    assert!(e.to_string().contains("C (M, N)"), "{e}");
}
