//! Counter-based noise: trajectory k is bit-identical alone, in a batch of 7 or of 20,000, on 1 or
//! 2 threads, on every ISA; the sums do not depend on the thread count.

use infodiff::app;
use infodiff::diffusion::{NoObserver, sample};
use infodiff::fused::mixture_trajectory::{MixturePlan, run};
use infodiff::info::{InfoObserver, InfoSpec, Tracking};
use infodiff::rng::Noise;
use infodiff::score::ScoreModel;
use infodiff::simd::IsaKind;

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .unwrap()
}

#[test]
fn fused_trajectories_do_not_depend_on_batch_threads_or_isa() {
    let cfg = app::default_config();
    let (m, spec, grid) = (
        cfg.mixture().unwrap(),
        cfg.spec().unwrap(),
        cfg.grid().unwrap(),
    );
    let plan = MixturePlan::new(&m, &spec, &grid, &cfg.sampler, Noise::new(cfg.seed)).unwrap();
    let n = 20_000;
    let kind = infodiff::simd::detected();
    let mut all1 = vec![0.0f32; n];
    let mut all2 = vec![0.0f32; n];
    let s1 = pool(1)
        .install(|| run(&plan, kind, 0, n, Some(&mut all1)))
        .unwrap();
    let s2 = pool(2)
        .install(|| run(&plan, kind, 0, n, Some(&mut all2)))
        .unwrap();
    assert_eq!(all1, all2, "1 vs 2 threads");
    assert_eq!(s1, s2, "sums are reduced in a fixed order");
    for k in [0usize, 1, 127, 128, 5_003, 19_999] {
        let mut alone = vec![0.0f32; 1];
        run(&plan, kind, k as u64, 1, Some(&mut alone)).unwrap();
        assert_eq!(
            alone[0].to_bits(),
            all1[k].to_bits(),
            "trajectory {k} alone"
        );
        let start = k.saturating_sub(3).min(n - 7);
        let mut seven = vec![0.0f32; 7];
        run(&plan, kind, start as u64, 7, Some(&mut seven)).unwrap();
        assert_eq!(
            seven[k - start].to_bits(),
            all1[k].to_bits(),
            "trajectory {k} in a batch of 7"
        );
        for other in IsaKind::all_available() {
            let mut o = vec![0.0f32; 1];
            run(&plan, other, k as u64, 1, Some(&mut o)).unwrap();
            assert_eq!(
                o[0].to_bits(),
                all1[k].to_bits(),
                "trajectory {k} on {other:?}"
            );
        }
    }
}

#[test]
fn generic_sampler_trajectories_do_not_depend_on_batch() {
    let mut cfg = app::default_config();
    cfg.steps = 100;
    let (m, grid) = (cfg.mixture().unwrap(), cfg.grid().unwrap());
    let noise = Noise::new(11);
    let big = sample(&m, &grid, &cfg.sampler, noise, 0, 300, &mut NoObserver).unwrap();
    let seven = sample(&m, &grid, &cfg.sampler, noise, 200, 7, &mut NoObserver).unwrap();
    let alone = sample(&m, &grid, &cfg.sampler, noise, 203, 1, &mut NoObserver).unwrap();
    assert_eq!(&big[200..207], &seven[..]);
    assert_eq!(big[203].to_bits(), alone[0].to_bits());
    // and the observer sees the same noise the kernel draws
    let spec = InfoSpec::new(m.class_prior(), vec![]).unwrap();
    let mut obs = InfoObserver::new(&spec, Tracking::Online, 7, &grid);
    let with_obs = sample(&m, &grid, &cfg.sampler, noise, 200, 7, &mut obs).unwrap();
    assert_eq!(with_obs, seven, "observing does not change the trajectory");
}

#[test]
fn job_results_do_not_depend_on_thread_count() {
    let mut cfg = app::default_config();
    cfg.trajectories = 3_001;
    let a = pool(1).install(|| app::run(&cfg, None, None)).unwrap();
    let b = pool(2).install(|| app::run(&cfg, None, None)).unwrap();
    assert_eq!(a.curves, b.curves);
    let ga = pool(1)
        .install(|| app::run(&cfg, Some(app::Engine::Generic), None))
        .unwrap();
    let gb = pool(2)
        .install(|| app::run(&cfg, Some(app::Engine::Generic), None))
        .unwrap();
    assert_eq!(ga.curves, gb.curves);
}
