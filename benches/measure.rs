//! criterion benchmarks: the fused mixture trajectory kernel on the default job (20,000
//! trajectories × 1000 steps × 4 components) for every ISA, the generic observer path, and the
//! lane math functions.
//!
//! `cargo bench --bench measure` (add `-- mixture_trajectory` to run one group).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infodiff::app::{self, Engine};
use infodiff::fused::mixture_trajectory::{MixturePlan, run};
use infodiff::rng::Noise;
use infodiff::simd::IsaKind;
use infodiff::simd::math::{MathFn, eval_slice};

fn mixture_trajectory(c: &mut Criterion) {
    let cfg = app::default_config();
    let (m, spec, grid) = (
        cfg.mixture().unwrap(),
        cfg.spec().unwrap(),
        cfg.grid().unwrap(),
    );
    let plan = MixturePlan::new(&m, &spec, &grid, &cfg.sampler, Noise::new(0)).unwrap();
    let mut g = c.benchmark_group("mixture_trajectory");
    g.sample_size(10);
    for kind in IsaKind::all_available() {
        // The scalar fallback (software FMA) is ~50x slower: it runs 1/20 of the trajectories.
        let n = if kind == IsaKind::Scalar {
            cfg.trajectories / 20
        } else {
            cfg.trajectories
        };
        g.throughput(Throughput::Elements((n * grid.steps()) as u64)); // trajectory-steps
        g.bench_with_input(
            BenchmarkId::new("default_job", kind.name()),
            &kind,
            |b, &kind| b.iter(|| run(&plan, kind, 0, n, None).unwrap()),
        );
    }
    g.finish();
}

fn generic_path(c: &mut Criterion) {
    let mut cfg = app::default_config();
    cfg.trajectories = 2_000;
    cfg.steps = 200;
    let mut g = c.benchmark_group("generic_observer");
    g.sample_size(10);
    g.throughput(Throughput::Elements((cfg.trajectories * cfg.steps) as u64));
    g.bench_function("default_mixture_2000x200", |b| {
        b.iter(|| app::run(&cfg, Some(Engine::Generic), None).unwrap())
    });
    g.finish();
}

fn lane_math(c: &mut Criterion) {
    let n = 4096;
    let x: Vec<f32> = (0..n).map(|i| 0.001 + i as f32 * 0.01).collect();
    let mut out = vec![0.0f32; n];
    let mut g = c.benchmark_group("lane_math");
    g.throughput(Throughput::Elements(n as u64));
    for kind in IsaKind::all_available() {
        for f in [MathFn::Exp, MathFn::Ln, MathFn::Cos2Pi] {
            g.bench_function(format!("{f:?}/{}", kind.name()), |b| {
                b.iter(|| eval_slice(kind, f, &x, &mut out))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, mixture_trajectory, generic_path, lane_math);
criterion_main!(benches);
