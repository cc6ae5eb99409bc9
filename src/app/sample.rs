//! `infodiff sample`: N samples of a diffusers UNet2DModel, drawn with the sampler, grid and
//! guidance asked for, and written as `DIR/samples.safetensors`, `DIR/images/NNNNNN.png`,
//! `DIR/grid.png` and `DIR/summary.json`.
//!
//! Pipeline: [`ModelDir::open`] (the network folder and its scheduler) → [`Scheduler::plan`]
//! (the sampler's diffusers grid, initial scale and settings) → for each batch, initial states
//! `init_scale · z` (z from `--init`'s tensor `noise`, or sample k's standard normals
//! `Noise::new(seed)` at (k, [`INIT_STEP`]), so that sample k depends only on (seed, k)) →
//! [`sample_from`] through a [`GuidedUNet`] → the batch's rows written at their offsets in the
//! safetensors file (its header is known up front), its PNGs encoded on a separate thread fed by
//! a bounded channel. Only batch-sized buffers exist, so N = 10⁶ runs in bounded memory.
//!
//! Everything is written into a temporary sibling folder `.<name>.infodiff-tmp-<pid>` and
//! renamed into place at the end; `--out` is checked (and the temporary created) before any
//! work, and nothing is written into `--out` on an error. A first SIGINT/SIGTERM stops the run
//! at the next step and removes the temporary ([`request_interrupt`]); a temporary left by a
//! killed process is removed by the next run writing to the same place.
//!
//! ```no_run
//! use infodiff::app::sample::{SampleOptions, sample};
//! let opts = SampleOptions::new("tests/fixtures/unet/tiny-class".into(), "out".into());
//! let summary = sample(&opts, None, &|note| eprintln!("{note}")).unwrap();
//! println!("{:.1} samples/s", summary.samples_per_s);
//! ```

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::{Value, json};

use crate::diffusion::scheduler::SchedulerClass;
use crate::diffusion::{
    Observer, Plan, SamplerKind, Scheduler, SigmaGrid, Spacing, StepView, sample_from,
};
use crate::error::{Error, Result};
use crate::io::model_dir::ModelDir;
use crate::nn::unet::UNet;
use crate::rng::{INIT_STEP, Noise};
use crate::score::ScoreModel;
use crate::score::guided::{GuidedUNet, Labels};

/// Most samples one run draws.
pub const MAX_SAMPLES: usize = 1 << 40;
/// Largest `--batch`.
pub const MAX_BATCH: usize = 4096;
/// Most samples drawn into `grid.png`.
pub const GRID_SAMPLES: usize = 64;
/// Batches the PNG thread may hold queued before the sampler waits for it.
const IMAGE_QUEUE: usize = 2;

/// What `infodiff sample` was asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOptions {
    /// `--model`: a diffusers pipeline folder or a UNet2DModel folder.
    pub model: PathBuf,
    /// `--sampler` (its settings other than η are filled in from the scheduler); None: the
    /// one matching the folder's scheduler class.
    pub sampler: Option<SamplerKind>,
    /// `--eta` (ddim only).
    pub eta: Option<f64>,
    /// `--steps`; None: what diffusers' pipelines default to (DDPM 1000, others 50).
    pub steps: Option<usize>,
    /// `--spacing`, overriding the config's `timestep_spacing`.
    pub spacing: Option<Spacing>,
    /// `--karras`, `--log-snr`.
    pub sigmas: SigmaGrid,
    /// `--class`/`--classes`, cycled over sample index (empty: none given).
    pub classes: Vec<i64>,
    /// The option the classes came from, named in errors.
    pub classes_option: &'static str,
    /// `--guidance` W.
    pub guidance: f64,
    /// `--num`; None: the `--init` file's N, else 64.
    pub num: Option<usize>,
    /// `--batch`.
    pub batch: usize,
    /// `--seed`.
    pub seed: u64,
    /// `--init`: safetensors with `noise` (N, C, H, W) f32.
    pub init: Option<PathBuf>,
    /// Whether to write `images/` and `grid.png` (`--no-images` clears it).
    pub images: bool,
    /// `--out`.
    pub out: PathBuf,
}

impl SampleOptions {
    /// Every option at its default, for `model` into `out`.
    pub fn new(model: PathBuf, out: PathBuf) -> SampleOptions {
        SampleOptions {
            model,
            sampler: None,
            eta: None,
            steps: None,
            spacing: None,
            sigmas: SigmaGrid::Scheduler,
            classes: Vec::new(),
            classes_option: "--class",
            guidance: 1.0,
            num: None,
            batch: 64,
            seed: 0,
            init: None,
            images: true,
            out,
        }
    }
}

/// What a run did (also written as `summary.json`).
#[derive(Clone, Debug)]
pub struct SampleSummary {
    pub samples: usize,
    pub wall_s: f64,
    pub samples_per_s: f64,
    /// Seconds inside the network's forwards.
    pub network_s: f64,
    /// Seconds of the sampling loop outside the network (scheduler arithmetic, guidance, noise,
    /// writing).
    pub overhead_s: f64,
    /// The files written, relative to `--out`.
    pub files: Vec<String>,
    /// summary.json's content.
    pub json: Value,
}

// ---- interruption --------------------------------------------------------------------------

static RUNNING: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// For a signal handler: asks a running `sample` to stop at its next step (it then removes its
/// temporaries and returns an error). Returns false when no run is going or one was already
/// asked to stop (the handler should then die of the signal at once). Async-signal-safe.
pub fn request_interrupt(signal: i32) -> bool {
    RUNNING.load(Ordering::SeqCst)
        && INTERRUPTED
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
}

/// The signal that stopped the run, if one did.
pub fn interrupted_by() -> Option<i32> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

fn check_interrupt() -> Result<()> {
    match interrupted_by() {
        None => Ok(()),
        Some(sig) => Err(Error::Unsupported {
            op: "sample",
            reason: format!("interrupted by signal {sig}; nothing was written"),
        }),
    }
}

struct Running;
impl Running {
    fn start() -> Running {
        RUNNING.store(true, Ordering::SeqCst);
        Running
    }
}
impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::SeqCst);
    }
}

/// Stops a batch at the next step once a signal asked for it.
struct Watch;
impl Observer for Watch {
    fn on_step(&mut self, _view: &StepView<'_>) -> Result<()> {
        check_interrupt()
    }
}

// ---- defaults ------------------------------------------------------------------------------

/// The sampler a pipeline saved with this scheduler uses by default
/// ([`Scheduler::default_sampler`]), and a note where the class (`_class_name`) is not one
/// infodiff reproduces.
pub fn default_sampler(sch: &Scheduler) -> (SamplerKind, Option<String>) {
    let kind = sch.default_sampler();
    let note = match sch.class_name.as_deref() {
        Some(name) if SchedulerClass::from_name(name).is_none() => Some(format!(
            "scheduler class {name} has no infodiff sampler; sampling with {} (choose one with --sampler)",
            kind.name()
        )),
        _ => None,
    };
    (kind, note)
}

/// diffusers' pipelines' default step count: DDPMPipeline 1000, DDIMPipeline (and the others) 50.
pub fn default_steps(kind: &SamplerKind) -> usize {
    match kind {
        SamplerKind::Ddpm { .. } | SamplerKind::Ancestral { .. } => 1000,
        _ => 50,
    }
}

// ---- the output folder ---------------------------------------------------------------------

const TMP_TAG: &str = "infodiff-tmp-";
const OLD_TAG: &str = "infodiff-old-";
const SAMPLES_FILE: &str = "samples.safetensors";
const SUMMARY_FILE: &str = "summary.json";
const GRID_FILE: &str = "grid.png";
const IMAGES_DIR: &str = "images";

fn out_err(expected: &str, found: impl std::fmt::Display) -> Error {
    Error::config("--out", expected, found)
}

/// Whether `name` is an image this command writes (`NNNNNN.png`).
fn is_image_name(name: &str) -> bool {
    name.strip_suffix(".png")
        .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes what this command writes in `dir` (its files, `images/*.png`), then `dir` if empty.
/// Nothing else is touched.
fn remove_ours(dir: &Path) {
    for f in [SAMPLES_FILE, SUMMARY_FILE, GRID_FILE] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let images = dir.join(IMAGES_DIR);
    if let Ok(entries) = std::fs::read_dir(&images) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(is_image_name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(&images);
    let _ = std::fs::remove_dir(dir);
}

/// Whether folder `dir` holds only what an earlier run wrote.
fn holds_only_ours(dir: &Path) -> Result<Option<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| out_err("a readable folder", format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let ty = e.file_type().ok();
        let ours = match name.as_str() {
            SAMPLES_FILE | SUMMARY_FILE | GRID_FILE => ty.is_some_and(|t| t.is_file()),
            IMAGES_DIR if ty.is_some_and(|t| t.is_dir()) => std::fs::read_dir(e.path())
                .map(|it| {
                    it.flatten().all(|i| {
                        i.file_name().to_str().is_some_and(is_image_name)
                            && i.file_type().is_ok_and(|t| t.is_file())
                    })
                })
                .unwrap_or(false),
            _ => false,
        };
        if !ours {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for the process.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
}

/// `--out`, checked, with the temporary folder everything is written into.
struct OutDir {
    dest: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl OutDir {
    /// Checks `dest`: absent, an empty folder, or an earlier run's output (replaced); its parent
    /// writable (the temporary is created now).
    fn prepare(dest: &Path) -> Result<OutDir> {
        let dest = std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf());
        let name = dest
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| out_err("a path ending in a UTF-8 folder name", dest.display()))?
            .to_string();
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let writable = "a folder in a writable place";
        std::fs::create_dir_all(&parent).map_err(|e| {
            out_err(
                writable,
                format!("{} ({}: {e})", dest.display(), parent.display()),
            )
        })?;
        match std::fs::symlink_metadata(&dest) {
            Err(_) => {}
            Ok(m) if m.is_dir() => {
                if let Some(other) = holds_only_ours(&dest)? {
                    return Err(out_err(
                        "a new or empty folder, or the output of an earlier `infodiff sample` (it is replaced)",
                        format!("{} holding `{other}`", dest.display()),
                    ));
                }
            }
            Ok(_) => {
                return Err(out_err(
                    "a folder, or a path where one can be created",
                    format!("{} (not a folder)", dest.display()),
                ));
            }
        }
        // Temporaries of killed runs to the same place.
        for tag in [TMP_TAG, OLD_TAG] {
            let prefix = format!(".{name}.{tag}");
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for e in entries.flatten() {
                    let pid = e
                        .file_name()
                        .to_str()
                        .and_then(|n| n.strip_prefix(&prefix))
                        .and_then(|p| p.parse::<i32>().ok());
                    if let Some(pid) = pid
                        && pid != std::process::id() as i32
                        && !pid_alive(pid)
                    {
                        remove_ours(&e.path());
                    }
                }
            }
        }
        let tmp = parent.join(format!(".{name}.{TMP_TAG}{}", std::process::id()));
        remove_ours(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| {
            out_err(
                writable,
                format!("{} ({}: {e})", dest.display(), tmp.display()),
            )
        })?;
        Ok(OutDir {
            dest,
            tmp,
            done: false,
        })
    }

    /// Renames the temporary into place (an earlier output there is replaced).
    fn commit(mut self) -> Result<()> {
        if let Ok(f) = File::open(&self.tmp) {
            let _ = f.sync_all();
        }
        if self.dest.exists() {
            let name = self
                .dest
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("out");
            let old = self
                .tmp
                .with_file_name(format!(".{name}.{OLD_TAG}{}", std::process::id()));
            std::fs::rename(&self.dest, &old).map_err(|e| Error::io(&self.dest, e))?;
            if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
                let _ = std::fs::rename(&old, &self.dest);
                return Err(Error::io(&self.dest, e));
            }
            remove_ours(&old);
        } else {
            std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if !self.done {
            remove_ours(&self.tmp);
        }
    }
}

// ---- --init --------------------------------------------------------------------------------

/// The `--init` file's tensor `noise` (N, C, H, W) f32, read a batch of rows at a time.
struct InitNoise {
    file: File,
    path: PathBuf,
    /// Byte offset of row 0.
    start: u64,
    n: usize,
    dim: usize,
}

impl InitNoise {
    /// Opens `path` and checks `noise` against one sample's (C, H, W) and, where given, N.
    fn open(path: &Path, image: (usize, usize, usize), num: Option<usize>) -> Result<InitNoise> {
        let (c, h, w) = image;
        let shown = path.display().to_string();
        let bad = |expected: String, found: String| {
            Error::config("--init", expected, format!("{found} in {shown}"))
        };
        let want = format!("a safetensors file with tensor `noise` (N, {c}, {h}, {w}) F32");
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut n8 = [0u8; 8];
        file.read_exact_at(&mut n8, 0).map_err(|_| {
            bad(
                want.clone(),
                "a file shorter than a safetensors header".into(),
            )
        })?;
        let hlen = u64::from_le_bytes(n8);
        if hlen > 100_000_000 || 8 + hlen > len {
            return Err(bad(
                want,
                format!("a header of {hlen} bytes in a file of {len}"),
            ));
        }
        let mut header = vec![0u8; hlen as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_slice(&header)
            .map_err(|e| bad(want.clone(), format!("a header that is not JSON ({e})")))?;
        let Some(t) = v.get("noise") else {
            let names: Vec<&str> = v
                .as_object()
                .map(|o| {
                    o.keys()
                        .filter(|k| *k != "__metadata__")
                        .map(String::as_str)
                        .collect()
                })
                .unwrap_or_default();
            return Err(bad(want, format!("tensors {names:?}")));
        };
        let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("?");
        let shape: Option<Vec<usize>> = t
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect());
        let offsets: Option<Vec<u64>> = t
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect());
        let (Some(shape), Some(offsets)) = (shape, offsets) else {
            return Err(bad(want, format!("a malformed entry for `noise`: {t}")));
        };
        let found = format!("`noise` {shape:?} {dtype}");
        if dtype != "F32" || shape.len() != 4 || shape[1..] != [c, h, w] || shape[0] == 0 {
            return Err(bad(want, found));
        }
        let n = shape[0];
        if let Some(num) = num
            && num != n
        {
            return Err(bad(
                format!("tensor `noise` ({num}, {c}, {h}, {w}) F32 (--num {num})"),
                found,
            ));
        }
        let dim = c * h * w;
        let bytes = (n as u64).checked_mul(dim as u64 * 4);
        let body = 8 + hlen;
        if offsets.len() != 2
            || bytes != Some(offsets[1].saturating_sub(offsets[0]))
            || body.checked_add(offsets[1]).is_none_or(|e| e > len)
        {
            return Err(bad(
                want,
                format!("{found} with data offsets {offsets:?} in a file of {len} bytes"),
            ));
        }
        Ok(InitNoise {
            file,
            path: path.to_path_buf(),
            start: body + offsets[0],
            n,
            dim,
        })
    }

    /// Rows k0..k0 + out.len()/D into `out` (B, D); a non-finite value is refused.
    fn read(&self, k0: usize, out: &mut [f32]) -> Result<()> {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(out);
        let at = self.start + (k0 * self.dim * 4) as u64;
        self.file
            .read_exact_at(bytes, at)
            .map_err(|e| Error::io(&self.path, e))?;
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            return Err(Error::config(
                "--init",
                "finite standard normals in `noise`",
                format!(
                    "{} at sample {}, element {}",
                    out[i],
                    k0 + i / self.dim,
                    i % self.dim
                ),
            ));
        }
        Ok(())
    }
}

// ---- samples.safetensors, streamed ---------------------------------------------------------

/// `samples.safetensors` with its header written up front and each batch's rows written at
/// their offsets: `samples` (N, C, H, W) F32, `noise` (N, C, H, W) F32, `labels` (N) I64.
struct SamplesFile {
    file: File,
    path: PathBuf,
    /// Byte offsets of row 0 of samples, noise and labels (None: unlabelled).
    samples: u64,
    noise: u64,
    labels: Option<u64>,
    dim: usize,
}

impl SamplesFile {
    fn create(
        path: &Path,
        n: usize,
        image: (usize, usize, usize),
        labelled: bool,
    ) -> Result<SamplesFile> {
        let (c, h, w) = image;
        let dim = c * h * w;
        let tensor_bytes = (n as u64) * (dim as u64) * 4;
        let mut header = serde_json::Map::new();
        header.insert(
            "samples".into(),
            json!({"dtype": "F32", "shape": [n, c, h, w], "data_offsets": [0, tensor_bytes]}),
        );
        header.insert(
            "noise".into(),
            json!({"dtype": "F32", "shape": [n, c, h, w], "data_offsets": [tensor_bytes, 2 * tensor_bytes]}),
        );
        let mut body = 2 * tensor_bytes;
        if labelled {
            header.insert(
                "labels".into(),
                json!({"dtype": "I64", "shape": [n], "data_offsets": [body, body + 8 * n as u64]}),
            );
            body += 8 * n as u64;
        }
        let mut text = serde_json::to_string(&Value::Object(header)).expect("serialisable");
        while !text.len().is_multiple_of(8) {
            text.push(' '); // the body starts 8-aligned
        }
        let file = File::create(path).map_err(|e| Error::io(path, e))?;
        let base = 8 + text.len() as u64;
        let mut head = (text.len() as u64).to_le_bytes().to_vec();
        head.extend_from_slice(text.as_bytes());
        file.write_all_at(&head, 0)
            .map_err(|e| Error::io(path, e))?;
        file.set_len(base + body).map_err(|e| Error::io(path, e))?;
        Ok(SamplesFile {
            file,
            path: path.to_path_buf(),
            samples: base,
            noise: base + tensor_bytes,
            labels: labelled.then_some(base + 2 * tensor_bytes),
            dim,
        })
    }

    /// Writes rows k0.. of the samples `x` (B, D), the noise `z` (B, D) and the labels (B).
    fn write(&self, k0: usize, x: &[f32], z: &[f32], labels: &[i64]) -> Result<()> {
        let row = (k0 * self.dim * 4) as u64;
        let io = |e| Error::io(&self.path, e);
        self.file
            .write_all_at(bytemuck::cast_slice(x), self.samples + row)
            .map_err(io)?;
        self.file
            .write_all_at(bytemuck::cast_slice(z), self.noise + row)
            .map_err(io)?;
        if let Some(at) = self.labels {
            self.file
                .write_all_at(bytemuck::cast_slice(labels), at + 8 * k0 as u64)
                .map_err(io)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io(&self.path, e))
    }
}

// ---- PNGs ----------------------------------------------------------------------------------

/// Pixel value of a model-space value x ∈ [−1, 1]: round(255·clamp(x/2 + 0.5, 0, 1)), in f32
/// with ties to even, as diffusers' pipelines (`(image / 2 + 0.5).clamp(0, 1)`, then numpy's
/// `(images * 255).round()`).
#[inline]
pub fn pixel(x: f32) -> u8 {
    ((x / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round_ties_even() as u8
}

/// One sample (C, H, W), C = 1 or 3, as 8-bit pixels in row order (grey, or RGB interleaved).
pub fn to_pixels(x: &[f32], image: (usize, usize, usize)) -> Vec<u8> {
    let (c, h, w) = image;
    let mut out = vec![0u8; c * h * w]; // (H, W, C)
    for ch in 0..c {
        for i in 0..h * w {
            out[i * c + ch] = pixel(x[ch * h * w + i]);
        }
    }
    out
}

fn write_png(path: &Path, pixels: &[u8], w: usize, h: usize, c: usize) -> Result<()> {
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), w as u32, h as u32);
    enc.set_color(if c == 1 {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    enc.set_depth(png::BitDepth::Eight);
    let failed = |e: png::EncodingError| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut wr = enc.write_header().map_err(failed)?;
    wr.write_image_data(pixels).map_err(failed)?;
    wr.finish().map_err(failed)
}

/// The samples (n, C, H, W) tiled in a square grid with 2-pixel black gaps: (pixels, W, H).
pub fn grid_pixels(samples: &[f32], image: (usize, usize, usize)) -> (Vec<u8>, usize, usize) {
    let (c, h, w) = image;
    let d = c * h * w;
    let n = samples.len() / d;
    let cols = (n as f64).sqrt().ceil().max(1.0) as usize;
    let rows = n.div_ceil(cols).max(1);
    let gap = 2;
    let (gw, gh) = (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap);
    let mut out = vec![0u8; gw * gh * c]; // (GH, GW, C)
    for (k, s) in samples.chunks(d).enumerate() {
        let (r, q) = (k / cols, k % cols);
        let px = to_pixels(s, image);
        for y in 0..h {
            let dst = ((r * (h + gap) + y) * gw + q * (w + gap)) * c;
            out[dst..dst + w * c].copy_from_slice(&px[y * w * c..(y + 1) * w * c]);
        }
    }
    (out, gw, gh)
}

/// A batch for the PNG thread: its first sample index and its samples (B, D).
type Batch = (usize, Vec<f32>);

/// The PNG thread: receives (first sample index, samples (B, D)) and writes `images/NNNNNN.png`,
/// keeping the first [`GRID_SAMPLES`] for `grid.png`.
struct ImageWriter {
    tx: Option<SyncSender<Batch>>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl ImageWriter {
    fn spawn(dir: PathBuf, image: (usize, usize, usize), n: usize) -> Result<ImageWriter> {
        let images = dir.join(IMAGES_DIR);
        std::fs::create_dir(&images).map_err(|e| Error::io(&images, e))?;
        let (tx, rx): (SyncSender<Batch>, Receiver<Batch>) = sync_channel(IMAGE_QUEUE);
        let handle = std::thread::Builder::new()
            .name("infodiff-png".into())
            .spawn(move || -> Result<()> {
                let (c, h, w) = image;
                let d = c * h * w;
                let keep = n.min(GRID_SAMPLES);
                let mut first = Vec::with_capacity(keep * d); // (≤ 64, C, H, W)
                for (k0, x) in rx {
                    for (b, s) in x.chunks(d).enumerate() {
                        let k = k0 + b;
                        write_png(
                            &images.join(format!("{k:06}.png")),
                            &to_pixels(s, image),
                            w,
                            h,
                            c,
                        )?;
                        if k < keep {
                            first.extend_from_slice(s);
                        }
                    }
                }
                let (px, gw, gh) = grid_pixels(&first, image);
                write_png(&dir.join(GRID_FILE), &px, gw, gh, c)
            })
            .map_err(|e| Error::Unsupported {
                op: "sample: the PNG thread",
                reason: e.to_string(),
            })?;
        Ok(ImageWriter {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queues a batch (waits while the queue is full); the thread's error if it stopped.
    fn send(&mut self, k0: usize, x: Vec<f32>) -> Result<()> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send((k0, x)).is_ok());
        if sent { Ok(()) } else { self.finish() }
    }

    /// Waits for every queued image and the grid.
    fn finish(&mut self) -> Result<()> {
        self.tx = None;
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| Error::Unsupported {
                op: "sample: the PNG thread",
                reason: "it panicked".into(),
            })?,
            None => Err(Error::Unsupported {
                op: "sample: the PNG thread",
                reason: "it has already stopped".into(),
            }),
        }
    }
}

impl Drop for ImageWriter {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---- the run -------------------------------------------------------------------------------

fn validate(o: &SampleOptions) -> Result<()> {
    let within = |name: &str, v: usize, hi: usize| -> Result<()> {
        if v == 0 || v > hi {
            return Err(Error::config(
                name,
                format!("a whole number in 1..={hi}"),
                v,
            ));
        }
        Ok(())
    };
    if let Some(s) = o.steps {
        within("--steps", s, crate::app::MAX_STEPS)?;
    }
    if let Some(n) = o.num {
        within("--num", n, MAX_SAMPLES)?;
    }
    within("--batch", o.batch, MAX_BATCH)?;
    if !o.guidance.is_finite() {
        return Err(Error::config("--guidance", "a finite number", o.guidance));
    }
    if let Some(eta) = o.eta {
        if !matches!(o.sampler, Some(SamplerKind::Ddim { .. })) {
            return Err(Error::config(
                "--eta",
                "only with --sampler ddim",
                format!(
                    "--eta {eta} with --sampler {}",
                    o.sampler.map_or("(the default)", |k| k.name())
                ),
            ));
        }
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::config("--eta", "a finite number ≥ 0", eta));
        }
    }
    for (opt, p) in [
        ("--model", Some(&o.model)),
        ("--out", Some(&o.out)),
        ("--init", o.init.as_ref()),
    ] {
        if let Some(p) = p
            && p.to_str().is_none()
        {
            return Err(Error::config(
                opt,
                "a UTF-8 path (it is recorded in summary.json)",
                p.display(),
            ));
        }
    }
    Ok(())
}

fn sigma_grid_name(g: SigmaGrid) -> &'static str {
    match g {
        SigmaGrid::Scheduler => "scheduler",
        SigmaGrid::Karras => "karras",
        SigmaGrid::UniformLogSnr => "uniform_log_snr",
    }
}

fn spacing_name(s: Option<Spacing>) -> Value {
    match s {
        None => Value::Null,
        Some(Spacing::Linspace) => "linspace".into(),
        Some(Spacing::Leading) => "leading".into(),
        Some(Spacing::Trailing) => "trailing".into(),
    }
}

/// Runs `infodiff sample` (see the module docs). `progress` receives each batch's sample count
/// and N; `note` the remarks a user should see (a default chosen, images skipped).
pub fn sample(
    opts: &SampleOptions,
    progress: Option<&(dyn Fn(usize, usize) + Sync)>,
    note: &dyn Fn(&str),
) -> Result<SampleSummary> {
    let start = Instant::now();
    validate(opts)?;
    let _running = Running::start();
    // The destination is checked, and its temporary made, before anything is loaded.
    let out = OutDir::prepare(&opts.out)?;
    let md = ModelDir::open(&opts.model)?;
    let mut sch = md.scheduler.clone();
    if let Some(sp) = opts.spacing {
        sch.spacing = Some(sp);
    }
    let mut notes = Vec::new();
    let mut say = |s: String| {
        note(&s);
        notes.push(s);
    };
    let kind = match opts.sampler {
        Some(SamplerKind::Ddim { clip, .. }) => SamplerKind::Ddim {
            eta: opts.eta.unwrap_or(0.0),
            clip,
        },
        Some(k) => k,
        None => {
            let (k, why) = default_sampler(&sch);
            if let Some(why) = why {
                say(why);
            }
            k
        }
    };
    let steps = opts.steps.unwrap_or_else(|| default_steps(&kind));
    let net = UNet::load(&md.unet)?;
    let model = GuidedUNet::new(
        net,
        sch.prediction,
        &opts.classes,
        opts.classes_option,
        opts.guidance,
    )?;
    let image = model.image();
    let (c, h, w) = image;
    let d = model.dim();
    let plan: Plan = sch.plan(&kind, steps, opts.sigmas)?;
    let init = match &opts.init {
        Some(p) => Some(InitNoise::open(p, image, opts.num)?),
        None => None,
    };
    let n = init.as_ref().map_or(opts.num.unwrap_or(64), |i| i.n);
    let batch = opts.batch.min(n);
    let labelled = matches!(model.labels(), Labels::Cycle(_));
    let file = SamplesFile::create(&out.tmp.join(SAMPLES_FILE), n, image, labelled)?;
    let mut files = vec![SAMPLES_FILE.to_string()];
    let images = opts.images && (c == 1 || c == 3);
    if opts.images && !images {
        say(format!(
            "{c}-channel samples have no PNG form (1 or 3 channels): images/ and grid.png not written"
        ));
    }
    let mut writer = if images {
        files.extend([format!("{IMAGES_DIR}/"), GRID_FILE.to_string()]);
        Some(ImageWriter::spawn(out.tmp.clone(), image, n)?)
    } else {
        None
    };
    let noise = Noise::new(opts.seed);
    let scale = plan.init_scale;
    let loop_start = Instant::now();
    let net0 = model.network_seconds();
    let mut z = vec![0.0f32; batch * d]; // (B, D)
    let mut labels = vec![0i64; batch]; // (B)
    let mut k0 = 0usize;
    while k0 < n {
        check_interrupt()?;
        let b = batch.min(n - k0);
        let z = &mut z[..b * d];
        match &init {
            Some(f) => f.read(k0, z)?,
            None => {
                for (i, row) in z.chunks_mut(d).enumerate() {
                    noise.fill_normals((k0 + i) as u64, INIT_STEP, row);
                }
            }
        }
        // x_T = init_scale · z, in f64, rounded once.
        let x: Vec<f32> = z.iter().map(|&v| (scale * v as f64) as f32).collect(); // (B, D)
        let mut sampler = plan.sampler.build(&plan.grid, b, d, 0)?;
        let x = sample_from(
            &model,
            &plan.grid,
            sampler.as_mut(),
            noise,
            k0 as u64,
            x,
            &mut Watch,
        )?;
        for (i, l) in labels[..b].iter_mut().enumerate() {
            *l = model.label_of((k0 + i) as u64).unwrap_or(-1);
        }
        file.write(k0, &x, z, &labels[..b])?;
        if let Some(wr) = writer.as_mut() {
            wr.send(k0, x)?;
        }
        k0 += b;
        if let Some(p) = progress {
            p(b, n);
        }
    }
    file.finish()?;
    if let Some(mut wr) = writer.take() {
        wr.finish()?;
    }
    let loop_s = loop_start.elapsed().as_secs_f64();
    let network_s = model.network_seconds() - net0;
    let overhead_s = (loop_s - network_s).max(0.0);
    files.push(SUMMARY_FILE.to_string());
    let wall_s = start.elapsed().as_secs_f64();
    let classes: Value = match model.labels() {
        Labels::Cycle(c) => json!(c),
        _ => Value::Null,
    };
    let json = json!({
        "model": opts.model.to_str(),
        "unet": md.unet.to_str(),
        "scheduler": {
            "class": md.scheduler_class(),
            "file": md.scheduler_file.as_ref().and_then(|p| p.to_str()),
            "prediction_type": sch.prediction,
            "spacing": spacing_name(sch.spacing),
            "num_train_timesteps": sch.num_train_timesteps,
        },
        "sampler": serde_json::to_value(plan.sampler).unwrap_or(Value::Null),
        "sigma_grid": sigma_grid_name(opts.sigmas),
        "steps": steps,
        "grid_points": plan.grid.points.len(),
        "init_scale": scale,
        "guidance": model.guidance(),
        "classes": classes,
        "seed": opts.seed,
        "init": opts.init.as_ref().and_then(|p| p.to_str()),
        "samples": n,
        "shape": [n, c, h, w],
        "batch": batch,
        "threads": rayon::current_num_threads(),
        "wall_time_s": wall_s,
        "sampling_time_s": loop_s,
        "samples_per_s": n as f64 / loop_s,
        "network_time_s": network_s,
        "overhead_time_s": overhead_s,
        "overhead_fraction": if loop_s > 0.0 { overhead_s / loop_s } else { 0.0 },
        "network_rows": model.network_rows(),
        "files": files,
        "notes": notes,
    });
    let text = serde_json::to_string_pretty(&json).expect("serialisable");
    crate::io::write_atomic(&out.tmp.join(SUMMARY_FILE), text.as_bytes())?;
    check_interrupt()?;
    out.commit()?;
    Ok(SampleSummary {
        samples: n,
        wall_s,
        samples_per_s: n as f64 / loop_s,
        network_s,
        overhead_s,
        files,
        json,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_follow_diffusers() {
        // round(255·clamp(x/2 + 0.5, 0, 1)), ties to even as numpy's round.
        assert_eq!(pixel(-1.0), 0);
        assert_eq!(pixel(1.0), 255);
        assert_eq!(pixel(-3.0), 0);
        assert_eq!(pixel(7.0), 255);
        assert_eq!(pixel(0.0), 128); // 127.5 → 128 (even)
        let x = 2.0 * (126.5f32 / 255.0) - 1.0;
        assert_eq!(((x / 2.0 + 0.5) * 255.0).round_ties_even(), 126.0);
        // (C, H, W) → (H, W, C)
        let s = [-1.0, 1.0, 1.0, -1.0, 0.0, 0.0]; // C = 3, H = 1, W = 2
        assert_eq!(to_pixels(&s, (3, 1, 2)), [0, 255, 128, 255, 0, 128]);
    }

    #[test]
    fn grid_tiles_with_gaps() {
        let image = (1, 2, 2);
        let samples = vec![1.0f32; 5 * 4]; // five white 2×2 tiles
        let (px, gw, gh) = grid_pixels(&samples, image);
        // 3 columns, 2 rows, 2-pixel gaps
        assert_eq!((gw, gh), (3 * 2 + 2 * 2, 2 * 2 + 2));
        assert_eq!(px.iter().filter(|&&p| p == 255).count(), 5 * 4);
        assert_eq!(px[0], 255);
        assert_eq!(px[2], 0, "gap");
    }

    #[test]
    fn streamed_file_reads_back_as_safetensors() {
        let dir = std::env::temp_dir().join(format!("infodiff-sample-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(SAMPLES_FILE);
        let image = (1, 1, 3);
        let f = SamplesFile::create(&path, 5, image, true).unwrap();
        // rows written out of order, in batches of 2, 2, 1
        for k0 in [2usize, 0, 4] {
            let b = 2.min(5 - k0);
            let x: Vec<f32> = (0..b * 3).map(|i| (k0 * 3 + i) as f32).collect();
            let z: Vec<f32> = x.iter().map(|v| -v).collect();
            let l: Vec<i64> = (0..b).map(|i| (k0 + i) as i64 * 10).collect();
            f.write(k0, &x, &z, &l).unwrap();
        }
        f.finish().unwrap();
        let e = crate::io::safetensors::read(&path).unwrap();
        let by = |n: &str| e.iter().find(|t| t.name == n).unwrap();
        let want: Vec<f32> = (0..15).map(|i| i as f32).collect();
        assert_eq!(by("samples").shape, [5, 1, 1, 3]);
        assert_eq!(
            by("samples").values,
            crate::io::safetensors::Values::F32(want.clone())
        );
        let neg: Vec<f32> = want.iter().map(|v| -v).collect();
        assert_eq!(by("noise").values, crate::io::safetensors::Values::F32(neg));
        assert_eq!(
            by("labels").values,
            crate::io::safetensors::Values::I64(vec![0, 10, 20, 30, 40])
        );
        // the header ends 8-aligned
        let bytes = std::fs::read(&path).unwrap();
        let hlen = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        assert_eq!(hlen % 8, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn out_dir_refuses_foreign_folders_and_cleans_up() {
        let root = std::env::temp_dir().join(format!("infodiff-sample-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("foreign")).unwrap();
        std::fs::write(root.join("foreign/notes.txt"), "mine").unwrap();
        let e = OutDir::prepare(&root.join("foreign"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`--out`") && e.contains("notes.txt"), "{e}");
        std::fs::write(root.join("file"), "x").unwrap();
        let e = OutDir::prepare(&root.join("file/below"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("`--out`") && e.contains("writable"), "{e}");
        // An uncommitted run leaves nothing; a committed one replaces an earlier output.
        let dest = root.join("out");
        drop(OutDir::prepare(&dest).unwrap());
        assert!(!dest.exists());
        for run in 0..2 {
            let o = OutDir::prepare(&dest).unwrap();
            std::fs::write(o.tmp.join(SUMMARY_FILE), format!("{run}")).unwrap();
            std::fs::create_dir(o.tmp.join(IMAGES_DIR)).unwrap();
            std::fs::write(o.tmp.join(IMAGES_DIR).join("000000.png"), "p").unwrap();
            o.commit().unwrap();
            assert_eq!(
                std::fs::read_to_string(dest.join(SUMMARY_FILE)).unwrap(),
                format!("{run}")
            );
        }
        let left: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left.len(),
            3,
            "foreign, file, out and no temporaries: {left:?}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
