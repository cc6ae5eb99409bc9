//! Forward processes, their grids, the parameterisations of a denoiser, and the reverse samplers.
//!
//! Reverse samplers integrate from the noise end T to the data end on a [`Grid`]; every step is
//! shown to an [`Observer`] as a [`StepView`]. See [`sampler`] for the [`Sampler`] trait and the
//! update rules (one file per sampler), and [`param`] for ε, x̂₀, v, the score and the network
//! timestep of a grid point.

pub mod param;
pub mod process;
pub mod sampler;
pub mod scheduler;

pub use param::Prediction;
pub use process::{
    Ddpm, Grid, GridPoint, Process, SubVp, Ve, Vp, VpCosine, ddpm_alpha_bar, ddpm_beta,
};
pub use sampler::{
    AncestralVariance, EndView, NoObserver, Observer, Sampler, SamplerKind, ScoreFn, StepCtx,
    StepView, Transition, sample, sample_from, sample_with,
};
pub use scheduler::{Plan, Scheduler, SigmaGrid, Spacing};
