//! criterion benchmarks of the conv2d backward against its forward, on the DDPM CIFAR-10 U-Net's
//! layers (batch 16: 3×3 128→128 at 32×32, 256→256 at 16×16, the stride-2 downsampling conv
//! 128→128 32×32 → 16×16 with padding (0, 1, 0, 1)) and a small model's 3×3 64→64 at 16×16
//! (batch 64): `cargo bench --bench backward`.
//!
//! Throughput is in FLOP: the forward does 2·B·O·C·kh·kw·Ho·Wo, the backward twice that (dW and
//! dx, each a product of the forward's size; db is negligible), or once that for dW and db alone.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infodiff::ops::conv2d::backward::conv2d_backward;
use infodiff::ops::conv2d::cpu::{ConvWeight, conv2d};
use infodiff::ops::conv2d::out_size;
use std::time::Duration;

fn fill(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i + seed) * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

/// (name, x (B, C, H, W), w (O, C, kh, kw), stride, pad).
type Layer = (&'static str, [usize; 4], [usize; 4], usize, [usize; 4]);

const LAYERS: [Layer; 4] = [
    (
        "3x3_128_32x32_b16",
        [16, 128, 32, 32],
        [128, 128, 3, 3],
        1,
        [1; 4],
    ),
    (
        "3x3_256_16x16_b16",
        [16, 256, 16, 16],
        [256, 256, 3, 3],
        1,
        [1; 4],
    ),
    (
        "3x3s2_128_32x32_b16",
        [16, 128, 32, 32],
        [128, 128, 3, 3],
        2,
        [0, 1, 0, 1],
    ),
    (
        "3x3_64_16x16_b64",
        [64, 64, 16, 16],
        [64, 64, 3, 3],
        1,
        [1; 4],
    ),
];

fn backward(c: &mut Criterion) {
    let mut g = c.benchmark_group("backward");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for (name, xs, ws, stride, pad) in LAYERS {
        let (ho, wo) = out_size(xs, ws, stride, pad).unwrap();
        let [b, cin, h, w] = xs;
        let [o, _, kh, kw] = ws;
        let x = fill(b * cin * h * w, 1);
        let wt = fill(o * cin * kh * kw, 2);
        let bias = fill(o, 3);
        let dy = fill(b * o * ho * wo, 4);
        let flop = (2 * b * o * cin * kh * kw * ho * wo) as u64;
        let packed = ConvWeight::new(&wt, ws).unwrap();
        let mut y = vec![0.0f32; b * o * ho * wo];
        g.throughput(Throughput::Elements(flop));
        g.bench_function(BenchmarkId::new("forward", name), |bch| {
            bch.iter(|| conv2d(&x, xs, &packed, Some(&bias), stride, pad, &mut y).unwrap())
        });
        let mut dx = vec![0.0f32; x.len()];
        let mut dw = vec![0.0f32; wt.len()];
        let mut db = vec![0.0f32; o];
        g.bench_function(BenchmarkId::new("dw_db", name), |bch| {
            bch.iter(|| {
                conv2d_backward(&x, xs, &wt, ws, stride, pad, &dy, None, &mut dw, &mut db).unwrap()
            })
        });
        g.throughput(Throughput::Elements(2 * flop));
        g.bench_function(BenchmarkId::new("dx_dw_db", name), |bch| {
            bch.iter(|| {
                conv2d_backward(
                    &x,
                    xs,
                    &wt,
                    ws,
                    stride,
                    pad,
                    &dy,
                    Some(&mut dx),
                    &mut dw,
                    &mut db,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, backward);
criterion_main!(benches);
