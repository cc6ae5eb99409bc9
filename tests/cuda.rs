//! The GPU backend. The GPU tests (`gpu_*`) are ignored unless built with
//! INFODIFF_REQUIRE_CUDA=1 (build.rs's `infodiff_require_cuda` cfg); then they run and fail where
//! no GPU opens. What runs everywhere: the fused step's CPU twin against its f64 oracle on every
//! ISA, and the device code itself (kernels/common.cuh, kernels/sde_step.cu, the mixture and
//! U-Net kernels) compiled for the host with the system C++ compiler under a shim of the CUDA
//! intrinsics, checked against the CPU, and the kernels' by-value structs against their
//! `#[repr(C)]` mirrors (size and every field's offset) (ignored where no C++ compiler runs at
//! build time, unless INFODIFF_REQUIRE_CXX=1 makes that a failure). The NVRTC test runs under `--features cuda`
//! where libnvrtc is findable at build time or INFODIFF_REQUIRE_NVRTC=1, and is ignored otherwise.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The f64 oracles of the U-Net ops' kernels.
mod reference {
    pub use infodiff::ops::gemm::reference::gemm;
    pub use infodiff::ops::group_norm::reference::group_norm;
    pub use infodiff::ops::softmax::reference::softmax_rows;
}
use infodiff::fused::sde_step::{SdeStepParams, sde_step};
use infodiff::rng::Noise;
use infodiff::simd::IsaKind;

fn fill(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let u = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed)) >> 8;
            (u as f32 / 16_777_216.0 - 0.5) * scale
        })
        .collect()
}

/// A batch of B = 5 trajectories, K = 3 classes, D = 37 (odd, past two AVX-512 vectors), two
/// decision problems ({0} vs {1, 2}, {1} vs {2}) and `probes` Hutchinson probes (ε̂ then holds
/// 2·probes more rows per state, arbitrary values here).
struct Case {
    p: SdeStepParams,
    x: Vec<f32>,
    eps: Vec<f32>,
    lp: Vec<f32>,
}

const PARTS: [(&[usize], &[usize]); 2] = [(&[0], &[1, 2]), (&[1], &[2])];

fn case(step: u32, var: f64, probes: usize) -> Case {
    let (b, k, d) = (5, 3, 37);
    let p = SdeStepParams::new(
        (0.998, 0.0123, var),
        0.37,
        Noise::new(0xDEAD_BEEF_1234),
        1000,
        step,
        (b, k, d),
    )
    .unwrap()
    .with_partitions(PARTS)
    .unwrap()
    .with_probes(probes, 0.37e-3)
    .unwrap();
    let lp = (0..b * k)
        .map(|i| [(0.2f32).ln(), (0.3f32).ln(), (0.5f32).ln()][i % 3])
        .collect();
    Case {
        x: fill(b * d, 1, 4.0),
        eps: fill(b * p.eps_rows() * d, 2, 2.0),
        lp,
        p,
    }
}

/// Rounding bound for ln π of trajectory `bi` after an f32 summation over D elements in any
/// order: 2·D·2⁻²⁴·(|c/√var|·Σ|Δ_y z| + c²/(2var)·Σ Δ_y²), maximised over y, plus 1e-6 for the
/// f32 exp/ln of the normalisation.
fn lp_tolerance(c: &Case, bi: usize) -> f64 {
    let (k, d) = (c.p.classes as usize, c.p.dim as usize);
    let noise = Noise::new(c.p.key0 as u64 | (c.p.key1 as u64) << 32);
    let eps = &c.eps[bi * c.p.eps_rows() * d..];
    let ni = c.p.neg_inv_sigma as f64;
    (0..k)
        .map(|y| {
            let (mut a, mut q) = (0.0f64, 0.0f64);
            for e in 0..d {
                let z = if c.p.sd > 0.0 {
                    noise.normal(c.p.traj0 + bi as u64, c.p.step, e) as f64
                } else {
                    0.0
                };
                let dy = (eps[(1 + y) * d + e] as f64 - eps[e] as f64) * ni;
                a += (dy * z).abs();
                q += dy * dy;
            }
            2.0 * d as f64 * 2f64.powi(-24) * (c.p.cs.abs() as f64 * a + c.p.kl as f64 * q)
        })
        .fold(0.0, f64::max)
        + 1e-6
}

/// Rounding bound of each record value of trajectory `bi` (layout of `infodiff::fused::sde_step`)
/// against the f64 oracle: every value is an f32 sum over D elements of f32 products, so its
/// error is at most 4·(D + K + 4)·2⁻²⁴ times the sum of the magnitudes of its terms (|Δ_y| ≤
/// |s_y| + |s| bounds the f32 differences, the per-trajectory coefficients rounded to f32 once
/// each), plus 1e-30. H and the ln π trace are checked on their own.
fn record_tolerance(c: &Case, bi: usize) -> Vec<f64> {
    let p = &c.p;
    let (k, d, np, nprobe) = (
        p.classes as usize,
        p.dim as usize,
        p.partitions as usize,
        p.probes as usize,
    );
    let eps = &c.eps[bi * p.eps_rows() * d..(bi + 1) * p.eps_rows() * d];
    let lp = &c.lp[bi * k..(bi + 1) * k];
    let ni = (p.neg_inv_sigma as f64).abs();
    let pi: Vec<f64> = lp.iter().map(|l| (*l as f64).exp()).collect();
    let a = |y: usize, e: usize| (eps[(1 + y) * d + e].abs() as f64 + eps[e].abs() as f64) * ni;
    let gamma = 4.0 * (d + k + 4) as f64 * 2f64.powi(-24);
    let mut tol = vec![0.0; p.record_width()];
    tol[1] = gamma
        * (0..k)
            .map(|y| pi[y] * (0..d).map(|e| a(y, e).powi(2)).sum::<f64>())
            .sum::<f64>();
    tol[3] = gamma * (0..d).map(|e| (eps[e] as f64 * ni).powi(2)).sum::<f64>();
    if nprobe > 0 {
        let mag: f64 = (0..d)
            .map(|e| {
                (0..nprobe)
                    .map(|n| {
                        (eps[(k + 1 + 2 * n) * d + e].abs() + eps[(k + 2 + 2 * n) * d + e].abs())
                            as f64
                    })
                    .sum::<f64>()
            })
            .sum();
        tol[4] = gamma * mag * ni / (2.0 * p.probe_h as f64 * nprobe as f64);
    }
    let w: Vec<f64> = (0..k).map(|y| (pi[y] * lp[y] as f64).abs()).collect();
    for y in 0..k {
        tol[5 + y] = gamma * (0..d).map(|e| a(y, e).powi(2)).sum::<f64>();
        tol[5 + 2 * k + y] = gamma
            * (0..d)
                .map(|e| a(y, e) * (0..k).map(|q| w[q] * a(q, e)).sum::<f64>())
                .sum::<f64>();
    }
    for (i, (sa, sb)) in PARTS.iter().enumerate().take(np) {
        let (pa, pb): (f64, f64) = (
            sa.iter().map(|&y| pi[y]).sum(),
            sb.iter().map(|&y| pi[y]).sum(),
        );
        let coef = |y: usize| {
            if sa.contains(&y) {
                pi[y] / pa
            } else if sb.contains(&y) {
                pi[y] / pb
            } else {
                0.0
            }
        };
        tol[5 + 3 * k + i] = gamma
            * (0..d)
                .map(|e| (0..k).map(|y| coef(y) * a(y, e)).sum::<f64>().powi(2))
                .sum::<f64>();
    }
    tol.iter().map(|t| t + 1e-30).collect()
}

/// (step, var, probes) of the sde_step cases: a stochastic step without probes, one with two,
/// a deterministic one with one.
const STEP_CASES: [(u32, f64, usize); 3] = [(0, 1e-4, 0), (7, 2.5e-3, 2), (9, 0.0, 1)];

#[test]
fn cpu_sde_step_matches_f64_oracle_on_every_isa() {
    for (step, var, probes) in STEP_CASES {
        let c = case(step, var, probes);
        let (b, k, d) = (5, 3, 37);
        let (w, r) = (c.p.record_width(), c.p.eps_rows());
        assert_eq!((w, r), (5 + 3 * k + 2, k + 1 + 2 * probes));
        let mut states = Vec::new();
        for kind in IsaKind::all_available() {
            let (mut x, mut lp, mut rec) = (c.x.clone(), c.lp.clone(), vec![0.0f32; b * w]);
            sde_step(kind, &c.p, &mut x, &c.eps, &mut lp, &mut rec).unwrap();
            for bi in 0..b {
                let (xw, lw, rw) = infodiff::fused::sde_step::reference::sde_step(
                    &c.p,
                    bi,
                    &c.x[bi * d..(bi + 1) * d],
                    &c.eps[bi * r * d..(bi + 1) * r * d],
                    &c.lp[bi * k..(bi + 1) * k],
                );
                for e in 0..d {
                    // f32 arithmetic of three terms of magnitude ≤ ~10: 2e-6 absolute
                    assert!(
                        (x[bi * d + e] as f64 - xw[e]).abs() < 2e-6,
                        "{kind:?} x[{bi},{e}]"
                    );
                }
                for y in 0..k {
                    // f32 sums against f64: the rounding bound of `lp_tolerance`
                    let tol = lp_tolerance(&c, bi);
                    let err = (lp[bi * k + y] as f64 - lw[y]).abs();
                    assert!(err < tol, "{kind:?} lp[{bi},{y}]: error {err:e} > {tol:e}");
                }
                let got = &rec[bi * w..(bi + 1) * w];
                // H: f64 from f32 ln π, rounded once: 1e-6 relative
                assert!(
                    (got[0] as f64 - rw[0]).abs() < 1e-6 * (1.0 + rw[0].abs()),
                    "{kind:?} H"
                );
                assert_eq!(got[2], 0.0);
                // the trace: ln π before the update, as given
                assert_eq!(&got[5 + k..5 + 2 * k], &c.lp[bi * k..(bi + 1) * k]);
                let tol = record_tolerance(&c, bi);
                for i in (1..w).filter(|i| *i != 2 && !(5 + k..5 + 2 * k).contains(i)) {
                    let err = (got[i] as f64 - rw[i]).abs();
                    assert!(
                        err <= tol[i],
                        "{kind:?} record[{bi}][{i}]: {} vs {} (error {err:e} > {:e})",
                        got[i],
                        rw[i],
                        tol[i]
                    );
                }
                // the new fields are not trivially zero: cross terms, both partitions, ‖s‖², ∇·s
                assert!(
                    rw[3] > 0.0
                        && rw[5 + 2 * k] != 0.0
                        && rw[5 + 3 * k] > 0.0
                        && rw[5 + 3 * k + 1] > 0.0
                );
                assert_eq!(
                    got[4] == 0.0,
                    probes == 0,
                    "{kind:?} ∇·s recorded iff probes"
                );
            }
            if var == 0.0 {
                assert_eq!(lp, c.lp, "a deterministic step leaves the classifier alone");
            }
            states.push(x);
        }
        // the state update is the same fused multiply-adds on every ISA
        assert!(
            states.windows(2).all(|w| w[0] == w[1]),
            "x' differs between ISAs"
        );
    }
    let mut bad = case(0, 1e-4, 0);
    bad.eps[3] = f32::INFINITY;
    let mut rec = vec![0.0f32; 5 * bad.p.record_width()];
    sde_step(
        infodiff::simd::detected(),
        &bad.p,
        &mut bad.x,
        &bad.eps,
        &mut bad.lp,
        &mut rec,
    )
    .unwrap();
    assert_eq!(rec[2], 1.0, "non-finite state flagged for trajectory 0");
    assert!(
        sde_step(
            infodiff::simd::detected(),
            &bad.p,
            &mut bad.x[1..],
            &bad.eps,
            &mut bad.lp,
            &mut rec
        )
        .is_err()
    );
    // limits refused with a reason, not a panic
    let p = case(0, 1e-4, 0).p;
    let nine: Vec<(&[usize], &[usize])> = vec![(&[0], &[1]); 9];
    assert!(p.with_partitions(nine).is_err(), "more than 8 partitions");
    assert!(
        p.with_partitions([(&[0][..], &[3][..])]).is_err(),
        "class ≥ K"
    );
    assert!(
        p.with_partitions([(&[0][..], &[0, 1][..])]).is_err(),
        "overlapping sides"
    );
    assert!(p.with_probes(65, 1e-3).is_err() && p.with_probes(1, 0.0).is_err());
}

/// The probe rows of a step: the state K + 1 times, then x ± h v_n with the signs of
/// `Noise::rademacher` (one rounding each), as the Hutchinson wrapper perturbs the states.
#[test]
fn probe_rows_repeat_states_and_perturb_them_by_rademacher_probes() {
    let c = case(7, 2.5e-3, 2);
    let (b, k, d, r) = (5, 3, 37, c.p.eps_rows());
    let mut y = vec![0.0f32; b * r * d];
    infodiff::fused::sde_step::probe_rows(&c.p, &c.x, &mut y).unwrap();
    let noise = Noise::new(c.p.key0 as u64 | (c.p.key1 as u64) << 32);
    let h = c.p.probe_h;
    for bi in 0..b {
        let xb = &c.x[bi * d..(bi + 1) * d];
        for row in 0..=k {
            assert_eq!(&y[(bi * r + row) * d..(bi * r + row + 1) * d], xb);
        }
        let hp = infodiff::score::hutchinson::probe_states(
            &noise,
            c.p.traj0 + bi as u64,
            c.p.step,
            h,
            2,
            xb,
            d,
        );
        assert_eq!(
            &y[(bi * r + k + 1) * d..(bi + 1) * r * d],
            &hp[..],
            "Hutchinson's probe states"
        );
        for n in 0..2 {
            for e in 0..d {
                let v = noise.rademacher(c.p.traj0 + bi as u64, c.p.step, n, e);
                let (up, dn) = (
                    y[(bi * r + k + 1 + 2 * n) * d + e],
                    y[(bi * r + k + 2 + 2 * n) * d + e],
                );
                // h·v is exact (v = ±1): one f32 rounding of x ± h v
                assert_eq!(
                    (up, dn),
                    (xb[e] + h * v, xb[e] - h * v),
                    "probe {n} at ({bi}, {e})"
                );
            }
        }
    }
    assert!(infodiff::fused::sde_step::probe_rows(&c.p, &c.x[1..], &mut y).is_err());
}

/// CUDA intrinsics for host compilation: each the IEEE operation it names, correctly rounded
/// (glibc fmaf is), with contraction off (-ffp-contract=off).
const INTRINSICS: &str = r#"
#include <cmath>
#include <cstdio>
#include <cstring>
#define __device__
#define __forceinline__ inline
#define __global__
#define INFODIFF_HOST_TWIN 1
static inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline int __float2int_rn(float a) { return (int)std::nearbyint(a); }
static inline float __int2float_rn(int a) { return (float)a; }
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline float __int_as_float(int u) { float f; std::memcpy(&f, &u, 4); return f; }
"#;

const SHIM: &str = r#"
#include <cstddef>
#include "sde_step.cu"
static float rd() { unsigned int u; if (scanf("%x", &u) != 1) return 0; return __uint_as_float(u); }
static unsigned int ru() { unsigned int u; if (scanf("%x", &u) != 1) return 0; return u; }
int main() {
    SdeStepParams p;
    p.a = rd(); p.c = rd(); p.sd = rd(); p.cs = rd(); p.kl = rd(); p.neg_inv_sigma = rd();
    p.key0 = ru(); p.key1 = ru(); p.traj0 = ru(); p.step = ru(); p.dim = ru(); p.classes = ru(); p.batch = ru();
    p.partitions = ru(); p.probes = ru(); p.probe_h = rd(); p.div_scale = rd();
    for (int i = 0; i < SDE_STEP_MAX_PARTITIONS; ++i) p.part_a[i] = ru();
    for (int i = 0; i < SDE_STEP_MAX_PARTITIONS; ++i) p.part_b[i] = ru();
    unsigned int b = p.batch, k = p.classes, d = p.dim, rows = k + 1 + 2 * p.probes;
    unsigned int rw = 5 + 3 * k + p.partitions;
    static float x[4096], eps[16384], lp[256], rec[1024];
    for (unsigned int i = 0; i < b * d; ++i) x[i] = rd();
    for (unsigned int i = 0; i < b * rows * d; ++i) eps[i] = rd();
    for (unsigned int i = 0; i < b * k; ++i) lp[i] = rd();
    // noise grid: trajectories 0..3, steps 0..9 and 4294967295, elements 0..5
    for (unsigned long long t = 0; t < 3; ++t)
        for (unsigned int s = 0; s < 11; ++s)
            for (unsigned int e = 0; e < 5; ++e)
                printf("%08x\n", __float_as_uint(noise_normal(p.key0, p.key1, t * 1000003ull, s == 10 ? 4294967295u : s, e)));
    // the network input of the step (sde_probe_rows), from x before the step
    for (unsigned long long i = 0; i < (unsigned long long)b * rows * d; ++i)
        printf("%08x\n", __float_as_uint(sde_probe_row_value(p, x, i)));
    for (unsigned int bi = 0; bi < b; ++bi) {
        SdeStepCoef cf;
        sde_step_coefficients(p, lp + bi * k, &cf);
        float acc[SDE_STEP_MAX_ACC] = {0};
        for (unsigned int e = 0; e < d; ++e)
            sde_step_element(p, cf, eps + bi * rows * d, x + bi * d, p.traj0 + bi, e, acc);
        sde_step_classifier(p, lp + bi * k, acc, rec + bi * rw, true);
    }
    for (unsigned int i = 0; i < b * d; ++i) printf("%08x\n", __float_as_uint(x[i]));
    for (unsigned int i = 0; i < b * k; ++i) printf("%08x\n", __float_as_uint(lp[i]));
    for (unsigned int i = 0; i < b * rw; ++i) printf("%08x\n", __float_as_uint(rec[i]));
    // the layout the GPU receives: size and the offsets of the fields after the first u64
    printf("%08x\n%08x\n%08x\n%08x\n%08x\n", (unsigned int)sizeof(SdeStepParams),
           (unsigned int)offsetof(SdeStepParams, traj0), (unsigned int)offsetof(SdeStepParams, partitions),
           (unsigned int)offsetof(SdeStepParams, part_a), (unsigned int)offsetof(SdeStepParams, part_b));
    return 0;
}
"#;

/// Compiles `program` (the intrinsics shim prepended; kernels/ and build.rs's `$OUT_DIR`, which
/// holds the generated layout.cuh, on the include path) with the
/// system C++ compiler (`$CXX`, else `c++`): the executable and its folder. Panics where the
/// compiler does not run (the callers are ignored unless build.rs found one, or
/// INFODIFF_REQUIRE_CXX=1 asked for them).
fn host_twin(name: &str, program: &str) -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("infodiff-devtwin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("twin.cpp");
    std::fs::write(&src, format!("{INTRINSICS}{program}")).unwrap();
    let exe = dir.join("twin");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let flags = [
        "-O2",
        "-std=c++17",
        "-ffp-contract=off",
        "-fno-fast-math",
        "-Wno-unknown-pragmas",
    ];
    let built = Command::new(&cxx)
        .args(flags)
        .arg("-I")
        .arg(root.join("kernels"))
        .arg("-I")
        .arg(env!("OUT_DIR"))
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output();
    let o = built.unwrap_or_else(|e| panic!("host twin of {name}: C++ compiler `{cxx}`: {e}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (exe, dir)
}

/// Runs a host twin with `input` on stdin; its stdout as whitespace-separated hex words.
fn run_twin(exe: &PathBuf, input: &str) -> Vec<u64> {
    let mut child = Command::new(exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "host twin exited with {:?}",
        out.status
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|l| u64::from_str_radix(l, 16).unwrap())
        .collect()
}

/// The device code, compiled for the host: Philox, Box–Muller and the lane polynomials give the
/// CPU's noise bit for bit (including the initial-state step u32::MAX); the probe rows equal the
/// CPU twin's bit for bit; the fused step's state update equals the CPU twin's bit for bit and
/// its ln π and record agree to the rounding of the reductions (sequential f32 here, lanes
/// folded in f64 on the CPU: twice `lp_tolerance` and twice `record_tolerance`).
#[test]
#[cfg_attr(
    not(infodiff_cxx),
    ignore = "needs a C++ compiler ($CXX or c++); INFODIFF_REQUIRE_CXX=1 fails without one"
)]
fn device_code_compiled_for_the_host_matches_the_cpu() {
    let (exe, dir) = host_twin("sde_step", SHIM);
    for (step, var, probes) in STEP_CASES {
        let c = case(step, var, probes);
        let p = &c.p;
        let mut input = String::new();
        for v in [p.a, p.c, p.sd, p.cs, p.kl, p.neg_inv_sigma] {
            input += &format!("{:x} ", v.to_bits());
        }
        for v in [
            p.key0,
            p.key1,
            p.traj0 as u32,
            p.step,
            p.dim,
            p.classes,
            p.batch,
            p.partitions,
            p.probes,
            p.probe_h.to_bits(),
            p.div_scale.to_bits(),
        ]
        .into_iter()
        .chain(p.part_a)
        .chain(p.part_b)
        {
            input += &format!("{v:x} ");
        }
        for v in c.x.iter().chain(&c.eps).chain(&c.lp) {
            input += &format!("{:x} ", v.to_bits());
        }
        let words: Vec<f32> = run_twin(&exe, &input)
            .into_iter()
            .map(|w| f32::from_bits(w as u32))
            .collect();
        let noise = Noise::new(p.key0 as u64 | (p.key1 as u64) << 32);
        let mut it = words.into_iter();
        for t in 0..3u64 {
            for s in 0..11u32 {
                for e in 0..5 {
                    let step = if s == 10 { u32::MAX } else { s };
                    let want = noise.normal(t * 1_000_003, step, e);
                    assert_eq!(
                        it.next().unwrap().to_bits(),
                        want.to_bits(),
                        "noise ({t}, {step}, {e})"
                    );
                }
            }
        }
        let (b, k, d) = (5, 3, 37);
        let (w, r) = (p.record_width(), p.eps_rows());
        let mut rows = vec![0.0f32; b * r * d];
        infodiff::fused::sde_step::probe_rows(p, &c.x, &mut rows).unwrap();
        let dev_rows: Vec<f32> = it.by_ref().take(b * r * d).collect();
        assert_eq!(dev_rows, rows, "probe rows (step {step})");
        let (mut x, mut lp, mut rec) = (c.x.clone(), c.lp.clone(), vec![0.0f32; b * w]);
        sde_step(
            infodiff::simd::detected(),
            p,
            &mut x,
            &c.eps,
            &mut lp,
            &mut rec,
        )
        .unwrap();
        let dev_x: Vec<f32> = it.by_ref().take(b * d).collect();
        assert_eq!(dev_x, x, "state update (step {step})");
        for (i, v) in it.by_ref().take(b * k).enumerate() {
            // both sides round their sums: twice the bound of `lp_tolerance`
            let tol = 2.0 * lp_tolerance(&c, i / k);
            assert!(
                ((v - lp[i]).abs() as f64) < tol,
                "ln π[{i}]: {v} vs {}",
                lp[i]
            );
        }
        for (i, v) in it.by_ref().take(b * w).enumerate() {
            let (bi, f) = (i / w, i % w);
            // H: 2e-5 relative (f32 lane exp on the device); the rest: twice `record_tolerance`
            let tol = if f == 0 {
                2e-5 * (1.0 + rec[i].abs() as f64)
            } else {
                2.0 * record_tolerance(&c, bi)[f]
            };
            assert!(
                ((v - rec[i]).abs() as f64) <= tol,
                "record[{bi}][{f}] (step {step}): {v} vs {} (tolerance {tol:e})",
                rec[i]
            );
        }
        // #[repr(C)] SdeStepParams and the kernel's struct: the same size and offsets
        use std::mem::{offset_of, size_of};
        let layout: Vec<u32> = it.by_ref().map(|v| v.to_bits()).collect();
        let want = [
            size_of::<SdeStepParams>(),
            offset_of!(SdeStepParams, traj0),
            offset_of!(SdeStepParams, partitions),
            offset_of!(SdeStepParams, part_a),
            offset_of!(SdeStepParams, part_b),
        ];
        assert_eq!(layout, want.map(|v| v as u32), "SdeStepParams layout");
        assert_eq!(want[0], 136);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The GPU kernels against the CPU twins (ignored unless INFODIFF_REQUIRE_CUDA=1).
#[test]
#[cfg_attr(
    not(infodiff_require_cuda),
    ignore = "needs a CUDA GPU: run with INFODIFF_REQUIRE_CUDA=1 and --features cuda"
)]
fn gpu_sde_step_matches_cpu_twin() {
    let gpu = infodiff::backend::gpu_for_test("gpu_sde_step_matches_cpu_twin");
    for (step, var, probes) in STEP_CASES {
        let c = case(step, var, probes);
        let (b, k, d) = (5, 3, 37);
        let (w, r) = (c.p.record_width(), c.p.eps_rows());
        let mut rows = vec![0.0f32; b * r * d];
        infodiff::fused::sde_step::probe_rows(&c.p, &c.x, &mut rows).unwrap();
        let mut grows = vec![0.0f32; b * r * d];
        infodiff::fused::sde_step::cuda::probe_rows_host(&gpu, &c.p, &c.x, &mut grows).unwrap();
        assert_eq!(grows, rows, "probe rows: same signs, one rounding");
        let (mut x, mut lp, mut rec) = (c.x.clone(), c.lp.clone(), vec![0.0f32; b * w]);
        sde_step(
            infodiff::simd::detected(),
            &c.p,
            &mut x,
            &c.eps,
            &mut lp,
            &mut rec,
        )
        .unwrap();
        let (mut gx, mut glp, mut grec) = (c.x.clone(), c.lp.clone(), vec![0.0f32; b * w]);
        infodiff::fused::sde_step::cuda::sde_step_host(
            &gpu, &c.p, &mut gx, &c.eps, &mut glp, &mut grec,
        )
        .unwrap();
        assert_eq!(
            gx, x,
            "same noise, same fused multiply-adds: identical states"
        );
        for i in 0..b * k {
            // tree reduction in f32 on the GPU vs lanes folded in f64: twice `lp_tolerance`
            let tol = 2.0 * lp_tolerance(&c, i / k);
            assert!(((glp[i] - lp[i]).abs() as f64) < tol, "ln π[{i}]");
        }
        for i in 0..b * w {
            let (bi, f) = (i / w, i % w);
            // as in the host twin: H to 2e-5 relative, the rest twice `record_tolerance`
            let tol = if f == 0 {
                2e-5 * (1.0 + rec[i].abs() as f64)
            } else {
                2.0 * record_tolerance(&c, bi)[f]
            };
            assert!(
                ((grec[i] - rec[i]).abs() as f64) <= tol,
                "record[{bi}][{f}]"
            );
        }
    }
}

#[test]
fn probe_reports_a_reason_instead_of_panicking() {
    match infodiff::backend::probe() {
        Ok(g) => eprintln!("GPU present: {}", g.describe()),
        Err(e) => assert!(!e.reason.is_empty()),
    }
}

/// A 2-D mixture with several components per class, variances and a decision problem under
/// Euler–Maruyama, and the default job's point masses with two decision problems.
fn mixture_cases() -> Vec<(
    infodiff::score::GaussianMixture,
    Vec<infodiff::info::Partition>,
    infodiff::diffusion::Grid,
    infodiff::diffusion::SamplerKind,
)> {
    use infodiff::diffusion::{AncestralVariance, Ddpm, Process, SamplerKind, Vp};
    use infodiff::info::Partition;
    use infodiff::score::{Component, GaussianMixture};
    let comp = |weight: f64, mean: Vec<f64>, var: Vec<f64>, class| Component {
        weight,
        mean,
        var,
        class,
    };
    let part = |name: &str, a: Vec<usize>, b: Vec<usize>| Partition {
        name: name.into(),
        a,
        b,
    };
    let two_d = GaussianMixture::new(vec![
        comp(0.5, vec![-2.0, 1.0], vec![0.1, 0.3], 0),
        comp(1.0, vec![2.0, 2.0], vec![0.05, 0.05], 1),
        comp(0.7, vec![0.0, -3.0], vec![0.0, 0.5], 2),
        comp(0.3, vec![3.0, 0.0], vec![0.2, 0.0], 2),
    ])
    .unwrap();
    let points = GaussianMixture::new(
        [-8.0, -4.0, 6.0, 8.0]
            .iter()
            .enumerate()
            .map(|(i, m)| comp(1.0, vec![*m], vec![0.0], i))
            .collect(),
    )
    .unwrap();
    vec![
        (
            two_d,
            vec![part("ab", vec![0], vec![1, 2])],
            Vp::new(0.1, 20.0).unwrap().grid(60).unwrap(),
            SamplerKind::EulerMaruyama,
        ),
        (
            points,
            vec![
                part("lr", vec![0, 1], vec![2, 3]),
                part("r", vec![2], vec![3]),
            ],
            Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(100).unwrap(),
            SamplerKind::Ancestral {
                variance: AncestralVariance::Beta,
            },
        ),
    ]
}

const MIX_SHIM: &str = r#"
#include "mixture_trajectory.cu"
#include <vector>
static unsigned int ru() { unsigned int u; if (scanf("%x", &u) != 1) return 0; return u; }
static float rf() { return __uint_as_float(ru()); }
static std::vector<float> vf(size_t n) { std::vector<float> v(n); for (auto& x : v) x = rf(); return v; }
static std::vector<unsigned int> vu(size_t n) { std::vector<unsigned int> v(n); for (auto& x : v) x = ru(); return v; }
int main() {
    MixParams P;
    P.dim = ru(); P.classes = ru(); P.comps = ru(); P.parts = ru(); P.steps = ru();
    P.one_per_class = ru(); P.key0 = ru(); P.key1 = ru(); P.first = ru(); P.count = ru();
    unsigned int d = P.dim, k = P.classes, kc = P.comps, np = P.parts, S = P.steps;
    auto sm = vf((S + 1) * kc * d), inv = vf((S + 1) * kc * d), lognorm = vf((S + 1) * kc),
         dtrace = vf((S + 1) * kc), dos2 = vf(S + 1), coef = vf(S * 5), gw = vf((S + 1) * 2), im = vf(kc * d),
         isd = vf(kc * d), cum = vf(kc), prior = vf(k), lprior = vf(k);
    auto class_of = vu(kc), pa = vu(np), pb = vu(np), pas = vu(np), pbs = vu(np), pca = vu(np);
    auto pim = vf(np);
    MixPlan L = {sm.data(), inv.data(), lognorm.data(), dtrace.data(), dos2.data(), coef.data(), gw.data(),
                 im.data(), isd.data(), cum.data(), prior.data(), lprior.data(), class_of.data(),
                 pa.data(), pb.data(), (const int*)pas.data(), (const int*)pbs.data(), pca.data(),
                 pim.data()};
    unsigned int w = mix_width(P);
    std::vector<double> sums((S + 1) * w, 0.0);
    for (unsigned long long i = 0; i < P.count; ++i) {
        unsigned long long traj = P.first + i;
        float pif[MIX_MAX_K], d2[MIX_MAX_K], h, acc[MIX_MAX_W];
        for (int replay = 0; replay < 2; ++replay) {
            MixState s;
            mix_init(P, L, s, traj);
            for (unsigned int step = 0; step <= S; ++step) {
                for (unsigned int q = 0; q < w; ++q) acc[q] = 0.0f;
                if (step < S) {
                    if (!mix_step(P, L, s, traj, step, acc, &h, d2)) return 3;
                } else {
                    mix_end(P, L, s, acc, &h);
                    for (unsigned int y = 0; y < k; ++y) d2[y] = 0.0f;
                }
                if (replay) {
                    for (unsigned int q = 0; q < w; ++q) acc[q] = 0.0f;
                    mix_final_weight(P, L, s, step, pif, h, d2, acc);
                }
                for (unsigned int q = 0; q < w; ++q) sums[step * w + q] += (double)acc[q];
            }
            if (!replay) {
                for (unsigned int y = 0; y < k; ++y) pif[y] = s.pi[y];
                for (unsigned int j = 0; j < d; ++j) printf("%08x\n", __float_as_uint(s.x[j]));
            }
        }
    }
    for (double v : sums) { unsigned long long b; std::memcpy(&b, &v, 8); printf("%016llx\n", b); }
    return 0;
}
"#;

/// The fused mixture kernel's device code, compiled for the host and run trajectory by
/// trajectory through both passes: final states bit-identical to the CPU kernel's, and every
/// per-point sum of InfoSums within 1e-5·(1 + |sum|) (the same f32 per-trajectory values summed
/// in other groupings) — a 2-D mixture with several components per class, variances and a
/// decision problem under Euler–Maruyama, and the default job's point masses with two.
#[test]
#[cfg_attr(
    not(infodiff_cxx),
    ignore = "needs a C++ compiler ($CXX or c++); INFODIFF_REQUIRE_CXX=1 fails without one"
)]
fn mixture_device_code_compiled_for_the_host_matches_the_cpu_kernel() {
    use infodiff::fused::mixture_trajectory::{MixturePlan, run};
    use infodiff::info::InfoSpec;
    use infodiff::score::ScoreModel;
    let (exe, dir) = host_twin("mixture_trajectory", MIX_SHIM);
    for (m, parts, grid, sampler) in mixture_cases() {
        let spec = InfoSpec::new(m.class_prior(), parts).unwrap();
        let plan = MixturePlan::new(&m, &spec, &grid, &sampler, Noise::new(42)).unwrap();
        let (first, n, d) = (123u64, 37usize, m.dim());
        let mut x = vec![0.0f32; n * d];
        let sums = run(&plan, infodiff::simd::detected(), first, n, Some(&mut x)).unwrap();
        let f = plan.flat().unwrap();
        let mut words: Vec<u32> = f.dims.to_vec();
        words.extend([
            f.one_per_class as u32,
            f.key[0],
            f.key[1],
            first as u32,
            n as u32,
        ]);
        for a in &f.f32s {
            words.extend(a.iter().map(|v| v.to_bits()));
        }
        for a in [&f.class_of, &f.part_a, &f.part_b] {
            words.extend(a.iter());
        }
        for a in [&f.part_a_single, &f.part_b_single] {
            words.extend(a.iter().map(|v| *v as u32));
        }
        words.extend(f.part_covers_all.iter());
        words.extend(f.part_inv_mass.iter().map(|v| v.to_bits()));
        let input: String = words.iter().map(|w| format!("{w:x} ")).collect();
        let out = run_twin(&exe, &input);
        let dev_x: Vec<f32> = out[..n * d]
            .iter()
            .map(|w| f32::from_bits(*w as u32))
            .collect();
        assert_eq!(dev_x, x, "final states");
        let dev: Vec<f64> = out[n * d..].iter().map(|w| f64::from_bits(*w)).collect();
        assert_eq!(dev.len(), sums.data.len());
        let w = sums.layout.width();
        for (i, (g, c)) in dev.iter().zip(&sums.data).enumerate() {
            assert!(
                (g - c).abs() <= 1e-5 * (1.0 + c.abs()),
                "point {} column {}: device {g} vs cpu {c}",
                i / w,
                i % w
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The fused mixture kernel on the GPU against the CPU kernel (ignored unless
/// INFODIFF_REQUIRE_CUDA=1): final states bit-identical, sums within 1e-5·(1 + |sum|) (f32
/// per-trajectory values reduced in other groupings, f64 across blocks).
#[test]
#[cfg_attr(
    not(infodiff_require_cuda),
    ignore = "needs a CUDA GPU: run with INFODIFF_REQUIRE_CUDA=1 and --features cuda"
)]
fn gpu_mixture_kernel_matches_cpu_kernel() {
    use infodiff::fused::mixture_trajectory::{MixturePlan, run};
    use infodiff::info::InfoSpec;
    use infodiff::score::ScoreModel;
    let gpu = infodiff::backend::gpu_for_test("gpu_mixture_kernel_matches_cpu_kernel");
    for (m, parts, grid, sampler) in mixture_cases() {
        let spec = InfoSpec::new(m.class_prior(), parts).unwrap();
        let plan = MixturePlan::new(&m, &spec, &grid, &sampler, Noise::new(42)).unwrap();
        let (first, n, d) = (123u64, 1000usize, m.dim());
        let mut x = vec![0.0f32; n * d];
        let sums = run(&plan, infodiff::simd::detected(), first, n, Some(&mut x)).unwrap();
        let mut gx = vec![0.0f32; n * d];
        let gsums =
            infodiff::fused::mixture_trajectory::cuda::run(&gpu, &plan, first, n, Some(&mut gx))
                .unwrap();
        assert_eq!(gx, x, "same noise, same arithmetic: identical final states");
        for (i, (g, c)) in gsums.data.iter().zip(&sums.data).enumerate() {
            assert!(
                (g - c).abs() <= 1e-5 * (1.0 + c.abs()),
                "entry {i}: gpu {g} vs cpu {c}"
            );
        }
    }
}

/// The NVRTC path (builds without nvcc compile the embedded sources at run time): every kernel
/// compiles with NVRTC for sm_90 (no GPU needed). Runs under `--features cuda` where build.rs
/// found a libnvrtc.so* (LD_LIBRARY_PATH, the ld.so cache) or INFODIFF_REQUIRE_NVRTC=1; then a
/// library that does not load fails it like a kernel that does not compile.
#[test]
#[cfg_attr(
    not(infodiff_nvrtc),
    ignore = "needs --features cuda and libnvrtc on LD_LIBRARY_PATH (or INFODIFF_REQUIRE_NVRTC=1)"
)]
fn nvrtc_compiles_every_kernel() {
    let list = infodiff::backend::nvrtc_compile_all("sm_90").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.len(), kernel_files(), "{list:?}");
    assert!(list.iter().all(|(_, bytes)| *bytes > 1000), "{list:?}");
    eprintln!("NVRTC compiled {list:?}");
}

/// The number of kernels/*.cu files.
fn kernel_files() -> usize {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("kernels");
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cu")
        })
        .count()
}

const OPS_SHIM: &str = r#"
#include "gemm.cu"
#include "group_norm.cu"
#include "softmax.cu"
#include "elementwise.cu"
#include <vector>
#include <cmath>
static unsigned long long rl() { unsigned long long u; if (scanf("%llx", &u) != 1) return 0; return u; }
static unsigned int ru() { return (unsigned int)rl(); }
static float rf() { return __uint_as_float(ru()); }
static std::vector<float> vf(size_t n) { std::vector<float> v(n); for (auto& x : v) x = rf(); return v; }
static void out(const std::vector<float>& v) { for (float x : v) printf("%08x\n", __float_as_uint(x)); }
int main() {
    unsigned int mode = ru();
    if (mode == 0) {  // GEMM: params, grid (x, y, z), then a, b, c, bias
        GemmParams P;
        long long* l = &P.a_rs;
        for (int i = 0; i < 12; ++i) l[i] = (long long)rl();
        unsigned int* u = &P.m;
        for (int i = 0; i < 18; ++i) u[i] = ru();
        unsigned int gx = ru(), gy = ru(), gz = ru();
        auto a = vf(rl()), b = vf(rl()), c = vf(rl()), bias = vf(rl());
        static float as[GEMM_BK][GEMM_TILE], bs[GEMM_BK][GEMM_TILE];
        static float acc[GEMM_THREADS][4][4];
        for (unsigned int z = 0; z < gz; ++z)
            for (unsigned int by = 0; by < gy; ++by)
                for (unsigned int bx = 0; bx < gx; ++bx) {
                    unsigned int row0 = by * GEMM_TILE, col0 = bx * GEMM_TILE;
                    std::memset(acc, 0, sizeof acc);
                    for (unsigned int k0 = 0; k0 < P.k; k0 += GEMM_BK) {
                        for (unsigned int t = 0; t < GEMM_THREADS; ++t) gemm_load(P, a.data(), b.data(), z, row0, col0, k0, t, as, bs);
                        for (unsigned int t = 0; t < GEMM_THREADS; ++t) gemm_multiply(t, as, bs, acc[t]);
                    }
                    for (unsigned int t = 0; t < GEMM_THREADS; ++t) gemm_store(P, c.data(), bias.data(), z, row0, col0, t, acc[t]);
                }
        out(c);
    } else if (mode == 1) {  // GroupNorm: channels groups spatial silu eps batch, x, gamma, beta
        GroupNormParams P;
        P.channels = ru(); P.groups = ru(); P.spatial = ru(); P.silu = ru(); P.eps = rf();
        unsigned int batch = ru();
        auto x = vf((size_t)batch * P.channels * P.spatial), gamma = vf(P.channels), beta = vf(P.channels);
        std::vector<float> y(x.size());
        unsigned int n = (P.channels / P.groups) * P.spatial;
        static float part[GN_THREADS];
        for (unsigned int slice = 0; slice < batch * P.groups; ++slice) {
            const float* xs = x.data() + (size_t)slice * n;
            for (unsigned int t = 0; t < GN_THREADS; ++t) part[t] = gn_partial(xs, n, t, 0.0f, 1);
            float mean = (float)(gn_total(part) / (double)n);
            for (unsigned int t = 0; t < GN_THREADS; ++t) part[t] = gn_partial(xs, n, t, mean, 2);
            float rstd = (float)(1.0 / std::sqrt(gn_total(part) / (double)n + (double)P.eps));
            for (unsigned int t = 0; t < GN_THREADS; ++t)
                gn_apply(P, xs, y.data() + (size_t)slice * n, gamma.data(), beta.data(), slice % P.groups, t, mean, rstd);
        }
        out(y);
    } else if (mode == 2) {  // softmax: rows n scale, x
        unsigned int rows = ru(), n = ru();
        float scale = rf();
        auto x = vf((size_t)rows * n);
        static float part[SOFTMAX_THREADS];
        for (unsigned int r = 0; r < rows; ++r) {
            float* row = x.data() + (size_t)r * n;
            for (unsigned int t = 0; t < SOFTMAX_THREADS; ++t) part[t] = softmax_partial_max(row, n, t);
            float m = part[0];
            for (int i = 1; i < SOFTMAX_THREADS; ++i) m = lane_max(m, part[i]);
            for (unsigned int t = 0; t < SOFTMAX_THREADS; ++t) part[t] = softmax_partial_exp(row, n, t, scale, m);
            double s = 0.0;
            for (int i = 0; i < SOFTMAX_THREADS; ++i) s += (double)part[i];
            float inv = (float)(1.0 / s);
            for (unsigned int t = 0; t < SOFTMAX_THREADS; ++t) softmax_scale(row, n, t, inv);
        }
        out(x);
    } else {  // element-wise: batch c1 c2 h w, a (B,C1,H,W), b (B,C2,H,W), v (B·C1)
        unsigned int batch = ru(), c1 = ru(), c2 = ru(), h = ru(), w = ru(), s = h * w;
        auto a = vf((size_t)batch * c1 * s), b = vf((size_t)batch * c2 * s), v = vf((size_t)batch * c1);
        std::vector<float> y1(a.size()), y2(a.size()), y3((size_t)batch * (c1 + c2) * s), y4(a.size() * 4);
        for (size_t i = 0; i < y1.size(); ++i) y1[i] = ew_add(a.data(), a.data(), i);
        for (size_t i = 0; i < y2.size(); ++i) y2[i] = ew_add_plane(a.data(), v.data(), i, s);
        for (size_t i = 0; i < y3.size(); ++i) y3[i] = ew_concat(a.data(), b.data(), i, c1, c2, s);
        for (size_t i = 0; i < y4.size(); ++i) y4[i] = ew_upsample2x(a.data(), i, h, w);
        out(y1); out(y2); out(y3); out(y4);
    }
    return 0;
}
"#;

/// Words of a host-twin input: u32 words, or u64 for the `long long` fields.
fn hex_line(words: &[u64]) -> String {
    words.iter().map(|w| format!("{w:x} ")).collect()
}

fn f32_words(v: &[f32]) -> Vec<u64> {
    std::iter::once(v.len() as u64)
        .chain(v.iter().map(|x| x.to_bits() as u64))
        .collect()
}

/// The U-Net's GPU kernels (GEMM in its strided, batched and implicit-im2col forms; GroupNorm +
/// SiLU; row softmax; add, per-plane add, concat, upsampling), compiled for the host and run
/// thread by thread through their phases, against the CPU ops on odd sizes: GEMM within
/// 1e-5·Σ|a·b| of the f64 reference, convolutions within 1e-5·Σ|x·w| of conv2d's f64 oracle,
/// GroupNorm within 2e-5 and softmax within 2e-6 relative of the f64 references, the
/// element-wise ops exactly.
#[test]
#[cfg_attr(
    not(infodiff_cxx),
    ignore = "needs a C++ compiler ($CXX or c++); INFODIFF_REQUIRE_CXX=1 fails without one"
)]
fn unet_ops_device_code_compiled_for_the_host_matches_the_cpu() {
    use infodiff::ops::gemm::MatRef;
    use infodiff::tensor::Tensor;
    let (exe, dir) = host_twin("unet_ops", OPS_SHIM);
    // GEMM, batched and strided: z = 0..2 of (M, K)ᵀ·(K, N) with A transposed in memory.
    let (m, n, k, zn) = (37usize, 70usize, 45usize, 3usize);
    let a = fill(zn * k * m, 7, 1.0); // per z: Aᵀ stored (K, M)
    let b = fill(zn * k * n, 8, 1.0); // per z: B (K, N)
    let bias = fill(m, 9, 1.0);
    let mut words: Vec<u64> = vec![0];
    // a_rs a_cs b_rs b_cs c_rs c_cs, outer/inner for a b c
    words.extend([1, m as u64, n as u64, 1, n as u64, 1]);
    words.extend([(k * m) as u64, 0, (k * n) as u64, 0, (m * n) as u64, 0]);
    // m n k zdiv b_im2col bias_mode accumulate pad, then 10 geometry words
    words.extend([m as u64, n as u64, k as u64, 1, 0, 1, 0, 0]);
    words.extend([0u64; 10]);
    words.extend([n.div_ceil(64) as u64, m.div_ceil(64) as u64, zn as u64]);
    words.extend(f32_words(&a));
    words.extend(f32_words(&b));
    words.extend(f32_words(&vec![0.0; zn * m * n]));
    words.extend(f32_words(&bias));
    let got: Vec<f32> = run_twin(&exe, &format!("{}", hex_line(&words)))
        .iter()
        .map(|w| f32::from_bits(*w as u32))
        .collect();
    for z in 0..zn {
        let am = MatRef::row_major(&a[z * k * m..(z + 1) * k * m], k, m).t();
        let bm = MatRef::row_major(&b[z * k * n..(z + 1) * k * n], k, n);
        let mut want = vec![0.0f32; m * n];
        reference::gemm(am, bm, &mut want, n, false);
        for i in 0..m {
            for j in 0..n {
                let mag: f64 = (0..k)
                    .map(|p| {
                        (am.data[i * am.rs + p * am.cs] as f64 * bm.data[p * n + j] as f64).abs()
                    })
                    .sum();
                let g = got[z * m * n + i * n + j] as f64;
                let w = want[i * n + j] as f64 + bias[i] as f64;
                // f32 products summed in another order: 1e-5 of Σ|a·b| (+ the bias's rounding)
                assert!(
                    (g - w).abs() <= 1e-5 * mag + 1e-6,
                    "gemm z{z} ({i},{j}): {g} vs {w}"
                );
            }
        }
    }
    // GEMM with A stored as bfloat16 (packed two per word): equal to the f32 GEMM of the
    // bf16-rounded A, within the same f32 bound.
    {
        use infodiff::ops::gemm::{from_bf16, pack_bf16, to_bf16};
        let (m, n, k) = (19usize, 33usize, 29usize);
        let a = fill(m * k, 51, 1.0); // (M, K) row-major
        let b = fill(k * n, 52, 1.0);
        let mut words: Vec<u64> = vec![0, k as u64, 1, n as u64, 1, n as u64, 1];
        words.extend([0u64; 6]);
        words.extend([m as u64, n as u64, k as u64, 1, 0, 0, 0, 1]);
        words.extend([0u64; 10]);
        words.extend([1, 1, 1]);
        words.extend(f32_words(&pack_bf16(&a)));
        words.extend(f32_words(&b));
        words.extend(f32_words(&vec![0.0; m * n]));
        words.extend(f32_words(&[0.0]));
        let got: Vec<f32> = run_twin(&exe, &hex_line(&words))
            .iter()
            .map(|w| f32::from_bits(*w as u32))
            .collect();
        let ar: Vec<f32> = a.iter().map(|v| from_bf16(to_bf16(*v))).collect();
        let mut want = vec![0.0f32; m * n];
        reference::gemm(
            MatRef::row_major(&ar, m, k),
            MatRef::row_major(&b, k, n),
            &mut want,
            n,
            false,
        );
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // f32 sums of k products of magnitude ≤ 0.25: 1e-5·k/4
            assert!(
                ((g - w).abs() as f64) <= 1e-5 * k as f64 / 4.0,
                "bf16 gemm [{i}]: {g} vs {w}"
            );
        }
    }
    // Convolutions (implicit im2col, NCHW output, per-row bias), against conv2d.
    for &(bn, c, h, w, o, kk, s, pad) in &[
        (
            2usize,
            5usize,
            9usize,
            7usize,
            6usize,
            3usize,
            1usize,
            [1usize, 1, 1, 1],
        ),
        (3, 4, 8, 8, 70, 3, 2, [0, 1, 0, 1]),
        (2, 33, 5, 6, 9, 1, 1, [0, 0, 0, 0]),
    ] {
        let x = fill(bn * c * h * w, 11, 2.0);
        let wt = fill(o * c * kk * kk, 12, 1.0);
        let bias = fill(o, 13, 1.0);
        let (ho, wo) = (
            (h + pad[0] + pad[1] - kk) / s + 1,
            (w + pad[2] + pad[3] - kk) / s + 1,
        );
        let (m, n, kdim) = (o, bn * ho * wo, c * kk * kk);
        let mut words: Vec<u64> = vec![0];
        words.extend([kdim as u64, 1, 0, 0, 0, 0]);
        words.extend([0u64; 6]);
        words.extend([m as u64, n as u64, kdim as u64, 1, 1, 1, 0, 0]);
        words.extend([c, h, w, kk, kk, s, pad[0], pad[2], ho, wo].map(|v| v as u64));
        words.extend([n.div_ceil(64) as u64, m.div_ceil(64) as u64, 1]);
        words.extend(f32_words(&wt));
        words.extend(f32_words(&x));
        words.extend(f32_words(&vec![0.0; bn * o * ho * wo]));
        words.extend(f32_words(&bias));
        let got: Vec<f32> = run_twin(&exe, &hex_line(&words))
            .iter()
            .map(|v| f32::from_bits(*v as u32))
            .collect();
        let xt = Tensor::new(vec![bn, c, h, w], x.clone()).unwrap();
        let wt4 = Tensor::new(vec![o, c, kk, kk], wt.clone()).unwrap();
        let bt = Tensor::new(vec![o], bias.clone()).unwrap();
        let want = infodiff::tensor::ops::conv2d_padded(&xt, &wt4, Some(&bt), s, pad).unwrap();
        assert_eq!(got.len(), want.data.len());
        // both f32 sums of C·k² products of magnitude ≤ 1: 1e-5·C·k² absolute
        let tol = 1e-5 * kdim as f64;
        for (i, (g, wv)) in got.iter().zip(&want.data).enumerate() {
            assert!(
                ((g - wv).abs() as f64) <= tol,
                "conv {:?} at {i}: {g} vs {wv}",
                (bn, c, h, w, o, kk, s)
            );
        }
    }
    // GroupNorm + SiLU against the f64 reference.
    let (bn, c, g, sp) = (3usize, 12usize, 4usize, 37usize);
    let x = fill(bn * c * sp, 21, 3.0);
    let gamma = fill(c, 22, 2.0);
    let beta = fill(c, 23, 1.0);
    for silu in [0u64, 1] {
        let mut words = vec![
            1u64,
            c as u64,
            g as u64,
            sp as u64,
            silu,
            (1e-5f32).to_bits() as u64,
            bn as u64,
        ];
        words.extend(
            x.iter()
                .chain(&gamma)
                .chain(&beta)
                .map(|v| v.to_bits() as u64),
        );
        let got: Vec<f32> = run_twin(&exe, &hex_line(&words))
            .iter()
            .map(|v| f32::from_bits(*v as u32))
            .collect();
        let cg = c / g;
        for (si, slice) in x.chunks(cg * sp).enumerate() {
            let grp = si % g;
            let want = reference::group_norm(
                slice,
                sp,
                &gamma[grp * cg..(grp + 1) * cg],
                &beta[grp * cg..(grp + 1) * cg],
                1e-5,
                silu == 1,
            );
            for (e, w) in want.iter().enumerate() {
                let gv = got[si * cg * sp + e] as f64;
                // f32 normalisation of values ≤ ~6: 2e-5·(1 + |y|)
                assert!(
                    (gv - *w as f64).abs() <= 2e-5 * (1.0 + w.abs() as f64),
                    "group_norm silu={silu} slice {si} [{e}]: {gv} vs {w}"
                );
            }
        }
    }
    // Row softmax against the f64 reference (rows longer than the block).
    let (rows, cols) = (5usize, 300usize);
    let xs = fill(rows * cols, 31, 20.0);
    let mut words = vec![2u64, rows as u64, cols as u64, (0.37f32).to_bits() as u64];
    words.extend(xs.iter().map(|v| v.to_bits() as u64));
    let got: Vec<f32> = run_twin(&exe, &hex_line(&words))
        .iter()
        .map(|v| f32::from_bits(*v as u32))
        .collect();
    let want = reference::softmax_rows(&xs, cols, 0.37);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        // 2e-6 relative, as the CPU kernel's test
        assert!(
            ((g - w).abs() as f64) <= 2e-6 * (w.abs() as f64) + 1e-9,
            "softmax [{i}]: {g} vs {w}"
        );
    }
    // Element-wise ops against the CPU ops, exactly.
    let (bn, c1, c2, h, w) = (2usize, 3usize, 5usize, 3usize, 7usize);
    let a = fill(bn * c1 * h * w, 41, 1.0);
    let b = fill(bn * c2 * h * w, 42, 1.0);
    let v = fill(bn * c1, 43, 1.0);
    let mut words: Vec<u64> = vec![3, bn as u64, c1 as u64, c2 as u64, h as u64, w as u64];
    words.extend(a.iter().chain(&b).chain(&v).map(|x| x.to_bits() as u64));
    let got: Vec<f32> = run_twin(&exe, &hex_line(&words))
        .iter()
        .map(|x| f32::from_bits(*x as u32))
        .collect();
    let at = Tensor::new(vec![bn, c1, h, w], a.clone()).unwrap();
    let bt = Tensor::new(vec![bn, c2, h, w], b.clone()).unwrap();
    let mut plane = at.clone();
    infodiff::tensor::ops::add_channel_bias(&mut plane, &Tensor::new(vec![bn, c1], v).unwrap())
        .unwrap();
    let want: Vec<f32> = [
        infodiff::tensor::ops::add(&at, &at).unwrap().data.clone(),
        plane.data.clone(),
        infodiff::tensor::ops::concat_channels(&at, &bt)
            .unwrap()
            .data
            .clone(),
        infodiff::tensor::ops::upsample_nearest2x(&at)
            .unwrap()
            .data
            .clone(),
    ]
    .concat();
    assert_eq!(got, want, "add, add_plane, concat, upsample2x");
    let _ = std::fs::remove_dir_all(&dir);
}

/// One `#[repr(C)]` mirror: its C name, Rust size, and the Rust offset and size of each field,
/// listed by name (the names of both sides).
struct Mirror {
    name: &'static str,
    size: usize,
    fields: Vec<(&'static str, usize, usize)>,
}

/// The size of the field `f` selects (for [`mirror!`]).
fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
    std::mem::size_of::<F>()
}

/// `mirror!(Type, [field, …])`: the [`Mirror`] of a Rust struct whose C twin has the same name
/// and field names.
macro_rules! mirror {
    ($t:ident, [$($f:ident),* $(,)?]) => {
        Mirror {
            name: stringify!($t),
            size: std::mem::size_of::<$t>(),
            fields: vec![$((
                stringify!($f),
                std::mem::offset_of!($t, $f),
                field_size(|s: &$t| &s.$f),
            )),*],
        }
    };
}

/// Every struct the host passes to a kernel by value.
fn mirrors() -> Vec<Mirror> {
    use infodiff::fused::mixture_trajectory::cuda::MixParams;
    use infodiff::ops::gemm::GemmParams;
    use infodiff::ops::group_norm::GroupNormParams;
    vec![
        mirror!(
            GemmParams,
            [
                a_rs, a_cs, b_rs, b_cs, c_rs, c_cs, a_outer, a_inner, b_outer, b_inner, c_outer,
                c_inner, m, n, k, zdiv, b_im2col, bias_mode, accumulate, a_bf16, ic, ih, iw, kh,
                kw, stride, pad_t, pad_l, oh, ow,
            ]
        ),
        mirror!(
            GroupNormParams,
            [channels, groups, spatial, silu, eps, pad_]
        ),
        mirror!(
            SdeStepParams,
            [
                a,
                c,
                sd,
                cs,
                kl,
                neg_inv_sigma,
                key0,
                key1,
                traj0,
                step,
                dim,
                classes,
                batch,
                partitions,
                probes,
                probe_h,
                div_scale,
                part_a,
                part_b,
            ]
        ),
        mirror!(
            MixParams,
            [
                dim,
                classes,
                comps,
                parts,
                steps,
                one_per_class,
                key0,
                key1,
                first,
                count,
            ]
        ),
    ]
}

/// Every `#[repr(C)]` mirror has the size and field offsets of its struct in the .cu source: a
/// C++ program includes every kernel (under the intrinsics shim) and prints `sizeof` and each
/// field's `offsetof`, for the field names the Rust side lists. The Rust list is complete (its
/// fields, sorted by offset, tile the struct exactly), so a field added, removed or reordered on
/// either side fails. `MixPlanPtrs` (19 device addresses) against `struct MixPlan`; the probe
/// stream's constant against `rng::PROBE_STREAM`.
#[test]
#[cfg_attr(
    not(infodiff_cxx),
    ignore = "needs a C++ compiler ($CXX or c++); INFODIFF_REQUIRE_CXX=1 fails without one"
)]
fn repr_c_mirrors_match_the_kernel_structs() {
    use infodiff::fused::mixture_trajectory::cuda::{MIX_PLAN_FIELDS, MixPlanPtrs};
    let ms = mirrors();
    for m in &ms {
        let mut f = m.fields.clone();
        f.sort_by_key(|x| x.1);
        let mut end = 0;
        for (name, off, size) in &f {
            assert_eq!(
                *off, end,
                "{}.{name}: a Rust field missing from the list",
                m.name
            );
            end = off + size;
        }
        assert_eq!(end, m.size, "{}: fields do not fill the struct", m.name);
    }
    let mut prog = String::from(
        "#include <cstddef>\n#include \"gemm.cu\"\n#include \"group_norm.cu\"\n\
         #include \"sde_step.cu\"\n#include \"mixture_trajectory.cu\"\nint main() {\n",
    );
    let mut want = vec![];
    for m in &ms {
        prog.push_str(&format!("printf(\"%zx\\n\", sizeof({}));\n", m.name));
        want.push((m.name.to_string(), m.size as u64));
        for (f, off, _) in &m.fields {
            prog.push_str(&format!("printf(\"%zx\\n\", offsetof({}, {f}));\n", m.name));
            want.push((format!("{}.{f}", m.name), *off as u64));
        }
    }
    prog.push_str("printf(\"%zx\\n\", sizeof(MixPlan));\n");
    want.push(("MixPlan".into(), std::mem::size_of::<MixPlanPtrs>() as u64));
    for (i, f) in MIX_PLAN_FIELDS.iter().enumerate() {
        prog.push_str(&format!("printf(\"%zx\\n\", offsetof(MixPlan, {f}));\n"));
        want.push((format!("MixPlan.{f}"), 8 * i as u64));
    }
    prog.push_str("printf(\"%x\\n\", (unsigned int)SDE_STEP_PROBE_STREAM);\n");
    want.push((
        "SDE_STEP_PROBE_STREAM".into(),
        infodiff::rng::PROBE_STREAM as u64,
    ));
    prog.push_str("return 0;\n}\n");
    let (exe, dir) = host_twin("mirrors", &prog);
    let got = run_twin(&exe, "");
    assert_eq!(got.len(), want.len());
    for ((what, w), g) in want.iter().zip(&got) {
        assert_eq!(g, w, "{what}: .cu side vs Rust side (bytes)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
