//! criterion benchmarks of `infodiff sample`: one batch of 64 through the whole sampling
//! pipeline on the tiny-class fixture (dpmpp_2m, 20 steps, classes cycled, guidance 3: 40
//! guided forwards of 128 rows), the `sample` command itself (N = 64, samples.safetensors and
//! summary.json written, no PNGs), and the sampler arithmetic alone per step at batch 64 of
//! 3×32×32 states (scores given; the part of a step outside the network), and one step's noise
//! drawn scalar and on lanes.
//!
//! `cargo bench --bench sample` (add `-- sample/step` to run one part). The diffusers side of
//! the README's comparison is `benches/diffusers_sample.py`.

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use infodiff::Result;
use infodiff::app::sample::{SampleOptions, sample as run_sample};
use infodiff::diffusion::sampler::ScoreFn;
use infodiff::diffusion::{
    GridPoint, NoObserver, SamplerKind, Scheduler, SigmaGrid, StepCtx, sample_from,
};
use infodiff::io::model_dir::ModelDir;
use infodiff::nn::unet::UNet;
use infodiff::rng::{INIT_STEP, Noise};
use infodiff::score::guided::GuidedUNet;
use infodiff::score::{ScoreCtx, ScoreModel, Scores};

const BATCH: usize = 64;
const STEPS: usize = 20;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/tiny-class")
}

fn pipeline(c: &mut Criterion) {
    let md = ModelDir::open(&fixture()).unwrap();
    let net = UNet::load(&md.unet).unwrap();
    let model =
        GuidedUNet::new(net, md.scheduler.prediction, &[1, 2, 3], "--classes", 3.0).unwrap();
    let kind = SamplerKind::Dpmpp2m;
    let plan = md
        .scheduler
        .plan(&kind, STEPS, SigmaGrid::Scheduler)
        .unwrap();
    let d = model.dim();
    let noise = Noise::new(0);
    let mut z = vec![0.0f32; BATCH * d]; // (B, D)
    for (k, row) in z.chunks_mut(d).enumerate() {
        noise.fill_normals(k as u64, INIT_STEP, row);
    }
    let mut g = c.benchmark_group("sample");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH as u64)); // samples
    g.bench_function(
        "pipeline/tiny_class_dpmpp_2m_20_steps_guided_batch64",
        |b| {
            b.iter(|| {
                let x: Vec<f32> = z
                    .iter()
                    .map(|&v| (plan.init_scale * v as f64) as f32)
                    .collect();
                let mut s = plan.sampler.build(&plan.grid, BATCH, d, 0).unwrap();
                sample_from(&model, &plan.grid, s.as_mut(), noise, 0, x, &mut NoObserver).unwrap()
            })
        },
    );
    let out = std::env::temp_dir().join(format!("infodiff-bench-sample-{}", std::process::id()));
    let mut opts = SampleOptions::new(fixture(), out.clone());
    opts.sampler = Some(kind);
    opts.steps = Some(STEPS);
    opts.classes = vec![1, 2, 3];
    opts.classes_option = "--classes";
    opts.guidance = 3.0;
    opts.num = Some(BATCH);
    opts.images = false;
    g.bench_function("command/tiny_class_dpmpp_2m_20_steps_guided_n64", |b| {
        b.iter(|| run_sample(&opts, None, &|_| {}).unwrap())
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&out);
}

/// A score function no single-stage sampler calls.
struct Unused;
impl ScoreFn for Unused {
    fn scores_at(&self, _: &[f32], _: &GridPoint, _: &ScoreCtx, _: &mut Scores) -> Result<()> {
        unreachable!("single-stage samplers take the scores they are given")
    }
}

fn step(c: &mut Criterion) {
    let sch = Scheduler::ddpm_default();
    let d = 3 * 32 * 32;
    let n = BATCH * d;
    let noise = Noise::new(0);
    let fill = |seed: u64| {
        let mut v = vec![0.0f32; n]; // (B, D)
        Noise::new(seed).fill_normals(0, 0, &mut v);
        v
    };
    let x0 = fill(1);
    let mut scores = Scores::new(BATCH, d, 0);
    scores.uncond = fill(2);
    let mut g = c.benchmark_group("sample");
    g.sample_size(20);
    g.throughput(Throughput::Elements((STEPS * n) as u64)); // state elements stepped
    let kinds = [
        SamplerKind::Ddim {
            eta: 0.0,
            clip: None,
        },
        SamplerKind::Ddpm { clip: None },
        SamplerKind::Euler,
        SamplerKind::EulerAncestral,
        SamplerKind::Dpmpp2m,
        SamplerKind::Dpmpp2mSde,
        SamplerKind::Dpmpp3mSde,
    ];
    for kind in kinds {
        let plan = sch.plan(&kind, STEPS, SigmaGrid::Scheduler).unwrap();
        let pts = &plan.grid.points;
        g.bench_with_input(
            BenchmarkId::new("step/3x32x32_batch64_20_steps", kind.name()),
            &plan,
            |b, plan| {
                let mut x = x0.clone();
                let mut x_next = vec![0.0f32; n]; // (B, D)
                let mut z = vec![0.0f32; n]; // (B, D)
                b.iter(|| {
                    let mut s = plan.sampler.build(&plan.grid, BATCH, d, 0).unwrap();
                    for j in 0..pts.len() - 1 {
                        let ctx = StepCtx {
                            step: j,
                            from: &pts[j],
                            to: plan.grid.target(j),
                            last: j + 2 == pts.len(),
                            noise,
                            first_trajectory: 0,
                            batch: BATCH,
                            dim: d,
                        };
                        s.step(&Unused, &ctx, &x, &scores, &mut x_next, &mut z)
                            .unwrap();
                        std::mem::swap(&mut x, &mut x_next);
                    }
                    x[0]
                })
            },
        );
    }
    g.finish();
}

/// The noise of one step at batch 64 of 3×32×32: `Noise::fill_normals` (one scalar Philox
/// call and Box–Muller per element, what the samplers draw with) against the lane version
/// `infodiff sample` draws its initial noise with (the same values bit for bit).
fn noise(c: &mut Criterion) {
    let d = 3 * 32 * 32;
    let noise = Noise::new(0);
    let mut z = vec![0.0f32; BATCH * d]; // (B, D)
    let mut g = c.benchmark_group("sample");
    g.sample_size(20);
    g.throughput(Throughput::Elements((BATCH * d) as u64)); // normals
    g.bench_function("noise/scalar_fill_normals_3x32x32_batch64", |b| {
        b.iter(|| {
            for (k, row) in z.chunks_mut(d).enumerate() {
                noise.fill_normals_scalar(k as u64, 7, row);
            }
        })
    });
    g.bench_function("noise/lane_fill_normals_3x32x32_batch64", |b| {
        b.iter(|| {
            for (k, row) in z.chunks_mut(d).enumerate() {
                noise.fill_normals(k as u64, 7, row);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, pipeline, step, noise);
criterion_main!(benches);
