//! criterion benchmarks of the GEMM kernel (square, row-major) on every ISA:
//! `cargo bench --bench gemm`. Throughput is reported in FLOP (2·M·N·K per product).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infodiff::ops::gemm::{MatRef, sgemm};
use infodiff::simd::IsaKind;

fn gemm(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    for n in [256usize, 1024, 4096] {
        let a: Vec<f32> = (0..n * n).map(|i| (i % 97) as f32 * 0.01).collect();
        let b: Vec<f32> = (0..n * n).map(|i| (i % 89) as f32 * 0.01).collect();
        let mut out = vec![0.0f32; n * n];
        g.throughput(Throughput::Elements((2 * n * n * n) as u64));
        for kind in IsaKind::all_available() {
            if kind == IsaKind::Scalar && n > 256 {
                continue; // software FMA: minutes per product
            }
            g.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |bch, &n| {
                bch.iter(|| {
                    sgemm(
                        kind,
                        MatRef::row_major(&a, n, n),
                        MatRef::row_major(&b, n, n),
                        &mut out,
                        n,
                        false,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, gemm);
criterion_main!(benches, peak);

/// The measured FMA peak of all cores (one register-only FMA loop per rayon thread).
fn fma_peak(c: &mut Criterion) {
    use rayon::prelude::*;
    let kind = infodiff::simd::detected();
    let threads = rayon::current_num_threads();
    let iters = 1 << 20;
    let flops = infodiff::ops::gemm::fma_peak_probe(kind, iters) * threads as f64;
    let mut g = c.benchmark_group("fma_peak");
    g.sample_size(10);
    g.throughput(Throughput::Elements(flops as u64));
    g.bench_function(kind.name(), |b| {
        b.iter(|| {
            (0..threads)
                .into_par_iter()
                .map(|_| infodiff::ops::gemm::fma_peak_probe(kind, iters))
                .sum::<f64>()
        })
    });
    g.finish();
}

criterion_group!(peak, fma_peak);
