//! `infodiff train` (see [`crate::train`]): a diffusers UNet2DModel trained by denoising score
//! matching on `--data`, written as a diffusers pipeline folder that `infodiff sample` and
//! `infodiff measure --model` read.
//!
//! `DIR` (`--out`) receives `model_index.json` (DDPMPipeline), `unet/config.json`,
//! `unet/diffusion_pytorch_model.safetensors` (the EMA of the weights), `scheduler/
//! scheduler_config.json` (DDPMScheduler, linear β 10⁻⁴…0.02, T = 1000, the prediction type,
//! `clip_sample` false), `loss.csv`, `loss.svg`, `train_summary.json` and `checkpoint/
//! train_state.safetensors` (the whole training state, [`crate::train::checkpoint`]).
//!
//! Nothing is lost: every setting, the data and the network are checked before `DIR` is
//! touched; a `DIR` holding anything but an earlier run's files is refused, and one holding an
//! earlier run's checkpoint is only continued (`--resume`), never replaced. During the run
//! only the checkpoint changes (each save atomic); the model files are put in place at the end
//! as a set (the new folder swapped with the old in one `renameat2(RENAME_EXCHANGE)` where
//! Linux has it). A failure or signal leaves the last checkpoint saved and the earlier model
//! files untouched; a first SIGINT/SIGTERM saves a checkpoint at the current step and stops.
//!
//! Architecture and settings not given are chosen for the data ([`defaults_for`]): a small
//! U-Net sized to the image (2 levels for 4×4, 3 for 8×8 and 16×16, 4 from 32×32), class-
//! conditional on a single factor (`num_class_embeds` = classes + 1, the null label last) or
//! multi-factor (`infodiff_factors`) on several.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use crate::data::{DataSpec, Dataset};
use crate::diffusion::Scheduler;
use crate::error::{Error, Result};
use crate::io::model_dir::WEIGHTS_FILE;
use crate::io::safetensors::View;
use crate::nn::unet::UNetConfig;
use crate::nn::unet::grad::UNetGrad;
use crate::nn::unet::params::ParamLayout;
use crate::train::checkpoint::{self, CheckpointMeta};
use crate::train::loss::PredictionType;
use crate::train::optim::{Ema, LrSchedule};
use crate::train::{LogRow, TrainConfig, TrainState, Trainer};

/// What `infodiff train` was asked for (None: the data's default, or on `--resume` the
/// checkpoint's).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// `--data`.
    pub data: String,
    /// `--out`.
    pub out: PathBuf,
    /// `--unet`: a UNet2DModel config.json (a file, or a folder holding one).
    pub unet: Option<PathBuf>,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub warmup: Option<u64>,
    pub schedule: Option<LrSchedule>,
    pub seed: Option<u64>,
    pub p_uncond: Option<f64>,
    /// `--ema`: the EMA's largest decay.
    pub ema: Option<f64>,
    pub prediction: Option<PredictionType>,
    pub checkpoint_every: Option<u64>,
    /// `--clip`: the gradient-norm bound (0: off).
    pub clip: Option<f64>,
    pub resume: bool,
}

impl TrainOptions {
    /// Every option at its default, training on `data` into `out`.
    pub fn new(data: &str, out: PathBuf) -> TrainOptions {
        TrainOptions {
            data: data.to_string(),
            out,
            unet: None,
            steps: None,
            batch: None,
            lr: None,
            warmup: None,
            schedule: None,
            seed: None,
            p_uncond: None,
            ema: None,
            prediction: None,
            checkpoint_every: None,
            clip: None,
            resume: false,
        }
    }
}

/// One step's report for a progress display.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainProgress {
    pub step: u64,
    pub steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub images_per_s: f64,
}

/// What a run did (also written as `train_summary.json`).
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps done in all (with the resumed ones).
    pub steps: u64,
    /// The checkpoint step this run continued from (None: a fresh run).
    pub resumed_from: Option<u64>,
    /// Steps of this run and their wall time.
    pub run_steps: u64,
    pub wall_s: f64,
    pub images_per_s: f64,
    /// The mean loss of the last (up to) 100 steps.
    pub final_loss: f64,
    /// Parameters of the network.
    pub params: usize,
    /// The files written, relative to `--out`.
    pub files: Vec<String>,
    pub json: Value,
}

// ---- interruption --------------------------------------------------------------------------

static RUNNING: AtomicBool = AtomicBool::new(false);
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

/// For a signal handler: asks a running `train` to stop after its current step (it saves a
/// checkpoint there and returns an error). False when no run is going or one was already asked
/// (the handler should then die of the signal at once). Async-signal-safe.
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

// ---- defaults ------------------------------------------------------------------------------

/// The U-Net config JSON chosen for images of `shape` (C, H, W) with `factors` (cardinalities;
/// empty: unconditional): levels halving the side down to 2×2 at most 4 levels (4×4: 2 levels
/// of 32, 64 channels; 8×8: 3 of 32, 64, 64; 16×16: 3 of 32, 64, 128; 32×32 and up: 4 of 64,
/// 128, 128, 128), one ResNet layer per block (two from 32×32), GroupNorm of 8 groups (32 from
/// 64 channels), the middle block's attention, sin/cos positional time embedding as
/// UNet2DModel's defaults. One factor: `num_class_embeds` = values + 1 (null last); several:
/// `infodiff_factors`.
pub fn unet_json_for(shape: [usize; 3], factors: &[(String, usize)]) -> Result<Value> {
    let [c, h, w] = shape;
    if h != w || h < 2 || !h.is_power_of_two() {
        return Err(Error::config(
            "--data",
            "square images with a power-of-two side ≥ 2 for the default U-Net (give --unet \
             CONFIG.json for other sizes)",
            format!("{c}×{h}×{w}"),
        ));
    }
    let (channels, layers, groups): (Vec<usize>, usize, usize) = match h {
        2 => (vec![32], 1, 8),
        4 => (vec![32, 64], 1, 8),
        8 => (vec![32, 64, 64], 1, 8),
        16 => (vec![32, 64, 128], 1, 8),
        _ => (vec![64, 128, 128, 128], 2, 32),
    };
    let n = channels.len();
    let mut v = json!({
        "_class_name": "UNet2DModel",
        "sample_size": h,
        "in_channels": c,
        "out_channels": c,
        "block_out_channels": channels,
        "down_block_types": vec!["DownBlock2D"; n],
        "up_block_types": vec!["UpBlock2D"; n],
        "layers_per_block": layers,
        "norm_num_groups": groups,
        "add_attention": true,
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "act_fn": "silu",
        "time_embedding_type": "positional",
    });
    let m = v.as_object_mut().expect("an object");
    match factors {
        [] => {}
        [(_, k)] => {
            m.insert("num_class_embeds".into(), json!(k + 1));
        }
        many => {
            m.insert(
                "infodiff_factors".into(),
                Value::Array(
                    many.iter()
                        .map(|(name, k)| json!({"name": name, "values": k}))
                        .collect(),
                ),
            );
        }
    }
    Ok(v)
}

/// The training settings chosen for `spec`'s data (before the options): steps, batch and
/// learning rate sized for minutes on two cores; label dropout 0.1 on conditional models.
pub fn defaults_for(spec: &DataSpec, conditional: bool) -> TrainConfig {
    let mut cfg = TrainConfig::default();
    let (steps, batch, lr) = match spec {
        // Measured on a shared 2-core machine: ~850, ~365 and ~110 images/s for the default
        // U-Nets of gmm (1×4×4), digits (1×8×8) and shapes (3×16×16): about 5, 7 and 7 minutes.
        DataSpec::Gmm(_) => (2000, 128, 2e-3),
        DataSpec::Digits => (2500, 64, 1e-3),
        DataSpec::Shapes { .. } => (1500, 32, 1e-3),
        DataSpec::Folder(_) => (1500, 32, 5e-4),
    };
    cfg.steps = steps;
    cfg.batch = batch;
    cfg.lr = lr;
    cfg.warmup = 100;
    cfg.checkpoint_every = 500;
    cfg.p_uncond = if conditional { 0.1 } else { 0.0 };
    cfg
}

/// scheduler/scheduler_config.json: DDPMScheduler, linear β 10⁻⁴…0.02, T = 1000,
/// `prediction_type`, no clipping (data need not lie in [−1, 1]).
pub fn scheduler_json(prediction: PredictionType) -> Value {
    json!({
        "_class_name": "DDPMScheduler",
        "_diffusers_version": "0.30.0",
        "num_train_timesteps": 1000,
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "trained_betas": null,
        "variance_type": "fixed_small",
        "clip_sample": false,
        "prediction_type": prediction.name(),
        "thresholding": false,
        "timestep_spacing": "leading",
        "steps_offset": 0,
    })
}

/// model_index.json of the pipeline.
pub fn model_index_json() -> Value {
    json!({
        "_class_name": "DDPMPipeline",
        "_diffusers_version": "0.30.0",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "unet": ["diffusers", "UNet2DModel"],
    })
}

/// The data spec as recorded (paths made absolute, so a resume from another folder matches).
fn spec_string(spec: &DataSpec) -> String {
    let abs = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .display()
            .to_string()
    };
    match spec {
        DataSpec::Gmm(p) => format!("gmm:{}", abs(p)),
        DataSpec::Folder(p) => format!("folder:{}", abs(p)),
        DataSpec::Digits => "digits".into(),
        DataSpec::Shapes { size } => format!("shapes:{size}"),
    }
}

/// A fingerprint of the data: name, size, shape, factors and FNV-1a 64 of up to 1024 evenly
/// spaced examples (values and labels), so a resume on changed data is refused.
fn data_fingerprint(data: &dyn Dataset) -> Result<String> {
    let [c, h, w] = data.shape();
    let d = c * h * w;
    let f = data.factors().len();
    let n = data.len();
    let probes = n.min(1024);
    let mut hsh: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            hsh ^= b as u64;
            hsh = hsh.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let mut x = vec![0.0f32; d];
    let mut y = vec![0i64; f];
    for k in 0..probes {
        let i = (k as u128 * n as u128 / probes as u128) as usize;
        data.example(i, &mut x, &mut y)?;
        eat(bytemuck::cast_slice(&x));
        eat(bytemuck::cast_slice(&y));
    }
    let factors: Vec<String> = data
        .factors()
        .iter()
        .map(|f| format!("{}={}", f.name, f.cardinality))
        .collect();
    Ok(format!(
        "{} examples of {c}x{h}x{w}, factors [{}], content {hsh:016x}",
        n,
        factors.join(", ")
    ))
}

/// Opens `--data`.
fn open_data(spec: &DataSpec, seed: u64) -> Result<Box<dyn Dataset>> {
    crate::app::data::open_data(spec, seed)
}

/// Reads `--unet`: a config.json, or a folder holding one.
fn read_unet_json(path: &Path) -> Result<Value> {
    let file = if path.is_dir() {
        path.join("config.json")
    } else {
        path.to_path_buf()
    };
    let text = crate::io::read_text(&file)?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        path: file.display().to_string(),
        message: format!("not valid JSON: {e}"),
    })
}

/// Checks that `cfg` fits the data: channels in and out, sample size, the label tables one per
/// factor with values + 1 rows. Returns each table's null label (empty: unconditional).
pub fn check_network(cfg: &UNetConfig, data: &dyn Dataset) -> Result<Vec<i64>> {
    let [c, h, w] = data.shape();
    let field = |k: &str| format!("--unet: {k}");
    if cfg.in_channels != c || cfg.out_channels != c {
        return Err(Error::config(
            field("in_channels/out_channels"),
            format!("{c} and {c} (the data's channels)"),
            format!("{} and {}", cfg.in_channels, cfg.out_channels),
        ));
    }
    if let Some(s) = cfg.sample_size
        && (s != h || s != w)
    {
        return Err(Error::config(
            field("sample_size"),
            format!("the data's {h}×{w}"),
            s,
        ));
    }
    let levels = cfg.block_out_channels.len();
    let m = 1usize << (levels - 1);
    if h % m != 0 || w % m != 0 {
        return Err(Error::config(
            field("block_out_channels"),
            format!("at most as many levels as halve {h}×{w} evenly"),
            format!("{levels} levels"),
        ));
    }
    let tables = cfg.label_tables();
    if tables.is_empty() {
        return Ok(vec![]);
    }
    let factors = data.factors();
    if tables.len() != factors.len() {
        return Err(Error::config(
            field("label tables"),
            format!(
                "one per factor of the data ({}: {})",
                factors.len(),
                factors
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            tables.len(),
        ));
    }
    tables
        .iter()
        .zip(factors)
        .map(|((name, rows), f)| {
            if *rows != f.cardinality + 1 {
                Err(Error::config(
                    field(name),
                    format!(
                        "{} rows (factor `{}`'s {} values and the null label)",
                        f.cardinality + 1,
                        f.name,
                        f.cardinality
                    ),
                    rows,
                ))
            } else {
                Ok(f.cardinality as i64)
            }
        })
        .collect()
}

// ---- the output folder ---------------------------------------------------------------------

const TMP_TAG: &str = "infodiff-tmp-";
const OLD_TAG: &str = "infodiff-old-";
const TOP_FILES: [&str; 4] = [
    "model_index.json",
    "loss.csv",
    "loss.svg",
    "train_summary.json",
];
const CKPT_DIR: &str = "checkpoint";

/// The files of a finished run, relative to `--out`, in the order they are listed.
pub fn output_files() -> Vec<String> {
    vec![
        "model_index.json".into(),
        "unet/config.json".into(),
        format!("unet/{WEIGHTS_FILE}"),
        "scheduler/scheduler_config.json".into(),
        "loss.csv".into(),
        "loss.svg".into(),
        "train_summary.json".into(),
        format!("{CKPT_DIR}/{}", checkpoint::FILE),
    ]
}

fn out_err(expected: &str, found: impl std::fmt::Display) -> Error {
    Error::config("--out", expected, found)
}

/// Whether `name` in `checkpoint/` is the checkpoint or a temporary of its atomic write.
fn ckpt_entry(name: &str) -> bool {
    name == checkpoint::FILE || name.starts_with(&format!(".{}.{TMP_TAG}", checkpoint::FILE))
}

/// The first entry of folder `dir` that an earlier run did not write (None: only ours).
fn foreign_entry(dir: &Path) -> Result<Option<String>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| out_err("a readable folder", format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let sub_only = |allowed: &dyn Fn(&str) -> bool| {
            std::fs::read_dir(e.path())
                .map(|it| {
                    it.flatten().all(|i| {
                        i.file_name().to_str().is_some_and(allowed)
                            && i.file_type().is_ok_and(|t| t.is_file())
                    })
                })
                .unwrap_or(false)
        };
        let ours = match name.as_str() {
            n if TOP_FILES.contains(&n) => is_file,
            "unet" => is_dir && sub_only(&|n| n == "config.json" || n == WEIGHTS_FILE),
            "scheduler" => is_dir && sub_only(&|n| n == "scheduler_config.json"),
            CKPT_DIR => is_dir && sub_only(&ckpt_entry),
            _ => false,
        };
        if !ours {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Removes what this command writes in `dir`, then `dir` where that leaves it empty.
fn remove_ours(dir: &Path) {
    for f in TOP_FILES {
        let _ = std::fs::remove_file(dir.join(f));
    }
    for (sub, files) in [
        ("unet", vec!["config.json".to_string(), WEIGHTS_FILE.into()]),
        ("scheduler", vec!["scheduler_config.json".into()]),
    ] {
        for f in files {
            let _ = std::fs::remove_file(dir.join(sub).join(f));
        }
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    let ck = dir.join(CKPT_DIR);
    if let Ok(entries) = std::fs::read_dir(&ck) {
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(ckpt_entry) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(&ck);
    let _ = std::fs::remove_dir(dir);
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for the process.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH))
}

/// What `--out` holds before the run.
enum OutState {
    /// Absent or empty.
    Fresh,
    /// An earlier run's files; `checkpoint` where its checkpoint is there.
    Earlier { checkpoint: bool },
}

/// `--out`, checked.
struct OutDir {
    dest: PathBuf,
    name: String,
    parent: PathBuf,
    /// Whether this run created `dest` (removed again when nothing was saved into it).
    created: bool,
    /// Whether a checkpoint was saved into it by this run.
    saved: bool,
}

impl OutDir {
    /// Checks `dest` without writing anything: a folder name in a creatable place, absent,
    /// empty, or holding only an earlier run's files.
    fn check(dest: &Path) -> Result<(OutDir, OutState)> {
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
        let state = match std::fs::symlink_metadata(&dest) {
            Err(_) => OutState::Fresh,
            Ok(m) if m.is_dir() => {
                if let Some(other) = foreign_entry(&dest)? {
                    return Err(out_err(
                        "a new or empty folder, or the output of an earlier `infodiff train`",
                        format!("{} holding `{other}`", dest.display()),
                    ));
                }
                let empty = std::fs::read_dir(&dest)
                    .map(|mut it| it.next().is_none())
                    .unwrap_or(false);
                if empty {
                    OutState::Fresh
                } else {
                    OutState::Earlier {
                        checkpoint: dest.join(CKPT_DIR).join(checkpoint::FILE).is_file(),
                    }
                }
            }
            Ok(_) => {
                return Err(out_err(
                    "a folder, or a path where one can be created",
                    format!("{} (not a folder)", dest.display()),
                ));
            }
        };
        Ok((
            OutDir {
                dest,
                name,
                parent,
                created: false,
                saved: false,
            },
            state,
        ))
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.dest.join(CKPT_DIR).join(checkpoint::FILE)
    }

    /// Creates `dest/checkpoint/` (and `dest`), after every check passed.
    fn open(&mut self) -> Result<()> {
        if !self.dest.exists() {
            self.created = true;
        }
        let ck = self.dest.join(CKPT_DIR);
        std::fs::create_dir_all(&ck).map_err(|e| {
            out_err(
                "a folder in a writable place",
                format!("{} ({e})", ck.display()),
            )
        })?;
        // Temporaries of killed runs to the same place.
        for tag in [TMP_TAG, OLD_TAG] {
            let prefix = format!(".{}.{tag}", self.name);
            if let Ok(entries) = std::fs::read_dir(&self.parent) {
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
        Ok(())
    }

    /// Writes the model files (`files`: path relative to `dest`, bytes) and the checkpoint as
    /// one set: a sibling folder holding them all (the checkpoint hard-linked, or copied) is
    /// swapped with `dest`, then the old set removed.
    fn commit(&self, files: &[(String, Vec<u8>)]) -> Result<()> {
        let tmp = self
            .parent
            .join(format!(".{}.{TMP_TAG}{}", self.name, std::process::id()));
        remove_ours(&tmp);
        let write = || -> Result<()> {
            for (rel, bytes) in files {
                let p = tmp.join(rel);
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                write_synced(&p, bytes)?;
            }
            let ck = tmp.join(CKPT_DIR);
            std::fs::create_dir_all(&ck).map_err(|e| Error::io(&ck, e))?;
            let to = ck.join(checkpoint::FILE);
            let from = self.checkpoint_path();
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            remove_ours(&tmp);
            return Err(e);
        }
        if let Some(other) = foreign_entry(&self.dest)? {
            // Something else appeared in --out during the run: put each file in place instead
            // of swapping the folder away.
            let _ = other;
            for rel in files.iter().map(|f| &f.0) {
                let to = self.dest.join(rel);
                if let Some(dir) = to.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                std::fs::rename(tmp.join(rel), &to).map_err(|e| Error::io(&to, e))?;
            }
            remove_ours(&tmp);
            return Ok(());
        }
        if crate::io::atomic::exchange(&tmp, &self.dest) {
            remove_ours(&tmp); // the old set
        } else {
            let old = self
                .parent
                .join(format!(".{}.{OLD_TAG}{}", self.name, std::process::id()));
            std::fs::rename(&self.dest, &old).map_err(|e| Error::io(&self.dest, e))?;
            if let Err(e) = std::fs::rename(&tmp, &self.dest) {
                let _ = std::fs::rename(&old, &self.dest);
                remove_ours(&tmp);
                return Err(Error::io(&self.dest, e));
            }
            remove_ours(&old);
        }
        if let Ok(f) = std::fs::File::open(&self.parent) {
            let _ = f.sync_all();
        }
        Ok(())
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        // A run that created --out and saved nothing into it leaves nothing behind.
        if self.created && !self.saved {
            let _ = std::fs::remove_dir(self.dest.join(CKPT_DIR));
            let _ = std::fs::remove_dir(&self.dest);
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

// ---- outputs -------------------------------------------------------------------------------

/// loss.csv: step, loss, lr, grad_norm, images_per_s.
pub fn loss_csv(log: &[LogRow]) -> String {
    let mut s = String::from("step,loss,lr,grad_norm,images_per_s\n");
    for r in log {
        s.push_str(&format!(
            "{},{:e},{:e},{:e},{:.1}\n",
            r.step, r.loss, r.lr, r.grad_norm, r.images_per_s
        ));
    }
    s
}

/// The unet's safetensors bytes: every tensor of `layout` from the flat vector `p` (F32).
pub fn weights_bytes(layout: &ParamLayout, p: &[f32]) -> Result<Vec<u8>> {
    if p.len() != layout.len() {
        return Err(Error::shape(
            "weights: parameter vector",
            layout.len(),
            p.len(),
        ));
    }
    let tensors: Vec<(&str, &[usize], View<'_>)> = layout
        .entries
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.shape.as_slice(),
                View::F32(&p[e.offset..e.offset + e.numel()]),
            )
        })
        .collect();
    crate::io::safetensors::encode(&tensors)
}

fn pretty(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_string_pretty(v).expect("serialisable");
    s.push('\n');
    s.into_bytes()
}

// ---- the command ---------------------------------------------------------------------------

/// Runs `infodiff train` (see the module docs). `progress` is called after every step; `note`
/// with remarks (a resumed run, a label dropout ignored, …).
pub fn train(
    opts: &TrainOptions,
    progress: Option<&dyn Fn(&TrainProgress)>,
    note: &dyn Fn(&str),
) -> Result<TrainSummary> {
    let start = Instant::now();
    let _running = Running::start();
    let spec: DataSpec = opts.data.parse()?;
    let (mut out, out_state) = OutDir::check(&opts.out)?;
    let shown = out.dest.display().to_string();
    let saved = match (&out_state, opts.resume) {
        (OutState::Earlier { checkpoint: true }, true) => {
            Some(checkpoint::load(&out.checkpoint_path())?)
        }
        (OutState::Earlier { checkpoint: true }, false) => {
            return Err(out_err(
                "a new or empty folder (pass --resume to continue the run saved there)",
                format!("{shown} holding the checkpoint of an earlier run"),
            ));
        }
        (_, true) => {
            return Err(Error::config(
                "--resume",
                format!("a checkpoint in {shown}/{CKPT_DIR}/{}", checkpoint::FILE),
                "none",
            ));
        }
        _ => None,
    };
    // The settings: the checkpoint's on a resume, else the data's defaults; then the options.
    let seed = opts
        .seed
        .or(saved.as_ref().map(|(m, _)| m.train.seed))
        .unwrap_or(0);
    let data = open_data(&spec, seed)?;
    let data: &dyn Dataset = data.as_ref();
    let unet_json = match (&opts.unet, &saved) {
        (Some(p), _) => read_unet_json(p)?,
        (None, Some((m, _))) => m.network.clone(),
        (None, None) => {
            let factors: Vec<(String, usize)> = data
                .factors()
                .iter()
                .map(|f| (f.name.clone(), f.cardinality))
                .collect();
            unet_json_for(data.shape(), &factors)?
        }
    };
    let ucfg = UNetConfig::from_json(&unet_json)?;
    // Recorded and written in the one normal form diffusers saves (every key, in order).
    let unet_json = ucfg.to_json();
    let nulls = check_network(&ucfg, data)?;
    let conditional = !nulls.is_empty();
    let mut cfg = match &saved {
        Some((m, _)) => m.train.clone(),
        None => defaults_for(&spec, conditional),
    };
    cfg.seed = seed;
    if let Some(v) = opts.steps {
        cfg.steps = v;
    }
    if let Some(v) = opts.batch {
        cfg.batch = v;
    }
    if let Some(v) = opts.lr {
        cfg.lr = v;
    }
    if let Some(v) = opts.warmup {
        cfg.warmup = v;
    }
    if let Some(v) = opts.schedule {
        cfg.schedule = v;
    }
    if let Some(v) = opts.p_uncond {
        cfg.p_uncond = v;
    }
    if let Some(v) = opts.ema {
        cfg.ema = Ema {
            decay: v,
            ..cfg.ema
        };
    }
    if let Some(v) = opts.prediction {
        cfg.prediction = v;
    }
    if let Some(v) = opts.checkpoint_every {
        cfg.checkpoint_every = v;
    }
    if let Some(v) = opts.clip {
        cfg.clip = (v != 0.0).then_some(v);
    }
    if !conditional && cfg.p_uncond > 0.0 {
        if opts.p_uncond.is_some() {
            note("--p-uncond has no effect: the network is unconditional");
        }
        cfg.p_uncond = 0.0;
    }
    cfg.validate()?;
    let meta = CheckpointMeta {
        train: cfg.clone(),
        network: unet_json.clone(),
        data: format!("{} ({})", spec_string(&spec), data_fingerprint(data)?),
    };
    let layout = ParamLayout::new(&ucfg);
    let (state, resumed_from) = match saved {
        Some((m, st)) => {
            checkpoint::check_resume(&m, &meta, st.step)?;
            if st.params.len() != layout.len() {
                return Err(Error::model(
                    out.checkpoint_path().display().to_string(),
                    "params",
                    format!("{} values (the network's parameters)", layout.len()),
                    st.params.len(),
                ));
            }
            note(&format!(
                "resuming from step {} of {} ({shown}/{CKPT_DIR})",
                st.step, cfg.steps
            ));
            let k = st.step;
            (st, Some(k))
        }
        None => (TrainState::new(layout.init(cfg.seed)), None),
    };
    let sched_json = scheduler_json(cfg.prediction);
    let scheduler = Scheduler::from_json(&sched_json.to_string(), "scheduler_config.json")?;
    let net = UNetGrad::new(ucfg.clone(), cfg.batch)?;
    let mut trainer = Trainer::new(cfg.clone(), net, data, &scheduler, nulls, state)?;
    let n_params = layout.len();

    // Everything checked: from here on --out changes (only its checkpoint, until the end).
    out.open()?;
    let ck_path = out.checkpoint_path();
    let first = trainer.state.step;
    let run_start = Instant::now();
    let mut last_saved = first;
    while !trainer.done() {
        if let Some(sig) = interrupted_by() {
            if trainer.state.step > last_saved || !ck_path.is_file() {
                checkpoint::save(&ck_path, &meta, &trainer.state)?;
                out.saved = true;
            }
            return Err(Error::Unsupported {
                op: "train",
                reason: format!(
                    "interrupted by signal {sig} at step {} of {}; the checkpoint in {shown}/{CKPT_DIR} \
                     holds it (--resume continues)",
                    trainer.state.step, cfg.steps
                ),
            });
        }
        let row = match trainer.step() {
            Ok(r) => r,
            Err(e) => {
                if out.saved || last_saved > 0 {
                    note(&format!(
                        "the checkpoint in {shown}/{CKPT_DIR} holds step {last_saved}, the last saved"
                    ));
                }
                return Err(e);
            }
        };
        if let Some(p) = progress {
            p(&TrainProgress {
                step: row.step,
                steps: cfg.steps,
                loss: row.loss,
                lr: row.lr,
                images_per_s: row.images_per_s,
            });
        }
        let k = row.step;
        if (cfg.checkpoint_every > 0 && k % cfg.checkpoint_every == 0) || k == cfg.steps {
            checkpoint::save(&ck_path, &meta, &trainer.state)?;
            out.saved = true;
            last_saved = k;
        }
    }
    if !ck_path.is_file() || last_saved != trainer.state.step {
        checkpoint::save(&ck_path, &meta, &trainer.state)?;
        out.saved = true;
    }
    let run_steps = trainer.state.step - first;
    let run_s = run_start.elapsed().as_secs_f64();
    let images_per_s = if run_s > 0.0 {
        (run_steps as f64 * cfg.batch as f64) / run_s
    } else {
        0.0
    };
    let log = &trainer.state.log;
    let tail = &log[log.len().saturating_sub(100)..];
    let final_loss = tail.iter().map(|r| r.loss).sum::<f64>() / tail.len().max(1) as f64;

    // The outputs.
    let steps_f: Vec<f64> = log.iter().map(|r| r.step as f64).collect();
    let loss_f: Vec<f64> = log.iter().map(|r| r.loss).collect();
    let svg = crate::app::plot::loss_svg(&steps_f, &loss_f)?;
    let files = output_files();
    let wall_s = start.elapsed().as_secs_f64();
    let summary = json!({
        "data": opts.data,
        "data_recorded": meta.data,
        "data_name": data.name(),
        "examples": data.len(),
        "shape": data.shape(),
        "factors": data.factors().iter().map(|f| json!({"name": f.name, "values": f.cardinality})).collect::<Vec<_>>(),
        "network": {"parameters": n_params, "config": unet_json},
        "train": serde_json::to_value(&cfg).expect("serialisable"),
        "steps": trainer.state.step,
        "resumed_from": resumed_from,
        "run_steps": run_steps,
        "final_loss_mean_last_100": final_loss,
        "wall_s": wall_s,
        "images_per_s": images_per_s,
        "threads": rayon::current_num_threads(),
        "weights": "EMA of the parameters",
        "files": files,
    });
    let unet_config = unet_json.clone();
    let out_files: Vec<(String, Vec<u8>)> = vec![
        ("model_index.json".into(), pretty(&model_index_json())),
        ("unet/config.json".into(), pretty(&unet_config)),
        (
            format!("unet/{WEIGHTS_FILE}"),
            weights_bytes(&layout, &trainer.state.ema)?,
        ),
        (
            "scheduler/scheduler_config.json".into(),
            pretty(&sched_json),
        ),
        ("loss.csv".into(), loss_csv(log).into_bytes()),
        ("loss.svg".into(), svg.into_bytes()),
        ("train_summary.json".into(), pretty(&summary)),
    ];
    out.commit(&out_files)?;
    Ok(TrainSummary {
        steps: trainer.state.step,
        resumed_from,
        run_steps,
        wall_s,
        images_per_s,
        final_loss,
        params: n_params,
        files,
        json: summary,
    })
}

/// Progress on stderr for `infodiff train`: a bar (step, loss, images/s, ETA) on a terminal,
/// otherwise a line every `INFODIFF_PROGRESS_INTERVAL` seconds (default 10) and one at the end.
pub struct TrainBar {
    bar: Option<indicatif::ProgressBar>,
    every: f64,
    /// (time of the last line, (time, step) of the first step seen).
    last: std::sync::Mutex<(Instant, Option<(Instant, u64)>)>,
}

impl TrainBar {
    pub fn new(terminal: bool) -> TrainBar {
        let bar = terminal.then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {bar:40} {pos}/{len} steps {msg} (eta {eta})",
                )
                .expect("valid template"),
            );
            b
        });
        let every = std::env::var("INFODIFF_PROGRESS_INTERVAL")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .unwrap_or(10.0);
        TrainBar {
            bar,
            every,
            last: std::sync::Mutex::new((Instant::now(), None)),
        }
    }

    /// Shows step `p`.
    pub fn tick(&self, p: &TrainProgress) {
        let msg = format!("loss {:.4}, {:.0} images/s", p.loss, p.images_per_s);
        if let Some(b) = &self.bar {
            b.set_length(p.steps);
            b.set_position(p.step);
            b.set_message(msg);
            return;
        }
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let (t0, s0) = *last.1.get_or_insert((Instant::now(), p.step));
        if last.0.elapsed().as_secs_f64() < self.every || p.step >= p.steps {
            return;
        }
        last.0 = Instant::now();
        let el = t0.elapsed().as_secs_f64();
        let eta = el * (p.steps - p.step) as f64 / (p.step - s0).max(1) as f64;
        eprintln!(
            "infodiff: progress: step {}/{}, {msg}, {el:.1} s, eta {eta:.1} s",
            p.step, p.steps
        );
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
