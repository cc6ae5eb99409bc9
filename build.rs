//! Kernels for the `cuda` feature: every `kernels/*.cu` is compiled to PTX with nvcc when one is
//! found (`NVCC`, else `$CUDA_HOME/bin/nvcc`, else `$CUDA_PATH/bin/nvcc`, else `nvcc` on `PATH`),
//! for the architecture in `INFODIFF_CUDA_ARCH` (default `sm_90`, the H100; never read from a
//! GPU). A kernel that does not compile fails the build. ptxas's register, stack and spill report
//! is printed as a build warning per kernel and kept in `$OUT_DIR/ptxas-report.txt`.
//! Without nvcc the sources (headers inlined) are embedded for NVRTC at run time.
//! Without the `cuda` feature no kernel is built.
//!
//! Always (with or without `cuda`): `$OUT_DIR/layout.cuh`, the `#define`s of the constants the
//! kernels share with the crate, generated from src/info/layout_consts.rs (the crate's
//! `info::sums::consts`), so neither side copies the other's values. nvcc gets `$OUT_DIR` on its
//! include path, the NVRTC sources have the header inlined, and the host twins of tests/cuda.rs
//! find it through `env!("OUT_DIR")`.
//!
//! Test gates (`cargo::rustc-cfg`, seen by every target of the package, integration tests
//! included), so a test that cannot run here shows as `ignored` in the summary, not as `ok`:
//! - `infodiff_require_cuda` when `INFODIFF_REQUIRE_CUDA=1`: the GPU tests (`gpu_*`) run, and
//!   fail where no GPU opens; otherwise they are ignored.
//! - `infodiff_cxx` when a C++ compiler (`$CXX`, else `c++`) runs, or when
//!   `INFODIFF_REQUIRE_CXX=1` (then a missing compiler fails the host-twin tests of tests/cuda.rs
//!   instead of leaving them ignored).
//! - `infodiff_nvrtc` under the `cuda` feature when a libnvrtc.so* is where the dynamic loader
//!   looks (a `LD_LIBRARY_PATH` folder or the ld.so cache), or when
//!   `INFODIFF_REQUIRE_NVRTC=1` (then one that does not load fails the NVRTC test).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::{env, fs};

const DEFAULT_ARCH: &str = "sm_90";

/// The constants shared with the kernels (`CUDA_DEFINES`, `cuda_header`).
#[allow(dead_code)]
mod layout_consts {
    include!("src/info/layout_consts.rs");
}

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/info/layout_consts.rs");
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    fs::write(out.join("layout.cuh"), layout_consts::cuda_header()).expect("writing layout.cuh");
    for v in [
        "NVCC",
        "CUDA_HOME",
        "CUDA_PATH",
        "PATH",
        "INFODIFF_CUDA_ARCH",
        "CXX",
        "INFODIFF_REQUIRE_CUDA",
        "INFODIFF_REQUIRE_CXX",
    ] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let cuda = env::var_os("CARGO_FEATURE_CUDA").is_some();
    test_gates(cuda);
    if !cuda {
        return;
    }
    let dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR")).join("kernels");
    let arch = env::var("INFODIFF_CUDA_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.to_string());
    let mut kernels: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("kernels/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    kernels.sort();
    let nvcc = find_nvcc();
    let mut table = String::new();
    let mut report = String::new();
    for src in &kernels {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        // The source with its headers inlined is always embedded (NVRTC needs no include path).
        let inlined = out.join(format!("{name}.nvrtc.cu"));
        fs::write(&inlined, inline_headers(src, &[&dir, &out])).expect("writing inlined kernel");
        let cuda = format!("include_str!({:?})", inlined.display().to_string());
        let ptx = match &nvcc {
            Some(nvcc) => {
                let ptx = out.join(format!("{name}.ptx"));
                run_nvcc(
                    nvcc,
                    &["--ptx", &format!("-arch={arch}"), "-O3"],
                    src,
                    &[&dir, &out],
                    &ptx,
                    &name,
                );
                let cubin = out.join(format!("{name}.cubin"));
                let log = run_nvcc(
                    nvcc,
                    &["-cubin", &format!("-arch={arch}"), "-O3", "-Xptxas", "-v"],
                    src,
                    &[&dir, &out],
                    &cubin,
                    &name,
                );
                for line in ptxas_summary(&log) {
                    println!("cargo:warning=ptxas {arch} {name}: {line}");
                    report.push_str(&format!("{name}: {line}\n"));
                }
                format!("Some(include_str!({:?}))", ptx.display().to_string())
            }
            None => "None".to_string(),
        };
        table.push_str(&format!(
            "    KernelSource {{ name: {name:?}, ptx: {ptx}, cuda: {cuda} }},\n"
        ));
    }
    if nvcc.is_none() {
        println!(
            "cargo:warning=no nvcc (NVCC, CUDA_HOME, CUDA_PATH, PATH): {} kernel(s) embedded as CUDA source for NVRTC at run time",
            kernels.len()
        );
    }
    fs::write(out.join("ptxas-report.txt"), report).expect("writing ptxas report");
    let code = format!(
        "/// Every kernel in kernels/.\npub static KERNELS: &[KernelSource] = &[\n{table}];\n/// The architecture the PTX was built for (INFODIFF_CUDA_ARCH).\npub const BUILD_ARCH: &str = {arch:?};\n"
    );
    fs::write(out.join("kernels.rs"), code).expect("writing kernels.rs");
}

/// Whether environment variable `v` is set to 1.
fn required(v: &str) -> bool {
    env::var(v).is_ok_and(|x| x == "1")
}

/// The `cargo::rustc-cfg` gates of the tests (see the module docs).
fn test_gates(cuda: bool) {
    for cfg in ["infodiff_require_cuda", "infodiff_cxx", "infodiff_nvrtc"] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    if required("INFODIFF_REQUIRE_CUDA") {
        println!("cargo::rustc-cfg=infodiff_require_cuda");
    }
    let cxx = env::var("CXX").unwrap_or_else(|_| "c++".to_string());
    let cxx_runs = Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if cxx_runs || required("INFODIFF_REQUIRE_CXX") {
        println!("cargo::rustc-cfg=infodiff_cxx");
    }
    if cuda {
        println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");
        println!("cargo:rerun-if-env-changed=INFODIFF_REQUIRE_NVRTC");
        if required("INFODIFF_REQUIRE_NVRTC") || nvrtc_findable() {
            println!("cargo::rustc-cfg=infodiff_nvrtc");
        }
    }
}

/// Whether a libnvrtc.so* lies where dlopen (cudarc's loader) looks: a `LD_LIBRARY_PATH`
/// folder or the ld.so cache.
fn nvrtc_findable() -> bool {
    let in_dir = |d: PathBuf| {
        fs::read_dir(d).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libnvrtc.so"))
        })
    };
    env::var_os("LD_LIBRARY_PATH").is_some_and(|p| env::split_paths(&p).any(in_dir))
        || Command::new("ldconfig")
            .arg("-p")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libnvrtc.so"))
}

fn find_nvcc() -> Option<PathBuf> {
    let exists = |p: PathBuf| p.is_file().then_some(p);
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    for home in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env::var_os(home).and_then(|h| exists(Path::new(&h).join("bin/nvcc"))) {
            return Some(p);
        }
    }
    env::split_paths(&env::var_os("PATH")?).find_map(|d| exists(d.join("nvcc")))
}

/// Runs nvcc on `src` (`--fmad=false`: no contraction, so device arithmetic rounds as the CPU
/// twins do) with the folders `inc` on the include path; panics with nvcc's output when the
/// kernel does not compile. Returns stderr.
fn run_nvcc(
    nvcc: &Path,
    args: &[&str],
    src: &Path,
    inc: &[&Path],
    out: &Path,
    name: &str,
) -> String {
    let mut cmd = Command::new(nvcc);
    cmd.args(args).arg("--fmad=false");
    for d in inc {
        cmd.arg("-I").arg(d);
    }
    let o = cmd
        .arg("-o")
        .arg(out)
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", nvcc.display()));
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    if !o.status.success() {
        panic!(
            "kernel {name} ({}) does not compile with {}:\n{}{}",
            src.display(),
            nvcc.display(),
            String::from_utf8_lossy(&o.stdout),
            stderr
        );
    }
    stderr
}

/// "R registers, S B stack, spill stores/loads" per entry function from ptxas -v.
fn ptxas_summary(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut func = String::new();
    let mut spill = String::new();
    for line in log.lines() {
        if let Some(i) = line.find("Function properties for ") {
            func = line[i + 24..].trim().to_string();
        } else if line.contains("spill stores") {
            spill = line.trim().to_string();
        } else if let Some(i) = line.find("Used ") {
            out.push(format!("{func}: {}; {spill}", line[i..].trim()));
        }
    }
    out
}

/// The kernel source with `#include "x.cuh"` lines replaced by the headers, looked up in the
/// folders `dirs` in order (for NVRTC).
fn inline_headers(src: &Path, dirs: &[&Path]) -> String {
    let text = fs::read_to_string(src).expect("reading kernel");
    text.lines()
        .map(|l| {
            let t = l.trim();
            if let Some(h) = t
                .strip_prefix("#include \"")
                .and_then(|r| r.strip_suffix('"'))
            {
                let path = dirs.iter().map(|d| d.join(h)).find(|p| p.is_file());
                let body = path
                    .map(fs::read_to_string)
                    .unwrap_or_else(|| panic!("{}: header {h} not in {dirs:?}", src.display()))
                    .unwrap_or_else(|e| panic!("{}: header {h}: {e}", src.display()));
                body.replace("#pragma once", "")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
