//! The training loop's parts against closed forms and hand-computed numbers: AdamW (torch's
//! update, hand-computed for three steps; the f32 lanes against the f64 twin; every ISA bit for
//! bit), global-norm clipping, the EMA decay and the LR schedules, the DSM targets of all three
//! prediction types, the label-dropout rate, and the loop itself on a mock network: the same
//! bytes on any thread count, resume bit-identity, refusals of foreign checkpoints, and a
//! non-finite loss or gradient stopping at its step with the state untouched.

use infodiff::Error;
use infodiff::data::{Dataset, Factor};
use infodiff::diffusion::Scheduler;
use infodiff::rng::Noise;
use infodiff::simd::IsaKind;
use infodiff::train::checkpoint::{self, CheckpointMeta};
use infodiff::train::loss::{DSM_KEY, Dsm, DsmBatch, PredictionType, mse};
use infodiff::train::optim::{
    self, AdamW, CHUNK, Ema, EmaWarmup, LrSchedule, adamw_on, clip_coef, clip_grad_norm, ema_on,
    grad_norm, reference, scale_on,
};
use infodiff::train::{Network, TrainConfig, TrainState, Trainer};
use serde_json::json;

/// Deterministic pseudo-random values in [−1, 1) (a Philox stream of its own).
fn uniforms(seed: u64, n: usize) -> Vec<f32> {
    let noise = Noise::new(seed);
    (0..n)
        .map(|i| {
            let w = noise.words(i as u64, 7, 9)[0];
            (w >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

// ---- AdamW -------------------------------------------------------------------------------

#[test]
fn adamw_matches_hand_computed_steps() {
    // θ₀ = 0.5, g = 0.2, −0.1, 0.05, η = 0.01, β = (0.9, 0.999), ε = 1e-8, λ = 0.1. Step 1 by
    // hand: θ = 0.5·(1 − 0.001) = 0.4995; m = 0.1·0.2 = 0.02; v = 0.001·0.04 = 4e-5;
    // m̂/(√v̂ + ε) = 0.02/0.1 / (0.2 + 1e-8); θ = 0.4995 − 0.01·(0.2/0.20000001) = 0.4895000005.
    // Steps 2 and 3 the same formula (worked in f64 with Python's floats).
    let opt = AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.1,
    };
    let want = [
        (0.4895000005, 0.02, 4.0e-5),
        (0.48634713027136756, 0.008, 4.996e-5),
        (0.4824564919164363, 0.0122, 5.241004e-5),
    ];
    let (mut p, mut m, mut v) = (vec![0.5f32], vec![0.0f32], vec![0.0f32]);
    let (mut p64, mut m64, mut v64) = (vec![0.5f64], vec![0.0f64], vec![0.0f64]);
    for (k, (g, (wp, wm, wv))) in [0.2f32, -0.1, 0.05].iter().zip(want).enumerate() {
        let k = k as u64 + 1;
        opt.step(0.01, k, &mut p, &mut m, &mut v, &[*g]).unwrap();
        reference::adamw_step(&opt, 0.01, k, &mut p64, &mut m64, &mut v64, &[*g as f64]);
        // f32 state: a few ulp of each value (2⁻²³ ≈ 1.2e-7 relative per operation, < 10 ops).
        assert!(
            (p[0] as f64 - wp).abs() < 2e-6 * wp,
            "step {k}: θ {} vs {wp}",
            p[0]
        );
        assert!(
            (m[0] as f64 - wm).abs() < 2e-6 * wm,
            "step {k}: m {} vs {wm}",
            m[0]
        );
        assert!(
            (v[0] as f64 - wv).abs() < 2e-6 * wv,
            "step {k}: v {} vs {wv}",
            v[0]
        );
        // The f64 twin is the same formula: to f64 rounding (g = f32(0.05) differs from 0.05
        // by 7e-10 relative, which moves θ by far less than 1e-9).
        assert!(
            (p64[0] - wp).abs() < 1e-9,
            "step {k}: f64 θ {} vs {wp}",
            p64[0]
        );
    }
}

#[test]
fn adamw_f32_lanes_follow_the_f64_twin() {
    // An odd length spanning three chunks; 25 steps with the cosine schedule's rates.
    let n = 2 * CHUNK + 1001;
    let opt = AdamW::default();
    let mut p: Vec<f32> = uniforms(1, n);
    let mut p64: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut m64, mut v64) = (vec![0.0f64; n], vec![0.0f64; n]);
    for k in 1..=25u64 {
        let g = uniforms(100 + k, n);
        let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
        let lr = 1e-3 * LrSchedule::Cosine.factor(k - 1, 5, 25);
        opt.step(lr, k, &mut p, &mut m, &mut v, &g).unwrap();
        reference::adamw_step(&opt, lr, k, &mut p64, &mut m64, &mut v64, &g64);
    }
    let worst = p
        .iter()
        .zip(&p64)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max);
    // Each step moves θ by ≤ η ≈ 1e-3 with a relative f32 error of a few 2⁻²⁴ in the update
    // and one rounding of θ (|θ| ≤ 1: 6e-8); 25 steps: below 25·(6e-8 + 1e-3·1e-6) ≈ 1.5e-6.
    assert!(worst < 2e-6, "worst |θ32 − θ64| = {worst:e}");
}

#[test]
fn adamw_ema_and_scale_lanes_are_bit_identical_on_every_isa() {
    let opt = AdamW {
        beta1: 0.9,
        beta2: 0.99,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    for n in [1usize, 7, 15, 17, 33, 1001] {
        let p0 = uniforms(3, n);
        let g = uniforms(4, n);
        let m0 = uniforms(5, n);
        let v0: Vec<f32> = uniforms(6, n).iter().map(|x| x.abs()).collect();
        let s = opt.scalars(3e-3, 4);
        let run = |kind: IsaKind| {
            let (mut p, mut m, mut v) = (p0.clone(), m0.clone(), v0.clone());
            adamw_on(kind, s, &mut p, &mut m, &mut v, &g);
            let mut e = m0.clone();
            ema_on(kind, 0.37, &mut e, &p0);
            let mut c = g.clone();
            scale_on(kind, &mut c, 0.3);
            (p, m, v, e, c)
        };
        let want = run(IsaKind::Scalar);
        for kind in IsaKind::all_available() {
            let got = run(kind);
            // IEEE add/sub/mul/div/sqrt, no FMA: the same bits on every ISA.
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.0), bits(&want.0), "{} θ n={n}", kind.name());
            assert_eq!(bits(&got.1), bits(&want.1), "{} m n={n}", kind.name());
            assert_eq!(bits(&got.2), bits(&want.2), "{} v n={n}", kind.name());
            assert_eq!(bits(&got.3), bits(&want.3), "{} ema n={n}", kind.name());
            assert_eq!(bits(&got.4), bits(&want.4), "{} scale n={n}", kind.name());
        }
    }
}

#[test]
fn adamw_refuses_mismatched_lengths_and_step_zero() {
    let opt = AdamW::default();
    let (mut p, mut m, mut v) = (vec![0.0f32; 3], vec![0.0f32; 3], vec![0.0f32; 2]);
    let e = opt
        .step(1e-3, 1, &mut p, &mut m, &mut v, &[0.0; 3])
        .unwrap_err();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let mut v = vec![0.0f32; 3];
    assert!(
        opt.step(1e-3, 0, &mut p, &mut m, &mut v, &[0.0; 3])
            .is_err()
    );
    let bad = AdamW {
        beta2: 1.0,
        ..AdamW::default()
    };
    assert!(bad.validate().unwrap_err().to_string().contains("beta2"));
}

// ---- clipping, EMA, schedule -------------------------------------------------------------

#[test]
fn clipping_scales_to_the_bound_and_the_norm_is_thread_independent() {
    let n = 3 * CHUNK + 77;
    let g = uniforms(11, n);
    let want = reference::grad_norm(&g);
    let norms: Vec<f64> = [1, 2, 5]
        .iter()
        .map(|&t| pool(t).install(|| grad_norm(&g)))
        .collect();
    // Fixed chunks summed in chunk order: bitwise the same on any pool.
    assert!(
        norms.iter().all(|x| x.to_bits() == norms[0].to_bits()),
        "{norms:?}"
    );
    // f64 sums of 2·10⁵ terms in another grouping: relative 1e-12 is ~10⁴ ulp of margin.
    assert!(
        (norms[0] - want).abs() < 1e-12 * want,
        "{} vs {want}",
        norms[0]
    );
    let mut c = g.clone();
    let before = clip_grad_norm(&mut c, Some(1.0));
    assert_eq!(before.to_bits(), norms[0].to_bits());
    let after = reference::grad_norm(&c);
    // torch's coefficient 1/(‖g‖ + 1e-6), applied in f32 (relative 1e-7 per element).
    let expect = want * clip_coef(want, 1.0);
    assert!((after - expect).abs() < 1e-6, "{after} vs {expect}");
    assert!(after <= 1.0 + 1e-6);
    // Below the bound: untouched.
    let mut d = g.clone();
    clip_grad_norm(&mut d, Some(10.0 * want));
    assert_eq!(d, g);
    clip_grad_norm(&mut d, None);
    assert_eq!(d, g);
}

#[test]
fn ema_decay_follows_diffusers_get_decay() {
    let power = Ema {
        decay: 0.999,
        warmup: EmaWarmup::Power {
            inv_gamma: 1.0,
            power: 0.75,
        },
    };
    // Update 1 copies the weights (step = 0 → decay 0); update 2: 1 − 2^(−3/4).
    assert_eq!(power.decay_at(1), 0.0);
    assert!((power.decay_at(2) - 0.4053964424986395).abs() < 1e-15);
    // 1 − (1 + 99)^(−3/4) = 1 − 10^(−1.5)
    assert!((power.decay_at(100) - (1.0 - 10f64.powf(-1.5))).abs() < 1e-15);
    // Capped at the decay: 1 − (1 + s)^(−3/4) ≥ 0.999 from s = 10⁴ − 1.
    assert_eq!(power.decay_at(20_000), 0.999);
    let simple = Ema {
        decay: 0.9,
        warmup: EmaWarmup::Simple,
    };
    assert_eq!(simple.decay_at(1), 0.0);
    assert!((simple.decay_at(2) - 2.0 / 11.0).abs() < 1e-15);
    assert_eq!(simple.decay_at(1000), 0.9);
    let off = Ema {
        decay: 0.5,
        warmup: EmaWarmup::Off,
    };
    assert_eq!(off.decay_at(1), 0.5);
    // The update: θ̄ − (1 − d)(θ̄ − θ); with d = 0.5, halfway.
    let mut e = vec![1.0f32, -2.0, 4.0];
    off.update(1, &mut e, &[3.0, 2.0, 4.0]).unwrap();
    assert_eq!(e, vec![2.0, 0.0, 4.0]);
    let mut e64 = vec![1.0f64, -2.0, 4.0];
    reference::ema(0.5, &mut e64, &[3.0, 2.0, 4.0]);
    assert_eq!(e64, vec![2.0, 0.0, 4.0]);
    // Update 1 with a warm-up copies θ exactly.
    let mut e = vec![1.0f32; 5];
    let p = uniforms(2, 5);
    power.update(1, &mut e, &p).unwrap();
    assert_eq!(e, p);
}

#[test]
fn lr_schedules_match_diffusers_lambdas() {
    // Warm-up: s/W (the first update runs at 0, as LambdaLR starts at lr_lambda(0)).
    for sch in [LrSchedule::Constant, LrSchedule::Cosine] {
        assert_eq!(sch.factor(0, 10, 100), 0.0);
        assert_eq!(sch.factor(5, 10, 100), 0.5);
        assert_eq!(sch.factor(10, 10, 100), 1.0);
    }
    assert_eq!(LrSchedule::Constant.factor(99, 10, 100), 1.0);
    // Cosine: ½(1 + cos(π·45/90)) = ½ at s = 55; 0 at s = S.
    assert!((LrSchedule::Cosine.factor(55, 10, 100) - 0.5).abs() < 1e-15);
    assert!(LrSchedule::Cosine.factor(100, 10, 100).abs() < 1e-15);
    // No warm-up: the full rate from the first update.
    assert_eq!(LrSchedule::Cosine.factor(0, 0, 100), 1.0);
    let cfg = TrainConfig {
        lr: 2e-3,
        warmup: 4,
        steps: 8,
        schedule: LrSchedule::Constant,
        ..TrainConfig::default()
    };
    assert_eq!(cfg.lr_at(2), 1e-3);
}

// ---- DSM ---------------------------------------------------------------------------------

#[test]
fn dsm_targets_match_the_closed_forms() {
    let sch = Scheduler::ddpm_default();
    let (b, d) = (37usize, 13usize);
    let x0 = uniforms(21, b * d);
    for pred in [
        PredictionType::Epsilon,
        PredictionType::VPrediction,
        PredictionType::Sample,
    ] {
        let dsm = Dsm::new(&sch, pred, 5, 0.0, vec![]).unwrap();
        let mut out = DsmBatch::default();
        dsm.prepare(3, &x0, &[], d, &mut out).unwrap();
        let noise = Noise::new(5 ^ DSM_KEY);
        for row in 0..b {
            let t = out.timesteps[row];
            assert!(t < 1000);
            assert_eq!(out.t[row], t as f32);
            assert_eq!(t, dsm.timestep(3, row));
            let ab = sch.alphas_cumprod[t];
            let (a, s) = (ab.sqrt(), (1.0 - ab).sqrt());
            for e in 0..d {
                let i = row * d + e;
                // ε is the first normal of counter (e, row, step).
                assert_eq!(out.noise[i], noise.normals4(3, row as u32, e as u32)[0]);
                let (x, eps) = (x0[i] as f64, out.noise[i] as f64);
                let xt = a * x + s * eps;
                let want = match pred {
                    PredictionType::Epsilon => eps,
                    PredictionType::VPrediction => a * eps - s * x,
                    PredictionType::Sample => x,
                };
                // f32 coefficients (1 ulp each) and two products and a sum in f32, on values
                // of size ≤ ~5: 1e-6 absolute is a few ulp.
                assert!(
                    (out.x_t[i] as f64 - xt).abs() < 1e-6,
                    "{pred:?} x_t row {row}"
                );
                assert!(
                    (out.target[i] as f64 - want).abs() < 1e-6,
                    "{pred:?} target row {row}"
                );
                if pred == PredictionType::VPrediction {
                    // x₀ = √ᾱ x_t − √(1−ᾱ) v, since ᾱ + (1 − ᾱ) = 1.
                    let back = a * out.x_t[i] as f64 - s * out.target[i] as f64;
                    assert!((back - x).abs() < 2e-6, "v round trip row {row}");
                }
            }
        }
    }
}

#[test]
fn dsm_timesteps_are_uniform_and_noise_is_standard_normal() {
    let sch = Scheduler::ddpm_default();
    let dsm = Dsm::new(&sch, PredictionType::Epsilon, 9, 0.0, vec![]).unwrap();
    let n = 20_000usize;
    let ts: Vec<usize> = (0..n)
        .map(|r| dsm.timestep(r as u64 / 100, r % 100))
        .collect();
    let mean = ts.iter().sum::<usize>() as f64 / n as f64;
    // Uniform on 0..999: mean 499.5, sd 288.7/√n = 2.04; 5 sd.
    assert!((mean - 499.5).abs() < 10.2, "mean t {mean}");
    assert!(ts.iter().all(|&t| t < 1000));
    assert!(ts.contains(&0) && ts.contains(&999));
    let mut out = DsmBatch::default();
    let x0 = vec![0.0f32; 64 * 100];
    dsm.prepare(0, &x0, &[], 100, &mut out).unwrap();
    let m = out.noise.iter().map(|&z| z as f64).sum::<f64>() / 6400.0;
    let v = out.noise.iter().map(|&z| (z as f64).powi(2)).sum::<f64>() / 6400.0;
    // 6400 normals: mean within 5/80, second moment within 5·√2/80.
    assert!(
        m.abs() < 0.0625 && (v - 1.0).abs() < 0.09,
        "mean {m}, E z² {v}"
    );
}

#[test]
fn label_dropout_rate_and_independence() {
    let sch = Scheduler::ddpm_default();
    let p = 0.3;
    let dsm = Dsm::new(&sch, PredictionType::Epsilon, 4, p, vec![5, 3]).unwrap();
    let (b, d, steps) = (100usize, 2usize, 200u64);
    let x0 = vec![0.0f32; b * d];
    let labels: Vec<i64> = (0..b)
        .flat_map(|r| [(r % 5) as i64, (r % 3) as i64])
        .collect();
    let (mut d0, mut d1, mut both) = (0usize, 0usize, 0usize);
    let mut out = DsmBatch::default();
    for s in 0..steps {
        dsm.prepare(s, &x0, &labels, d, &mut out).unwrap();
        for r in 0..b {
            let (a, c) = (out.labels[2 * r], out.labels[2 * r + 1]);
            let (x, y) = (a == 5, c == 3);
            // Kept labels are the data's.
            if !x {
                assert_eq!(a, labels[2 * r]);
            }
            if !y {
                assert_eq!(c, labels[2 * r + 1]);
            }
            assert_eq!(x, dsm.dropped(s, r, 0));
            d0 += x as usize;
            d1 += y as usize;
            both += (x && y) as usize;
        }
    }
    let n = (b as u64 * steps) as f64;
    let sd = (p * (1.0 - p) / n).sqrt(); // 0.0032
    for (name, k) in [("factor 0", d0), ("factor 1", d1)] {
        let rate = k as f64 / n;
        assert!((rate - p).abs() < 5.0 * sd, "{name}: rate {rate}");
    }
    let joint = both as f64 / n;
    let sdj = (p * p * (1.0 - p * p) / n).sqrt();
    assert!(
        (joint - p * p).abs() < 5.0 * sdj,
        "joint rate {joint} (independent: {})",
        p * p
    );
    // p = 0: never; a label outside 0..null is refused naming the factor.
    let none = Dsm::new(&sch, PredictionType::Epsilon, 4, 0.0, vec![5, 3]).unwrap();
    none.prepare(1, &x0, &labels, d, &mut out).unwrap();
    assert_eq!(out.labels, labels);
    let mut bad = labels.clone();
    bad[3] = 3; // factor 1's null, not a data label
    let e = none
        .prepare(1, &x0, &bad, d, &mut out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("factor 1"), "{e}");
}

#[test]
fn mse_and_its_gradient() {
    let out = [1.0f32, 2.0, -1.0, 0.5, 0.0, 3.0];
    let target = [0.0f32, 2.0, 1.0, 0.5, 1.0, 1.0];
    let mut dout = [0.0f32; 6];
    let (loss, rows) = mse(&out, &target, 3, &mut dout).unwrap();
    // (1 + 0 + 4 + 0 + 1 + 4)/6
    assert_eq!(loss, 10.0 / 6.0);
    assert_eq!(rows, vec![5.0, 5.0]);
    let want: Vec<f32> = out
        .iter()
        .zip(&target)
        .map(|(o, t)| (2.0f64 / 6.0) as f32 * (o - t))
        .collect();
    assert_eq!(dout.to_vec(), want);
    assert!(mse(&out[..5], &target, 3, &mut dout).is_err());
}

// ---- the loop on a mock network ------------------------------------------------------------

/// 37 examples of 1×3×5 in 3 classes: a class pattern plus a small per-example offset.
struct MockData {
    factors: Vec<Factor>,
}

impl MockData {
    fn new() -> MockData {
        MockData {
            factors: vec![Factor {
                name: "class".into(),
                cardinality: 3,
            }],
        }
    }
}

const D: usize = 15;
const K: usize = 3;

impl Dataset for MockData {
    fn name(&self) -> String {
        "mock".into()
    }
    fn len(&self) -> usize {
        37
    }
    fn shape(&self) -> [usize; 3] {
        [1, 3, 5]
    }
    fn factors(&self) -> &[Factor] {
        &self.factors
    }
    fn example(&self, i: usize, image: &mut [f32], labels: &mut [i64]) -> infodiff::Result<()> {
        let c = i % K;
        for (e, v) in image.iter_mut().enumerate() {
            *v = if (e + c) % 3 == 0 { 0.8 } else { -0.6 } + 0.01 * ((i * 7 + e) % 5) as f32;
        }
        labels[0] = c as i64;
        Ok(())
    }
}

/// out = w ⊙ x + u ⊙ (t/1000) x + c[y] (per element; c has K + 1 rows, the null last).
/// `nan_forward` / `nan_backward`: the call (1-based) whose output / gradient is NaN.
struct MockNet {
    batch: usize,
    x: Vec<f32>,
    tau: Vec<f32>,
    y: Vec<usize>,
    out: Vec<f32>,
    calls: usize,
    nan_forward: Option<usize>,
    nan_backward: Option<usize>,
}

impl MockNet {
    fn new(batch: usize) -> MockNet {
        MockNet {
            batch,
            x: vec![],
            tau: vec![],
            y: vec![],
            out: vec![],
            calls: 0,
            nan_forward: None,
            nan_backward: None,
        }
    }
    const N: usize = D * (2 + K + 1);
}

impl Network for MockNet {
    fn n_params(&self) -> usize {
        MockNet::N
    }
    fn batch(&self) -> usize {
        self.batch
    }
    fn forward(
        &mut self,
        p: &[f32],
        x: &[f32],
        t: &[f32],
        labels: Option<&[i64]>,
    ) -> infodiff::Result<&[f32]> {
        self.calls += 1;
        let b = self.batch;
        assert_eq!(x.len(), b * D);
        self.x = x.to_vec();
        self.tau = t.iter().map(|t| t / 1000.0).collect();
        self.y = (0..b)
            .map(|r| labels.map_or(K, |l| l[r] as usize))
            .collect();
        self.out = vec![0.0; b * D];
        let (w, u, c) = (&p[..D], &p[D..2 * D], &p[2 * D..]);
        for r in 0..b {
            for i in 0..D {
                let xi = x[r * D + i];
                self.out[r * D + i] = w[i] * xi + u[i] * self.tau[r] * xi + c[self.y[r] * D + i];
            }
        }
        if self.nan_forward == Some(self.calls) {
            self.out[7] = f32::NAN;
        }
        Ok(&self.out)
    }
    fn backward(&mut self, _p: &[f32], dout: &[f32], g: &mut [f32]) -> infodiff::Result<()> {
        g.fill(0.0);
        for r in 0..self.batch {
            for i in 0..D {
                let (go, xi) = (dout[r * D + i], self.x[r * D + i]);
                g[i] += go * xi;
                g[D + i] += go * self.tau[r] * xi;
                g[2 * D + self.y[r] * D + i] += go;
            }
        }
        if self.nan_backward == Some(self.calls) {
            g[3] = f32::INFINITY;
        }
        Ok(())
    }
}

fn mock_cfg(steps: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch: 8,
        lr: 1e-2,
        warmup: 5,
        schedule: LrSchedule::Cosine,
        seed: 17,
        p_uncond: 0.2,
        checkpoint_every: 10,
        ..TrainConfig::default()
    }
}

fn mock_trainer<'a>(
    data: &'a MockData,
    cfg: TrainConfig,
    state: Option<TrainState>,
) -> Trainer<'a, MockNet> {
    let sch = Scheduler::ddpm_default();
    let state = state.unwrap_or_else(|| TrainState::new(uniforms(99, MockNet::N)));
    let b = cfg.batch;
    Trainer::new(cfg, MockNet::new(b), data, &sch, vec![K as i64], state).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same_state(a: &TrainState, b: &TrainState, what: &str) {
    assert_eq!(a.step, b.step, "{what}: step");
    assert_eq!(bits(&a.params), bits(&b.params), "{what}: params");
    assert_eq!(bits(&a.m), bits(&b.m), "{what}: adam m");
    assert_eq!(bits(&a.v), bits(&b.v), "{what}: adam v");
    assert_eq!(bits(&a.ema), bits(&b.ema), "{what}: ema");
    let losses = |s: &TrainState| s.log.iter().map(|r| r.loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(losses(a), losses(b), "{what}: losses");
}

#[test]
fn training_is_the_same_on_any_thread_count_and_learns() {
    let data = MockData::new();
    let run = |threads: usize| {
        pool(threads).install(|| {
            let mut t = mock_trainer(&data, mock_cfg(60), None);
            t.run_until(60).unwrap();
            t.state.clone()
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert_same_state(&one, &run(threads), &format!("{threads} threads vs 1"));
    }
    // The mock learns: the mean loss of the last 15 steps is below that of the first 15.
    let mean =
        |r: &[infodiff::train::LogRow]| r.iter().map(|x| x.loss).sum::<f64>() / r.len() as f64;
    let (first, last) = (mean(&one.log[..15]), mean(&one.log[45..]));
    assert!(last < 0.9 * first, "loss {first} → {last}");
    // The log: steps 1..=60, the warm-up rates, finite norms.
    assert_eq!(
        one.log.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    assert_eq!(one.log[0].lr, 0.0);
    assert!((one.log[2].lr - 1e-2 * 2.0 / 5.0).abs() < 1e-15);
    assert!(
        one.log
            .iter()
            .all(|r| r.grad_norm.is_finite() && r.grad_norm > 0.0)
    );
}

fn meta(cfg: &TrainConfig) -> CheckpointMeta {
    CheckpointMeta {
        train: cfg.clone(),
        network: json!({"mock": "linear", "d": D, "classes": K}),
        data: "mock (37 examples)".into(),
    }
}

#[test]
fn resume_is_bit_identical_to_a_straight_run() {
    let data = MockData::new();
    let cfg = mock_cfg(30);
    let mut straight = mock_trainer(&data, cfg.clone(), None);
    straight.run_until(30).unwrap();
    let mut first = mock_trainer(&data, cfg.clone(), None);
    first.run_until(12).unwrap();
    // Through a file, as `--resume` reads it.
    let dir = std::env::temp_dir().join(format!("infodiff-train-loop-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(checkpoint::FILE);
    checkpoint::save(&path, &meta(&cfg), &first.state).unwrap();
    drop(first);
    let (m, st) = checkpoint::load(&path).unwrap();
    assert_eq!(m, meta(&cfg));
    assert_eq!(st.step, 12);
    checkpoint::check_resume(&m, &meta(&cfg), st.step).unwrap();
    let mut resumed = mock_trainer(&data, m.train.clone(), Some(st));
    resumed.run_until(30).unwrap();
    // Loss, lr, grad norm of every step and every byte of the state; images/s is wall clock.
    assert_same_state(&straight.state, &resumed.state, "resumed at 12 vs straight");
    for (a, b) in straight.state.log.iter().zip(&resumed.state.log) {
        assert_eq!(
            (a.lr.to_bits(), a.grad_norm.to_bits()),
            (b.lr.to_bits(), b.grad_norm.to_bits())
        );
    }
    // Saving leaves one file, no temporaries.
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn foreign_checkpoints_are_refused_naming_what_differs() {
    let cfg = mock_cfg(30);
    let saved = meta(&cfg);
    let err = |now: CheckpointMeta, step: u64| {
        checkpoint::check_resume(&saved, &now, step)
            .unwrap_err()
            .to_string()
    };
    let mut other = meta(&cfg);
    other.train.lr = 2e-2;
    other.train.batch = 16;
    let e = err(other, 12);
    assert!(
        e.contains("--resume") && e.contains("lr: 0.01 in the checkpoint, 0.02 now"),
        "{e}"
    );
    assert!(e.contains("batch: 8 in the checkpoint, 16 now"), "{e}");
    let mut other = meta(&cfg);
    other.network = json!({"mock": "linear", "d": D, "classes": 4});
    let e = err(other, 12);
    assert!(
        e.contains("network classes: 3 in the checkpoint, 4 now"),
        "{e}"
    );
    let mut other = meta(&cfg);
    other.data = "digits".into();
    assert!(err(other, 12).contains("data:"));
    let mut other = meta(&cfg);
    other.train.ema.decay = 0.99;
    assert!(err(other, 12).contains("ema.decay"));
    // Steps: fixed under the cosine schedule; a constant one extends, not below the steps done.
    let mut other = meta(&cfg);
    other.train.steps = 60;
    assert!(err(other, 12).contains("cosine"));
    let mut constant = cfg.clone();
    constant.schedule = LrSchedule::Constant;
    let saved_c = meta(&constant);
    let mut longer = meta(&constant);
    longer.train.steps = 60;
    longer.train.checkpoint_every = 7;
    checkpoint::check_resume(&saved_c, &longer, 30).unwrap();
    let mut shorter = meta(&constant);
    shorter.train.steps = 20;
    let e = checkpoint::check_resume(&saved_c, &shorter, 25)
        .unwrap_err()
        .to_string();
    assert!(e.contains("already at step 25"), "{e}");
}

#[test]
fn corrupt_or_edited_checkpoints_are_refused() {
    let data = MockData::new();
    let cfg = mock_cfg(5);
    let mut t = mock_trainer(&data, cfg.clone(), None);
    t.run_until(3).unwrap();
    let bytes = checkpoint::encode(&meta(&cfg), &t.state).unwrap();
    let (m, st) = checkpoint::decode(&bytes, "ok.safetensors").unwrap();
    assert_eq!(m, meta(&cfg));
    assert_same_state(&st, &t.state, "decode(encode)");
    // Edited metadata: the lr in the stored JSON changed, the hash not.
    let text = String::from_utf8_lossy(&bytes).to_string();
    let edited = text.replacen("\\\"lr\\\":0.01", "\\\"lr\\\":0.02", 1);
    assert_ne!(edited, text, "the metadata holds the lr");
    // Same length, so the header length stays valid.
    let edited = edited.into_bytes();
    if edited.len() == bytes.len() {
        let e = checkpoint::decode(&edited, "edited.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("edited.safetensors") && e.contains("hash"),
            "{e}"
        );
    }
    let e = checkpoint::decode(b"not a checkpoint", "junk").unwrap_err();
    assert!(e.is_bad_input() && e.to_string().contains("junk"), "{e}");
    // A plain safetensors file (no metadata) is not a checkpoint.
    let plain = infodiff::io::safetensors::encode(&[(
        "params",
        &[2usize][..],
        infodiff::io::safetensors::View::F32(&[1.0, 2.0]),
    )])
    .unwrap();
    let e = checkpoint::decode(&plain, "plain").unwrap_err().to_string();
    assert!(e.contains("metadata"), "{e}");
}

#[test]
fn a_non_finite_loss_or_gradient_stops_at_its_step_with_the_state_untouched() {
    let data = MockData::new();
    let cfg = mock_cfg(20);
    let mut reference_run = mock_trainer(&data, cfg.clone(), None);
    reference_run.run_until(4).unwrap();

    let mut t = mock_trainer(&data, cfg.clone(), None);
    t.net.nan_forward = Some(5);
    let e = t.run_until(20).unwrap_err();
    match &e {
        Error::NonFinite { op, step, what, .. } => {
            assert_eq!((*op, *step), ("train", 5), "{e}");
            assert!(what.contains("loss"), "{e}");
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    assert!(e.to_string().contains("step 5"), "{e}");
    assert_same_state(&t.state, &reference_run.state, "after the failed step 5");

    let mut g = mock_trainer(&data, cfg, None);
    g.net.nan_backward = Some(3);
    let e = g.run_until(20).unwrap_err();
    match &e {
        Error::NonFinite { step, what, .. } => {
            assert_eq!(*step, 3, "{e}");
            assert!(
                what.contains("gradient") && what.contains("parameter 3"),
                "{e}"
            );
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    assert_eq!(g.state.step, 2);
}

#[test]
fn trainer_refuses_mismatches() {
    let data = MockData::new();
    let sch = Scheduler::ddpm_default();
    let cfg = mock_cfg(5);
    // The network planned for another batch.
    let e = Trainer::new(
        cfg.clone(),
        MockNet::new(4),
        &data,
        &sch,
        vec![K as i64],
        TrainState::new(vec![0.0; MockNet::N]),
    )
    .err()
    .unwrap();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    // A state of another length.
    let e = Trainer::new(
        cfg.clone(),
        MockNet::new(8),
        &data,
        &sch,
        vec![K as i64],
        TrainState::new(vec![0.0; 3]),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("parameters"), "{e}");
    // Two label tables for one data factor.
    let e = Trainer::new(
        cfg.clone(),
        MockNet::new(8),
        &data,
        &sch,
        vec![3, 3],
        TrainState::new(vec![0.0; MockNet::N]),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("factor"), "{e}");
    // Bad settings name their option.
    for (c, opt) in [
        (
            TrainConfig {
                lr: -1.0,
                ..cfg.clone()
            },
            "--lr",
        ),
        (
            TrainConfig {
                p_uncond: 1.5,
                ..cfg.clone()
            },
            "--p-uncond",
        ),
        (
            TrainConfig {
                steps: 0,
                ..cfg.clone()
            },
            "--steps",
        ),
        (
            TrainConfig {
                ema: Ema {
                    decay: 2.0,
                    ..Ema::default()
                },
                ..cfg.clone()
            },
            "--ema",
        ),
    ] {
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(opt), "{opt}: {e}");
    }
    let _ = optim::CHUNK;
}
