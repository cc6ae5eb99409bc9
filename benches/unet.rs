//! criterion benchmarks of the network kernels: conv2d 3×3 64→64 32×32 (batch 16) and the full
//! U-Net forward of the DDPM CIFAR-10 architecture (random weights, batch 8):
//! `cargo bench --bench unet`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use infodiff::nn::unet::{UNet, UNetConfig};
use infodiff::tensor::Tensor;
use infodiff::tensor::ops::conv2d;

fn fill(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn conv(c: &mut Criterion) {
    let b = 16;
    let x = Tensor::new(vec![b, 64, 32, 32], fill(b * 64 * 32 * 32)).unwrap();
    let w = Tensor::new(vec![64, 64, 3, 3], fill(64 * 64 * 9)).unwrap();
    let bias = Tensor::new(vec![64], fill(64)).unwrap();
    let mut g = c.benchmark_group("conv");
    g.sample_size(20);
    g.throughput(Throughput::Elements((2 * b * 64 * 64 * 9 * 32 * 32) as u64)); // FLOP
    g.bench_function("3x3_64to64_32x32_batch16", |bch| {
        bch.iter(|| conv2d(&x, &w, Some(&bias), 1, 1).unwrap())
    });
    g.finish();
}

fn unet(c: &mut Criterion) {
    let net = UNet::random(UNetConfig::ddpm_cifar10(), 0).unwrap();
    let b = 8;
    let x = Tensor::new(vec![b, 3, 32, 32], fill(b * 3 * 32 * 32)).unwrap();
    let t: Vec<f32> = (0..b).map(|i| (i * 111) as f32).collect();
    let mut g = c.benchmark_group("unet");
    g.sample_size(10);
    g.throughput(Throughput::Elements(b as u64)); // images
    g.bench_function("ddpm_cifar10_batch8", |bch| {
        bch.iter(|| net.forward(&x, &t, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, conv, unet);
criterion_main!(benches);
