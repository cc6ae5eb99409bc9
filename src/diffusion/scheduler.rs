//! A diffusers scheduler as its `scheduler_config.json` says it: β_i → ᾱ_i = ∏_{j≤i}(1 − β_j),
//! σ_i = √((1 − ᾱ_i)/ᾱ_i), and, for each named sampler, the grid of timesteps and σ it steps
//! over exactly as that sampler's diffusers class builds it (spacing `linspace`/`leading`/
//! `trailing`, `steps_offset`, Karras σ with ρ = 7, uniform log-SNR), with the class's initial
//! noise scale (`init_noise_sigma`).
//!
//! Grid points are in the network's (variance-preserving) space: a point of σ has
//! s = 1/√(1 + σ²), σ_t = σ·s, and the network input is the state itself (diffusers'
//! `scale_model_input` divides its σ-space state by √(σ² + 1), which is this state).

use std::path::Path;

use crate::diffusion::{Ddpm, Grid, Prediction, SamplerKind};
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

/// `timestep_spacing`: how S inference timesteps are chosen among the T training ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spacing {
    Linspace,
    Leading,
    Trailing,
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

/// What a `scheduler_config.json` says, validated. Keys a class leaves out take that class's
/// default, which is why the class-dependent ones are `Option`s here.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler {
    /// `_class_name` (e.g. `DDPMScheduler`), where given.
    pub class_name: Option<String>,
    /// T = `num_train_timesteps`.
    pub num_train_timesteps: usize,
    /// β_1..β_T after `rescale_betas_zero_snr`. (T)
    pub betas: Vec<f64>,
    /// ᾱ at training timesteps 0..T−1 (diffusers' `alphas_cumprod`). (T)
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
}

/// A sampler's grid and start as its diffusers class makes them.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Noise first, the data end (σ = 0, or DDIM's final ᾱ) last; `lands` set for DDIM/DDPM
    /// whose steps land at t − T/S.
    pub grid: Grid,
    /// The initial state is `init_scale`·z, z ~ N(0, I), in the grid's (VP) space: diffusers'
    /// `init_noise_sigma` times the first point's s where the class works in σ-space.
    pub init_scale: f64,
    /// The sampler with the scheduler's settings filled in (clipping).
    pub sampler: SamplerKind,
}

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
    /// numbers and that infodiff does not implement are refused naming key and value.
    pub fn from_json(text: &str, origin: &str) -> Result<Scheduler> {
        let _ = (text, origin);
        Err(Error::Unsupported {
            op: "Scheduler::from_json",
            reason: "not implemented yet".into(),
        })
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

    /// The grid, start and filled-in sampler of `sampler` at `steps` inference steps on `sigmas`,
    /// as `sampler`'s diffusers class builds them from this config.
    pub fn plan(&self, sampler: &SamplerKind, steps: usize, sigmas: SigmaGrid) -> Result<Plan> {
        let _ = (sampler, steps, sigmas);
        Err(Error::Unsupported {
            op: "Scheduler::plan",
            reason: "not implemented yet".into(),
        })
    }
}
