//! Training checkpoints: one safetensors file holding the whole [`TrainState`] (θ `params`,
//! AdamW's `adam_m` and `adam_v`, the `ema`, each F32 of the parameter count; `step` I64 [1];
//! `log` F64 (steps, 5): step, loss, lr, grad_norm, images/s) and, in its metadata, the
//! [`TrainConfig`], the network's config JSON, the data spec and a hash of the three
//! ([`CheckpointMeta::hash`], FNV-1a 64 of their canonical JSON, checked on load).
//!
//! Written through [`AtomicFile`] (a temporary in the same folder and a rename): a reader, or a
//! run killed while saving, sees the previous checkpoint or the new one whole. The f32 vectors
//! are stored bit for bit, so resuming from step k and running to N gives the same bytes as
//! running to N straight ([`check_resume`] refuses a checkpoint of another config, naming what
//! differs).

use std::collections::HashMap;
use std::path::Path;

use ::safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use super::{LogRow, TrainConfig, TrainState};
use crate::error::{Error, Result};
use crate::io::atomic::AtomicFile;
use crate::io::safetensors::pod_vec;

/// The `format` metadata value of a checkpoint.
pub const FORMAT: &str = "infodiff-train-checkpoint/1";
/// The checkpoint's file name inside `DIR/checkpoint/`.
pub const FILE: &str = "train_state.safetensors";
/// Columns of the `log` tensor.
pub const LOG_COLUMNS: usize = 5;

/// What a checkpoint was trained with.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub train: TrainConfig,
    /// The network's config (diffusers' UNet2DModel config.json for the U-Net).
    pub network: Value,
    /// The data as `--data` named it.
    pub data: String,
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl CheckpointMeta {
    fn train_json(&self) -> String {
        serde_json::to_string(&self.train).expect("TrainConfig serialises")
    }

    fn network_json(&self) -> String {
        self.network.to_string()
    }

    /// FNV-1a 64 (hex) of the train config JSON, the network JSON and the data spec, each
    /// followed by a NUL.
    pub fn hash(&self) -> String {
        let mut bytes = Vec::new();
        for s in [self.train_json(), self.network_json(), self.data.clone()] {
            bytes.extend_from_slice(s.as_bytes());
            bytes.push(0);
        }
        format!("{:016x}", fnv1a(&bytes))
    }
}

fn bad(
    path: &str,
    tensor: &str,
    expected: impl Into<String>,
    found: impl std::fmt::Display,
) -> Error {
    Error::model(path, tensor, expected, found)
}

/// The checkpoint file's bytes.
pub fn encode(meta: &CheckpointMeta, state: &TrainState) -> Result<Vec<u8>> {
    let n = state.params.len();
    for (name, v) in [
        ("adam_m", &state.m),
        ("adam_v", &state.v),
        ("ema", &state.ema),
    ] {
        if v.len() != n {
            return Err(Error::shape(
                "checkpoint::encode",
                format!("{name} of {n}"),
                v.len(),
            ));
        }
    }
    let step = [state.step as i64];
    let log: Vec<f64> = state
        .log
        .iter()
        .flat_map(|r| {
            [
                r.step as f64,
                r.loss,
                r.lr,
                r.grad_norm,
                if r.images_per_s.is_finite() {
                    r.images_per_s
                } else {
                    0.0
                },
            ]
        })
        .collect();
    let views: Vec<(&str, Dtype, Vec<usize>, &[u8])> = vec![
        (
            "params",
            Dtype::F32,
            vec![n],
            bytemuck::cast_slice(&state.params),
        ),
        (
            "adam_m",
            Dtype::F32,
            vec![n],
            bytemuck::cast_slice(&state.m),
        ),
        (
            "adam_v",
            Dtype::F32,
            vec![n],
            bytemuck::cast_slice(&state.v),
        ),
        ("ema", Dtype::F32, vec![n], bytemuck::cast_slice(&state.ema)),
        ("step", Dtype::I64, vec![1], bytemuck::cast_slice(&step)),
        (
            "log",
            Dtype::F64,
            vec![state.log.len(), LOG_COLUMNS],
            bytemuck::cast_slice(&log),
        ),
    ];
    let tensors = views
        .into_iter()
        .map(|(name, dtype, shape, bytes)| {
            ::safetensors::tensor::TensorView::new(dtype, shape, bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::Unsupported {
                    op: "checkpoint::encode",
                    reason: format!("tensor `{name}`: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata: HashMap<String, String> = [
        ("format", FORMAT.to_string()),
        ("train_config", meta.train_json()),
        ("network_config", meta.network_json()),
        ("data", meta.data.clone()),
        ("step", state.step.to_string()),
        ("hash", meta.hash()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    ::safetensors::serialize(tensors, &Some(metadata)).map_err(|e| Error::Unsupported {
        op: "checkpoint::encode",
        reason: e.to_string(),
    })
}

/// Reads a checkpoint's bytes (`path` names it in errors): every tensor present with its dtype
/// and shape, the metadata's format and hash checked, every value finite.
pub fn decode(bytes: &[u8], path: &str) -> Result<(CheckpointMeta, TrainState)> {
    let not_ckpt = |e: String| bad(path, "", "an infodiff training checkpoint (safetensors)", e);
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| not_ckpt(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| not_ckpt(e.to_string()))?;
    let md = header
        .metadata()
        .clone()
        .ok_or_else(|| not_ckpt("a safetensors file without metadata".into()))?;
    let get = |k: &str| -> Result<&String> {
        md.get(k)
            .ok_or_else(|| not_ckpt(format!("metadata without `{k}`")))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(bad(
            path,
            "",
            format!("metadata format \"{FORMAT}\""),
            format!("\"{format}\""),
        ));
    }
    let train: TrainConfig =
        serde_json::from_str(get("train_config")?).map_err(|e| Error::Json {
            path: format!("{path}: metadata `train_config`"),
            message: e.to_string(),
        })?;
    let network: Value = serde_json::from_str(get("network_config")?).map_err(|e| Error::Json {
        path: format!("{path}: metadata `network_config`"),
        message: e.to_string(),
    })?;
    let meta = CheckpointMeta {
        train,
        network,
        data: get("data")?.clone(),
    };
    let hash = get("hash")?;
    // The hash is of the texts as stored; re-serialising the parsed values gives the same text
    // (serde_json with preserve_order writes what it read for these).
    if *hash != meta.hash() {
        return Err(bad(
            path,
            "",
            format!(
                "metadata hash {} (of its train config, network config and data)",
                meta.hash()
            ),
            format!("{hash}: the metadata was edited or is corrupt"),
        ));
    }
    let tensor =
        |name: &str, dtype: Dtype, shape: Option<&[usize]>| -> Result<(Vec<usize>, &[u8])> {
            let t = st.tensor(name).map_err(|_| {
                bad(
                    path,
                    name,
                    "a tensor of the checkpoint",
                    "nothing (missing)",
                )
            })?;
            if t.dtype() != dtype {
                return Err(bad(
                    path,
                    name,
                    format!("dtype {dtype:?}"),
                    format!("{:?}", t.dtype()),
                ));
            }
            if let Some(s) = shape
                && t.shape() != s
            {
                return Err(bad(
                    path,
                    name,
                    format!("shape {s:?}"),
                    format!("{:?}", t.shape()),
                ));
            }
            Ok((t.shape().to_vec(), t.data()))
        };
    let (pshape, pbytes) = tensor("params", Dtype::F32, None)?;
    if pshape.len() != 1 {
        return Err(bad(
            path,
            "params",
            "a vector (1-D)",
            format!("shape {pshape:?}"),
        ));
    }
    let n = pshape[0];
    let f32s = |name: &str| -> Result<Vec<f32>> {
        let (_, b) = tensor(name, Dtype::F32, Some(&[n]))?;
        let v: Vec<f32> =
            pod_vec(b).ok_or_else(|| bad(path, name, "whole f32 values", "a torn tensor"))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(
                path,
                name,
                "finite values",
                format!("{} at index {i}", v[i]),
            ));
        }
        Ok(v)
    };
    let params: Vec<f32> = {
        let v: Vec<f32> = pod_vec(pbytes)
            .ok_or_else(|| bad(path, "params", "whole f32 values", "a torn tensor"))?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(bad(
                path,
                "params",
                "finite values",
                format!("{} at index {i}", v[i]),
            ));
        }
        v
    };
    let m = f32s("adam_m")?;
    let v = f32s("adam_v")?;
    let ema = f32s("ema")?;
    let (_, sb) = tensor("step", Dtype::I64, Some(&[1]))?;
    let step: Vec<i64> =
        pod_vec(sb).ok_or_else(|| bad(path, "step", "one i64", "a torn tensor"))?;
    let step = u64::try_from(step[0]).map_err(|_| bad(path, "step", "a step ≥ 0", step[0]))?;
    let (lshape, lb) = tensor("log", Dtype::F64, None)?;
    if lshape.len() != 2 || lshape[1] != LOG_COLUMNS || lshape[0] as u64 != step {
        return Err(bad(
            path,
            "log",
            format!("shape [{step}, {LOG_COLUMNS}] (one row per step done)"),
            format!("shape {lshape:?}"),
        ));
    }
    let lv: Vec<f64> =
        pod_vec(lb).ok_or_else(|| bad(path, "log", "whole f64 values", "a torn tensor"))?;
    let log = lv
        .chunks_exact(LOG_COLUMNS)
        .map(|r| LogRow {
            step: r[0] as u64,
            loss: r[1],
            lr: r[2],
            grad_norm: r[3],
            images_per_s: r[4],
        })
        .collect();
    Ok((
        meta,
        TrainState {
            step,
            params,
            m,
            v,
            ema,
            log,
        },
    ))
}

/// Writes the checkpoint to `path` atomically (the previous one stays whole until the rename).
pub fn save(path: &Path, meta: &CheckpointMeta, state: &TrainState) -> Result<()> {
    let bytes = encode(meta, state)?;
    AtomicFile::prepare(path, "checkpoint")?.commit(&bytes)
}

/// Reads the checkpoint at `path` (see [`decode`]).
pub fn load(path: &Path) -> Result<(CheckpointMeta, TrainState)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, &path.display().to_string())
}

/// Compact JSON of a value, for naming it in a refusal.
fn show(v: Option<&Value>) -> String {
    v.map_or("(absent)".into(), |v| v.to_string())
}

/// The keys (dotted) where two JSON objects differ, with both values.
fn differences(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x
                .keys()
                .chain(y.keys().filter(|k| !x.contains_key(*k)))
                .collect();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(w)) => differences(&p, u, w, out),
                    (u, w) => out.push(format!(
                        "{p}: {} in the checkpoint, {} now",
                        show(u),
                        show(w)
                    )),
                }
            }
        }
        _ if a != b => out.push(format!("{prefix}: {a} in the checkpoint, {b} now")),
        _ => {}
    }
}

/// Refuses to resume a checkpoint at step `step` trained with `saved` under the settings `now`,
/// naming every difference. Allowed to differ: `checkpoint_every`, and `steps` where the
/// schedule is constant and the new total is not below the steps done (the cosine schedule's
/// learning rates depend on the total, so it must match there).
pub fn check_resume(saved: &CheckpointMeta, now: &CheckpointMeta, step: u64) -> Result<()> {
    let mut diffs = Vec::new();
    let mut a = serde_json::to_value(&saved.train).expect("TrainConfig serialises");
    let mut b = serde_json::to_value(&now.train).expect("TrainConfig serialises");
    for v in [&mut a, &mut b] {
        if let Value::Object(m) = v {
            m.remove("checkpoint_every");
            m.remove("steps");
        }
    }
    differences("", &a, &b, &mut diffs);
    if saved.train.steps != now.train.steps {
        if saved.train.schedule != super::optim::LrSchedule::Constant
            || now.train.schedule != super::optim::LrSchedule::Constant
        {
            diffs.push(format!(
                "steps: {} in the checkpoint, {} now (the {} schedule's learning rates depend on \
                 the total; only a constant schedule may be extended)",
                saved.train.steps,
                now.train.steps,
                saved.train.schedule.name()
            ));
        } else if now.train.steps < step {
            diffs.push(format!(
                "steps: {} now, but the checkpoint is already at step {step}",
                now.train.steps
            ));
        }
    }
    let mut net = Vec::new();
    differences("", &saved.network, &now.network, &mut net);
    diffs.extend(net.into_iter().map(|d| format!("network {d}")));
    if saved.data != now.data {
        diffs.push(format!(
            "data: {:?} in the checkpoint, {:?} now",
            saved.data, now.data
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::config(
            "--resume",
            "the settings the checkpoint was trained with",
            diffs.join("; "),
        ))
    }
}
