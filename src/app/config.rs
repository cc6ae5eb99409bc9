//! The measure job's config: its JSON schema as serde types ([`ConfigFile`]), the parse into a
//! validated [`Config`], and the validators of sizes, the process's range, the mixture's scale
//! and the memory a job needs. Every refusal names its field as a JSON path, e.g.
//! `mixture.components[0].weight: expected …, found …`.
//!
//! The JSON form of `process` and `sampler` is internally tagged by `kind`
//! (`{"kind": "vp", "beta_min": 0.1}`). serde's derive for internal tags buffers the object and
//! loses the path of an error inside it, so the Rust enums ([`ProcessConfig`], [`SamplerConfig`])
//! use serde's external form (`{"vp": {"beta_min": 0.1}}`) and [`untag`]/[`retag`] move the kind
//! between the two forms at the `serde_json::Value` level; paths are then reported in the JSON
//! form (`process.beta_min`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::diffusion::{
    AncestralVariance, Ddpm, Grid, Process, SamplerKind, SubVp, Ve, Vp, VpCosine,
};
use crate::error::{Error, Result};
use crate::info::{Curves, Guidance, InfoSpec, Partition};
use crate::io::model_dir::ModelDir;
use crate::score::{Component, GaussianMixture, ScoreModel};

/// Most grid transitions (`process.steps`, `sampler.steps`).
pub const MAX_STEPS: usize = 1_000_000;
/// Most trajectories of one job (2⁴⁰ ≈ 1.1e12).
pub const MAX_TRAJECTORIES: usize = 1 << 40;
/// The noise end must carry noise: σ_T ≥ s_T / 1000, i.e. log-SNR at T ≤ 2 ln 1000 ≈ 13.8.
pub const MAX_LOG_SNR_T: f64 = 13.815510557964274;
/// Largest σ on the grid (VE's `sigma_max`): f32 states of this size still square finitely.
pub const MAX_SIGMA: f64 = 1e4;

// ---- the schema ------------------------------------------------------------------------------

/// The forward process of a job (JSON: `{"kind": "ddpm" | "vp" | "vp_cosine" | "subvp" | "ve",
/// …parameters}`; a missing parameter takes the default shown).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ProcessConfig {
    /// β 1e-4…0.02 over 1000 steps by default.
    Ddpm {
        #[serde(default = "defaults::beta_start")]
        beta_start: f64,
        #[serde(default = "defaults::beta_end")]
        beta_end: f64,
        #[serde(default = "defaults::steps")]
        steps: usize,
    },
    /// β 0.1…20 by default.
    Vp {
        #[serde(default = "defaults::beta_min")]
        beta_min: f64,
        #[serde(default = "defaults::beta_max")]
        beta_max: f64,
    },
    /// s = 0.008, t_max = 0.999 by default.
    VpCosine {
        #[serde(default = "defaults::s")]
        s: f64,
        #[serde(default = "defaults::t_max")]
        t_max: f64,
    },
    /// β 0.1…20 by default.
    #[serde(rename = "subvp")]
    SubVp {
        #[serde(default = "defaults::beta_min")]
        beta_min: f64,
        #[serde(default = "defaults::beta_max")]
        beta_max: f64,
    },
    /// σ 0.01…50 by default.
    Ve {
        #[serde(default = "defaults::sigma_min")]
        sigma_min: f64,
        #[serde(default = "defaults::sigma_max")]
        sigma_max: f64,
    },
}

/// The `kind`s of [`ProcessConfig`], as the JSON names them.
pub const PROCESS_KINDS: [&str; 5] = ["ddpm", "vp", "vp_cosine", "subvp", "ve"];
/// The `kind`s of [`SamplerConfig`], as the JSON names them.
pub const SAMPLER_KINDS: [&str; 11] = SamplerKind::NAMES;

/// Defaults of the schema's optional numbers (serde takes a function per default).
mod defaults {
    pub fn beta_start() -> f64 {
        1e-4
    }
    pub fn beta_end() -> f64 {
        0.02
    }
    pub fn steps() -> usize {
        1000
    }
    pub fn beta_min() -> f64 {
        0.1
    }
    pub fn beta_max() -> f64 {
        20.0
    }
    pub fn s() -> f64 {
        0.008
    }
    pub fn t_max() -> f64 {
        0.999
    }
    pub fn sigma_min() -> f64 {
        0.01
    }
    pub fn sigma_max() -> f64 {
        50.0
    }
    pub fn weight() -> f64 {
        1.0
    }
    pub fn variance() -> crate::diffusion::AncestralVariance {
        crate::diffusion::AncestralVariance::Beta
    }
}

impl ProcessConfig {
    pub fn build(&self) -> Result<Box<dyn Process>> {
        Ok(match *self {
            ProcessConfig::Ddpm {
                beta_start,
                beta_end,
                steps,
            } => Box::new(Ddpm::new(beta_start, beta_end, steps)?),
            ProcessConfig::Vp { beta_min, beta_max } => Box::new(Vp::new(beta_min, beta_max)?),
            ProcessConfig::VpCosine { s, t_max } => Box::new(VpCosine::new(s, t_max)?),
            ProcessConfig::SubVp { beta_min, beta_max } => {
                Box::new(SubVp::new(beta_min, beta_max)?)
            }
            ProcessConfig::Ve {
                sigma_min,
                sigma_max,
            } => Box::new(Ve::new(sigma_min, sigma_max)?),
        })
    }

    /// The JSON `kind` of this process.
    pub fn kind(&self) -> &'static str {
        match self {
            ProcessConfig::Ddpm { .. } => "ddpm",
            ProcessConfig::Vp { .. } => "vp",
            ProcessConfig::VpCosine { .. } => "vp_cosine",
            ProcessConfig::SubVp { .. } => "subvp",
            ProcessConfig::Ve { .. } => "ve",
        }
    }

    /// The parameter that sets the noise end (named when the noise end carries too little noise).
    fn noise_end_field(&self) -> &'static str {
        match self {
            ProcessConfig::Ddpm { .. } => "process.beta_end",
            ProcessConfig::Vp { .. } | ProcessConfig::SubVp { .. } => "process.beta_max",
            ProcessConfig::VpCosine { .. } => "process.t_max",
            ProcessConfig::Ve { .. } => "process.sigma_max",
        }
    }
}

/// The reverse sampler of a job and its number of steps (JSON: `{"kind": "ancestral" | "ddim" |
/// "euler_maruyama" | "heun_ode", "steps": n, …}`; steps default to the DDPM process's, else
/// 1000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SamplerConfig {
    Ancestral {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
        #[serde(default = "defaults::variance")]
        variance: AncestralVariance,
    },
    Ddim {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
        #[serde(default)]
        eta: f64,
    },
    EulerMaruyama {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    HeunOde {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    Ddpm {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip: Option<f64>,
    },
    Euler {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    EulerAncestral {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    Heun {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    #[serde(rename = "dpmpp_2m")]
    Dpmpp2m {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    #[serde(rename = "dpmpp_2m_sde")]
    Dpmpp2mSde {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
    #[serde(rename = "dpmpp_3m_sde")]
    Dpmpp3mSde {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        steps: Option<u64>,
    },
}

impl SamplerConfig {
    /// The diffusion sampler and the steps asked for (None: the default). The one place the
    /// config's sampler meets `diffusion::Sampler`, with [`SamplerConfig::of`] its inverse.
    pub fn sampler(&self) -> (SamplerKind, Option<u64>) {
        match *self {
            SamplerConfig::Ancestral { steps, variance } => {
                (SamplerKind::Ancestral { variance }, steps)
            }
            SamplerConfig::Ddim { steps, eta } => (SamplerKind::Ddim { eta, clip: None }, steps),
            SamplerConfig::EulerMaruyama { steps } => (SamplerKind::EulerMaruyama, steps),
            SamplerConfig::HeunOde { steps } => (SamplerKind::HeunOde, steps),
            SamplerConfig::Ddpm { steps, clip } => (SamplerKind::Ddpm { clip }, steps),
            SamplerConfig::Euler { steps } => (SamplerKind::Euler, steps),
            SamplerConfig::EulerAncestral { steps } => (SamplerKind::EulerAncestral, steps),
            SamplerConfig::Heun { steps } => (SamplerKind::Heun, steps),
            SamplerConfig::Dpmpp2m { steps } => (SamplerKind::Dpmpp2m, steps),
            SamplerConfig::Dpmpp2mSde { steps } => (SamplerKind::Dpmpp2mSde, steps),
            SamplerConfig::Dpmpp3mSde { steps } => (SamplerKind::Dpmpp3mSde, steps),
        }
    }

    /// The config form of `sampler` run for `steps` steps.
    pub fn of(sampler: SamplerKind, steps: usize) -> SamplerConfig {
        let steps = Some(steps as u64);
        match sampler {
            SamplerKind::Ancestral { variance } => SamplerConfig::Ancestral { steps, variance },
            SamplerKind::Ddim { eta, .. } => SamplerConfig::Ddim { steps, eta },
            SamplerKind::EulerMaruyama => SamplerConfig::EulerMaruyama { steps },
            SamplerKind::HeunOde => SamplerConfig::HeunOde { steps },
            SamplerKind::Ddpm { clip } => SamplerConfig::Ddpm { steps, clip },
            SamplerKind::Euler => SamplerConfig::Euler { steps },
            SamplerKind::EulerAncestral => SamplerConfig::EulerAncestral { steps },
            SamplerKind::Heun => SamplerConfig::Heun { steps },
            SamplerKind::Dpmpp2m => SamplerConfig::Dpmpp2m { steps },
            SamplerKind::Dpmpp2mSde => SamplerConfig::Dpmpp2mSde { steps },
            SamplerKind::Dpmpp3mSde => SamplerConfig::Dpmpp3mSde { steps },
        }
    }
}

/// One number or a list of them (`mean`, `var`); an entry of a list that is not a number is
/// named `field[j]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Numbers {
    One(f64),
    List(Vec<f64>),
}

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // By hand, not `untagged`: serde's untagged enums buffer and lose the entry's path.
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Numbers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number or a list of numbers")
            }
            fn visit_f64<E>(self, v: f64) -> std::result::Result<Numbers, E> {
                Ok(Numbers::One(v))
            }
            fn visit_u64<E>(self, v: u64) -> std::result::Result<Numbers, E> {
                Ok(Numbers::One(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> std::result::Result<Numbers, E> {
                Ok(Numbers::One(v as f64))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Numbers, A::Error> {
                // No size hint trusted: the list grows with what is read.
                let mut v = Vec::new();
                while let Some(x) = seq.next_element::<f64>()? {
                    v.push(x);
                }
                Ok(Numbers::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Numbers {
    /// The values, a single number repeated `n` times.
    fn to_vec(&self, n: usize) -> Vec<f64> {
        match self {
            Numbers::One(x) => vec![*x; n],
            Numbers::List(v) => v.clone(),
        }
    }
}

/// One mixture component as the JSON writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentFile {
    #[serde(default = "defaults::weight")]
    pub weight: f64,
    pub mean: Numbers,
    /// Per-dimension variances, or one for every dimension; 0 (point masses) when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub var: Option<Numbers>,
    pub class: u64,
}

/// `mixture` as the JSON writes it: explicit `components`, or `from_dataset` (a `--data`
/// spec: `digits`, `shapes:16`, `folder:DIR`) with `var` (default 0), the empirical mixture of
/// that data: one component per image (mean = the image, isotropic variance `var`, equal
/// weights, class = the image's first factor label).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixtureFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_dataset: Option<String>,
    /// The isotropic variance of every component of `from_dataset` (0: point masses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub var: Option<f64>,
}

/// The empirical mixture of a data set (`mixture.from_dataset`): one component per example.
#[derive(Clone, Debug, PartialEq)]
pub struct EmpiricalSource {
    /// The data as `--data` names it (`digits`, …).
    pub dataset: String,
    /// Isotropic variance of every component (≥ 0).
    pub var: f64,
}

/// Most examples `train_examples` asks a `gmm:` data source for (2³¹).
pub const MAX_TRAIN_EXAMPLES: usize = 1 << 31;
/// Default number of examples of a `gmm:` data source.
pub const DEFAULT_TRAIN_EXAMPLES: usize = 50_000;

/// The config file as JSON holds it: every key optional (the default config fills what is
/// missing), unknown keys refused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<MixtureFile>,
    /// A model folder to measure instead of a mixture: a diffusers pipeline folder
    /// (model_index.json + unet/ + scheduler/) or a bare UNet2DModel folder; its
    /// scheduler_config.json sets the process and the prediction type (no `process` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<SamplerConfig>,
    /// Classifier-free guidance scale W of the sampled paths (`classes` given alone: 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    /// Guidance labels cycled over trajectories (trajectory i takes `classes[i mod len]`;
    /// `guidance` given alone: every class in turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<Partition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectories: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probes: Option<u64>,
    /// The image shape [C, H, W] of the mixture's D = C·H·W coordinates (channel-major), for
    /// `infodiff train --data gmm:FILE` and image output; the measurement itself ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<[u64; 3]>,
    /// How many samples `--data gmm:FILE` draws from the mixture (default 50,000); the
    /// measurement ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<u64>,
}

/// The tagged keys of the schema and the kinds each takes.
const TAGGED: [(&str, &[&str]); 2] = [("process", &PROCESS_KINDS), ("sampler", &SAMPLER_KINDS)];

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Turns the JSON form's `{"kind": k, …rest}` at `process` and `sampler` into serde's external
/// form `{k: {…rest}}`; a missing, non-string or unknown kind is refused naming `<key>.kind`.
pub fn untag(v: &Value) -> Result<Value> {
    objects_where_expected(v)?;
    let mut v = v.clone();
    let Value::Object(top) = &mut v else {
        return Ok(v); // serde names the type error
    };
    for (key, kinds) in TAGGED {
        let Some(Value::Object(node)) = top.get_mut(key) else {
            continue; // absent, null or not an object: serde names it
        };
        let field = format!("{key}.kind");
        let one_of = format!("one of {}", kinds.join(", "));
        let kind = match node.remove("kind") {
            None => return Err(Error::config(field, one_of, "nothing (missing)")),
            Some(Value::String(s)) if kinds.contains(&s.as_str()) => s,
            Some(Value::String(s)) => return Err(Error::config(field, one_of, format!("{s:?}"))),
            Some(other) => return Err(Error::config(field, "a string", describe(&other))),
        };
        let rest = std::mem::take(node);
        top.insert(
            key.into(),
            Value::Object(Map::from_iter([(kind, Value::Object(rest))])),
        );
    }
    Ok(v)
}

/// Refuses a list where the schema has an object (serde would read a struct from a list by
/// position), naming the field.
fn objects_where_expected(v: &Value) -> Result<()> {
    let object = |v: &Value, field: &str| match v {
        Value::Array(_) => Err(Error::config(field, "an object", "a list")),
        _ => Ok(()),
    };
    object(v, "")?;
    for key in ["process", "sampler", "mixture"] {
        if let Some(x) = v.get(key) {
            object(x, key)?;
        }
    }
    let lists = [
        (
            v.get("mixture").and_then(|m| m.get("components")),
            "mixture.components",
        ),
        (v.get("partitions"), "partitions"),
    ];
    for (list, field) in lists {
        if let Some(Value::Array(a)) = list {
            for (i, x) in a.iter().enumerate() {
                object(x, &format!("{field}[{i}]"))?;
            }
        }
    }
    Ok(())
}

/// The inverse of [`untag`]: `{k: {…rest}}` at `process` and `sampler` back to
/// `{"kind": k, …rest}`.
pub fn retag(mut v: Value) -> Value {
    if let Value::Object(top) = &mut v {
        for (key, _) in TAGGED {
            let Some(Value::Object(node)) = top.get_mut(key) else {
                continue;
            };
            let Some((kind, Value::Object(rest))) =
                node.iter().next().map(|(k, r)| (k.clone(), r.clone()))
            else {
                continue;
            };
            let mut tagged = Map::from_iter([("kind".to_string(), Value::String(kind))]);
            tagged.extend(rest);
            *node = tagged;
        }
    }
    v
}

/// serde's words for what it expected at `field`, in the words of the other refusals.
fn plain_expected(s: &str, field: &str) -> String {
    match s.trim() {
        "f64" | "f32" => "a number".into(),
        "u64" | "usize" | "u32" => "a whole number ≥ 0".into(),
        "a sequence" | "sequence" => "a list".into(),
        "map" | "a map" => "an object".into(),
        // serde's external enum form: a tagged key takes an object with a `kind`, other enums a
        // string naming the variant
        "string or map" if TAGGED.iter().any(|(k, _)| *k == field) => {
            "an object with a `kind`".into()
        }
        "string or map" => "a string".into(),
        s if s.starts_with("struct ") => "an object".into(),
        s => s.replace('`', ""),
    }
}

/// serde's words for what it found (`integer \`3\``, `string "x"`, `map`).
fn plain_found(s: &str) -> String {
    let s = s.trim();
    for prefix in ["integer ", "floating point ", "boolean ", "string "] {
        if let Some(v) = s.strip_prefix(prefix) {
            return v.replace('`', "");
        }
    }
    match s {
        "map" => "an object".into(),
        "sequence" => "a list".into(),
        "unit value" => "null".into(),
        s => s.replace('`', ""),
    }
}

/// A serde error at `path` (serde_path_to_error's `a.b[0].c`, in the external form) as a
/// config error naming the field in the JSON form.
fn field_error(path: &serde_path_to_error::Path, message: &str) -> Error {
    use serde_path_to_error::Segment;
    // The JSON path, without the kind segment of the external form (`process.vp.beta_min`).
    let mut field = String::new();
    let mut prev: Option<String> = None;
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => field += &format!("[{index}]"),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                let tagged = prev
                    .as_deref()
                    .is_some_and(|p| TAGGED.iter().any(|(k, _)| *k == p) && field == p);
                if !tagged {
                    if !field.is_empty() {
                        field.push('.');
                    }
                    field += key;
                }
                prev = Some(key.clone());
                continue;
            }
            Segment::Unknown => field += ".?",
        }
        prev = None;
    }
    let join = |f: &str, k: &str| {
        if f.is_empty() {
            k.to_string()
        } else {
            format!("{f}.{k}")
        }
    };
    let quoted = |m: &str| m.split('`').nth(1).unwrap_or("").to_string();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // serde_path_to_error's path already ends at the unknown key.
        let expected = rest.split_once("expected ").map_or("", |(_, e)| e);
        let expected = expected.trim_start_matches("one of ").replace('`', "");
        let field = if field.ends_with(&quoted(message)) {
            field
        } else {
            join(&field, &quoted(message))
        };
        return Error::config(
            field,
            format!("one of the keys {expected}"),
            "an unknown key",
        );
    }
    if message.starts_with("missing field ") {
        return Error::config(
            join(&field, &quoted(message)),
            "a value",
            "nothing (missing)",
        );
    }
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = message.strip_prefix(prefix)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let expected = plain_expected(expected, &field);
            return Error::config(field, expected, plain_found(found));
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        let expected = rest.split_once("expected ").map_or("", |(_, e)| e);
        return Error::config(
            field,
            expected.replace('`', ""),
            format!("{:?}", quoted(message)),
        );
    }
    Error::config(field, "a valid value", message)
}

/// `ConfigFile` from a JSON value, refusals naming the field.
pub fn parse_file(v: &Value) -> Result<ConfigFile> {
    let ext = untag(v)?;
    serde_path_to_error::deserialize(&ext)
        .map_err(|e| field_error(e.path(), &e.inner().to_string()))
}

/// Values the command line sets over a config's (`--model`, `--trajectories`, `--steps`,
/// `--seed`, `--probes`); None keeps the config's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Overrides {
    pub model: Option<PathBuf>,
    pub trajectories: Option<usize>,
    pub steps: Option<usize>,
    pub seed: Option<u64>,
    pub probes: Option<usize>,
}

// ---- the validated job ----------------------------------------------------------------------

/// A measurement job.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The forward process of a mixture job (None for a model: its scheduler sets it).
    pub process: Option<ProcessConfig>,
    /// The exact mixture (empty when `model` is set).
    pub components: Vec<Component>,
    /// A model folder to measure instead of a mixture, as given.
    pub model: Option<PathBuf>,
    /// `model` opened: the network's folder and its scheduler.
    pub model_dir: Option<ModelDir>,
    /// Guidance of the sampled paths (None: unconditional).
    pub guidance: Option<Guidance>,
    pub sampler: SamplerKind,
    /// Sampler steps (grid transitions).
    pub steps: usize,
    pub partitions: Vec<Partition>,
    pub trajectories: usize,
    pub seed: u64,
    /// Hutchinson probes per state and step for a network's ∇·s (`hx0_rate`); 0: none. Exact
    /// mixtures have their divergence in closed form and ignore it.
    pub probes: usize,
    /// Where `components` came from when `mixture.from_dataset` built them (None: listed).
    pub empirical: Option<EmpiricalSource>,
    /// `image`: [C, H, W] with C·H·W = D (None: not given).
    pub image: Option<[usize; 3]>,
    /// `train_examples`, as given.
    pub train_examples: Option<usize>,
}

/// The embedded default: points −8, −4, 6, 8 (equal weights, classes 0–3) under DDPM
/// β 1e-4…0.02 with 1000 steps, ancestral sampling, 20,000 trajectories, seed 0, and three
/// decision problems (left vs right, −8 vs −4, 6 vs 8).
pub fn default_config() -> Config {
    let comp = |m: f64, c: usize| Component {
        weight: 1.0,
        mean: vec![m],
        var: vec![0.0],
        class: c,
    };
    let part = |name: &str, a: Vec<usize>, b: Vec<usize>| Partition {
        name: name.into(),
        a,
        b,
    };
    Config {
        process: Some(default_process()),
        components: vec![comp(-8.0, 0), comp(-4.0, 1), comp(6.0, 2), comp(8.0, 3)],
        model: None,
        model_dir: None,
        guidance: None,
        sampler: SamplerKind::Ancestral {
            variance: AncestralVariance::Beta,
        },
        steps: 1000,
        partitions: vec![
            part("left_right", vec![0, 1], vec![2, 3]),
            part("m8_m4", vec![0], vec![1]),
            part("p6_p8", vec![2], vec![3]),
        ],
        trajectories: 20_000,
        seed: 0,
        probes: 1,
        empirical: None,
        image: None,
        train_examples: None,
    }
}

/// The default job's process: DDPM β 1e-4…0.02 over 1000 steps.
fn default_process() -> ProcessConfig {
    ProcessConfig::Ddpm {
        beta_start: 1e-4,
        beta_end: 0.02,
        steps: 1000,
    }
}

/// `v` as a size in `lo..=hi`, or an error naming `field`.
pub fn bounded(field: &str, v: u64, lo: usize, hi: usize) -> Result<usize> {
    if v < lo as u64 || v > hi as u64 {
        return Err(Error::config(
            field,
            format!("a whole number in {lo}..={hi}"),
            v,
        ));
    }
    Ok(v as usize)
}

impl Config {
    /// Parses and validates a config from JSON text; `source` names it in errors.
    pub fn from_json_str(text: &str, source: &str) -> Result<Config> {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: source.into(),
            message: format!("not valid JSON: {e}"),
        })?;
        Config::from_value(&v)
    }

    /// Validates a parsed config; every error names its field.
    pub fn from_value(v: &Value) -> Result<Config> {
        Config::from_file(parse_file(v)?)
    }

    /// Fills what `file` leaves out from the default config and validates the values: sizes,
    /// the process's parameters and range, the mixture, the decision problems, the memory.
    pub fn from_file(file: ConfigFile) -> Result<Config> {
        let d = default_config();
        let model = file.model;
        if model.is_some() && file.mixture.is_some() {
            return Err(Error::config(
                "model",
                "either `model` or `mixture`",
                "both",
            ));
        }
        if let (Some(_), Some(p)) = (&model, &file.process) {
            return Err(Error::config(
                "process",
                "no `process` with a `model` (its scheduler_config.json sets the process)",
                format!("{:?}", p.kind()),
            ));
        }
        let model_dir = model.as_deref().map(ModelDir::open).transpose()?;
        let process = match &model {
            Some(_) => None,
            None => Some(file.process.unwrap_or_else(default_process)),
        };
        if let Some(process) = &process {
            if let ProcessConfig::Ddpm { steps, .. } = process {
                bounded("process.steps", *steps as u64, 1, MAX_STEPS)?;
            }
            process.build()?; // validates values, naming the field
        }
        let empirical = match &file.mixture {
            Some(MixtureFile {
                from_dataset: Some(name),
                components,
                var,
            }) => {
                if !components.is_empty() {
                    return Err(Error::config(
                        "mixture.from_dataset",
                        "either `components` or `from_dataset`",
                        "both",
                    ));
                }
                Some(EmpiricalSource {
                    dataset: name.clone(),
                    var: var.unwrap_or(0.0),
                })
            }
            Some(MixtureFile { var: Some(_), .. }) => {
                return Err(Error::config(
                    "mixture.var",
                    "`var` only beside `from_dataset` (a component's own `var` sets it)",
                    "a `var` without `from_dataset`",
                ));
            }
            _ => None,
        };
        let (components, data_shape) = match (&file.mixture, &empirical) {
            (_, Some(src)) => {
                let (c, shape) = empirical_components(src)?;
                (c, Some(shape))
            }
            (None, _) if model.is_some() => (vec![], None),
            (None, _) => (d.components.clone(), None),
            (Some(m), None) => (
                m.components
                    .iter()
                    .map(|c| {
                        let mean = c.mean.to_vec(1);
                        Component {
                            weight: c.weight,
                            var: c
                                .var
                                .as_ref()
                                .map_or(vec![0.0; mean.len()], |v| v.to_vec(mean.len())),
                            mean,
                            class: c.class as usize,
                        }
                    })
                    .collect(),
                None,
            ),
        };
        let image = match file.image {
            Some(shape) => Some(image_shape(
                shape,
                components.first().map(|c| c.mean.len()),
            )?),
            None => data_shape,
        };
        let train_examples = file
            .train_examples
            .map(|n| bounded("train_examples", n, 1, MAX_TRAIN_EXAMPLES))
            .transpose()?;
        // The class prior: the mixture's, or uniform over the model's classes.
        let prior = match &model_dir {
            Some(md) => model_prior(md)?,
            None => GaussianMixture::new(components.clone())?.class_prior(),
        };
        let default_steps = match (&process, &model_dir) {
            (Some(ProcessConfig::Ddpm { steps, .. }), _) => *steps,
            (_, Some(md)) => md.scheduler.num_train_timesteps,
            _ => 1000,
        };
        let (sampler, steps) = match &file.sampler {
            None => (d.sampler, default_steps),
            Some(s) => {
                let (sampler, steps) = s.sampler();
                // A model's scheduler takes at most its num_train_timesteps inference steps.
                let most = model_dir
                    .as_ref()
                    .map_or(MAX_STEPS, |md| md.scheduler.num_train_timesteps);
                let steps = bounded(
                    "sampler.steps",
                    steps.unwrap_or(default_steps as u64),
                    1,
                    most,
                )?;
                if let SamplerKind::Ddim { eta, .. } = sampler
                    && !(0.0..=1.0).contains(&eta)
                {
                    return Err(Error::config("sampler.eta", "a number in [0, 1]", eta));
                }
                (sampler, steps)
            }
        };
        let partitions = match file.partitions {
            None if file.mixture.is_none() && model.is_none() => d.partitions.clone(),
            None => vec![],
            Some(p) => p,
        };
        for (i, p) in partitions.iter().enumerate() {
            partition_name(&format!("partitions[{i}].name"), &p.name)?;
        }
        let classes = prior.len();
        InfoSpec::new(prior, partitions.clone())?;
        distinct_columns(&partitions, classes)?;
        let guidance = guidance_of(file.guidance, file.classes.as_deref(), classes)?;
        let trajectories = file.trajectories.unwrap_or(d.trajectories as u64);
        let trajectories = bounded("trajectories", trajectories, 1, MAX_TRAJECTORIES)?;
        let probes = file.probes.unwrap_or(d.probes as u64);
        if probes > crate::rng::MAX_PROBES as u64 {
            return Err(Error::config(
                "probes",
                format!("0..={} Hutchinson probes", crate::rng::MAX_PROBES),
                probes,
            ));
        }
        let cfg = Config {
            process,
            components,
            model,
            model_dir,
            guidance,
            sampler,
            steps,
            partitions,
            trajectories,
            seed: file.seed.unwrap_or(d.seed),
            probes: probes as usize,
            empirical,
            image,
            train_examples,
        };
        let plan = cfg.plan()?; // validates steps against the process
        if cfg.model.is_some()
            && let Some(why) = plan.sampler.online_classifier_refusal()
        {
            return Err(Error::config(
                "sampler.kind",
                "a reverse-SDE sampler for a model (it has no exact posterior)",
                why,
            ));
        }
        let grid = plan.grid;
        let noise_end = match &cfg.process {
            Some(p) => p.noise_end_field(),
            None => "model",
        };
        process_range(&grid, noise_end)?;
        mixture_range(&cfg.components, &grid)?;
        memory(&cfg, &grid, classes)?;
        Ok(cfg)
    }

    /// This config with the command line's `o` applied, validated like a file. `from_file`:
    /// whether this config came from a file; the default config's decision problems belong to
    /// its mixture and are dropped when `o` names a model.
    pub fn with_overrides(&self, o: &Overrides, from_file: bool) -> Result<Config> {
        let mut f = self.to_file();
        if let Some(dir) = &o.model {
            // The folder's scheduler sets the process, as its network replaces the mixture.
            f.mixture = None;
            f.process = None;
            if !from_file {
                f.partitions = Some(vec![]);
            }
            f.model = Some(dir.clone());
        }
        if let Some(n) = o.trajectories {
            f.trajectories = Some(n as u64);
        }
        if let Some(steps) = o.steps {
            f.sampler = Some(SamplerConfig::of(self.sampler, steps));
        }
        if let Some(seed) = o.seed {
            f.seed = Some(seed);
        }
        if let Some(n) = o.probes {
            f.probes = Some(n as u64);
        }
        Config::from_file(f)
    }

    /// The config in the file's form (every key written out).
    pub fn to_file(&self) -> ConfigFile {
        let mixture = self.model.is_none().then(|| match &self.empirical {
            Some(src) => MixtureFile {
                components: vec![],
                from_dataset: Some(src.dataset.clone()),
                var: Some(src.var),
            },
            None => MixtureFile {
                components: self
                    .components
                    .iter()
                    .map(|c| ComponentFile {
                        weight: c.weight,
                        mean: Numbers::List(c.mean.clone()),
                        var: Some(match c.var.first() {
                            Some(&v0) if c.var.iter().all(|v| *v == v0) => Numbers::One(v0),
                            _ => Numbers::List(c.var.clone()),
                        }),
                        class: c.class as u64,
                    })
                    .collect(),
                from_dataset: None,
                var: None,
            },
        });
        ConfigFile {
            process: self.process.clone(),
            mixture,
            model: self.model.clone(),
            sampler: Some(SamplerConfig::of(self.sampler, self.steps)),
            guidance: self.guidance.as_ref().map(|g| g.scale),
            classes: self
                .guidance
                .as_ref()
                .map(|g| g.classes.iter().map(|c| *c as u64).collect()),
            partitions: Some(self.partitions.clone()),
            trajectories: Some(self.trajectories as u64),
            seed: Some(self.seed),
            probes: self.model.is_some().then_some(self.probes as u64),
            image: self.image.map(|s| s.map(|v| v as u64)),
            train_examples: self.train_examples.map(|n| n as u64),
        }
    }

    /// The config as JSON (the schema `from_value` reads).
    pub fn to_json(&self) -> Value {
        // A config of plain numbers, strings and lists always serialises.
        retag(serde_json::to_value(self.to_file()).unwrap_or(Value::Null))
    }

    /// The grid the job's sampler steps over (see [`Config::plan`]).
    pub fn grid(&self) -> Result<Grid> {
        Ok(self.plan()?.grid)
    }

    /// What the job steps over. A mixture job: its process's own grid ([`Process::grid`]), the
    /// sampler as configured, the mixture's exact x_T. A model: for a sampler with a diffusers
    /// scheduler class (ddpm, ddim, euler, euler_ancestral, heun, dpmpp_*), that class's
    /// timesteps, σ's, start and settings (clipping) as the folder's scheduler_config.json makes
    /// them ([`crate::diffusion::Scheduler::plan`]); for infodiff's own samplers (ancestral,
    /// euler_maruyama, heun_ode), which no diffusers class defines, the own grid of the folder's
    /// β process ([`crate::diffusion::Scheduler::process`]) and x_T ~ N(0, I).
    pub fn plan(&self) -> Result<RunPlan> {
        match (&self.model_dir, &self.process) {
            (Some(md), _) => {
                let p = md.scheduler.plan(
                    &self.sampler,
                    self.steps,
                    crate::diffusion::SigmaGrid::Scheduler,
                )?;
                let file = md.scheduler_file.as_ref().map_or(
                    "the bare UNet2DModel's default DDPMScheduler config".into(),
                    |f| f.display().to_string(),
                );
                Ok(RunPlan {
                    grid: p.grid,
                    sampler: p.sampler,
                    init_scale: Some(p.init_scale),
                    grid_from: if has_scheduler_class(&self.sampler) {
                        format!(
                            "the timesteps of {}'s diffusers class from {file}",
                            self.sampler.name()
                        )
                    } else {
                        format!(
                            "the own grid of the β process of {file} (sampler {} has no \
                             diffusers class)",
                            self.sampler.name()
                        )
                    },
                })
            }
            (None, Some(p)) => Ok(RunPlan {
                grid: p.build()?.grid(self.steps)?,
                sampler: self.sampler,
                init_scale: None,
                grid_from: format!("the {} process's own grid", p.kind()),
            }),
            (None, None) => Err(Error::config(
                "process",
                "a process (or a `model`)",
                "nothing",
            )),
        }
    }

    /// This config with the command line's `--guidance W` and `--classes Y1,Y2,…` over the
    /// file's (None keeps the file's), validated like the file (`guidance`, `classes[i]`).
    pub fn with_guidance(&self, scale: Option<f64>, classes: Option<&[usize]>) -> Result<Config> {
        if scale.is_none() && classes.is_none() {
            return Ok(self.clone());
        }
        let mut f = self.to_file();
        if let Some(w) = scale {
            f.guidance = Some(w);
        }
        if let Some(c) = classes {
            f.classes = Some(c.iter().map(|c| *c as u64).collect());
        }
        // A scale given alone keeps the file's labels, if any; labels given alone its scale.
        let k = self.spec()?.classes();
        let g = guidance_of(f.guidance, f.classes.as_deref(), k)?;
        let mut cfg = self.clone();
        cfg.guidance = g;
        Ok(cfg)
    }
    pub fn mixture(&self) -> Result<GaussianMixture> {
        if self.model.is_some() {
            return Err(Error::Unsupported {
                op: "Config::mixture",
                reason: "this job measures a network (`model`), not a mixture".into(),
            });
        }
        GaussianMixture::new(self.components.clone())
    }
    pub fn spec(&self) -> Result<InfoSpec> {
        let prior = match &self.model_dir {
            Some(md) => model_prior(md)?,
            None => self.mixture()?.class_prior(),
        };
        InfoSpec::new(prior, self.partitions.clone())
    }
}

/// The components of the empirical mixture of `src` (one per example, equal weights, isotropic
/// variance `src.var`, class = the example's first factor label) and the data's [C, H, W].
/// Refusals name `mixture.from_dataset` or `mixture.var`.
pub fn empirical_components(src: &EmpiricalSource) -> Result<(Vec<Component>, [usize; 3])> {
    use crate::data::{DataSpec, open_builtin};
    if !(src.var.is_finite() && src.var >= 0.0) {
        return Err(Error::config(
            "mixture.var",
            "a finite variance ≥ 0",
            src.var,
        ));
    }
    let spec: DataSpec = src.dataset.parse().map_err(|_| {
        Error::config(
            "mixture.from_dataset",
            "digits, shapes, shapes:16, shapes:32 or folder:DIR",
            format!("{:?}", src.dataset),
        )
    })?;
    if let DataSpec::Gmm(_) = spec {
        return Err(Error::config(
            "mixture.from_dataset",
            "a data set of images (digits, shapes, folder:DIR), not another mixture",
            format!("{:?}", src.dataset),
        ));
    }
    let data = open_builtin(&spec, 0).map_err(|e| {
        Error::config(
            "mixture.from_dataset",
            format!("data that opens ({:?})", src.dataset),
            e,
        )
    })?;
    let shape = data.shape();
    let d: usize = shape.iter().product();
    let nf = data.factors().len().max(1);
    let (mut image, mut labels) = (vec![0.0f32; d], vec![0i64; nf]);
    let mut out = Vec::with_capacity(data.len());
    for i in 0..data.len() {
        data.example(i, &mut image, &mut labels)?;
        out.push(Component {
            weight: 1.0,
            mean: image.iter().map(|&v| v as f64).collect(),
            var: vec![src.var; d],
            class: labels[0].max(0) as usize,
        });
    }
    Ok((out, shape))
}

/// `image` as [C, H, W]: every size ≥ 1 and C·H·W = D (the mixture's dimension, when known).
pub fn image_shape(shape: [u64; 3], dim: Option<usize>) -> Result<[usize; 3]> {
    let mut out = [0usize; 3];
    for (i, (o, &v)) in out.iter_mut().zip(&shape).enumerate() {
        *o = bounded(&format!("image[{i}]"), v, 1, 1 << 20)?;
    }
    let n: usize = out.iter().product();
    if let Some(d) = dim
        && n != d
    {
        return Err(Error::config(
            "image",
            format!("[C, H, W] with C·H·W = {d} (the mixture's dimension)"),
            format!("{shape:?} (C·H·W = {n})"),
        ));
    }
    Ok(out)
}

/// The `gmm:` training data of a measure config ([`mixture_data`]).
#[derive(Clone, Debug, PartialEq)]
pub struct MixtureData {
    pub mixture: GaussianMixture,
    /// [C, H, W], C·H·W = D.
    pub image: [usize; 3],
    /// `train_examples` (default [`DEFAULT_TRAIN_EXAMPLES`]).
    pub train_examples: usize,
}

/// Reads the config file at `path` for `--data gmm:FILE`: its mixture (`mixture`, or the
/// default config's when absent), its `image` (required: the mixture's coordinates as an image)
/// and `train_examples`. Refusals name the field (`image`: expected C·H·W = D, found …).
pub fn mixture_data(path: &std::path::Path) -> Result<MixtureData> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let cfg = Config::from_json_str(&text, &path.display().to_string())?;
    let mixture = cfg.mixture()?;
    let image = cfg.image.ok_or_else(|| {
        Error::config(
            "image",
            format!(
                "[C, H, W] with C·H·W = {} (the mixture's dimension), for training data",
                mixture.dim()
            ),
            "nothing (missing)",
        )
    })?;
    Ok(MixtureData {
        mixture,
        image,
        train_examples: cfg.train_examples.unwrap_or(DEFAULT_TRAIN_EXAMPLES),
    })
}

/// [`mixture_data`]'s mixture and image shape.
pub fn mixture_image(path: &std::path::Path) -> Result<(GaussianMixture, [usize; 3])> {
    let m = mixture_data(path)?;
    Ok((m.mixture, m.image))
}

/// What a job steps over ([`Config::plan`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RunPlan {
    pub grid: Grid,
    /// The sampler as it runs (a scheduler's settings, e.g. `clip_sample`, filled in).
    pub sampler: SamplerKind,
    /// x_T = init_scale·z in the grid's space; None: the model's own initial state (a mixture's
    /// exact marginal).
    pub init_scale: Option<f64>,
    /// Where the grid came from, in words (for the summary).
    pub grid_from: String,
}

/// Whether `s` has a diffusers scheduler class ([`crate::diffusion::Scheduler::plan`] builds its
/// grid from a model's scheduler config).
pub fn has_scheduler_class(s: &SamplerKind) -> bool {
    !matches!(
        s,
        SamplerKind::Ancestral { .. } | SamplerKind::EulerMaruyama | SamplerKind::HeunOde
    )
}

/// The guidance of a job from the file's `guidance` and `classes` among `k` classes: neither
/// gives none, `classes` alone W = 1 (conditional sampling), `guidance` alone every class in
/// turn. Refusals name `guidance` or `classes[i]`.
fn guidance_of(scale: Option<f64>, classes: Option<&[u64]>, k: usize) -> Result<Option<Guidance>> {
    if scale.is_none() && classes.is_none() {
        return Ok(None);
    }
    let classes = match classes {
        Some(c) => c
            .iter()
            .map(|&c| usize::try_from(c).unwrap_or(usize::MAX))
            .collect(),
        None => (0..k).collect(),
    };
    Guidance::new(scale.unwrap_or(1.0), classes, k).map(Some)
}

/// Uniform prior over the classes of the model in `md` (reads its config.json only).
fn model_prior(md: &ModelDir) -> Result<Vec<f64>> {
    let k =
        crate::score::unet::UNetScore::classes_of(&crate::nn::unet::UNetConfig::load(&md.unet)?)?;
    Ok(vec![1.0 / k as f64; k])
}

// ---- validators ------------------------------------------------------------------------------

/// Partition names whose `h_<name>` or `rate_<name>` would be another column of curves.csv.
const RESERVED: [&str; 6] = ["online", "online_se", "exact", "exact_se", "rb", "fd"];
const RESERVED_PREFIXES: [&str; 5] = ["class_", "fd_", "rb_", "online_", "exact_"];

/// Refuses a partition name that would duplicate a built-in column of curves.csv.
pub fn partition_name(field: &str, name: &str) -> Result<()> {
    if RESERVED.contains(&name) || RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(Error::config(
            field,
            format!(
                "a name whose h_/rate_ columns are not built-in ones (not {} nor starting with {})",
                RESERVED.join(", "),
                RESERVED_PREFIXES.join(", ")
            ),
            format!("{name:?}"),
        ));
    }
    Ok(())
}

/// Every curves.csv column once (`x` and `x_se` would both give `rate_x_se`): the first
/// partition whose columns, added to those before it, repeat one is named.
fn distinct_columns(partitions: &[Partition], classes: usize) -> Result<()> {
    let names: Vec<String> = partitions.iter().map(|p| p.name.clone()).collect();
    for at in 0..names.len() {
        let cols = Curves::column_names(&names[..=at], classes);
        if let Some(dup) = cols
            .iter()
            .enumerate()
            .find(|(i, c)| cols[..*i].contains(c))
        {
            return Err(Error::config(
                format!("partitions[{at}].name"),
                "names whose curves.csv columns differ from every other column",
                format!("{:?}, which makes two columns named {:?}", names[at], dup.1),
            ));
        }
    }
    Ok(())
}

/// The process on the grid: finite coefficients, noise at the noise end (σ_T ≥ s_T/1000) and σ
/// no larger than [`MAX_SIGMA`]. `field` names the process parameter that sets the noise end.
pub fn process_range(grid: &Grid, field: &str) -> Result<()> {
    for p in &grid.points {
        for (name, v) in [("s", p.s), ("σ", p.sigma), ("f", p.f), ("g²", p.g2)] {
            if !v.is_finite() || (name == "σ" && v < 0.0) {
                return Err(Error::config(
                    "process",
                    "a schedule with finite coefficients on the grid",
                    format!("{name} = {v} at t = {}", p.t),
                ));
            }
        }
    }
    let end = grid.points[0];
    let lam: Vec<f64> = grid
        .points
        .iter()
        .map(|p| p.log_snr())
        .filter(|l| l.is_finite())
        .collect();
    let (lo, hi) = lam
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let lam_t = end.log_snr();
    if !(end.sigma > 0.0 && lam_t.is_finite() && lam_t <= MAX_LOG_SNR_T) {
        return Err(Error::config(
            field,
            format!(
                "a process whose noise end carries noise: σ_T ≥ s_T/1000 (log-SNR at T ≤ {MAX_LOG_SNR_T:.1})"
            ),
            format!(
                "σ_T = {:e}, s_T = {}, log-SNR at T = {lam_t}, log-SNR range on the grid [{lo}, {hi}]",
                end.sigma, end.s
            ),
        ));
    }
    let smax = grid.points.iter().map(|p| p.sigma).fold(0.0, f64::max);
    if smax > MAX_SIGMA {
        return Err(Error::config(
            field,
            format!("σ ≤ {MAX_SIGMA:e} on the grid (f32 states)"),
            format!("σ = {smax:e}"),
        ));
    }
    Ok(())
}

/// The mixture's scale against the grid: f32 states must resolve the smallest noise on the grid,
/// |mean| + √var ≤ 0.1 σ_min · 2²⁴.
pub fn mixture_range(components: &[Component], grid: &Grid) -> Result<()> {
    let smin = grid
        .points
        .iter()
        .map(|p| p.sigma)
        .filter(|s| *s > 0.0)
        .fold(f64::INFINITY, f64::min);
    let limit = 0.1 * smin * (1u64 << 24) as f64;
    for (i, c) in components.iter().enumerate() {
        let m = c.mean.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let v = c.var.iter().fold(0.0f64, |a, v| a.max(*v));
        if m + v.sqrt() > limit {
            let key = if m >= v.sqrt() { "mean" } else { "var" };
            return Err(Error::config(
                format!("mixture.components[{i}].{key}"),
                format!(
                    "|mean| + √var ≤ {limit:.4e} (f32 states resolve the grid's smallest noise σ = {smin:.3e} to 10%)"
                ),
                format!("|mean| = {m:e}, var = {v:e}"),
            ));
        }
    }
    Ok(())
}

/// Refuses a job whose estimated memory exceeds this machine's, naming the size it would need.
pub fn memory(cfg: &Config, grid: &Grid, classes: usize) -> Result<()> {
    let Some(limit) = crate::io::memory_limit() else {
        return Ok(());
    };
    let e = super::runner::estimate(cfg, grid, classes, rayon::current_num_threads())?;
    if e.bytes > limit {
        return Err(Error::config(
            if cfg.model.is_some() {
                "model"
            } else {
                "sampler.steps"
            },
            format!(
                "a job that fits in this machine's {} of memory",
                super::runner::gib(limit)
            ),
            format!(
                "{} grid points × {classes} classes × {} threads needing about {}",
                grid.points.len(),
                rayon::current_num_threads(),
                super::runner::gib(e.bytes)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(v: Value) -> String {
        Config::from_value(&v).unwrap_err().to_string()
    }

    #[test]
    fn default_config_round_trips_through_json() {
        let d = default_config();
        assert_eq!(Config::from_value(&d.to_json()).unwrap(), d);
        let text = serde_json::to_string_pretty(&d.to_json()).unwrap();
        assert_eq!(Config::from_json_str(&text, "t").unwrap(), d);
        // the JSON form is internally tagged
        assert_eq!(d.to_json()["process"]["kind"], "ddpm");
        assert_eq!(d.to_json()["sampler"]["kind"], "ancestral");
    }

    #[test]
    fn every_kind_round_trips() {
        let procs = [
            json!({"kind": "ddpm", "beta_start": 1e-4, "beta_end": 0.02, "steps": 100}),
            json!({"kind": "vp", "beta_min": 0.1, "beta_max": 20}),
            json!({"kind": "vp_cosine", "s": 0.008, "t_max": 0.999}),
            json!({"kind": "subvp", "beta_min": 0.1, "beta_max": 20}),
            json!({"kind": "ve", "sigma_min": 0.01, "sigma_max": 50}),
        ];
        let samplers = [
            json!({"kind": "ancestral", "steps": 50, "variance": "beta_tilde"}),
            json!({"kind": "ddim", "steps": 50, "eta": 0.5}),
            json!({"kind": "euler_maruyama", "steps": 50}),
            json!({"kind": "heun_ode", "steps": 50}),
            json!({"kind": "ddpm", "steps": 50, "clip": 1.0}),
            json!({"kind": "euler", "steps": 50}),
            json!({"kind": "euler_ancestral", "steps": 50}),
            json!({"kind": "heun", "steps": 50}),
            json!({"kind": "dpmpp_2m", "steps": 50}),
            json!({"kind": "dpmpp_2m_sde", "steps": 50}),
            json!({"kind": "dpmpp_3m_sde", "steps": 50}),
        ];
        assert_eq!(procs.len(), PROCESS_KINDS.len());
        assert_eq!(samplers.len(), SAMPLER_KINDS.len());
        for (p, k) in procs.iter().zip(PROCESS_KINDS) {
            for s in &samplers {
                let v = json!({"process": p, "sampler": s, "trajectories": 8});
                let c = Config::from_value(&v).unwrap_or_else(|e| panic!("{v}: {e}"));
                assert_eq!(c.process.as_ref().unwrap().kind(), k);
                assert_eq!(Config::from_value(&c.to_json()).unwrap(), c, "{v}");
            }
        }
    }

    #[test]
    fn guidance_reads_round_trips_and_names_bad_values() {
        let c = Config::from_value(&json!({"guidance": 2.5, "classes": [3, 1]})).unwrap();
        let g = c.guidance.clone().unwrap();
        assert_eq!((g.scale, g.classes.clone()), (2.5, vec![3, 1]));
        assert_eq!(Config::from_value(&c.to_json()).unwrap(), c);
        // alone: `classes` is conditional sampling, `guidance` cycles every class
        let c = Config::from_value(&json!({"classes": [2]})).unwrap();
        assert_eq!(c.guidance.unwrap().scale, 1.0);
        let c = Config::from_value(&json!({"guidance": 3})).unwrap();
        assert_eq!(c.guidance.clone().unwrap().classes, vec![0, 1, 2, 3]);
        // the command line's over the file's
        let o = c.with_guidance(Some(0.5), Some(&[1])).unwrap();
        assert_eq!(o.guidance.unwrap(), Guidance::new(0.5, vec![1], 4).unwrap());
        for (v, field, found) in [
            (json!({"classes": [0, 4]}), "`classes[1]`", "4"),
            (json!({"classes": []}), "`classes`", "[]"),
            (json!({"guidance": "x"}), "`guidance`", "\"x\""),
            (json!({"classes": [-1]}), "`classes[0]`", "-1"),
        ] {
            let e = refusal(v.clone());
            assert!(e.contains(field) && e.contains(found), "{v}: {e}");
        }
        let e = default_config()
            .with_guidance(Some(f64::INFINITY), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`guidance`") && e.contains("inf"), "{e}");
    }

    #[test]
    fn defaults_fill_missing_keys() {
        let c =
            Config::from_value(&json!({"process": {"kind": "ve"}, "sampler": {"kind": "ddim"}}))
                .unwrap();
        assert_eq!(
            c.process,
            Some(ProcessConfig::Ve {
                sigma_min: 0.01,
                sigma_max: 50.0
            })
        );
        assert_eq!(
            (c.sampler, c.steps),
            (
                SamplerKind::Ddim {
                    eta: 0.0,
                    clip: None
                },
                1000
            )
        );
        let c = Config::from_value(&json!({"process": {"kind": "ddpm", "steps": 30}})).unwrap();
        assert_eq!(c.steps, 30, "sampler steps default to the DDPM process's");
        assert_eq!(Config::from_value(&json!({})).unwrap(), default_config());
    }

    #[test]
    fn overrides_are_validated_like_the_file() {
        let d = default_config();
        let o = Overrides {
            trajectories: Some(7),
            steps: Some(20),
            seed: Some(3),
            ..Overrides::default()
        };
        let c = d.with_overrides(&o, false).unwrap();
        assert_eq!((c.trajectories, c.steps, c.seed), (7, 20, 3));
        assert_eq!((c.sampler, c.partitions.len()), (d.sampler, 3));
        let o = Overrides {
            steps: Some(MAX_STEPS + 1),
            ..Overrides::default()
        };
        let e = d.with_overrides(&o, true).unwrap_err().to_string();
        assert!(e.contains("`sampler.steps`"), "{e}");
        assert_eq!(d.with_overrides(&Overrides::default(), true).unwrap(), d);
    }

    #[test]
    fn unknown_fields_are_refused_naming_their_path() {
        for (v, field) in [
            (json!({"colour": 1}), "`colour`"),
            (
                json!({"process": {"kind": "vp", "beta": 1}}),
                "`process.beta`",
            ),
            (
                json!({"sampler": {"kind": "ddim", "variance": "beta"}}),
                "`sampler.variance`",
            ),
            (
                json!({"mixture": {"components": [{"mean": [0], "class": 0, "w": 1}]}}),
                "`mixture.components[0].w`",
            ),
            (json!({"mixture": {"comps": []}}), "`mixture.comps`"),
            (
                json!({"partitions": [{"name": "x", "a": [0], "b": [1], "c": []}]}),
                "`partitions[0].c`",
            ),
        ] {
            let e = refusal(v.clone());
            assert!(e.contains(field) && e.contains("unknown key"), "{v}: {e}");
        }
    }

    #[test]
    fn wrong_kinds_are_refused_listing_the_valid_ones() {
        let e = refusal(json!({"process": {"kind": "vpp"}}));
        assert!(e.contains("`process.kind`") && e.contains("\"vpp\""), "{e}");
        for k in PROCESS_KINDS {
            assert!(e.contains(k), "{k} not listed: {e}");
        }
        let e = refusal(json!({"sampler": {"kind": "dpm", "steps": 3}}));
        assert!(e.contains("`sampler.kind`"), "{e}");
        for k in SAMPLER_KINDS {
            assert!(e.contains(k), "{k} not listed: {e}");
        }
        let e = refusal(json!({"sampler": {"steps": 3}}));
        assert!(e.contains("`sampler.kind`") && e.contains("missing"), "{e}");
        let e = refusal(json!({"process": {"kind": 3}}));
        assert!(
            e.contains("`process.kind`") && e.contains("a string"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_name_the_field_inside_tagged_and_listed_values() {
        for (v, field, found) in [
            (
                json!({"process": {"kind": "vp", "beta_min": "x"}}),
                "`process.beta_min`",
                "\"x\"",
            ),
            (
                json!({"sampler": {"kind": "ddim", "steps": -3}}),
                "`sampler.steps`",
                "-3",
            ),
            (
                json!({"sampler": {"kind": "ancestral", "variance": "b"}}),
                "`sampler.variance`",
                "b",
            ),
            (
                json!({"mixture": {"components": [{"mean": [0, "y"], "class": 0}]}}),
                "`mixture.components[0].mean[1]`",
                "\"y\"",
            ),
            (
                json!({"mixture": {"components": [{"mean": [0], "class": 0}, {"class": 1}]}}),
                "`mixture.components[1].mean`",
                "missing",
            ),
            (
                json!({"partitions": [{"name": "x", "a": [0, 1.5], "b": [1]}]}),
                "`partitions[0].a[1]`",
                "1.5",
            ),
            (
                json!({"trajectories": "many"}),
                "`trajectories`",
                "\"many\"",
            ),
            (json!({"seed": -1}), "`seed`", "-1"),
            (json!({"model": 3}), "`model`", "3"),
            (json!([1, 2]), "``", "a list"),
            (
                json!({"process": 3}),
                "`process`: expected an object with a `kind`",
                "found 3",
            ),
            (
                json!({"sampler": {"kind": "ancestral", "variance": 3}}),
                "`sampler.variance`: expected a string",
                "found 3",
            ),
            (
                json!({"trajectories": 1.5}),
                "`trajectories`: expected a whole number ≥ 0",
                "found 1.5",
            ),
            (json!({"sampler": [1, 2]}), "`sampler`", "a list"),
            (
                json!({"mixture": {"components": [[1, [0], 0, 0]]}}),
                "`mixture.components[0]`",
                "a list",
            ),
            (
                json!({"partitions": [["x", [0], [1]]]}),
                "`partitions[0]`",
                "a list",
            ),
        ] {
            let e = refusal(v.clone());
            assert!(e.contains(field) && e.contains(found), "{v}: {e}");
        }
    }
}
