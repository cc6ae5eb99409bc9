//! The spatial attention block's training forward and backward against their f64 twins: the
//! training forward equals the inference forward (`AttentionOp::attention` on the CPU), the f64
//! backward equals central finite differences of the f64 forward for every input and parameter,
//! the SIMD backward of every ISA equals the f64 backward for every gradient, results are
//! bit-identical on any thread count, and wrong sizes are errors. Odd sizes throughout.

use infodiff::backend::{Backend, Cpu, Storage};
use infodiff::ops::Act;
use infodiff::ops::attention::AttentionOp;
use infodiff::ops::attention::backward::{
    AttnGrads, AttnParams, attention_backward, attention_backward_with, attention_forward_save,
    attention_forward_save_with, saved_len,
};
use infodiff::ops::attention::reference::{
    AttnGrads64, AttnParams64, attention_backward_f64, attention_f64,
};
use infodiff::simd::IsaKind;

/// n values in [lo, hi) from a hash of (index, seed).
fn fill(n: usize, seed: u32, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = ((i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503))
                .wrapping_mul(2246822519)
                >> 8) as f32
                / 16_777_216.0;
            lo + (hi - lo) * u
        })
        .collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// max |got − want| / max(max |want|, floor).
fn rel_max(got: &[f64], want: &[f64], floor: f64) -> f64 {
    assert_eq!(got.len(), want.len());
    let e = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    e / max_abs(want).max(floor).max(1e-300)
}

/// The scale below which a gradient is compared absolutely: 1% of the largest gradient of the
/// case. d(to_k.bias) is 0 up to rounding (the softmax over keys ignores a shift common to
/// every key), so its relative error would measure noise against noise.
fn floor_of(grads: &[&[f64]]) -> f64 {
    1e-2 * grads.iter().fold(0.0f64, |m, g| m.max(max_abs(g)))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One block's parameters, owned.
struct Block {
    groups: usize,
    heads: usize,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    w: [Vec<f32>; 4],
    b: [Vec<f32>; 4],
}

const EPS: f32 = 1e-5;

impl Block {
    fn new(c: usize, groups: usize, heads: usize, seed: u32) -> Block {
        // Weights of scale 2/√C: normalised inputs give Q, K of O(1), so the softmax is
        // neither uniform nor one-hot.
        let a = 2.0 / (c as f32).sqrt();
        Block {
            groups,
            heads,
            gamma: fill(c, seed, 0.5, 1.5),
            beta: fill(c, seed + 1, -0.5, 0.5),
            w: std::array::from_fn(|j| fill(c * c, seed + 2 + j as u32, -a, a)),
            b: std::array::from_fn(|j| fill(c, seed + 6 + j as u32, -0.3, 0.3)),
        }
    }
    fn params(&self) -> AttnParams<'_> {
        AttnParams {
            gamma: &self.gamma,
            beta: &self.beta,
            groups: self.groups,
            eps: EPS,
            heads: self.heads,
            qkvo: std::array::from_fn(|j| (&self.w[j][..], &self.b[j][..])),
        }
    }
}

/// Owned gradients, laid out as the parameters.
#[derive(Clone, PartialEq, Debug)]
struct Grads {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    w: [Vec<f32>; 4],
    b: [Vec<f32>; 4],
}

impl Grads {
    fn start(c: usize) -> Grads {
        Grads {
            gamma: fill(c, 91, -1.0, 1.0),
            beta: fill(c, 92, -1.0, 1.0),
            w: std::array::from_fn(|j| fill(c * c, 93 + j as u32, -1.0, 1.0)),
            b: std::array::from_fn(|j| fill(c, 97 + j as u32, -1.0, 1.0)),
        }
    }
    fn view(&mut self) -> AttnGrads<'_> {
        let [w0, w1, w2, w3] = &mut self.w;
        let [b0, b1, b2, b3] = &mut self.b;
        AttnGrads {
            gamma: &mut self.gamma,
            beta: &mut self.beta,
            qkvo: [(w0, b0), (w1, b1), (w2, b2), (w3, b3)],
        }
    }
    /// (name, values) of every gradient.
    fn named(&self) -> Vec<(String, &[f32])> {
        let mut v: Vec<(String, &[f32])> =
            vec![("gamma".into(), &self.gamma), ("beta".into(), &self.beta)];
        for (j, n) in ["to_q", "to_k", "to_v", "to_out"].iter().enumerate() {
            v.push((format!("{n}.weight"), &self.w[j]));
            v.push((format!("{n}.bias"), &self.b[j]));
        }
        v
    }
}

/// (name, values) of every parameter gradient of the f64 backward, in [`Grads::named`] order.
fn named64(g: &AttnGrads64) -> Vec<&[f64]> {
    let mut v: Vec<&[f64]> = vec![&g.gamma, &g.beta];
    for j in 0..4 {
        v.push(&g.w[j]);
        v.push(&g.b[j]);
    }
    v
}

/// (y, saved) of the training forward with `kind`.
fn forward(kind: IsaKind, x: &[f32], shape: [usize; 4], blk: &Block) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![f32::NAN; x.len()];
    let mut saved = vec![f32::NAN; saved_len(shape, blk.heads, blk.groups)];
    attention_forward_save_with(kind, x, shape, &blk.params(), &mut y, &mut saved).unwrap();
    (y, saved)
}

/// (dx, gradients from `Grads::start`) of the backward with `kind`.
fn backward(
    kind: IsaKind,
    x: &[f32],
    shape: [usize; 4],
    blk: &Block,
    saved: &[f32],
    dy: &[f32],
) -> (Vec<f32>, Grads) {
    let mut dx = vec![f32::NAN; x.len()]; // overwritten
    let mut g = Grads::start(shape[1]);
    attention_backward_with(
        kind,
        x,
        shape,
        &blk.params(),
        saved,
        dy,
        &mut dx,
        &mut g.view(),
    )
    .unwrap();
    (dx, g)
}

/// (shape, groups, heads): C = 6 with 1, 2 and 3 heads over H·W = 15; wider blocks with 2 heads
/// over 63 positions, and over 289 positions (past the GEMM's 256-deep K block).
const CASES: [([usize; 4], usize, usize); 5] = [
    ([2, 6, 3, 5], 3, 1),
    ([2, 6, 3, 5], 3, 2),
    ([2, 6, 5, 3], 2, 3),
    ([3, 32, 7, 9], 8, 2),
    ([2, 16, 17, 17], 4, 2),
];

#[test]
fn forward_save_equals_the_inference_forward() {
    let be = Cpu;
    for (k, (shape, groups, heads)) in CASES.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let blk = Block::new(shape[1], groups, heads, 10 * k as u32);
        let x = fill(n, 100 + k as u32, -0.8, 1.2);
        let mut y = vec![f32::NAN; n];
        let mut saved = vec![f32::NAN; saved_len(shape, heads, groups)];
        attention_forward_save(&x, shape, &blk.params(), &mut y, &mut saved).unwrap();
        // Every saved value is written (saved_len is what the forward fills).
        assert!(saved.iter().all(|v| v.is_finite()), "{shape:?}");
        let w = be
            .attn_weight(
                std::array::from_fn(|j| (&blk.w[j][..], &blk.b[j][..])),
                Storage::F32,
            )
            .unwrap();
        let act = Act {
            shape,
            buf: be.upload(&x).unwrap(),
        };
        let (ga, bb) = (
            be.upload(&blk.gamma).unwrap(),
            be.upload(&blk.beta).unwrap(),
        );
        let want = be
            .download(
                &be.attention(&act, heads, (&ga, &bb, groups, EPS), &w)
                    .unwrap()
                    .buf,
            )
            .unwrap();
        // The same GroupNorm body, the same packed GEMMs and softmax in the same order:
        // bit-identical.
        assert_eq!(y, want[..n], "{shape:?} heads {heads}");

        // Every ISA against the f64 forward.
        let y64 = attention_f64(&wide(&x), shape, &AttnParams64::of(&blk.params()));
        let att64: Vec<f64> = y64.iter().zip(&x).map(|(y, x)| y - *x as f64).collect();
        for kind in IsaKind::all_available() {
            let (yk, _) = forward(kind, &x, shape, &blk);
            let att: Vec<f64> = yk.iter().zip(&x).map(|(y, x)| (*y - *x) as f64).collect();
            // f32 products of depth ≤ max(C, HW) = 289 over O(1) terms, and the residual's
            // rounding (|x| ≤ 1.2): measured ≤ 1.5e-6 of the largest attention output; bound
            // 2e-5.
            let e = rel_max(&att, &att64, 0.0);
            assert!(e <= 2e-5, "{kind:?} {shape:?} heads {heads}: rel err {e:e}");
        }
    }
}

#[test]
fn f64_backward_matches_finite_differences() {
    for (k, (shape, groups, heads)) in CASES[..3].iter().copied().enumerate() {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let blk = Block::new(c, groups, heads, 3 + k as u32);
        let p = AttnParams64::of(&blk.params());
        let x = wide(&fill(n, 7, -0.8, 1.2));
        let dy = wide(&fill(n, 8, -1.0, 1.0));
        let g = attention_backward_f64(&x, shape, &p, &dy);
        let loss = |x: &[f64], p: &AttnParams64| dot(&dy, &attention_f64(x, shape, p));
        let h = 1e-5;
        let central = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let mut checks: Vec<(String, Vec<f64>, &[f64])> = Vec::new();
        let fx: Vec<f64> = (0..n)
            .map(|i| {
                central(&|d| {
                    let mut xp = x.clone();
                    xp[i] += d;
                    loss(&xp, &p)
                })
            })
            .collect();
        checks.push(("dx".into(), fx, &g.dx));
        // Every parameter: (name, accessor) pairs over a cloned parameter set.
        type Slot = fn(&mut AttnParams64) -> &mut Vec<f64>;
        let slots: [(&str, Slot, &[f64]); 10] = [
            ("gamma", |p| &mut p.gamma, &g.gamma),
            ("beta", |p| &mut p.beta, &g.beta),
            ("to_q.weight", |p| &mut p.w[0], &g.w[0]),
            ("to_q.bias", |p| &mut p.b[0], &g.b[0]),
            ("to_k.weight", |p| &mut p.w[1], &g.w[1]),
            ("to_k.bias", |p| &mut p.b[1], &g.b[1]),
            ("to_v.weight", |p| &mut p.w[2], &g.w[2]),
            ("to_v.bias", |p| &mut p.b[2], &g.b[2]),
            ("to_out.weight", |p| &mut p.w[3], &g.w[3]),
            ("to_out.bias", |p| &mut p.b[3], &g.b[3]),
        ];
        for (name, slot, want) in slots {
            let len = slot(&mut p.clone()).len();
            let fd: Vec<f64> = (0..len)
                .map(|i| {
                    central(&|d| {
                        let mut pp = p.clone();
                        slot(&mut pp)[i] += d;
                        loss(&x, &pp)
                    })
                })
                .collect();
            checks.push((name.into(), fd, want));
        }
        let floor = floor_of(&checks.iter().map(|c| c.2).collect::<Vec<_>>());
        assert!(max_abs(&g.b[1]) <= 1e-12 * floor, "d(to_k.bias) is not 0");
        for (name, fd, want) in checks {
            // f64 central differences with h = 1e-5: truncation h²·|L'''|/6 and rounding
            // 1e-16·|L|/h ≈ 1e-10: measured ≤ 7e-9 of the largest gradient (or of the
            // floor); bound 1e-7, far below any formula error (a wrong term is O(1) of the
            // gradient).
            let e = rel_max(want, &fd, floor);
            assert!(e <= 1e-7, "{shape:?} heads {heads} {name}: rel err {e:e}");
        }
    }
}

#[test]
fn simd_backward_matches_f64_for_every_gradient_on_every_isa() {
    for (k, (shape, groups, heads)) in CASES.into_iter().enumerate() {
        let n: usize = shape.iter().product();
        let c = shape[1];
        let blk = Block::new(c, groups, heads, 20 + k as u32);
        let x = fill(n, 30 + k as u32, -0.8, 1.2);
        let dy = fill(n, 40 + k as u32, -1.0, 1.0);
        let g64 = attention_backward_f64(
            &wide(&x),
            shape,
            &AttnParams64::of(&blk.params()),
            &wide(&dy),
        );
        let start = Grads::start(c);
        for kind in IsaKind::all_available() {
            let (_, saved) = forward(kind, &x, shape, &blk);
            let (dx, g) = backward(kind, &x, shape, &blk, &saved, &dy);
            let mut got: Vec<(String, Vec<f64>)> = vec![("dx".into(), wide(&dx))];
            for ((name, v), (_, s)) in g.named().into_iter().zip(start.named()) {
                // The accumulated part: the gradient minus its start value.
                got.push((name, v.iter().zip(s).map(|(a, b)| (a - b) as f64).collect()));
            }
            let want: Vec<&[f64]> = std::iter::once(&g64.dx[..]).chain(named64(&g64)).collect();
            let floor = floor_of(&want);
            for ((name, got), want) in got.iter().zip(want) {
                // f32 GEMMs of depth ≤ 289 over O(1) terms, an f32 softmax and its backward,
                // the f32 GroupNorm backward, and the rounding of the start value (|·| ≤ 1) the
                // gradient is added to: measured ≤ 7e-6 of the largest gradient of each kind (or of
                // the floor); bound 1e-4.
                let e = rel_max(got, want, floor);
                assert!(
                    e <= 1e-4,
                    "{kind:?} {shape:?} heads {heads} {name}: rel err {e:e}"
                );
            }
        }
    }
}

/// (y, saved, dx, gradients) with the default ISA on the current rayon pool.
fn run_all(
    x: &[f32],
    dy: &[f32],
    shape: [usize; 4],
    blk: &Block,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Grads) {
    let mut y = vec![0.0; x.len()];
    let mut saved = vec![0.0; saved_len(shape, blk.heads, blk.groups)];
    attention_forward_save(x, shape, &blk.params(), &mut y, &mut saved).unwrap();
    let mut dx = vec![0.0; x.len()];
    let mut g = Grads::start(shape[1]);
    attention_backward(x, shape, &blk.params(), &saved, dy, &mut dx, &mut g.view()).unwrap();
    (y, saved, dx, g)
}

#[test]
fn results_are_bit_identical_on_any_thread_count() {
    // B = 5: a pool of 1 thread adds the per-image partials in chunks of 2, of 3 threads in one
    // chunk of 5.
    let shape = [5, 16, 7, 9];
    let blk = Block::new(16, 4, 2, 5);
    let n: usize = shape.iter().product();
    let (x, dy) = (fill(n, 1, -0.8, 1.2), fill(n, 2, -1.0, 1.0));
    let runs: Vec<_> = [1, 2, 3]
        .into_iter()
        .map(|t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
                .install(|| run_all(&x, &dy, shape, &blk))
        })
        .collect();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for r in &runs[1..] {
        assert_eq!(bits(&runs[0].0), bits(&r.0), "y");
        assert_eq!(bits(&runs[0].1), bits(&r.1), "saved");
        assert_eq!(bits(&runs[0].2), bits(&r.2), "dx");
        for ((name, a), (_, b)) in runs[0].3.named().into_iter().zip(r.3.named()) {
            assert_eq!(bits(a), bits(b), "{name}");
        }
    }
}

#[test]
fn saved_len_is_what_the_forward_writes_and_wrong_sizes_are_errors() {
    let shape = [2, 6, 3, 5];
    let (c, n) = (6, 180);
    let blk = Block::new(c, 3, 2, 1);
    let (x, dy) = (fill(n, 1, -1.0, 1.0), fill(n, 2, -1.0, 1.0));
    let len = saved_len(shape, 2, 3);
    assert_eq!(len, 2 * 2 * 3 + 5 * n); // stats, then X, Qᵀ, Kᵀ, Vᵀ, Oᵀ
    let mut y = vec![0.0; n];
    let p = blk.params();
    for bad in [len - 1, len + 1] {
        let mut saved = vec![0.0; bad];
        assert!(attention_forward_save(&x, shape, &p, &mut y, &mut saved).is_err());
    }
    let mut saved = vec![0.0; len];
    assert!(attention_forward_save(&x, shape, &p, &mut y, &mut saved).is_ok());
    assert!(attention_forward_save(&x[1..], shape, &p, &mut y, &mut saved).is_err());
    assert!(attention_forward_save(&x, shape, &p, &mut y[1..], &mut saved).is_err());
    for (heads, groups) in [(4, 3), (0, 3), (2, 4), (2, 0)] {
        // 4 ∤ 6 heads, no heads, 4 ∤ 6 groups, no groups
        let q = AttnParams { heads, groups, ..p };
        let mut sv = vec![0.0; saved_len(shape, heads, groups)];
        assert!(attention_forward_save(&x, shape, &q, &mut y, &mut sv).is_err());
    }
    let short = vec![0.0f32; c * c - 1];
    for j in 0..4 {
        let mut q = p;
        q.qkvo[j].0 = &short;
        assert!(
            attention_forward_save(&x, shape, &q, &mut y, &mut saved).is_err(),
            "w{j}"
        );
        let mut q = p;
        q.qkvo[j].1 = &short[..c - 1];
        assert!(
            attention_forward_save(&x, shape, &q, &mut y, &mut saved).is_err(),
            "b{j}"
        );
    }
    let q = AttnParams {
        gamma: &blk.gamma[1..],
        ..p
    };
    assert!(attention_forward_save(&x, shape, &q, &mut y, &mut saved).is_err());

    let mut dx = vec![0.0; n];
    let mut g = Grads::start(c);
    assert!(attention_backward(&x, shape, &p, &saved, &dy, &mut dx, &mut g.view()).is_ok());
    assert!(attention_backward(&x, shape, &p, &saved[1..], &dy, &mut dx, &mut g.view()).is_err());
    assert!(attention_backward(&x, shape, &p, &saved, &dy[1..], &mut dx, &mut g.view()).is_err());
    assert!(attention_backward(&x, shape, &p, &saved, &dy, &mut dx[1..], &mut g.view()).is_err());
    let mut bad = Grads::start(c);
    bad.w[2].pop();
    assert!(attention_backward(&x, shape, &p, &saved, &dy, &mut dx, &mut bad.view()).is_err());
    let mut bad = Grads::start(c);
    bad.beta.pop();
    assert!(attention_backward(&x, shape, &p, &saved, &dy, &mut dx, &mut bad.view()).is_err());
}

/// Rough timing of the training forward and backward at 16×16, 64 channels, batch 16 (run by
/// hand: `cargo test --release --test grad_attention -- --ignored --nocapture`).
#[test]
#[ignore = "timing report, run by hand"]
fn timing_16x16_c64_b16() {
    let shape = [16, 64, 16, 16];
    let n: usize = shape.iter().product();
    let (x, dy) = (fill(n, 1, -1.0, 1.0), fill(n, 2, -1.0, 1.0));
    for heads in [1, 8] {
        let blk = Block::new(64, 32, heads, 3);
        let p = blk.params();
        let mut y = vec![0.0; n];
        let mut saved = vec![0.0; saved_len(shape, heads, 32)];
        let mut dx = vec![0.0; n];
        let mut g = Grads::start(64);
        let reps = 10;
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = std::time::Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() / reps as f64 * 1e3
        };
        let fwd = time(&mut || attention_forward_save(&x, shape, &p, &mut y, &mut saved).unwrap());
        let bwd = time(&mut || {
            attention_backward(&x, shape, &p, &saved, &dy, &mut dx, &mut g.view()).unwrap()
        });
        eprintln!(
            "heads {heads}: forward_save {fwd:.2} ms, backward {bwd:.2} ms ({:.2}x), {} threads",
            bwd / fwd,
            rayon::current_num_threads()
        );
    }
}
