//! Every SIMD variant against the scalar reference (ops/*/reference.rs / f64 libm), on odd sizes.

/// The f64 oracles of the U-Net ops' kernels.
mod reference {
    pub use infodiff::ops::elementwise::reference::{add, add_scalar, silu};
    pub use infodiff::ops::group_norm::reference::group_norm;
    pub use infodiff::ops::softmax::reference::softmax_rows;
}
use infodiff::diffusion::{AncestralVariance, Ddpm, Process, SamplerKind, Vp};
use infodiff::fused::mixture_trajectory::{MixturePlan, run};
use infodiff::info::{InfoSpec, Partition};
use infodiff::rng::Noise;
use infodiff::score::{Component, GaussianMixture, ScoreModel};
use infodiff::simd::IsaKind;
use infodiff::simd::math::{MathFn, eval_slice};

fn kinds() -> Vec<IsaKind> {
    let k = IsaKind::all_available();
    eprintln!("ISAs under test: {:?}", k);
    k
}

/// exp, ln, cos 2πu, sin 2πu of every ISA against f64 libm on 1001 points (odd: tails padded).
#[test]
fn math_functions_match_libm_on_every_isa() {
    let n = 1001;
    let cases: [(MathFn, fn(f64) -> f64, f32, f32, f64); 4] = [
        // (function, f64 oracle, lo, hi, tolerance): exp and ln relative 3 ulp (4e-7), sin/cos absolute 3e-7.
        (MathFn::Exp, f64::exp, -80.0, 80.0, 4e-7),
        (MathFn::Ln, f64::ln, 1e-30, 1e3, 4e-7),
        (
            MathFn::Cos2Pi,
            |u| (std::f64::consts::TAU * u).cos(),
            -3.0,
            3.0,
            3e-7,
        ),
        (
            MathFn::Sin2Pi,
            |u| (std::f64::consts::TAU * u).sin(),
            -3.0,
            3.0,
            3e-7,
        ),
    ];
    for (f, oracle, lo, hi, tol) in cases {
        let x: Vec<f32> = (0..n)
            .map(|i| {
                let t = i as f64 / (n - 1) as f64;
                if f == MathFn::Ln {
                    (lo as f64 * ((hi / lo) as f64).powf(t)) as f32
                } else {
                    (lo as f64 + (hi - lo) as f64 * t) as f32
                }
            })
            .collect();
        let mut outs = vec![];
        for kind in kinds() {
            let mut out = vec![0.0f32; n];
            eval_slice(kind, f, &x, &mut out);
            for (xi, oi) in x.iter().zip(&out) {
                let want = oracle(*xi as f64);
                let err = if matches!(f, MathFn::Exp) {
                    ((*oi as f64 - want) / want).abs()
                } else if f == MathFn::Ln {
                    (*oi as f64 - want).abs() / want.abs().max(1.0)
                } else {
                    (*oi as f64 - want).abs()
                };
                assert!(
                    err <= tol,
                    "{f:?} {kind:?} at {xi}: {oi} vs {want} (err {err:e})"
                );
            }
            outs.push(out);
        }
        for o in &outs[1..] {
            assert_eq!(o, &outs[0], "{f:?}: ISAs disagree bitwise");
        }
    }
}

fn mixture_2d() -> GaussianMixture {
    // D = 3 (odd), 5 components over 3 classes (class 0 owns two), mixed variances.
    GaussianMixture::new(vec![
        Component {
            weight: 1.0,
            mean: vec![-3.0, 0.5, 1.0],
            var: vec![0.0, 0.0, 0.0],
            class: 0,
        },
        Component {
            weight: 2.0,
            mean: vec![-2.0, -1.0, 0.0],
            var: vec![0.1, 0.2, 0.3],
            class: 0,
        },
        Component {
            weight: 1.5,
            mean: vec![2.0, 2.0, -1.0],
            var: vec![0.05, 0.05, 0.05],
            class: 1,
        },
        Component {
            weight: 0.7,
            mean: vec![0.0, -3.0, 2.0],
            var: vec![0.0, 0.5, 0.0],
            class: 2,
        },
        Component {
            weight: 0.3,
            mean: vec![3.0, 0.0, 0.0],
            var: vec![0.2, 0.0, 0.1],
            class: 2,
        },
    ])
    .unwrap()
}

/// The fused kernel on every ISA: final states bit-identical across ISAs, and within 2e-3 of the
/// f64 reference (f32 state after 200 steps; the tolerance covers the f32 rounding of scores
/// near σ → 0 where |s| grows like 1/σ²).
#[test]
fn fused_mixture_kernel_matches_reference_on_every_isa() {
    let m = mixture_2d();
    let spec = InfoSpec::new(
        m.class_prior(),
        vec![Partition {
            name: "ab".into(),
            a: vec![0],
            b: vec![1],
        }],
    )
    .unwrap();
    let noise = Noise::new(99);
    for (grid, sampler) in [
        (
            Ddpm::new(1e-4, 0.02, 1000).unwrap().grid(200).unwrap(),
            SamplerKind::Ancestral {
                variance: AncestralVariance::Beta,
            },
        ),
        (
            Vp::new(0.1, 20.0).unwrap().grid(200).unwrap(),
            SamplerKind::EulerMaruyama,
        ),
        (
            Vp::new(0.1, 20.0).unwrap().grid(150).unwrap(),
            SamplerKind::Ddim {
                eta: 1.0,
                clip: None,
            },
        ),
    ] {
        let plan = MixturePlan::new(&m, &spec, &grid, &sampler, noise).unwrap();
        let n = 37; // odd: a partial chunk, partial lane groups
        let first = 1000;
        let mut finals = vec![];
        for kind in kinds() {
            let mut x = vec![0.0f32; n * 3];
            run(&plan, kind, first, n, Some(&mut x)).unwrap();
            finals.push(x);
        }
        for f in &finals[1..] {
            assert_eq!(f, &finals[0], "ISAs disagree bitwise ({sampler:?})");
        }
        for t in 0..n {
            let r = infodiff::fused::mixture_trajectory::reference::mixture_trajectory(
                &m,
                &grid,
                &sampler,
                &noise,
                first + t as u64,
            );
            for j in 0..3 {
                let got = finals[0][t * 3 + j] as f64;
                assert!(
                    (got - r.x[j]).abs() < 2e-3 * (1.0 + r.x[j].abs()),
                    "{sampler:?} traj {t} dim {j}: {got} vs {}",
                    r.x[j]
                );
            }
        }
    }
}

/// Fused GroupNorm + SiLU on every ISA against the f64 reference, on odd slice sizes
/// (tolerance 2e-5 absolute: f32 normalisation of values of order 1, exp to 3 ulp).
#[test]
fn group_norm_kernel_matches_reference_on_every_isa() {
    use infodiff::ops::group_norm::cpu::group_norm_slice;
    for &(channels, spatial) in &[(1usize, 1usize), (3, 7), (5, 33), (8, 1025), (2, 4099)] {
        let n = channels * spatial;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.3) * 3.0 + 2.0)
            .collect();
        let gamma: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.25).collect();
        let beta: Vec<f32> = (0..channels).map(|c| c as f32 * 0.1 - 0.2).collect();
        for silu in [false, true] {
            let want = reference::group_norm(&x, spatial, &gamma, &beta, 1e-5, silu);
            for kind in kinds() {
                let mut y = vec![0.0f32; n];
                group_norm_slice(kind, &x, &mut y, spatial, &gamma, &beta, 1e-5, silu);
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 2e-5,
                        "{kind:?} {channels}x{spatial} silu={silu} at {i}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

/// Row softmax (scaled) and SiLU on every ISA against the f64 reference on odd sizes
/// (tolerance: 2e-6 relative for softmax, 1e-6·(1+|x|) for SiLU).
#[test]
fn softmax_and_silu_match_reference_on_every_isa() {
    use infodiff::ops::elementwise::cpu::silu;
    use infodiff::ops::softmax::cpu::softmax_rows;
    for &(rows, cols) in &[(1usize, 1usize), (3, 7), (5, 17), (2, 257), (4, 1031)] {
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 2003) as f32 / 2003.0 - 0.5) * 20.0)
            .collect();
        let want = reference::softmax_rows(&x, cols, 0.37);
        for kind in kinds() {
            let mut y = x.clone();
            softmax_rows(kind, &mut y, cols, 0.37);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() <= 2e-6 * b.abs() + 1e-12,
                    "{kind:?} softmax {rows}x{cols} at {i}: {a} vs {b}"
                );
            }
            let mut z = x.clone();
            silu(kind, &mut z);
            for (i, (a, b)) in z.iter().zip(reference::silu(&x)).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + x[i].abs()),
                    "{kind:?} silu at {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// The element-wise kernels on every ISA equal their scalar twins bit for bit (IEEE addition is
/// exactly rounded), on odd lengths around the vector widths.
#[test]
fn elementwise_kernels_match_reference_on_every_isa() {
    use infodiff::ops::elementwise::cpu::{add, add_scalar};
    for kind in infodiff::simd::IsaKind::all_available() {
        for n in [0usize, 1, 7, 15, 16, 17, 33, 1001] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 1.3).cos() * 1e-3).collect();
            let mut y = vec![f32::NAN; n];
            add(kind, &a, &b, &mut y);
            assert_eq!(y, reference::add(&a, &b), "{kind:?} add n={n}");
            let mut x = a.clone();
            add_scalar(kind, &mut x, 0.123);
            assert_eq!(
                x,
                reference::add_scalar(&a, 0.123),
                "{kind:?} add_scalar n={n}"
            );
        }
    }
}

/// The kernels see the column layout of `InfoSums` (`L_*`, `MIX_FIXED`, `MIX_PER_PARTITION`,
/// `MIX_PER_CLASS`) and the fused kernels' shared constants only through the `layout.cuh` that
/// build.rs generates from src/info/layout_consts.rs: the generated header is the crate's
/// `cuda_header()`, every define read from it equals the Rust constant of the same name, every
/// Rust constant has its define, and no kernels/ source defines one of those names by hand.
#[test]
fn cuda_kernel_mirrors_the_sums_layout() {
    use infodiff::info::Layout;
    use infodiff::info::sums::consts;
    let header =
        std::fs::read_to_string(std::path::Path::new(env!("OUT_DIR")).join("layout.cuh")).unwrap();
    assert_eq!(
        header,
        consts::cuda_header(),
        "$OUT_DIR/layout.cuh is stale"
    );
    let defines: std::collections::HashMap<&str, usize> = header
        .lines()
        .filter_map(|l| {
            let mut w = l.strip_prefix("#define ")?.split_whitespace();
            let (name, value) = (w.next()?, w.next()?);
            Some((name, value.parse().ok()?))
        })
        .collect();
    assert_eq!(
        defines.len(),
        consts::CUDA_DEFINES.len(),
        "one define per constant"
    );
    let kernels = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    for e in std::fs::read_dir(&kernels).unwrap() {
        let path = e.unwrap().path();
        let src = std::fs::read_to_string(&path).unwrap();
        for l in src.lines() {
            let Some(name) = l
                .trim()
                .strip_prefix("#define ")
                .and_then(|r| r.split_whitespace().next())
            else {
                continue;
            };
            assert!(
                !defines.contains_key(name),
                "{} defines {name} by hand (generated in layout.cuh)",
                path.display()
            );
        }
        let name = path.file_name().unwrap().to_string_lossy();
        if name == "mixture_trajectory.cu" || name == "sde_step.cu" {
            assert!(
                src.contains("#include \"layout.cuh\""),
                "{name} includes layout.cuh"
            );
        }
    }
    let rust = [
        ("L_N", Layout::N),
        ("L_H", Layout::H),
        ("L_H2", Layout::H2),
        ("L_HX", Layout::HX),
        ("L_HX2", Layout::HX2),
        ("L_HXN", Layout::HXN),
        ("L_RB", Layout::RB),
        ("L_RBN", Layout::RBN),
        ("L_GIR", Layout::GIR),
        ("L_PROD", Layout::PROD),
        ("L_PRODN", Layout::PRODN),
        ("L_GIRC2", Layout::GIRC2),
        ("L_RBC", Layout::RBC),
        ("L_RBC2", Layout::RBC2),
        ("L_PROD2", Layout::PROD2),
        ("L_IBP", Layout::IBP),
        ("L_IBP2", Layout::IBP2),
        ("L_IBPD2", Layout::IBPD2),
        ("L_HG2", Layout::HG2),
        ("L_RBD2", Layout::RBD2),
        ("MIX_FIXED", Layout::FIXED),
        ("MIX_PER_PARTITION", Layout::PER_PARTITION),
        ("MIX_PER_CLASS", Layout::PER_CLASS),
    ];
    for (name, v) in rust {
        assert_eq!(defines.get(name), Some(&v), "{name} in layout.cuh");
    }
    use infodiff::fused::{mixture_trajectory as mix, sde_step as sde};
    let fused = [
        ("MIX_MAX_D", mix::GPU_MAX[0]),
        ("MIX_MAX_K", mix::GPU_MAX[1]),
        ("MIX_MAX_KC", mix::GPU_MAX[2]),
        ("MIX_MAX_P", mix::GPU_MAX[3]),
        ("MIX_THREADS", mix::cuda::THREADS as usize),
        ("SDE_STEP_MAX_CLASSES", sde::MAX_CLASSES),
        ("SDE_STEP_MAX_PARTITIONS", sde::MAX_PARTITIONS),
        ("SDE_STEP_THREADS", sde::cuda::THREADS as usize),
        ("SDE_STEP_REC_H", sde::REC_H),
        ("SDE_STEP_REC_RB", sde::REC_RB),
        ("SDE_STEP_REC_FLAG", sde::REC_FLAG),
        ("SDE_STEP_REC_S2", sde::REC_S2),
        ("SDE_STEP_REC_DIV", sde::REC_DIV),
        ("SDE_STEP_REC_FIXED", sde::REC_FIXED),
    ];
    for (name, v) in fused {
        assert_eq!(defines.get(name), Some(&v), "{name} in layout.cuh");
    }
    let l_defines = defines.keys().filter(|k| k.starts_with("L_")).count();
    assert_eq!(l_defines, Layout::FIXED, "one L_ define per fixed column");
    // The per-partition and per-class columns sit where the kernel's offsets put them.
    let lay = Layout {
        partitions: 3,
        classes: 2,
    };
    assert_eq!(lay.part_rate2(2), Layout::FIXED + 4 * 2 + 3);
    assert_eq!(lay.class_rate(1), Layout::FIXED + 4 * 3 + 4 + 2);
    assert_eq!(lay.width(), Layout::FIXED + 4 * 3 + 4 * 2);
}
