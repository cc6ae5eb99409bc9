//! The `infodiff measure` job: a JSON config (process, mixture, sampler, decision problems,
//! trajectories, seed), the run, and its outputs (`curves.csv`, `summary.json`, `entropy.svg`),
//! written as a set (see [`crate::io::atomic`]).
//!
//! ```
//! use infodiff::app::{self, Config};
//! let cfg = Config::from_json_str(r#"{
//!     "process": {"kind": "vp", "beta_min": 0.1, "beta_max": 20},
//!     "mixture": {"components": [{"mean": [-1], "var": 0, "class": 0}, {"mean": [1], "var": 0, "class": 1}]},
//!     "sampler": {"kind": "euler_maruyama", "steps": 200},
//!     "partitions": [{"name": "sign", "a": [0], "b": [1]}],
//!     "trajectories": 512, "seed": 1
//! }"#, "inline").unwrap();
//! let report = app::run(&cfg, None, None).unwrap();
//! let c = &report.curves;
//! assert_eq!(c.t.len(), 201);                       // one point per grid point, noise first
//! assert!((c.h_online[0] - 2f64.ln()).abs() < 1e-6); // the prior at the noise end
//! assert!(c.h_online[200] < 1e-3);                   // decided at the data end
//! // refusals name the field
//! let err = Config::from_json_str(r#"{"trajectories": 0}"#, "inline").unwrap_err();
//! assert!(err.to_string().contains("`trajectories`"));
//! ```

use std::path::Path;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::diffusion::{AncestralVariance, Ddpm, Grid, Process, Sampler, SubVp, Ve, Vp, VpCosine};
use crate::error::{Error, Result};
use crate::fused::mixture_trajectory::{self, MixturePlan};
use crate::info::{Curves, InfoSpec, Partition, Tracking, bits, measure_trajectories, peaks};
use crate::rng::Noise;
use crate::score::{Component, GaussianMixture, ScoreModel};
use crate::simd::{IsaKind, detected};

pub mod bench;
pub mod check;
pub mod denoise;
pub mod plot;

pub use check::{Estimate, MAX_STEPS, MAX_TRAJECTORIES, check_results, estimate};

/// The forward process of a job.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessConfig {
    Ddpm {
        beta_start: f64,
        beta_end: f64,
        steps: usize,
    },
    Vp {
        beta_min: f64,
        beta_max: f64,
    },
    VpCosine {
        s: f64,
        t_max: f64,
    },
    SubVp {
        beta_min: f64,
        beta_max: f64,
    },
    Ve {
        sigma_min: f64,
        sigma_max: f64,
    },
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
    fn to_json(&self) -> Value {
        match *self {
            ProcessConfig::Ddpm {
                beta_start,
                beta_end,
                steps,
            } => {
                json!({"kind": "ddpm", "beta_start": beta_start, "beta_end": beta_end, "steps": steps})
            }
            ProcessConfig::Vp { beta_min, beta_max } => {
                json!({"kind": "vp", "beta_min": beta_min, "beta_max": beta_max})
            }
            ProcessConfig::VpCosine { s, t_max } => {
                json!({"kind": "vp_cosine", "s": s, "t_max": t_max})
            }
            ProcessConfig::SubVp { beta_min, beta_max } => {
                json!({"kind": "subvp", "beta_min": beta_min, "beta_max": beta_max})
            }
            ProcessConfig::Ve {
                sigma_min,
                sigma_max,
            } => {
                json!({"kind": "ve", "sigma_min": sigma_min, "sigma_max": sigma_max})
            }
        }
    }
}

/// A measurement job.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub process: ProcessConfig,
    /// The exact mixture (empty when `model` is set).
    pub components: Vec<Component>,
    /// A diffusers UNet2DModel folder to measure instead of a mixture.
    pub model: Option<std::path::PathBuf>,
    pub sampler: Sampler,
    /// Sampler steps (grid transitions).
    pub steps: usize,
    pub partitions: Vec<Partition>,
    pub trajectories: usize,
    pub seed: u64,
    /// Hutchinson probes per state and step for a network's ∇·s (`hx0_rate`); 0: none. Exact
    /// mixtures have their divergence in closed form and ignore it.
    pub probes: usize,
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
    Config {
        process: ProcessConfig::Ddpm {
            beta_start: 1e-4,
            beta_end: 0.02,
            steps: 1000,
        },
        components: vec![comp(-8.0, 0), comp(-4.0, 1), comp(6.0, 2), comp(8.0, 3)],
        model: None,
        sampler: Sampler::Ancestral {
            variance: AncestralVariance::Beta,
        },
        steps: 1000,
        partitions: vec![
            Partition {
                name: "left_right".into(),
                a: vec![0, 1],
                b: vec![2, 3],
            },
            Partition {
                name: "m8_m4".into(),
                a: vec![0],
                b: vec![1],
            },
            Partition {
                name: "p6_p8".into(),
                a: vec![2],
                b: vec![3],
            },
        ],
        trajectories: 20_000,
        seed: 0,
        probes: 1,
    }
}

// ---- parsing with field-named errors -------------------------------------------------------

fn type_name(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("{n}"),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn as_obj<'a>(v: &'a Value, path: &str, allowed: &[&str]) -> Result<&'a Map<String, Value>> {
    let m = v
        .as_object()
        .ok_or_else(|| Error::config(path, "an object", type_name(v)))?;
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        let at = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        return Err(Error::config(
            at,
            format!("one of the keys {}", allowed.join(", ")),
            "an unknown key",
        ));
    }
    Ok(m)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn num(m: &Map<String, Value>, path: &str, key: &str, default: Option<f64>) -> Result<f64> {
    match m.get(key) {
        None => {
            default.ok_or_else(|| Error::config(join(path, key), "a number", "nothing (missing)"))
        }
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| Error::config(join(path, key), "a number", type_name(v))),
    }
}

fn count(m: &Map<String, Value>, path: &str, key: &str, default: Option<u64>) -> Result<u64> {
    match m.get(key) {
        None => default
            .ok_or_else(|| Error::config(join(path, key), "a whole number", "nothing (missing)")),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Error::config(join(path, key), "a whole number ≥ 0", type_name(v))),
    }
}

fn kind<'a>(m: &'a Map<String, Value>, path: &str, kinds: &[&str]) -> Result<&'a str> {
    let v = m.get("kind").ok_or_else(|| {
        Error::config(
            join(path, "kind"),
            format!("one of {}", kinds.join(", ")),
            "nothing (missing)",
        )
    })?;
    let s = v
        .as_str()
        .ok_or_else(|| Error::config(join(path, "kind"), "a string", type_name(v)))?;
    if !kinds.contains(&s) {
        return Err(Error::config(
            join(path, "kind"),
            format!("one of {}", kinds.join(", ")),
            format!("{s:?}"),
        ));
    }
    Ok(s)
}

/// A JSON list of numbers; an entry that is not one is named `path[j]`.
fn number_list(a: &[Value], path: &str) -> Result<Vec<f64>> {
    a.iter()
        .enumerate()
        .map(|(j, x)| {
            x.as_f64()
                .ok_or_else(|| Error::config(format!("{path}[{j}]"), "a number", type_name(x)))
        })
        .collect()
}

fn class_list(v: Option<&Value>, path: &str) -> Result<Vec<usize>> {
    let v = v.ok_or_else(|| Error::config(path, "a list of class numbers", "nothing (missing)"))?;
    let a = v
        .as_array()
        .ok_or_else(|| Error::config(path, "a list of class numbers", type_name(v)))?;
    a.iter()
        .enumerate()
        .map(|(i, c)| {
            c.as_u64().map(|c| c as usize).ok_or_else(|| {
                Error::config(format!("{path}[{i}]"), "a class number", type_name(c))
            })
        })
        .collect()
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
        let top = as_obj(
            v,
            "",
            &[
                "process",
                "mixture",
                "model",
                "sampler",
                "partitions",
                "trajectories",
                "seed",
                "probes",
            ],
        )?;
        let d = default_config();
        // process
        let process = match top.get("process") {
            None => d.process.clone(),
            Some(pv) => {
                let kinds = ["ddpm", "vp", "vp_cosine", "subvp", "ve"];
                let pm = pv
                    .as_object()
                    .ok_or_else(|| Error::config("process", "an object", type_name(pv)))?;
                let path = "process";
                match kind(pm, path, &kinds)? {
                    "ddpm" => {
                        as_obj(pv, path, &["kind", "beta_start", "beta_end", "steps"])?;
                        let steps = count(pm, path, "steps", Some(1000))?;
                        let steps = check::bounded("process.steps", steps, 1, MAX_STEPS)?;
                        ProcessConfig::Ddpm {
                            beta_start: num(pm, path, "beta_start", Some(1e-4))?,
                            beta_end: num(pm, path, "beta_end", Some(0.02))?,
                            steps,
                        }
                    }
                    "vp" => {
                        as_obj(pv, path, &["kind", "beta_min", "beta_max"])?;
                        ProcessConfig::Vp {
                            beta_min: num(pm, path, "beta_min", Some(0.1))?,
                            beta_max: num(pm, path, "beta_max", Some(20.0))?,
                        }
                    }
                    "vp_cosine" => {
                        as_obj(pv, path, &["kind", "s", "t_max"])?;
                        ProcessConfig::VpCosine {
                            s: num(pm, path, "s", Some(0.008))?,
                            t_max: num(pm, path, "t_max", Some(0.999))?,
                        }
                    }
                    "subvp" => {
                        as_obj(pv, path, &["kind", "beta_min", "beta_max"])?;
                        ProcessConfig::SubVp {
                            beta_min: num(pm, path, "beta_min", Some(0.1))?,
                            beta_max: num(pm, path, "beta_max", Some(20.0))?,
                        }
                    }
                    _ => {
                        as_obj(pv, path, &["kind", "sigma_min", "sigma_max"])?;
                        ProcessConfig::Ve {
                            sigma_min: num(pm, path, "sigma_min", Some(0.01))?,
                            sigma_max: num(pm, path, "sigma_max", Some(50.0))?,
                        }
                    }
                }
            }
        };
        process.build()?; // validates values, naming the field
        // model or mixture
        let model = match top.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(p)) => Some(std::path::PathBuf::from(p)),
            Some(other) => return Err(Error::config("model", "a folder path", type_name(other))),
        };
        if model.is_some() && top.get("mixture").is_some() {
            return Err(Error::config(
                "model",
                "either `model` or `mixture`",
                "both",
            ));
        }
        if model.is_some() && !matches!(process, ProcessConfig::Ddpm { .. }) {
            return Err(Error::config(
                "process.kind",
                "\"ddpm\" for a model (networks take diffusers' DDPM timestep i − 1 for state x_i)",
                format!("{:?}", process.to_json()["kind"].as_str().unwrap_or("?")),
            ));
        }
        let components = match top.get("mixture") {
            None if model.is_some() => vec![],
            None => d.components.clone(),
            Some(mv) => {
                let mm = as_obj(mv, "mixture", &["components"])?;
                let cv = mm.get("components").ok_or_else(|| {
                    Error::config(
                        "mixture.components",
                        "a list of components",
                        "nothing (missing)",
                    )
                })?;
                let list = cv.as_array().ok_or_else(|| {
                    Error::config("mixture.components", "a list of components", type_name(cv))
                })?;
                let mut comps = Vec::with_capacity(list.len());
                for (i, c) in list.iter().enumerate() {
                    let path = format!("mixture.components[{i}]");
                    let cm = as_obj(c, &path, &["weight", "mean", "var", "class"])?;
                    let weight = num(cm, &path, "weight", Some(1.0))?;
                    let mv = cm.get("mean").ok_or_else(|| {
                        Error::config(
                            join(&path, "mean"),
                            "a list of numbers",
                            "nothing (missing)",
                        )
                    })?;
                    let mean: Vec<f64> = match mv {
                        Value::Array(a) => number_list(a, &join(&path, "mean"))?,
                        Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN)],
                        other => {
                            return Err(Error::config(
                                join(&path, "mean"),
                                "a list of numbers",
                                type_name(other),
                            ));
                        }
                    };
                    let var = match cm.get("var") {
                        None => vec![0.0; mean.len()],
                        Some(Value::Number(n)) => vec![n.as_f64().unwrap_or(f64::NAN); mean.len()],
                        Some(Value::Array(a)) => number_list(a, &join(&path, "var"))?,
                        Some(other) => {
                            return Err(Error::config(
                                join(&path, "var"),
                                "a number or a list of numbers",
                                type_name(other),
                            ));
                        }
                    };
                    let class = count(cm, &path, "class", None)? as usize;
                    comps.push(Component {
                        weight,
                        mean,
                        var,
                        class,
                    });
                }
                comps
            }
        };
        // The class prior: the mixture's, or uniform over the model's classes.
        let prior = match &model {
            Some(dir) => model_prior(dir)?,
            None => GaussianMixture::new(components.clone())?.class_prior(),
        };
        // sampler
        let (sampler, steps) = match top.get("sampler") {
            None => (
                d.sampler,
                match process {
                    ProcessConfig::Ddpm { steps, .. } => steps,
                    _ => 1000,
                },
            ),
            Some(sv) => {
                let path = "sampler";
                let sm = sv
                    .as_object()
                    .ok_or_else(|| Error::config(path, "an object", type_name(sv)))?;
                let k = kind(
                    sm,
                    path,
                    &["ancestral", "ddim", "euler_maruyama", "heun_ode"],
                )?;
                let default_steps = match process {
                    ProcessConfig::Ddpm { steps, .. } => steps as u64,
                    _ => 1000,
                };
                let steps = count(sm, path, "steps", Some(default_steps))?;
                let steps = check::bounded("sampler.steps", steps, 1, MAX_STEPS)?;
                let sampler = match k {
                    "ancestral" => {
                        as_obj(sv, path, &["kind", "steps", "variance"])?;
                        let variance = match sm.get("variance").map(|v| (v, v.as_str())) {
                            None | Some((_, Some("beta"))) => AncestralVariance::Beta,
                            Some((_, Some("beta_tilde"))) => AncestralVariance::BetaTilde,
                            Some((v, _)) => {
                                return Err(Error::config(
                                    "sampler.variance",
                                    "\"beta\" or \"beta_tilde\"",
                                    type_name(v),
                                ));
                            }
                        };
                        Sampler::Ancestral { variance }
                    }
                    "ddim" => {
                        as_obj(sv, path, &["kind", "steps", "eta"])?;
                        let eta = num(sm, path, "eta", Some(0.0))?;
                        if !(0.0..=1.0).contains(&eta) {
                            return Err(Error::config("sampler.eta", "a number in [0, 1]", eta));
                        }
                        Sampler::Ddim { eta }
                    }
                    "euler_maruyama" => {
                        as_obj(sv, path, &["kind", "steps"])?;
                        Sampler::EulerMaruyama
                    }
                    _ => {
                        as_obj(sv, path, &["kind", "steps"])?;
                        Sampler::HeunOde
                    }
                };
                (sampler, steps)
            }
        };
        // partitions
        let partitions = match top.get("partitions") {
            None if top.get("mixture").is_none() && model.is_none() => d.partitions.clone(),
            None => vec![],
            Some(pv) => {
                let list = pv
                    .as_array()
                    .ok_or_else(|| Error::config("partitions", "a list", type_name(pv)))?;
                let mut out = vec![];
                for (i, p) in list.iter().enumerate() {
                    let path = format!("partitions[{i}]");
                    let pm = as_obj(p, &path, &["name", "a", "b"])?;
                    let name = match pm.get("name") {
                        Some(Value::String(s)) => s.clone(),
                        Some(other) => {
                            return Err(Error::config(
                                join(&path, "name"),
                                "a string",
                                type_name(other),
                            ));
                        }
                        None => {
                            return Err(Error::config(
                                join(&path, "name"),
                                "a string",
                                "nothing (missing)",
                            ));
                        }
                    };
                    check::partition_name(&join(&path, "name"), &name)?;
                    out.push(Partition {
                        name,
                        a: class_list(pm.get("a"), &join(&path, "a"))?,
                        b: class_list(pm.get("b"), &join(&path, "b"))?,
                    });
                }
                out
            }
        };
        let classes = prior.len();
        InfoSpec::new(prior, partitions.clone())?;
        // Every curves.csv column once (`x` and `x_se` would both give `rate_x_se`): the first
        // partition whose columns, added to those before it, repeat one is named.
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
        if model.is_some()
            && let Some(why) = sampler.online_classifier_refusal()
        {
            return Err(Error::config(
                "sampler.kind",
                "a reverse-SDE sampler for a model (it has no exact posterior)",
                why,
            ));
        }
        let trajectories = count(top, "", "trajectories", Some(d.trajectories as u64))?;
        let trajectories = check::bounded("trajectories", trajectories, 1, MAX_TRAJECTORIES)?;
        let seed = count(top, "", "seed", Some(0))?;
        let probes = count(top, "", "probes", Some(d.probes as u64))? as usize;
        if probes > crate::rng::MAX_PROBES {
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
            sampler,
            steps,
            partitions,
            trajectories,
            seed,
            probes,
        };
        let grid = cfg.grid()?; // validates steps against the process
        let noise_end = match cfg.process {
            ProcessConfig::Ddpm { .. } => "process.beta_end",
            ProcessConfig::Vp { .. } | ProcessConfig::SubVp { .. } => "process.beta_max",
            ProcessConfig::VpCosine { .. } => "process.t_max",
            ProcessConfig::Ve { .. } => "process.sigma_max",
        };
        check::process_range(&grid, noise_end)?;
        check::mixture_range(&cfg.components, &grid)?;
        check::memory(&cfg, &grid, classes)?;
        Ok(cfg)
    }

    /// The config as JSON (the schema `from_value` reads).
    pub fn to_json(&self) -> Value {
        let comps: Vec<Value> = self
            .components
            .iter()
            .map(|c| {
                let var = if c.var.iter().all(|v| *v == c.var[0]) {
                    json!(c.var[0])
                } else {
                    json!(c.var)
                };
                json!({"weight": c.weight, "mean": c.mean, "var": var, "class": c.class})
            })
            .collect();
        let sampler = match self.sampler {
            Sampler::Ancestral { variance } => {
                json!({"kind": "ancestral", "steps": self.steps, "variance": variance})
            }
            Sampler::Ddim { eta } => json!({"kind": "ddim", "steps": self.steps, "eta": eta}),
            Sampler::EulerMaruyama => json!({"kind": "euler_maruyama", "steps": self.steps}),
            Sampler::HeunOde => json!({"kind": "heun_ode", "steps": self.steps}),
        };
        let mut v = json!({
            "process": self.process.to_json(),
            "mixture": {"components": comps},
            "sampler": sampler,
            "partitions": self.partitions,
            "trajectories": self.trajectories,
            "seed": self.seed,
        });
        if let Some(dir) = &self.model {
            let m = v.as_object_mut().expect("object");
            m.remove("mixture");
            m.insert("model".into(), json!(dir.display().to_string()));
            m.insert("probes".into(), json!(self.probes));
        }
        v
    }

    pub fn grid(&self) -> Result<Grid> {
        self.process.build()?.grid(self.steps)
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
        let prior = match &self.model {
            Some(dir) => model_prior(dir)?,
            None => self.mixture()?.class_prior(),
        };
        InfoSpec::new(prior, self.partitions.clone())
    }
}

/// Uniform prior over the classes of the model in `dir` (reads config.json only).
fn model_prior(dir: &std::path::Path) -> Result<Vec<f64>> {
    let k = crate::score::unet::UNetScore::classes_of(&crate::nn::unet::UNetConfig::load(dir)?)?;
    Ok(vec![1.0 / k as f64; k])
}

/// Which implementation ran the trajectories.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The fused SIMD mixture kernel (stochastic samplers).
    Fused(IsaKind),
    /// The fused mixture kernel on the GPU (kernels/mixture_trajectory.cu).
    FusedCuda,
    /// The generic sampler loop with the information observer (any sampler and model; a
    /// network runs on the CPU).
    Generic,
    /// The device-resident neural loop on the GPU (`cuda::neural`: the U-Net and the fused
    /// step `kernels/sde_step.cu` on the device, the observer's sums built from its records).
    NeuralCuda,
}

impl Engine {
    pub fn name(&self) -> String {
        match self {
            Engine::Fused(k) => format!("fused ({})", k.name()),
            Engine::FusedCuda => "fused (cuda)".into(),
            Engine::Generic => "generic".into(),
            Engine::NeuralCuda => "device-resident neural (cuda)".into(),
        }
    }
}

/// A finished job.
pub struct Report {
    pub config: Config,
    pub curves: Curves,
    pub engine: Engine,
    pub wall_s: f64,
    pub trajectory_steps_per_s: f64,
    pub threads: usize,
}

/// Runs a job on the current rayon pool. `progress` receives finished trajectory counts.
pub fn run(
    cfg: &Config,
    engine: Option<Engine>,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<Report> {
    run_on(cfg, None, engine, progress)
}

/// Why the GPU's kernels cannot run job `cfg` (a shape past a kernel's limits), if they cannot:
/// `--device auto` then runs it on the CPU, saying this. None: the GPU path takes it (or the job
/// has no GPU path, which the caller decides from the sampler).
pub fn gpu_limit(cfg: &Config) -> Option<String> {
    if cfg.model.is_some() {
        use crate::fused::sde_step::{MAX_CLASSES, MAX_PARTITIONS};
        let spec = cfg.spec().ok()?;
        let (k, np) = (spec.classes(), spec.partitions.len());
        if k > MAX_CLASSES {
            return Some(format!(
                "the fused neural step takes at most {MAX_CLASSES} classes, this model has {k}"
            ));
        }
        return (np > MAX_PARTITIONS).then(|| {
            format!(
                "the fused neural step records at most {MAX_PARTITIONS} decision problems, this job has {np}"
            )
        });
    }
    if !cfg.sampler.supports_online_classifier() {
        return None;
    }
    // The job's shape against the kernel's per-thread arrays (no plan is built for this).
    let m = cfg.mixture().ok()?;
    let spec = cfg.spec().ok()?;
    crate::fused::mixture_trajectory::gpu_shape_limit([
        m.dim(),
        spec.classes(),
        m.components().len(),
        spec.partitions.len(),
    ])
}

/// [`run`] with a GPU: the fused mixture kernel runs there (online-classifier samplers), and a
/// network (`model`) runs device-resident (`cuda::neural`: the U-Net, the probe rows and the
/// fused step on the device); the generic engine (deterministic samplers) stays on the CPU.
pub fn run_on(
    cfg: &Config,
    gpu: Option<&crate::backend::Gpu>,
    engine: Option<Engine>,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<Report> {
    let spec = cfg.spec()?;
    let grid = cfg.grid()?;
    let noise = Noise::new(cfg.seed);
    if let Some(dir) = &cfg.model {
        let net = crate::score::unet::UNetScore::load(dir)?;
        let start = Instant::now();
        let sums = match gpu {
            Some(g) => {
                // Network, states and classifier on the GPU; one download per batch of 64.
                crate::fused::neural::measure_on_gpu(
                    g,
                    &net,
                    &spec,
                    &grid,
                    &cfg.sampler,
                    noise,
                    cfg.trajectories,
                    64,
                    cfg.probes,
                    progress,
                )?
            }
            // Batches of 8 trajectories: each step is one forward of 8·(K+1) images (and one
            // of 8·2N null-label probe images for the Hutchinson divergence).
            None => {
                let hutch;
                let model: &dyn crate::score::ScoreModel = if cfg.probes > 0 {
                    hutch = crate::score::Hutchinson::new(&net, cfg.probes)?;
                    &hutch
                } else {
                    &net
                };
                measure_trajectories(
                    model,
                    &spec,
                    &grid,
                    &cfg.sampler,
                    noise,
                    0,
                    cfg.trajectories,
                    8,
                    Tracking::Online,
                    progress,
                )?
            }
        };
        let wall_s = start.elapsed().as_secs_f64();
        let curves = Curves::from_sums(&sums, &spec, &grid, Tracking::Online);
        check_results(&curves)?;
        return Ok(Report {
            config: cfg.clone(),
            curves,
            engine: if gpu.is_some() {
                Engine::NeuralCuda
            } else {
                Engine::Generic
            },
            wall_s,
            trajectory_steps_per_s: (cfg.trajectories * grid.steps()) as f64 / wall_s,
            threads: rayon::current_num_threads(),
        });
    }
    let mixture = cfg.mixture()?;
    let engine = engine.unwrap_or(if !cfg.sampler.supports_online_classifier() {
        Engine::Generic
    } else if gpu.is_some() {
        Engine::FusedCuda
    } else {
        Engine::Fused(detected())
    });
    let tracking = if cfg.sampler.supports_online_classifier() {
        Tracking::Online
    } else {
        Tracking::Exact
    };
    let start = Instant::now();
    let sums = match engine {
        Engine::Fused(kind) => {
            let plan = MixturePlan::new(&mixture, &spec, &grid, &cfg.sampler, noise)?;
            mixture_trajectory::run_with_progress(&plan, kind, 0, cfg.trajectories, None, progress)?
        }
        Engine::FusedCuda => {
            let gpu = gpu.ok_or_else(|| Error::Unsupported {
                op: "measure",
                reason: "the fused CUDA engine needs an opened GPU".into(),
            })?;
            let plan = MixturePlan::new(&mixture, &spec, &grid, &cfg.sampler, noise)?;
            let sums =
                crate::fused::mixture_trajectory::cuda::run(gpu, &plan, 0, cfg.trajectories, None)?;
            if let Some(p) = progress {
                p(cfg.trajectories);
            }
            sums
        }
        Engine::NeuralCuda => {
            return Err(Error::Unsupported {
                op: "measure",
                reason: "the device-resident neural engine runs networks (`model`), not mixtures"
                    .into(),
            });
        }
        Engine::Generic => measure_trajectories(
            &mixture,
            &spec,
            &grid,
            &cfg.sampler,
            noise,
            0,
            cfg.trajectories,
            256,
            tracking,
            progress,
        )?,
    };
    let wall_s = start.elapsed().as_secs_f64();
    let curves = Curves::from_sums(&sums, &spec, &grid, tracking);
    check_results(&curves)?;
    Ok(Report {
        config: cfg.clone(),
        curves,
        engine,
        wall_s,
        trajectory_steps_per_s: (cfg.trajectories * grid.steps()) as f64 / wall_s,
        threads: rayon::current_num_threads(),
    })
}

impl Report {
    /// Things the user should know about this run's numbers.
    pub fn warnings(&self) -> Vec<String> {
        let c = &self.curves;
        let mut w = check::result_warnings(c);
        if c.tracking == Tracking::Online
            && let Some(hx) = c.h_exact[0]
            && bits(c.prior_entropy - hx) > 0.005
        {
            w.push(format!(
                "x_T already holds {:.4} bits about Y, which the online classifier (started at the prior) cannot see; \
                 h_online is biased up by about that much (raise the noise end, e.g. sigma_max)",
                bits(c.prior_entropy - hx)
            ));
        }
        if self.config.sampler == Sampler::EulerMaruyama
            && let Ok(grid) = self.config.grid()
        {
            // The score term moves x by c·s ≈ −(g²h/σ²)·(x − s_t m): beyond 1 the step overshoots.
            // (The last step, into the data end, is a denoising step with ratio ≈ 1 by design.)
            let n = grid.points.len();
            let worst = grid.points[..n - 1]
                .windows(2)
                .map(|p| p[0].g2 * (p[0].t - p[1].t) / (p[0].sigma * p[0].sigma))
                .fold(0.0, f64::max);
            if worst > 1.0 {
                w.push(format!(
                    "Euler–Maruyama steps reach g²·h/σ² = {worst:.2} (> 1): those steps overshoot and do not follow \
                     the reverse SDE; use more steps or the ancestral sampler"
                ));
            }
        }
        w
    }

    /// summary.json: the config, H(Y), the peaks of every rate, wall time and throughput.
    pub fn summary(&self) -> Value {
        let c = &self.curves;
        let mut pk = Map::new();
        for (name, y) in c.rate_curves() {
            pk.insert(name, json!(peaks(&c.t, &c.log_snr, &y)));
        }
        let last = c.t.len() - 1;
        json!({
            "infodiff_version": env!("CARGO_PKG_VERSION"),
            "config": self.config.to_json(),
            "units": "nats (bits where a key says so); rates per unit t, positive in forward time; t is the DDPM state index",
            "posterior": match c.tracking {
                Tracking::Online => "online Bayesian classifier".to_string(),
                Tracking::Exact => format!("exact posterior ({})", self.config.sampler.online_classifier_refusal().unwrap_or_default()),
            },
            "classes": c.class_h.len(),
            "prior_entropy_nats": c.prior_entropy,
            "prior_entropy_bits": bits(c.prior_entropy),
            "x_T_information_nats": c.h_exact[0].map(|h| c.prior_entropy - h),
            "warnings": self.warnings(),
            "final": {
                "h_online_nats": c.h_online[last],
                "mi_entropy_nats": c.mi_entropy[last],
                "mi_girsanov_nats": c.mi_girsanov[last],
            },
            "peaks": pk,
            "engine": self.engine.name(),
            "threads": self.threads,
            "trajectories": self.config.trajectories,
            "steps": c.t.len() - 1,
            "wall_time_s": self.wall_s,
            "trajectory_steps_per_s": self.trajectory_steps_per_s,
        })
    }

    /// The short table printed by `infodiff measure`.
    pub fn table(&self) -> String {
        let c = &self.curves;
        let n = c.t.len();
        let mut s = String::new();
        s += &format!(
            "H(Y) = {:.4} bits; posterior: {}\n",
            bits(c.prior_entropy),
            c.tracking.name()
        );
        if let Some(why) = self.config.sampler.online_classifier_refusal() {
            s += &format!("note: {why}; H(Y|X_t) uses the model's exact posterior\n");
        }
        s += "      t    log-SNR   H_online (bits)  ± SE     H_exact (bits)   I_girsanov (bits)\n";
        let picks: Vec<usize> = (0..=10).map(|i| (i * (n - 1)) / 10).collect();
        for j in picks {
            let hx = c.h_exact[j]
                .map(|v| format!("{:.4}", bits(v)))
                .unwrap_or_else(|| "-".into());
            s += &format!(
                "{:>9.4} {:>8.3} {:>12.4} {:>10.4} {:>14} {:>16.4}\n",
                c.t[j],
                c.log_snr[j],
                bits(c.h_online[j]),
                bits(c.h_online_se[j]),
                hx,
                bits(c.mi_girsanov[j])
            );
        }
        s += "peak of each rate (largest local maximum; t_fit: vertex of a parabola through its top):\n";
        for (name, y) in c.rate_curves() {
            if let Some(p) = peaks(&c.t, &c.log_snr, &y).first() {
                let fit = p
                    .t_fit
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into());
                s += &format!(
                    "  {:<22} t = {:<10.4} t_fit = {:<8} log-SNR = {:<8.3} rate = {:.4e} nats/unit t\n",
                    name, p.t, fit, p.log_snr, p.value
                );
            }
        }
        s += &format!(
            "{} trajectories x {} steps in {:.3} s = {:.3e} trajectory-steps/s ({}, {} threads)\n",
            self.config.trajectories,
            n - 1,
            self.wall_s,
            self.trajectory_steps_per_s,
            self.engine.name(),
            self.threads
        );
        s
    }

    /// The three output files (name, contents), rendered in memory.
    pub fn files(&self) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let summary = serde_json::to_string_pretty(&self.summary()).map_err(|e| Error::Io {
            path: "summary.json".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let svg = plot::entropy_svg(&self.curves)?;
        let [csv_name, summary_name, svg_name] = crate::io::atomic::OUTPUT_FILES;
        Ok(vec![
            (csv_name, self.curves.to_csv().into_bytes()),
            (summary_name, summary.into_bytes()),
            (svg_name, svg.into_bytes()),
        ])
    }

    /// Writes curves.csv, summary.json and entropy.svg into `dir` (created if missing) as a
    /// set: a reader sees the old three files or the new three (see [`output`]).
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_to(crate::io::atomic::OutputSet::prepare(dir)?)
    }

    /// [`Report::write`] into a destination checked before the run.
    pub fn write_to(&self, dest: crate::io::atomic::OutputSet) -> Result<()> {
        let files = self.files()?;
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        dest.commit(&refs)
    }
}
