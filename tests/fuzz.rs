//! Bad input, fuzzed: seeded mutation loops (no extra dependency) over measure configs, model
//! config.json files, safetensors headers and bodies, and the command line. Each mutated input
//! must be refused with an error naming the field or tensor (a bad-input error: exit code 2 for
//! the binary) or run to numbers that pass the result checks; never a panic, a hang, an
//! allocation beyond what the validated sizes need, or a file written for a refused input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use infodiff::Error;
use infodiff::app::{self, Config};
use infodiff::nn::Weights;
use infodiff::nn::unet::{UNet, UNetConfig, expected_tensors};

// ---- the largest single allocation of the current thread -----------------------------------

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(l.size())));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new)));
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its value with the largest single allocation it made on this thread.
fn largest_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let v = f();
    (v, LARGEST.with(|m| m.get()))
}

/// The most one refusal or one validation may allocate at once (the inputs here are small).
const ALLOC_BOUND: usize = 64 << 20;

// ---- a seeded generator and the mutations ----------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

/// Values a fuzzer throws at any field: extremes, zero sizes, wrong types, null.
fn extreme(r: &mut Rng) -> Value {
    let pool = [
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(u64::MAX),
        json!(u64::MAX - 1),
        json!(1u64 << 63),
        json!(1_000_000_000u64),
        json!(1e308),
        json!(-1e308),
        json!(1e-300),
        json!(1e20),
        json!(1e30),
        json!(1e38),
        json!(0.5),
        json!(-0.0),
        json!(null),
        json!(""),
        json!("online"),
        json!("class_0"),
        json!([]),
        json!([u64::MAX]),
        json!([1e30, -1e30]),
        json!({}),
        json!(true),
    ];
    r.pick(&pool).clone()
}

/// Paths (as key/index lists) of every node of `v`.
fn paths(v: &Value, at: Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = at.clone();
                p.push(json!(k));
                paths(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = at.clone();
                p.push(json!(i));
                paths(c, p, out);
            }
        }
        _ => {}
    }
}

fn node<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

/// One to three mutations of `v`: a node replaced by an extreme value, removed, duplicated into
/// a list, or an unknown key added.
fn mutate(v: &Value, r: &mut Rng) -> Value {
    let mut v = v.clone();
    for _ in 0..1 + r.below(3) {
        let mut ps = vec![];
        paths(&v, vec![], &mut ps);
        let p = r.pick(&ps).clone();
        match r.below(10) {
            0 if !p.is_empty() => {
                let (last, parent) = p.split_last().unwrap();
                match (node(&mut v, parent), last) {
                    (Value::Object(m), Value::String(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), Value::Number(i)) => {
                        a.remove(i.as_u64().unwrap() as usize);
                    }
                    _ => {}
                }
            }
            1 => {
                if let Value::Object(m) = node(&mut v, &p) {
                    m.insert("bogus_key".into(), json!(1));
                }
            }
            2 => {
                if let Value::Array(a) = node(&mut v, &p)
                    && let Some(x) = a.first().cloned()
                {
                    a.push(x);
                }
            }
            _ if !p.is_empty() => *node(&mut v, &p) = extreme(r),
            _ => {}
        }
    }
    v
}

/// Runs `f` on its own thread; a panic or a run past `limit` fails the test, naming `what`.
fn guarded<T: Send + 'static>(
    what: String,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(_)) => panic!("panicked on {what}"),
        Err(_) => panic!("no answer within {limit:?} (a hang) on {what}"),
    }
}

/// A bad-input refusal that names what is wrong.
fn assert_names_the_input(e: &Error, what: &str) {
    let msg = e.to_string();
    assert!(e.is_bad_input(), "not a bad-input error on {what}: {msg}");
    assert!(
        msg.contains('`') || msg.contains("not valid JSON") || msg.contains("safetensors"),
        "the refusal names no field or tensor on {what}: {msg}"
    );
}

fn seeds() -> Vec<Value> {
    let base = json!({
        "process": {"kind": "ddpm", "beta_start": 1e-4, "beta_end": 0.02, "steps": 100},
        "mixture": {"components": [
            {"weight": 1.0, "mean": [-2.0], "var": 0.0, "class": 0},
            {"weight": 1.0, "mean": [2.0], "var": 0.25, "class": 1}
        ]},
        "sampler": {"kind": "ancestral", "steps": 40, "variance": "beta"},
        "partitions": [{"name": "lr", "a": [0], "b": [1]}],
        "trajectories": 64,
        "seed": 1
    });
    let mut ve = base.clone();
    ve["process"] = json!({"kind": "ve", "sigma_min": 0.01, "sigma_max": 20.0});
    ve["sampler"] = json!({"kind": "euler_maruyama", "steps": 40});
    let mut heun = base.clone();
    heun["process"] = json!({"kind": "vp", "beta_min": 0.1, "beta_max": 20.0});
    heun["sampler"] = json!({"kind": "heun_ode", "steps": 20});
    let mut ddim = base.clone();
    ddim["process"] = json!({"kind": "vp_cosine", "s": 0.008, "t_max": 0.999});
    ddim["sampler"] = json!({"kind": "ddim", "steps": 20, "eta": 1.0});
    vec![base, ve, heun, ddim]
}

#[test]
fn fuzzed_configs_are_refused_by_field_or_give_checked_numbers() {
    let start = Instant::now();
    let mut r = Rng(0xC0FF_EE00);
    let seeds = seeds();
    let (mut refused, mut ran) = (0, 0);
    for i in 0..500 {
        let v = mutate(r.pick(&seeds), &mut r);
        let what = format!("config #{i}: {v}");
        let (parsed, big) = largest_alloc(|| Config::from_value(&v));
        assert!(
            big <= ALLOC_BOUND,
            "allocated {big} bytes at once validating {what}"
        );
        let cfg = match parsed {
            Err(e) => {
                assert_names_the_input(&e, &what);
                refused += 1;
                continue;
            }
            Ok(c) => c,
        };
        let grid = cfg.grid().unwrap();
        if cfg.trajectories * grid.steps() > 200_000 {
            continue; // accepted, but too long for a unit test
        }
        ran += 1;
        let w = what.clone();
        guarded(what.clone(), Duration::from_secs(60), move || {
            match app::run(&cfg, None, None) {
                Ok(report) => {
                    // what run() returns has passed the result checks; rendering must end
                    app::check_results(&report.curves).unwrap();
                    let files = report.files().unwrap();
                    assert_eq!(files.len(), 3);
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        matches!(e, Error::Implausible { .. } | Error::NonFinite { .. }),
                        "unexpected failure on {w}: {msg}"
                    );
                    assert!(msg.contains("step"), "no step named on {w}: {msg}");
                }
            }
        });
    }
    assert!(refused > 100 && ran > 50, "refused {refused}, ran {ran}");
    eprintln!(
        "configs: {refused} refused, {ran} run, in {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unet/tiny-ddpm")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("infodiff-fuzz-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn fuzzed_model_configs_are_refused_by_key() {
    let text = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let base: Value = serde_json::from_str(&text).unwrap();
    let weights = fixture().join("diffusion_pytorch_model.safetensors");
    let dir = scratch("model");
    std::fs::copy(&weights, dir.join("diffusion_pytorch_model.safetensors")).unwrap();
    let mut r = Rng(7);
    let mut refused = 0;
    for i in 0..300 {
        let v = mutate(&base, &mut r);
        let what = format!("model config #{i}: {v}");
        let (parsed, big) = largest_alloc(|| UNetConfig::from_json(&v));
        assert!(
            big <= ALLOC_BOUND,
            "allocated {big} bytes at once validating {what}"
        );
        match parsed {
            Err(e) => {
                assert_names_the_input(&e, &what);
                assert!(e.to_string().contains("config.json"), "{what}: {e}");
                refused += 1;
            }
            Ok(cfg) => {
                // every accepted config has computable tensor shapes and memory bounds
                let (_, big) = largest_alloc(|| {
                    let n: usize = expected_tensors(&cfg)
                        .iter()
                        .map(|(_, s)| s.iter().try_fold(1usize, |a, d| a.checked_mul(*d)).unwrap())
                        .fold(0usize, |a, b| a.saturating_add(b));
                    let _ = cfg.forward_bytes(64, 4096, 4096, 1024);
                    n
                });
                assert!(big <= ALLOC_BOUND, "{what}");
                // and loads against the fixture's weights or names the tensor that differs
                if i % 4 == 0 {
                    std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
                    let d = dir.clone();
                    let w = what.clone();
                    guarded(what.clone(), Duration::from_secs(60), move || {
                        if let Err(e) = UNet::load(&d) {
                            assert_names_the_input(&e, &w);
                        }
                    });
                }
            }
        }
    }
    // null where diffusers needs a number is refused, not read as the default
    for key in [
        "in_channels",
        "layers_per_block",
        "downsample_padding",
        "norm_eps",
    ] {
        let mut v = base.clone();
        v[key] = Value::Null;
        let e = UNetConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains(key) && e.contains("null"), "{key}: {e}");
    }
    assert!(refused > 100, "refused {refused}");
}

/// A safetensors file: 8-byte little-endian header length, JSON header, body.
fn safetensors_parts(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header, bytes[8 + n..].to_vec())
}

fn safetensors_join(header: &Value, body: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(body);
    out
}

#[test]
fn fuzzed_safetensors_are_refused_naming_the_file_or_tensor() {
    let bytes = std::fs::read(fixture().join("io.safetensors")).unwrap();
    let (header, body) = safetensors_parts(&bytes);
    let dir = scratch("st");
    let path = dir.join("x.safetensors");
    let mut r = Rng(11);
    let mut refused = 0;
    for i in 0..400 {
        let mutated = match r.below(4) {
            // the header's values (dtype, shape, data_offsets) mutated
            0 | 1 => safetensors_join(&mutate(&header, &mut r), &body),
            // bytes of the body: NaN and infinities among the values
            2 => {
                let mut b = body.clone();
                for _ in 0..1 + r.below(4) {
                    let at = r.below(b.len() / 4) * 4;
                    let bad = *r.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e38]);
                    b[at..at + 4].copy_from_slice(&bad.to_le_bytes());
                }
                safetensors_join(&header, &b)
            }
            // raw bytes: the length prefix, truncation, flips
            _ => {
                let mut b = bytes.clone();
                match r.below(3) {
                    0 => b[..8].copy_from_slice(&r.next().to_le_bytes()),
                    1 => b.truncate(r.below(b.len())),
                    _ => {
                        for _ in 0..1 + r.below(8) {
                            let at = r.below(b.len());
                            b[at] = r.next() as u8;
                        }
                    }
                }
                b
            }
        };
        std::fs::write(&path, &mutated).unwrap();
        let what = format!("safetensors #{i} ({} bytes)", mutated.len());
        let (loaded, big) = largest_alloc(|| Weights::load(&path));
        assert!(
            big <= 4 * mutated.len() + (1 << 20),
            "allocated {big} bytes at once for {what}"
        );
        match loaded {
            Err(e) => {
                assert_names_the_input(&e, &what);
                refused += 1;
            }
            Ok(w) => {
                assert!(
                    w.tensors
                        .values()
                        .all(|t| t.data.iter().all(|v| v.is_finite())),
                    "{what}"
                );
            }
        }
    }
    assert!(refused > 100, "refused {refused}");
}

/// The fixture's weights stored as F16, BF16 and F64 load as f32 within each dtype's rounding,
/// and a U-Net loads from them.
#[test]
fn half_and_double_precision_weights_load_as_f32() {
    use infodiff::io::safetensors::{Values, View, decode, encode};
    let bytes = std::fs::read(fixture().join("diffusion_pytorch_model.safetensors")).unwrap();
    let orig = decode(&bytes, "fixture").unwrap();
    for (dtype, rel) in [
        ("f16", 2f32.powi(-11)),
        ("bf16", 2f32.powi(-8)),
        ("f64", 0.0),
    ] {
        let floats = |e: &infodiff::io::safetensors::Entry| match &e.values {
            Values::F32(v) => v.clone(),
            Values::I64(_) => vec![],
        };
        let f16s: Vec<Vec<half::f16>> = orig
            .iter()
            .map(|e| floats(e).iter().map(|&x| half::f16::from_f32(x)).collect())
            .collect();
        let bf16s: Vec<Vec<half::bf16>> = orig
            .iter()
            .map(|e| floats(e).iter().map(|&x| half::bf16::from_f32(x)).collect())
            .collect();
        let f64s: Vec<Vec<f64>> = orig
            .iter()
            .map(|e| floats(e).iter().map(|&x| x as f64).collect())
            .collect();
        let views: Vec<(&str, &[usize], View)> = orig
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let v = match dtype {
                    "f16" => View::F16(&f16s[i]),
                    "bf16" => View::BF16(&bf16s[i]),
                    _ => View::F64(&f64s[i]),
                };
                (e.name.as_str(), e.shape.as_slice(), v)
            })
            .collect();
        let dir = scratch(&format!("weights-{dtype}"));
        std::fs::copy(fixture().join("config.json"), dir.join("config.json")).unwrap();
        let path = dir.join("diffusion_pytorch_model.safetensors");
        std::fs::write(&path, encode(&views).unwrap()).unwrap();
        let w = Weights::load(&path).unwrap();
        for e in &orig {
            let got = &w.tensors[&e.name].data;
            for (g, x) in got.iter().zip(floats(e)) {
                // round to nearest: half an ulp of the dtype's significand, relative (f16's
                // subnormals below 6.1e-5 absolute)
                let tol = rel * x.abs() + if dtype == "f16" { 6.0e-8 } else { 0.0 };
                assert!((g - x).abs() <= tol, "{dtype} {}: {g} vs {x}", e.name);
            }
        }
        UNet::load(&dir).unwrap_or_else(|e| panic!("{dtype}: {e}"));
    }
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_infodiff"));
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs the binary with a deadline; returns (exit code, stderr).
fn run_bin(args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = bin().args(args).spawn().unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            let code = status.code().unwrap_or(-1);
            return (code, String::from_utf8_lossy(&o.stderr).into_owned());
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("infodiff {args:?} ran past {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn fuzzed_command_lines_exit_2_and_write_nothing() {
    let dir = scratch("cli");
    let mut r = Rng(3);
    let seeds = seeds();
    for i in 0..40 {
        let v = mutate(r.pick(&seeds), &mut r);
        let cfg = dir.join(format!("c{i}.json"));
        std::fs::write(&cfg, v.to_string()).unwrap();
        let out = dir.join(format!("out{i}"));
        let parsed = Config::from_value(&v);
        let long = parsed
            .as_ref()
            .is_ok_and(|c| c.trajectories * c.grid().unwrap().steps() > 200_000);
        if long {
            continue;
        }
        let args = [
            "measure",
            "--config",
            cfg.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        let (code, err) = run_bin(&args, Duration::from_secs(60));
        assert_ne!(code, 101, "panic on {v}: {err}");
        match parsed {
            Err(e) => {
                assert_eq!(code, 2, "{v}: {err}");
                assert!(err.contains(&e.to_string()), "{v}: {err}");
                assert!(!out.exists(), "a refused config wrote {}", out.display());
            }
            Ok(_) => assert!(code == 0 || code == 1, "{v}: {err}"),
        }
        // never a temporary left behind
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("infodiff-tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?} left by {v}");
    }
    // options: extreme values are refused with exit 2 before anything runs
    let out = dir.join("opts");
    let o = out.to_str().unwrap();
    for args in [
        vec!["measure", "--threads", "100000", "--out", o],
        vec!["measure", "--threads", "0", "--out", o],
        vec![
            "measure",
            "--trajectories",
            "18446744073709551615",
            "--out",
            o,
        ],
        vec!["measure", "--steps", "18446744073709551615", "--out", o],
        vec!["measure", "--trajectories", "0", "--out", o],
        vec!["bench", "gemm", "--size", "1000000000"],
        vec!["bench", "conv", "--batch", "0"],
        vec!["bench", "mixture", "--steps", "18446744073709551615"],
    ] {
        let (code, err) = run_bin(&args, Duration::from_secs(60));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains('`'), "{args:?}: {err}");
        assert!(!out.exists(), "{args:?} wrote {o}");
    }
}
