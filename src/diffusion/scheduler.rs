//! A diffusers scheduler as its `scheduler_config.json` says it: β_i → ᾱ_i = ∏_{j≤i}(1 − β_j),
//! σ_i = √((1 − ᾱ_i)/ᾱ_i), and, for each named sampler, the grid of timesteps and σ it steps
//! over exactly as that sampler's diffusers class builds it (spacing `linspace`/`leading`/
//! `trailing`, `steps_offset`, Karras σ with ρ = 7, uniform log-SNR), with the class's initial
//! noise scale (`init_noise_sigma`).
//!
//! Grid points are in the network's (variance-preserving) space: a point of σ has
//! s = 1/√(1 + σ²), σ_t = σ·s, and the network input is the state itself (diffusers'
//! `scale_model_input` divides its σ-space state by √(σ² + 1), which is this state).
//!
//! **Which keys count.** diffusers builds the class a sampler maps to ([`diffusers_class`]) with
//! `from_config`, which ignores every key that class does not read. [`Scheduler::from_json`]
//! reads the keys every class shares (and refuses `thresholding: true`, an unknown
//! `beta_schedule`, `timestep_spacing` or `prediction_type`, ill-typed values); the others are kept
//! in [`Scheduler::other`] and [`Scheduler::plan`] checks every key the mapped class reads:
//! honoured, at its default (or a value that changes nothing there), or refused naming key and
//! value. Keys the mapped class does not read are ignored, as diffusers ignores them (one
//! exception: `rescale_betas_zero_snr: true` is refused for `heun`, whose class does not read it
//! and would silently sample a process the model was not trained on). Keys starting with `_` are
//! metadata.
//!
//! **Arithmetic.** diffusers holds its tables in float32: β from `torch.linspace(…, float32)` (its
//! SIMD path: each element one fused multiply-add from the nearer end), ᾱ by `torch.cumprod` (a
//! double accumulator rounded to float32 per element), σ in float32, then `np.interp`, Karras and
//! `_sigma_to_t` in float64 on those float32 values, and the grid's σ and timesteps rounded to
//! float32 once more. Those steps are reproduced operation for operation here (numpy's `round`
//! rounds half to even; its `arange` and `linspace` are their own formulas), so ᾱ equals
//! diffusers' bit for bit. Two of diffusers' operations are not correctly rounded and differ by
//! machine (torch's float32 `sqrt`, numpy's SIMD float32 `log`); they are computed correctly
//! rounded here, so a σ may differ from a given machine's diffusers by one float32 ulp and a
//! fractional (Karras, log-SNR) timestep by about one float32 ulp of the timestep.

use std::path::Path;

use serde_json::{Map, Value};

use crate::diffusion::{Ddpm, Grid, GridPoint, Prediction, Process, SamplerKind};
use crate::error::{Error, Result};

/// `beta_schedule`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β = linspace(β_start, β_end, T).
    Linear,
    /// β = linspace(√β_start, √β_end, T)².
    ScaledLinear,
    /// The cosine schedule (Nichol & Dhariwal 2021), β capped at 0.999.
    SquaredcosCapV2,
}

impl BetaSchedule {
    fn name(self) -> &'static str {
        match self {
            BetaSchedule::Linear => "linear",
            BetaSchedule::ScaledLinear => "scaled_linear",
            BetaSchedule::SquaredcosCapV2 => "squaredcos_cap_v2",
        }
    }
}

/// `timestep_spacing`: how S inference timesteps are chosen among the T training ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
}

impl Spacing {
    pub fn name(self) -> &'static str {
        match self {
            Spacing::Linspace => "linspace",
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
        }
    }
}

/// Which σ grid a σ-space sampler steps over (`--karras`, `--log-snr`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SigmaGrid {
    /// The scheduler's own spacing.
    #[default]
    Scheduler,
    /// Karras et al. (2022) σ with ρ = 7 between the spacing's σ_max and σ_min
    /// (diffusers' `use_karras_sigmas`).
    Karras,
    /// Uniform in log-SNR λ = −ln σ (diffusers' `use_lu_lambdas`).
    UniformLogSnr,
}

/// The diffusers scheduler classes the named samplers map to ([`diffusers_class`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulerClass {
    Ddim,
    Ddpm,
    EulerDiscrete,
    EulerAncestralDiscrete,
    HeunDiscrete,
    DpmSolverMultistep,
}

impl SchedulerClass {
    /// diffusers' class name.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerClass::Ddim => "DDIMScheduler",
            SchedulerClass::Ddpm => "DDPMScheduler",
            SchedulerClass::EulerDiscrete => "EulerDiscreteScheduler",
            SchedulerClass::EulerAncestralDiscrete => "EulerAncestralDiscreteScheduler",
            SchedulerClass::HeunDiscrete => "HeunDiscreteScheduler",
            SchedulerClass::DpmSolverMultistep => "DPMSolverMultistepScheduler",
        }
    }

    /// The class of a `_class_name` (None: not one of ours).
    pub fn from_name(name: &str) -> Option<SchedulerClass> {
        [
            SchedulerClass::Ddim,
            SchedulerClass::Ddpm,
            SchedulerClass::EulerDiscrete,
            SchedulerClass::EulerAncestralDiscrete,
            SchedulerClass::HeunDiscrete,
            SchedulerClass::DpmSolverMultistep,
        ]
        .into_iter()
        .find(|c| c.name() == name)
    }

    /// The class `sampler` reproduces (None: infodiff's own samplers).
    pub fn of(sampler: &SamplerKind) -> Option<SchedulerClass> {
        Some(match sampler {
            SamplerKind::Ddim { .. } => SchedulerClass::Ddim,
            SamplerKind::Ddpm { .. } => SchedulerClass::Ddpm,
            SamplerKind::Euler => SchedulerClass::EulerDiscrete,
            SamplerKind::EulerAncestral => SchedulerClass::EulerAncestralDiscrete,
            SamplerKind::Heun => SchedulerClass::HeunDiscrete,
            SamplerKind::Dpmpp2m | SamplerKind::Dpmpp2mSde | SamplerKind::Dpmpp3mSde => {
                SchedulerClass::DpmSolverMultistep
            }
            SamplerKind::Ancestral { .. } | SamplerKind::EulerMaruyama | SamplerKind::HeunOde => {
                return None;
            }
        })
    }

    /// The class's `timestep_spacing` default.
    fn default_spacing(self) -> Spacing {
        match self {
            SchedulerClass::Ddim | SchedulerClass::Ddpm => Spacing::Leading,
            _ => Spacing::Linspace,
        }
    }

    /// The class's (`beta_start`, `beta_end`) defaults.
    fn default_betas(self) -> (f64, f64) {
        match self {
            SchedulerClass::HeunDiscrete => (0.00085, 0.012),
            _ => (0.0001, 0.02),
        }
    }

    /// Whether the class reads `rescale_betas_zero_snr`.
    fn reads_rescale(self) -> bool {
        self != SchedulerClass::HeunDiscrete
    }

    /// Whether the class sets the last ᾱ to 2⁻²⁴ after a zero-terminal-SNR rescale (so that the
    /// first σ is finite): the σ-space classes.
    fn floors_last_alpha_bar(self) -> bool {
        matches!(
            self,
            SchedulerClass::EulerDiscrete
                | SchedulerClass::EulerAncestralDiscrete
                | SchedulerClass::DpmSolverMultistep
        )
    }

    /// Whether the class reads `use_karras_sigmas`.
    fn reads_karras(self) -> bool {
        matches!(
            self,
            SchedulerClass::EulerDiscrete
                | SchedulerClass::HeunDiscrete
                | SchedulerClass::DpmSolverMultistep
        )
    }
}

/// The diffusers scheduler class a named sampler reproduces (`ddim` → `DDIMScheduler`, …,
/// `dpmpp_2m`/`dpmpp_2m_sde`/`dpmpp_3m_sde` → `DPMSolverMultistepScheduler`); None for
/// infodiff's own samplers (`ancestral`, `euler_maruyama`, `heun_ode`), which step over the
/// scheduler's DDPM process on [`Ddpm::grid`].
pub fn diffusers_class(kind: &SamplerKind) -> Option<&'static str> {
    SchedulerClass::of(kind).map(SchedulerClass::name)
}

/// What a `scheduler_config.json` says, validated. Keys a class leaves out take that class's
/// default, which is why the class-dependent ones are `Option`s here.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler {
    /// `_class_name` (e.g. `DDPMScheduler`), where given.
    pub class_name: Option<String>,
    /// T = `num_train_timesteps`.
    pub num_train_timesteps: usize,
    /// β_1..β_T after `rescale_betas_zero_snr`, as the config's own class (`_class_name`; DDPM's
    /// defaults where it is not one of ours) computes them: float32 values. (T)
    pub betas: Vec<f64>,
    /// ᾱ at training timesteps 0..T−1 (diffusers' `alphas_cumprod`, float32 values, before the
    /// σ-space classes' 2⁻²⁴ floor on the last one). (T)
    pub alphas_cumprod: Vec<f64>,
    pub prediction: Prediction,
    /// None: the sampler class's default spacing.
    pub spacing: Option<Spacing>,
    pub steps_offset: usize,
    /// None: the class's default (DDPM and DDIM: true; others have no clipping).
    pub clip_sample: Option<bool>,
    pub clip_sample_range: f64,
    /// DDIMScheduler's `set_alpha_to_one` (None: its default, true).
    pub set_alpha_to_one: Option<bool>,
    /// `use_karras_sigmas` as the file says it (the σ-space classes' option).
    pub use_karras_sigmas: bool,
    pub rescale_betas_zero_snr: bool,
    pub beta_schedule: BetaSchedule,
    /// `beta_start`, `beta_end` where given (None: the class's default).
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    /// `trained_betas` where given (overrides the schedule).
    pub trained_betas: Option<Vec<f64>>,
    /// Where the config came from (errors name it).
    pub origin: String,
    /// Every other non-metadata key, for [`Scheduler::plan`] to check against the class it maps
    /// to.
    pub other: Map<String, Value>,
}

/// A sampler's grid and start as its diffusers class makes them.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Noise first, the data end (σ = 0, or DDIM's final ᾱ) last; `lands` set for DDIM
    /// whose steps land at t − T/S.
    pub grid: Grid,
    /// The initial state is `init_scale`·z, z ~ N(0, I), in the grid's (VP) space: diffusers'
    /// `init_noise_sigma` times the first point's s where the class works in σ-space.
    pub init_scale: f64,
    /// The sampler with the scheduler's settings filled in (clipping).
    pub sampler: SamplerKind,
}

fn cfg_err(
    origin: &str,
    key: &str,
    expected: impl Into<String>,
    found: impl std::fmt::Display,
) -> Error {
    Error::config(format!("{origin}: {key}"), expected, found)
}

/// Python's `json.dumps` writes ±∞ and NaN as bare `Infinity`, `-Infinity`, `NaN` (diffusers saves
/// `"lambda_min_clipped": -Infinity`); JSON has no such tokens, so they become the strings
/// `"Infinity"`, `"-Infinity"`, `"NaN"` here, which the number readers take where a non-finite
/// value is allowed.
fn python_json_tokens(text: &str) -> std::borrow::Cow<'_, str> {
    if !(text.contains("Infinity") || text.contains("NaN")) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let (mut in_str, mut esc) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else {
            let tok = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|t| rest.starts_with(t));
            if let Some(t) = tok {
                out.push('"');
                out.push_str(t);
                out.push('"');
                rest = &rest[t.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    std::borrow::Cow::Owned(out)
}

/// A JSON number, or one of the strings [`python_json_tokens`] makes of Python's non-finite
/// literals.
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => None,
        },
        _ => None,
    }
}

/// Largest `num_train_timesteps` accepted (tables are O(T), Karras' `_sigma_to_t` O(S·T)).
pub const MAX_TRAIN_TIMESTEPS: usize = 100_000;

impl Scheduler {
    /// What a bare UNet2DModel folder implies: DDPMScheduler, linear β 1e-4…0.02, T = 1000,
    /// ε-prediction, and every other key at DDPMScheduler's default.
    pub fn ddpm_default() -> Scheduler {
        Scheduler::from_json(
            r#"{"_class_name": "DDPMScheduler"}"#,
            "the default scheduler",
        )
        .expect("the default scheduler config is valid")
    }

    /// Reads a `scheduler_config.json` text (`origin` names it in errors). Keys that change the
    /// numbers and that infodiff does not implement are refused naming key and value; the keys
    /// only some classes read are checked by [`Scheduler::plan`] for the class it maps to.
    pub fn from_json(text: &str, origin: &str) -> Result<Scheduler> {
        let text = python_json_tokens(text);
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: origin.to_string(),
            message: format!("not valid JSON: {e}"),
        })?;
        let Value::Object(mut m) = v else {
            return Err(cfg_err(origin, "(top level)", "an object", v));
        };
        let err = |key: &str, expected: &str, found: &Value| cfg_err(origin, key, expected, found);
        let class_name = match m.get("_class_name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(x) => return Err(err("_class_name", "a string", x)),
        };
        m.retain(|k, _| !k.starts_with('_'));
        let mut take = |k: &str| m.shift_remove(k).filter(|v| !v.is_null());

        let num_train_timesteps = match take("num_train_timesteps") {
            None => 1000,
            Some(x) => x
                .as_u64()
                .filter(|&u| (1..=MAX_TRAIN_TIMESTEPS as u64).contains(&u))
                .ok_or_else(|| {
                    err(
                        "num_train_timesteps",
                        &format!("a whole number in 1..={MAX_TRAIN_TIMESTEPS}"),
                        &x,
                    )
                })? as usize,
        };
        let beta_in_unit = |k: &str, x: Option<Value>| -> Result<Option<f64>> {
            match x {
                None => Ok(None),
                Some(x) => number(&x)
                    .filter(|b| b.is_finite() && *b > 0.0 && *b < 1.0 && (*b as f32) > 0.0)
                    .map(Some)
                    .ok_or_else(|| err(k, "a number in (0, 1)", &x)),
            }
        };
        let beta_start = beta_in_unit("beta_start", take("beta_start"))?;
        let beta_end = beta_in_unit("beta_end", take("beta_end"))?;
        let beta_schedule = match take("beta_schedule") {
            None => BetaSchedule::Linear,
            Some(x) => match x.as_str() {
                Some("linear") => BetaSchedule::Linear,
                Some("scaled_linear") => BetaSchedule::ScaledLinear,
                Some("squaredcos_cap_v2") => BetaSchedule::SquaredcosCapV2,
                _ => {
                    return Err(err(
                        "beta_schedule",
                        "\"linear\", \"scaled_linear\" or \"squaredcos_cap_v2\" (the schedules infodiff implements)",
                        &x,
                    ));
                }
            },
        };
        let trained_betas = match take("trained_betas") {
            None => None,
            Some(Value::Array(a)) => {
                if a.len() != num_train_timesteps {
                    return Err(cfg_err(
                        origin,
                        "trained_betas",
                        format!("a list of {num_train_timesteps} numbers (num_train_timesteps)"),
                        format!("a list of {}", a.len()),
                    ));
                }
                let mut out = Vec::with_capacity(a.len());
                for (i, x) in a.iter().enumerate() {
                    let b = number(x)
                        .filter(|b| b.is_finite() && *b > 0.0 && *b <= 1.0 && (*b as f32) > 0.0)
                        .ok_or_else(|| {
                            err(&format!("trained_betas[{i}]"), "a number in (0, 1]", x)
                        })?;
                    out.push(b);
                }
                Some(out)
            }
            Some(x) => return Err(err("trained_betas", "a list of numbers or null", &x)),
        };
        let prediction = match take("prediction_type") {
            None => Prediction::Epsilon,
            Some(x) => match x.as_str() {
                Some("epsilon") => Prediction::Epsilon,
                Some("v_prediction") => Prediction::VPrediction,
                Some("sample") => Prediction::Sample,
                _ => {
                    return Err(err(
                        "prediction_type",
                        "\"epsilon\", \"v_prediction\" or \"sample\"",
                        &x,
                    ));
                }
            },
        };
        let spacing = match take("timestep_spacing") {
            None => None,
            Some(x) => Some(match x.as_str() {
                Some("linspace") => Spacing::Linspace,
                Some("leading") => Spacing::Leading,
                Some("trailing") => Spacing::Trailing,
                _ => {
                    return Err(err(
                        "timestep_spacing",
                        "\"linspace\", \"leading\" or \"trailing\"",
                        &x,
                    ));
                }
            }),
        };
        let steps_offset = match take("steps_offset") {
            None => 0,
            Some(x) => x
                .as_u64()
                .filter(|&u| u <= num_train_timesteps as u64)
                .ok_or_else(|| {
                    err(
                        "steps_offset",
                        &format!(
                            "a whole number in 0..={num_train_timesteps} (num_train_timesteps)"
                        ),
                        &x,
                    )
                })? as usize,
        };
        // Python truthiness: a null flag is false (taken out as None above).
        let mut flag = |k: &str| -> Result<Option<bool>> {
            match take(k) {
                None => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(b)),
                Some(x) => Err(err(k, "true or false", &x)),
            }
        };
        let clip_sample = flag("clip_sample")?;
        let set_alpha_to_one = flag("set_alpha_to_one")?;
        let use_karras_sigmas = flag("use_karras_sigmas")?.unwrap_or(false);
        let rescale_betas_zero_snr = flag("rescale_betas_zero_snr")?.unwrap_or(false);
        if let Some(true) = flag("thresholding")? {
            return Err(err(
                "thresholding",
                "false (dynamic thresholding is not implemented)",
                &Value::Bool(true),
            ));
        }
        let clip_sample_range = match take("clip_sample_range") {
            None => 1.0,
            Some(x) => number(&x)
                .filter(|r| r.is_finite() && *r > 0.0)
                .ok_or_else(|| err("clip_sample_range", "a finite number > 0", &x))?,
        };
        let mut sch = Scheduler {
            class_name,
            num_train_timesteps,
            betas: Vec::new(),
            alphas_cumprod: Vec::new(),
            prediction,
            spacing,
            steps_offset,
            clip_sample,
            clip_sample_range,
            set_alpha_to_one,
            use_karras_sigmas,
            rescale_betas_zero_snr,
            beta_schedule,
            beta_start,
            beta_end,
            trained_betas,
            origin: origin.to_string(),
            other: m,
        };
        let own = sch
            .class_name
            .as_deref()
            .and_then(SchedulerClass::from_name);
        let t = sch.table(own.unwrap_or(SchedulerClass::Ddpm))?;
        sch.betas = t.betas.iter().map(|&b| b as f64).collect();
        sch.alphas_cumprod = t.alphas_cumprod_raw.iter().map(|&a| a as f64).collect();
        Ok(sch)
    }

    /// [`Scheduler::from_json`] on a file.
    pub fn load(path: &Path) -> Result<Scheduler> {
        let text = crate::io::read_text(path)?;
        Scheduler::from_json(&text, &path.display().to_string())
    }

    /// The discrete process of this schedule (β table), for `measure --model`.
    pub fn process(&self) -> Result<Ddpm> {
        Ddpm::from_betas(&self.betas)
    }

    /// The sampler a pipeline saved with this config would use by default, from `_class_name`:
    /// DDIMScheduler → `ddim` (η = 0), DDPMScheduler or no class → `ddpm`, the Euler classes →
    /// `euler`/`euler_ancestral`, HeunDiscreteScheduler → `heun`, DPMSolverMultistepScheduler →
    /// `dpmpp_2m`, or `dpmpp_2m_sde` (`dpmpp_3m_sde` at `solver_order` 3) where its
    /// `algorithm_type` is `sde-dpmsolver++`. Any other class (PNDM, LMS, UniPC, …) → `dpmpp_2m`,
    /// the common 20–50-step choice. Clipping is filled in by [`Scheduler::plan`].
    pub fn default_sampler(&self) -> SamplerKind {
        let Some(name) = self.class_name.as_deref() else {
            return SamplerKind::Ddpm { clip: None };
        };
        match SchedulerClass::from_name(name) {
            Some(SchedulerClass::Ddim) => SamplerKind::Ddim {
                eta: 0.0,
                clip: None,
            },
            Some(SchedulerClass::Ddpm) => SamplerKind::Ddpm { clip: None },
            Some(SchedulerClass::EulerDiscrete) => SamplerKind::Euler,
            Some(SchedulerClass::EulerAncestralDiscrete) => SamplerKind::EulerAncestral,
            Some(SchedulerClass::HeunDiscrete) => SamplerKind::Heun,
            Some(SchedulerClass::DpmSolverMultistep) => {
                let sde = self.other.get("algorithm_type").and_then(Value::as_str)
                    == Some("sde-dpmsolver++");
                let order3 = self.other.get("solver_order").and_then(Value::as_u64) == Some(3);
                match (sde, order3) {
                    (true, true) => SamplerKind::Dpmpp3mSde,
                    (true, false) => SamplerKind::Dpmpp2mSde,
                    _ => SamplerKind::Dpmpp2m,
                }
            }
            None => SamplerKind::Dpmpp2m,
        }
    }

    /// The grid, start and filled-in sampler of `sampler` at `steps` inference steps on `sigmas`,
    /// as `sampler`'s diffusers class builds them from this config (its `set_timesteps(steps)`).
    ///
    /// - DDIM, DDPM: integer timesteps by the spacing; points at ᾱ_t (s = √ᾱ, σ_t = √(1 − ᾱ)),
    ///   the data end at DDIM's final ᾱ (1, or ᾱ_0 with `set_alpha_to_one: false`) or at σ = 0
    ///   for DDPM. A DDIM step goes from t to t − ⌊T/S⌋ ([`Grid::lands`]; ᾱ there, or the final
    ///   ᾱ below 0); a DDPM step lands on the next listed timestep (diffusers'
    ///   `previous_timestep`). `init_scale` 1. `--karras`/`--log-snr` are refused.
    /// - Euler, Euler ancestral, Heun: float32 timesteps by the spacing, σ by `np.interp` on the
    ///   σ table; Karras (ρ = 7) or λ-uniform σ between the spacing's σ_max and σ_min with
    ///   timesteps by `_sigma_to_t`; the final σ = 0 point. `init_scale` = `init_noise_sigma`
    ///   (σ_max, or √(σ_max² + 1) for `leading`) × the first point's s. Heun's interleaved
    ///   duplicate points are the sampler's business: this grid is the plain σ list.
    /// - DPM-Solver++: its integer timesteps (S + 1 linspace points, dropping 0); Karras or
    ///   λ-uniform σ between the training table's ends, timesteps rounded (truncated for
    ///   `squaredcos_cap_v2`); the final σ = 0 point. `init_scale` 1.
    /// - `ancestral`, `euler_maruyama`, `heun_ode`: [`Ddpm::grid`] on the β table, `init_scale` 1.
    ///
    /// Every point carries diffusers' timestep, t = timestep + 1 on the DDPM index scale with
    /// f, g² of [`Ddpm::from_betas`] there, and index = its position counted from the data end.
    pub fn plan(&self, sampler: &SamplerKind, steps: usize, sigmas: SigmaGrid) -> Result<Plan> {
        let tn = self.num_train_timesteps;
        if steps == 0 || steps > tn {
            return Err(Error::config(
                "--steps",
                format!("1..={tn} (num_train_timesteps of {})", self.origin),
                steps,
            ));
        }
        let Some(class) = SchedulerClass::of(sampler) else {
            if sigmas != SigmaGrid::Scheduler {
                return Err(refuse_grid(sigmas, sampler, "steps over the DDPM indices"));
            }
            let grid = self.process()?.grid(steps)?;
            return Ok(Plan {
                grid,
                init_scale: 1.0,
                sampler: *sampler,
            });
        };
        let grid_kind = match sigmas {
            SigmaGrid::Scheduler if class.reads_karras() && self.use_karras_sigmas => {
                SigmaGrid::Karras
            }
            SigmaGrid::Scheduler
                if class == SchedulerClass::DpmSolverMultistep
                    && self.flag_other("use_lu_lambdas")? =>
            {
                SigmaGrid::UniformLogSnr
            }
            g => g,
        };
        self.check_class_keys(class, sampler, grid_kind)?;
        let spacing = self.spacing.unwrap_or(class.default_spacing());
        let table = self.table(class)?;
        let ddpm = Ddpm::from_betas(&table.process_betas())?;
        let point = |index: usize, timestep: f64, s: f64, sigma: f64| {
            let t = timestep + 1.0;
            GridPoint {
                index,
                t,
                s,
                sigma,
                f: ddpm.drift(t),
                g2: ddpm.g2(t),
                timestep,
            }
        };
        let ac = &table.alphas_cumprod;
        let clip = |default: bool| {
            self.clip_sample
                .unwrap_or(default)
                .then_some(self.clip_sample_range)
        };
        match class {
            SchedulerClass::Ddim | SchedulerClass::Ddpm => {
                if grid_kind != SigmaGrid::Scheduler {
                    return Err(refuse_grid(
                        grid_kind,
                        sampler,
                        "steps over its integer timesteps",
                    ));
                }
                let ts = integer_timesteps(class, spacing, tn, steps, self.steps_offset)
                    .map_err(|e| self.spacing_err(e, class, spacing, steps))?;
                let vp = |i: usize, tstep: i64, ab: f64| {
                    point(i, tstep as f64, ab.sqrt(), (1.0 - ab).sqrt())
                };
                let at = |t: i64| ac[t as usize] as f64;
                let mut points: Vec<GridPoint> = ts
                    .iter()
                    .enumerate()
                    .map(|(j, &t)| vp(steps - j, t, at(t)))
                    .collect();
                if class == SchedulerClass::Ddim {
                    let final_ab = if self.set_alpha_to_one.unwrap_or(true) {
                        1.0
                    } else {
                        ac[0] as f64
                    };
                    points.push(vp(0, -1, final_ab));
                    let ratio = (tn / steps) as i64;
                    let lands = ts
                        .iter()
                        .enumerate()
                        .map(|(j, &t)| {
                            let prev = t - ratio;
                            if prev >= 0 {
                                vp(steps - j - 1, prev, at(prev))
                            } else {
                                points[steps]
                            }
                        })
                        .collect();
                    let eta = match *sampler {
                        SamplerKind::Ddim { eta, .. } => eta,
                        _ => 0.0,
                    };
                    Ok(Plan {
                        grid: Grid {
                            points,
                            lands: Some(lands),
                        },
                        init_scale: 1.0,
                        sampler: SamplerKind::Ddim {
                            eta,
                            clip: clip(true),
                        },
                    })
                } else {
                    points.push(vp(0, -1, 1.0));
                    Ok(Plan {
                        grid: Grid {
                            points,
                            lands: None,
                        },
                        init_scale: 1.0,
                        sampler: SamplerKind::Ddpm { clip: clip(true) },
                    })
                }
            }
            _ => {
                let (ts, sig) =
                    self.sigma_grid(class, &table, spacing, steps, grid_kind, sampler)?;
                // (S + 1) points: S evaluated, then σ = 0.
                let mut points: Vec<GridPoint> = ts
                    .iter()
                    .zip(&sig)
                    .enumerate()
                    .map(|(j, (&t, &sg))| {
                        let s = 1.0 / (1.0 + sg * sg).sqrt();
                        point(steps - j, t, s, sg * s)
                    })
                    .collect();
                points.push(point(0, -1.0, 1.0, 0.0));
                let init_scale = if class == SchedulerClass::DpmSolverMultistep {
                    1.0
                } else {
                    // init_noise_sigma: max over the float32 σ list (the final 0 included).
                    let m = sig.iter().fold(0.0f32, |m, &s| m.max(s as f32));
                    let ins = match spacing {
                        Spacing::Linspace | Spacing::Trailing => m,
                        Spacing::Leading => (m * m + 1.0).sqrt(),
                    };
                    ins as f64 * points[0].s
                };
                Ok(Plan {
                    grid: Grid {
                        points,
                        lands: None,
                    },
                    init_scale,
                    sampler: *sampler,
                })
            }
        }
    }

    fn spacing_err(
        &self,
        e: SpacingErr,
        class: SchedulerClass,
        spacing: Spacing,
        steps: usize,
    ) -> Error {
        match e {
            SpacingErr::ExtraTimestep(n) => Error::config(
                "--steps",
                format!(
                    "a step count at which {}'s `{}` spacing makes {steps} timesteps (numpy's arange rounding gives {n} here, the last of them −1)",
                    class.name(),
                    spacing.name()
                ),
                steps,
            ),
            SpacingErr::OutOfRange(t) => cfg_err(
                &self.origin,
                "steps_offset",
                format!(
                    "an offset that keeps {}'s timesteps below num_train_timesteps = {} at {steps} steps",
                    class.name(),
                    self.num_train_timesteps
                ),
                format!("{} (timestep {t})", self.steps_offset),
            ),
        }
    }

    /// A boolean of [`Scheduler::other`] (null and absent: false).
    fn flag_other(&self, key: &str) -> Result<bool> {
        match self.other.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(x) => Err(cfg_err(&self.origin, key, "true or false", x)),
        }
    }

    /// Every key `class` reads that [`Scheduler::from_json`] left: honoured, at its default (or a
    /// value that changes nothing with the rest of the config), or refused naming key and value.
    fn check_class_keys(
        &self,
        class: SchedulerClass,
        sampler: &SamplerKind,
        grid: SigmaGrid,
    ) -> Result<()> {
        let o = &self.origin;
        let sname = sampler.name();
        let get = |k: &str| self.other.get(k).filter(|v| !v.is_null());
        let refuse = |k: &str, expected: &str, found: &Value| {
            cfg_err(
                o,
                k,
                format!("{expected} (for sampler {sname}, {})", class.name()),
                found,
            )
        };
        // A string key that must hold one of `ok` (absent or null: the default, which is in `ok`).
        let must_str = |k: &str, ok: &[&str]| -> Result<()> {
            match get(k) {
                None => Ok(()),
                Some(x) if x.as_str().is_some_and(|s| ok.contains(&s)) => Ok(()),
                Some(x) => Err(refuse(
                    k,
                    &ok.iter()
                        .map(|s| format!("{s:?}"))
                        .collect::<Vec<_>>()
                        .join(" or "),
                    x,
                )),
            }
        };
        let must_false = |k: &str| -> Result<()> {
            if self.flag_other(k)? {
                Err(refuse(k, "false (not implemented)", &Value::Bool(true)))
            } else {
                Ok(())
            }
        };
        let must_null = |k: &str, why: &str| -> Result<()> {
            match get(k) {
                None => Ok(()),
                Some(x) => Err(refuse(k, &format!("null ({why})"), x)),
            }
        };
        // Type checks only: keys whose value changes nothing with the rest of the config.
        let any_bool = |k: &str| self.flag_other(k).map(|_| ());
        let any_number = |k: &str| -> Result<()> {
            match get(k) {
                None => Ok(()),
                Some(x) if number(x).is_some() => Ok(()),
                Some(x) => Err(cfg_err(o, k, "a number", x)),
            }
        };
        match class {
            SchedulerClass::Ddim => {
                // Read only with thresholding, which from_json refuses.
                any_number("dynamic_thresholding_ratio")?;
                any_number("sample_max_value")?;
            }
            SchedulerClass::Ddpm => {
                must_str("variance_type", &["fixed_small"])?;
                any_number("dynamic_thresholding_ratio")?;
                any_number("sample_max_value")?;
            }
            SchedulerClass::EulerDiscrete => {
                must_str("interpolation_type", &["linear"])?;
                must_false("use_exponential_sigmas")?;
                must_false("use_beta_sigmas")?;
                must_str("final_sigmas_type", &["zero"])?;
                if self.prediction == Prediction::VPrediction {
                    must_str("timestep_type", &["discrete"])?;
                } else {
                    // Continuous timesteps change the numbers only with v-prediction.
                    must_str("timestep_type", &["discrete", "continuous"])?;
                }
                if grid == SigmaGrid::Karras {
                    must_null("sigma_min", "the Karras σ_min is the spacing's smallest σ")?;
                    must_null("sigma_max", "the Karras σ_max is the spacing's largest σ")?;
                } else {
                    any_number("sigma_min")?;
                    any_number("sigma_max")?;
                }
            }
            SchedulerClass::EulerAncestralDiscrete => {}
            SchedulerClass::HeunDiscrete => {
                must_false("use_exponential_sigmas")?;
                must_false("use_beta_sigmas")?;
                if self.clip_sample == Some(true) {
                    return Err(refuse(
                        "clip_sample",
                        "false (the heun sampler does not clip x̂₀)",
                        &Value::Bool(true),
                    ));
                }
                if self.rescale_betas_zero_snr {
                    return Err(refuse(
                        "rescale_betas_zero_snr",
                        "false (HeunDiscreteScheduler does not read it and would sample the unrescaled schedule; use euler or dpmpp_2m)",
                        &Value::Bool(true),
                    ));
                }
            }
            SchedulerClass::DpmSolverMultistep => {
                // solver_order and algorithm_type are the sampler's (dpmpp_2m: 2, dpmsolver++; …).
                match get("solver_order") {
                    None => {}
                    Some(x) if x.as_u64().is_some_and(|u| (1..=3).contains(&u)) => {}
                    Some(x) => return Err(cfg_err(o, "solver_order", "1, 2 or 3", x)),
                }
                match get("algorithm_type") {
                    None => {}
                    Some(x) if x.is_string() => {}
                    Some(x) => return Err(cfg_err(o, "algorithm_type", "a string", x)),
                }
                // diffusers maps the UniPC solver types to midpoint.
                must_str("solver_type", &["midpoint", "logrho", "bh1", "bh2"])?;
                if *sampler == SamplerKind::Dpmpp3mSde {
                    // With order ≤ 2 and final σ = 0 the flag changes no step.
                    match get("lower_order_final") {
                        None | Some(Value::Bool(true)) => {}
                        Some(x) => return Err(refuse("lower_order_final", "true", x)),
                    }
                } else {
                    any_bool("lower_order_final")?;
                }
                // With final_sigmas_type "zero" the last step is first order anyway.
                any_bool("euler_at_final")?;
                must_false("use_exponential_sigmas")?;
                must_false("use_beta_sigmas")?;
                self.flag_other("use_lu_lambdas")?;
                must_false("use_flow_sigmas")?;
                any_number("flow_shift")?;
                must_str("final_sigmas_type", &["zero"])?;
                match get("lambda_min_clipped") {
                    None => {}
                    Some(x) if number(x) == Some(f64::NEG_INFINITY) => {}
                    Some(x) => {
                        return Err(refuse(
                            "lambda_min_clipped",
                            "-Infinity (λ clipping is not implemented)",
                            x,
                        ));
                    }
                }
                must_null("variance_type", "learned variances are not implemented")?;
                // Read only with a shift μ passed to set_timesteps, which infodiff never passes.
                any_bool("use_dynamic_shifting")?;
                any_number("dynamic_thresholding_ratio")?;
                any_number("sample_max_value")?;
            }
        }
        Ok(())
    }

    /// The β, ᾱ tables `class` builds from this config (its defaults for absent keys).
    fn table(&self, class: SchedulerClass) -> Result<Table> {
        let tn = self.num_train_timesteps;
        let (d0, d1) = class.default_betas();
        let (b0, b1) = (self.beta_start.unwrap_or(d0), self.beta_end.unwrap_or(d1));
        let mut betas: Vec<f32> = if let Some(tb) = &self.trained_betas {
            tb.iter().map(|&b| b as f32).collect()
        } else {
            match self.beta_schedule {
                BetaSchedule::Linear => torch_linspace_f32(b0, b1, tn),
                BetaSchedule::ScaledLinear => torch_linspace_f32(b0.powf(0.5), b1.powf(0.5), tn)
                    .into_iter()
                    .map(|b| b * b)
                    .collect(),
                BetaSchedule::SquaredcosCapV2 => betas_for_alpha_bar(tn),
            }
        };
        let rescale = self.rescale_betas_zero_snr && class.reads_rescale();
        if rescale {
            if tn < 2 {
                return Err(cfg_err(
                    &self.origin,
                    "rescale_betas_zero_snr",
                    "false when num_train_timesteps = 1 (the rescale divides by ᾱ_0 − ᾱ_T)",
                    true,
                ));
            }
            betas = rescale_zero_terminal_snr(&betas);
        }
        let source = if self.trained_betas.is_some() {
            "trained_betas".to_string()
        } else {
            format!(
                "beta_schedule {:?} with beta_start {b0}, beta_end {b1}",
                self.beta_schedule.name()
            )
        };
        for (i, &b) in betas.iter().enumerate() {
            // β_T = 1 is the zero-terminal-SNR end.
            if !(b > 0.0 && b <= 1.0) {
                return Err(cfg_err(
                    &self.origin,
                    if self.trained_betas.is_some() {
                        "trained_betas"
                    } else {
                        "beta_schedule"
                    },
                    format!(
                        "β in (0, 1] at every timestep ({source}{})",
                        if rescale {
                            ", rescaled to zero terminal SNR"
                        } else {
                            ""
                        }
                    ),
                    format!("β[{i}] = {b}"),
                ));
            }
        }
        let alphas: Vec<f32> = betas.iter().map(|&b| 1.0f32 - b).collect();
        let raw = torch_cumprod_f32(&alphas);
        let mut ac = raw.clone();
        if rescale && class.floors_last_alpha_bar() {
            ac[tn - 1] = (2.0f32).powi(-24);
        }
        Ok(Table {
            betas,
            alphas_cumprod_raw: raw,
            alphas_cumprod: ac,
        })
    }

    /// The σ-space classes' (timesteps, σ) for S steps, float32 values as f64, S each (the final
    /// σ = 0 not included).
    fn sigma_grid(
        &self,
        class: SchedulerClass,
        table: &Table,
        spacing: Spacing,
        steps: usize,
        grid: SigmaGrid,
        sampler: &SamplerKind,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let tn = self.num_train_timesteps;
        let ac = &table.alphas_cumprod;
        // σ table in float32 (diffusers: ((1 − ᾱ)/ᾱ) ** 0.5 on float32 tensors). (T)
        let sig_tab: Vec<f32> = ac.iter().map(|&a| ((1.0f32 - a) / a).sqrt()).collect();
        // np.log of the float32 table (float32). (T)
        let log_sig: Vec<f32> = sig_tab.iter().map(|&s| (s as f64).ln() as f32).collect();
        let f32v = |v: f64| v as f32 as f64;
        if class == SchedulerClass::DpmSolverMultistep {
            let ts = integer_timesteps(class, spacing, tn, steps, self.steps_offset)
                .map_err(|e| self.spacing_err(e, class, spacing, steps))?;
            let cos =
                self.trained_betas.is_none() && self.beta_schedule == BetaSchedule::SquaredcosCapV2;
            let to_int = |t: f64| if cos { t.trunc() } else { t.round_ties_even() };
            let (ts, sig): (Vec<f64>, Vec<f64>) = match grid {
                SigmaGrid::Scheduler => ts
                    .iter()
                    .map(|&t| (t as f64, np_interp(t as f64, &sig_tab)))
                    .unzip(),
                SigmaGrid::Karras => {
                    // in_sigmas = the flipped table: σ_max = σ[T−1], σ_min = σ[0].
                    let ks = karras(sig_tab[0] as f64, sig_tab[tn - 1] as f64, steps);
                    ks.iter()
                        .map(|&s| (to_int(sigma_to_t(s, &log_sig)), s))
                        .unzip()
                }
                SigmaGrid::UniformLogSnr => {
                    let ls = lambda_uniform(log_sig[0] as f64, log_sig[tn - 1] as f64, steps);
                    ls.iter()
                        .map(|&l| {
                            let s = l.exp();
                            (to_int(sigma_to_t(s, &log_sig)), s)
                        })
                        .unzip()
                }
            };
            return Ok((ts, sig.into_iter().map(f32v).collect()));
        }
        // The Euler family: float32 timesteps.
        let ts: Vec<f64> = match spacing {
            Spacing::Linspace => np_linspace(0.0, (tn - 1) as f64, steps)
                .into_iter()
                .rev()
                .map(f32v)
                .collect(),
            Spacing::Leading => {
                let ratio = tn / steps;
                (0..steps)
                    .rev()
                    .map(|i| f32v((i * ratio) as f64) + self.steps_offset as f64)
                    .collect()
            }
            Spacing::Trailing => {
                let r = trailing_arange(tn as f64, tn, steps);
                if r.len() != steps {
                    return Err(self.spacing_err(
                        SpacingErr::ExtraTimestep(r.len()),
                        class,
                        spacing,
                        steps,
                    ));
                }
                r.into_iter()
                    .map(|t| f32v(t.round_ties_even()) - 1.0)
                    .collect()
            }
        };
        if let Some(&t) = ts.iter().find(|&&t| t > (tn - 1) as f64) {
            return Err(self.spacing_err(SpacingErr::OutOfRange(t as i64), class, spacing, steps));
        }
        let interp: Vec<f64> = ts.iter().map(|&t| np_interp(t, &sig_tab)).collect();
        let (ts, sig) = match grid {
            SigmaGrid::Scheduler => (ts, interp),
            SigmaGrid::Karras | SigmaGrid::UniformLogSnr => {
                let (smax, smin) = (interp[0], interp[steps - 1]);
                let sig = if grid == SigmaGrid::Karras {
                    karras(smin, smax, steps)
                } else {
                    if smin.is_nan() || smin <= 0.0 {
                        return Err(refuse_grid(grid, sampler, "needs σ_min > 0"));
                    }
                    lambda_uniform(smin.ln(), smax.ln(), steps)
                        .into_iter()
                        .map(f64::exp)
                        .collect()
                };
                let ts = if grid == SigmaGrid::Karras {
                    sig.iter().map(|&s| f32v(sigma_to_t(s, &log_sig))).collect()
                } else {
                    // As `set_timesteps(sigmas=…)` maps given σ to timesteps (float32).
                    sig.iter()
                        .map(|&s| f32v(sigma_to_t_f32(s as f32, &log_sig)))
                        .collect()
                };
                (ts, sig)
            }
        };
        Ok((ts, sig.into_iter().map(f32v).collect()))
    }
}

fn refuse_grid(grid: SigmaGrid, sampler: &SamplerKind, why: &str) -> Error {
    let flag = match grid {
        SigmaGrid::Karras => "--karras",
        SigmaGrid::UniformLogSnr => "--log-snr",
        SigmaGrid::Scheduler => "the σ grid",
    };
    Error::Unsupported {
        op: if grid == SigmaGrid::Karras {
            "--karras"
        } else {
            "--log-snr"
        },
        reason: format!(
            "{flag} is not available with sampler {}{}: it {why}",
            sampler.name(),
            diffusers_class(sampler)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        ),
    }
}

/// A class's β and ᾱ tables (float32). (T) each.
struct Table {
    betas: Vec<f32>,
    /// `torch.cumprod(1 − β)`.
    alphas_cumprod_raw: Vec<f32>,
    /// What the class steps with (the last one floored at 2⁻²⁴ after a rescale in σ-space classes).
    alphas_cumprod: Vec<f32>,
}

impl Table {
    /// The β table of the process that gives f, g² at grid points: the class's, with β_T matched
    /// to a floored last ᾱ (so that g² stays finite there).
    fn process_betas(&self) -> Vec<f64> {
        let mut b: Vec<f64> = self.betas.iter().map(|&b| b as f64).collect();
        let n = b.len();
        if n >= 2 && self.alphas_cumprod[n - 1] != self.alphas_cumprod_raw[n - 1] {
            let bt = 1.0 - self.alphas_cumprod[n - 1] as f64 / self.alphas_cumprod[n - 2] as f64;
            // (Where the floor exceeds ᾱ_{T−1}, β_T stays 1: g² = ∞ at the noise end.)
            if bt > 0.0 && bt <= 1.0 {
                b[n - 1] = bt;
            }
        }
        b
    }
}

enum SpacingErr {
    /// numpy's arange gave this many timesteps, not S.
    ExtraTimestep(usize),
    /// A timestep at or past T (steps_offset too large).
    OutOfRange(i64),
}

/// DDIM/DDPM/DPM-Solver's integer timesteps (S each), noise first.
fn integer_timesteps(
    class: SchedulerClass,
    spacing: Spacing,
    tn: usize,
    steps: usize,
    offset: usize,
) -> std::result::Result<Vec<i64>, SpacingErr> {
    let dpm = class == SchedulerClass::DpmSolverMultistep;
    let ts: Vec<i64> = match (spacing, dpm) {
        (Spacing::Linspace, false) => np_linspace(0.0, (tn - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| t.round_ties_even() as i64)
            .collect(),
        (Spacing::Linspace, true) => {
            // S + 1 points, reversed, the last (0) dropped.
            let mut v: Vec<i64> = np_linspace(0.0, (tn - 1) as f64, steps + 1)
                .into_iter()
                .rev()
                .map(|t| t.round_ties_even() as i64)
                .collect();
            v.pop();
            v
        }
        (Spacing::Leading, false) => {
            let ratio = tn / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio + offset) as i64)
                .collect()
        }
        (Spacing::Leading, true) => {
            let ratio = tn / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio + offset) as i64)
                .collect()
        }
        (Spacing::Trailing, _) => {
            let r = trailing_arange(tn as f64, tn, steps);
            if r.len() != steps {
                return Err(SpacingErr::ExtraTimestep(r.len()));
            }
            r.into_iter()
                .map(|t| t.round_ties_even() as i64 - 1)
                .collect()
        }
    };
    if let Some(&t) = ts.iter().find(|&&t| t >= tn as i64) {
        return Err(SpacingErr::OutOfRange(t));
    }
    Ok(ts)
}

/// `np.arange(start, 0, −T/S)` (numpy's float arange: length ⌈(0 − start)/step⌉, values
/// start + i·((start + step) − start)).
fn trailing_arange(start: f64, tn: usize, steps: usize) -> Vec<f64> {
    let step = -(tn as f64 / steps as f64);
    let len = ((0.0 - start) / step).ceil().max(0.0) as usize;
    let b1 = start + step;
    let d = b1 - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => b1,
            _ => start + i as f64 * d,
        })
        .collect()
}

/// `np.linspace(start, stop, num)` (float64): i·step + start, the last exactly `stop`.
fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 0 {
        return Vec::new();
    }
    let delta = stop - start;
    let div = num - 1;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        if step == 0.0 {
            (0..num).map(|i| i as f64 / div as f64 * delta).collect()
        } else {
            (0..num).map(|i| i as f64 * step).collect()
        }
    } else {
        vec![0.0 * delta]
    };
    for v in &mut y {
        *v += start;
    }
    if num > 1 {
        y[num - 1] = stop;
    }
    y
}

/// `np.interp(x, arange(len(fp)), fp)` in float64.
fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    let last = (n - 1) as f64;
    if x.is_nan() {
        return f64::NAN;
    }
    if x > last {
        return fp[n - 1] as f64;
    }
    if x < 0.0 {
        return fp[0] as f64;
    }
    let j = (x.floor() as usize).min(n - 1);
    if j == n - 1 || j as f64 == x {
        return fp[j] as f64;
    }
    let (y0, y1) = (fp[j] as f64, fp[j + 1] as f64);
    let slope = (y1 - y0) / 1.0;
    let r = slope * (x - j as f64) + y0;
    if r.is_nan() {
        let r2 = slope * (x - (j + 1) as f64) + y1;
        if r2.is_nan() && y0 == y1 {
            return y0;
        }
        return r2;
    }
    r
}

/// `_convert_to_karras`: (σ_max^{1/ρ} + ramp_i (σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, ρ = 7,
/// ramp = linspace(0, 1, S).
fn karras(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0f64;
    let min_inv = sigma_min.powf(1.0 / rho);
    let max_inv = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// `_convert_to_lu` on ln σ (diffusers' "lambdas" are ln σ = −λ): ln σ_max + ramp_i (ln σ_min −
/// ln σ_max), ramp = linspace(0, 1, S).
fn lambda_uniform(log_min: f64, log_max: f64, steps: usize) -> Vec<f64> {
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| log_max + r * (log_min - log_max))
        .collect()
}

/// `_sigma_to_t`: the fractional training timestep of σ by linear interpolation in ln σ on the
/// float32 table `log_sigmas` (increasing).
fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = log_sigmas.len();
    // The last index with ln σ_i ≤ ln σ (0 when none), at most T − 2.
    let cnt = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0);
    let low_idx = cnt.min(n.saturating_sub(2));
    let high_idx = low_idx + 1;
    if high_idx >= n {
        return 0.0;
    }
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = (low as f64 - log_sigma) / ((low - high) as f64);
    let w = w.clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// `_sigma_to_t` on a float32 σ (as `EulerDiscreteScheduler.set_timesteps(sigmas=…)` calls it):
/// ln σ, the differences and the weight in float32, the timestep in float64.
fn sigma_to_t_f32(sigma: f32, log_sigmas: &[f32]) -> f64 {
    let log_sigma = (sigma.max(1e-10f32) as f64).ln() as f32;
    let n = log_sigmas.len();
    let cnt = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l >= 0.0)
        .unwrap_or(0);
    let low_idx = cnt.min(n.saturating_sub(2));
    let high_idx = low_idx + 1;
    if high_idx >= n {
        return 0.0;
    }
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) as f64 * low_idx as f64 + w as f64 * high_idx as f64
}

/// `torch.linspace(a, b, n, dtype=float32)` as its SIMD kernels compute it: step =
/// (b − a)/(n − 1) in float32, element i = fma(step, i, a) for i < n/2 and
/// fma(−step, n − 1 − i, b) above.
fn torch_linspace_f32(a: f64, b: f64, n: usize) -> Vec<f32> {
    let (a, b) = (a as f32, b as f32);
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, a)
            } else {
                (-step).mul_add((n - 1 - i) as f32, b)
            }
        })
        .collect()
}

/// `torch.cumprod` on float32: a double accumulator, each product rounded to float32.
fn torch_cumprod_f32(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// diffusers' `betas_for_alpha_bar` (cosine): β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999) in float64,
/// ᾱ(t) = cos²((t + 0.008)/1.008 · π/2), rounded to float32.
fn betas_for_alpha_bar(n: usize) -> Vec<f32> {
    let ab = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - ab(t2) / ab(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers' `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1) in float32: √ᾱ shifted
/// so that the last is 0 and scaled so that the first is kept, then back to β.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|&b| 1.0f32 - b).collect();
    let ac = torch_cumprod_f32(&alphas);
    let mut sq: Vec<f32> = ac.iter().map(|&a| a.sqrt()).collect();
    let (s0, st) = (sq[0], sq[sq.len() - 1]);
    let scale = s0 / (s0 - st);
    for v in &mut sq {
        *v -= st;
    }
    for v in &mut sq {
        *v *= scale;
    }
    let ab: Vec<f32> = sq.iter().map(|&v| v * v).collect();
    (0..ab.len())
        .map(|i| {
            let a = if i == 0 { ab[0] } else { ab[i] / ab[i - 1] };
            1.0f32 - a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_numpy_linspace_rounds_half_to_even() {
        // np.linspace(0, 999, 7).round() = [0, 166, 333, 500, 666, 832, 999].
        let r: Vec<i64> = np_linspace(0.0, 999.0, 7)
            .into_iter()
            .map(|t| t.round_ties_even() as i64)
            .collect();
        assert_eq!(r, vec![0, 166, 333, 500, 666, 832, 999]);
        assert_eq!(np_linspace(0.0, 999.0, 1), vec![0.0]);
    }

    #[test]
    fn scheduler_trailing_arange_is_numpy_length() {
        // np.arange(1000, 0, -1000/61) has 62 elements (rounding), 1000/7 has 7.
        assert_eq!(trailing_arange(1000.0, 1000, 61).len(), 62);
        assert_eq!(trailing_arange(1000.0, 1000, 7).len(), 7);
        assert_eq!(trailing_arange(1000.0, 1000, 1000).len(), 1000);
    }

    #[test]
    fn scheduler_interp_hits_table_at_integers() {
        let fp = [1.0f32, 2.0, 4.0];
        assert_eq!(np_interp(1.0, &fp), 2.0);
        assert_eq!(np_interp(1.5, &fp), 3.0);
        assert_eq!(np_interp(-1.0, &fp), 1.0);
        assert_eq!(np_interp(7.0, &fp), 4.0);
    }

    #[test]
    fn scheduler_python_tokens_outside_strings_only() {
        let t = python_json_tokens(r#"{"a": -Infinity, "b": "NaN-Infinity", "c": NaN}"#);
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(number(&v["a"]), Some(f64::NEG_INFINITY));
        assert_eq!(v["b"], Value::String("NaN-Infinity".into()));
        assert!(number(&v["c"]).unwrap().is_nan());
    }

    #[test]
    fn scheduler_sigma_to_t_inverts_the_table() {
        let log: Vec<f32> = (0..10).map(|i| i as f32 * 0.5 - 2.0).collect();
        // ln σ = −2 + 0.5·3.25 → t = 3.25.
        let t = sigma_to_t((-2.0f64 + 0.5 * 3.25).exp(), &log);
        assert!((t - 3.25).abs() < 1e-6, "{t}");
        assert_eq!(sigma_to_t(1e-30, &log), 0.0);
    }

    #[test]
    fn scheduler_default_is_ddpm_linear() {
        let s = Scheduler::ddpm_default();
        assert_eq!(s.num_train_timesteps, 1000);
        assert_eq!(s.betas[0], 1e-4f32 as f64);
        assert_eq!(s.betas[999], 0.02f32 as f64);
        assert_eq!(s.prediction, Prediction::Epsilon);
        assert_eq!(s.default_sampler(), SamplerKind::Ddpm { clip: None });
        let p = s
            .plan(&SamplerKind::Ddpm { clip: None }, 10, SigmaGrid::Scheduler)
            .unwrap();
        assert_eq!(p.sampler, SamplerKind::Ddpm { clip: Some(1.0) });
        let ts: Vec<f64> = p.grid.points.iter().map(|q| q.timestep).collect();
        assert_eq!(
            ts,
            vec![
                900., 800., 700., 600., 500., 400., 300., 200., 100., 0., -1.
            ]
        );
    }
}
