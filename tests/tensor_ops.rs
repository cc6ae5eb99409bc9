//! Tensor ops against naive f64 implementations on odd sizes.

use infodiff::tensor::Tensor;
use infodiff::tensor::ops::{conv2d, group_norm, linear, upsample_nearest2x};

fn fill(shape: Vec<usize>, seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n)
        .map(|i| {
            (((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect();
    Tensor::new(shape, data).unwrap()
}

#[test]
fn conv2d_matches_direct_convolution() {
    for &(b, c, h, w, o, k, s, p) in &[
        (2, 3, 7, 9, 5, 3, 1, 1),
        (1, 4, 8, 8, 3, 3, 2, 1),
        (3, 5, 5, 6, 7, 1, 1, 0),
        (1, 2, 9, 7, 4, 3, 2, 2),
        (2, 3, 4, 4, 2, 1, 2, 0),
        // K = 37·9 = 333 spans two GEMM K blocks; N = 11·13 = 143 spans output rows in a panel
        (1, 37, 11, 13, 6, 3, 1, 1),
        (2, 29, 13, 11, 5, 3, 2, 1),
    ] {
        let x = fill(vec![b, c, h, w], 1);
        let wt = fill(vec![o, c, k, k], 2);
        let bias = fill(vec![o], 3);
        let y = conv2d(&x, &wt, Some(&bias), s, p).unwrap();
        let (ho, wo) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
        assert_eq!(y.shape, vec![b, o, ho, wo]);
        for bi in 0..b {
            for oc in 0..o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bias.data[oc] as f64;
                        let mut mag = bias.data[oc].abs() as f64;
                        for ci in 0..c {
                            for i in 0..k {
                                for j in 0..k {
                                    let (iy, ix) = (
                                        (oy * s + i) as isize - p as isize,
                                        (ox * s + j) as isize - p as isize,
                                    );
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv = x.data
                                        [((bi * c + ci) * h + iy as usize) * w + ix as usize]
                                        as f64;
                                    let wv = wt.data[((oc * c + ci) * k + i) * k + j] as f64;
                                    acc += xv * wv;
                                    mag += (xv * wv).abs();
                                }
                            }
                        }
                        let got = y.data[((bi * o + oc) * ho + oy) * wo + ox] as f64;
                        // f32 accumulation: 1e-5 of the sum of magnitudes
                        assert!(
                            (got - acc).abs() <= 1e-5 * mag + 1e-7,
                            "{b}x{c}x{h}x{w} k{k} s{s} p{p}: {got} vs {acc}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn group_norm_and_linear_and_upsample_match_naive() {
    let (b, c, h, w, g) = (3, 6, 5, 3, 3);
    let x = fill(vec![b, c, h, w], 4);
    let (ga, be) = (fill(vec![c], 5), fill(vec![c], 6));
    for silu in [false, true] {
        let y = group_norm(&x, g, &ga, &be, 1e-5, silu).unwrap();
        let per = c / g * h * w;
        for bi in 0..b {
            for gi in 0..g {
                let chunk: Vec<f64> = x.data[(bi * c + gi * c / g) * h * w..][..per]
                    .iter()
                    .map(|v| *v as f64)
                    .collect();
                let mean = chunk.iter().sum::<f64>() / per as f64;
                let var = chunk.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / per as f64;
                for (i, v) in chunk.iter().enumerate() {
                    let ch = gi * c / g + i / (h * w);
                    let mut z =
                        (v - mean) / (var + 1e-5).sqrt() * ga.data[ch] as f64 + be.data[ch] as f64;
                    if silu {
                        z /= 1.0 + (-z).exp();
                    }
                    let got = y.data[(bi * c + gi * c / g) * h * w + i] as f64;
                    assert!(
                        (got - z).abs() < 1e-5,
                        "group_norm silu={silu}: {got} vs {z}"
                    );
                }
            }
        }
    }
    // 1 and 7 rows take the few-rows path (W as the GEMM's A), 13 the general one
    for rows in [1usize, 7, 13] {
        let xl = fill(vec![rows, 5], 7);
        let wl = fill(vec![3, 5], 8);
        let bl = fill(vec![3], 9);
        for bias in [Some(&bl), None] {
            let yl = linear(&xl, &wl, bias).unwrap();
            assert_eq!(yl.shape, vec![rows, 3]);
            for n in 0..rows {
                for o in 0..3 {
                    let want: f64 = bias.map_or(0.0, |b| b.data[o] as f64)
                        + (0..5)
                            .map(|i| xl.data[n * 5 + i] as f64 * wl.data[o * 5 + i] as f64)
                            .sum::<f64>();
                    // f32 accumulation of 5 products of magnitude ≤ 0.25: 1e-6 absolute
                    assert!((yl.data[n * 3 + o] as f64 - want).abs() < 1e-6);
                }
            }
        }
    }
    let xl = fill(vec![7, 5], 7);
    assert!(linear(&xl, &fill(vec![3, 4], 1), None).is_err());
    let u = upsample_nearest2x(&x).unwrap();
    assert_eq!(u.shape, vec![b, c, 2 * h, 2 * w]);
    // channel 1, upsampled row 2, column 3 comes from row 1, column 1
    assert_eq!(
        u.data[(2 * h) * (2 * w) + 2 * (2 * w) + 3],
        x.data[h * w + w + 1]
    );
}
