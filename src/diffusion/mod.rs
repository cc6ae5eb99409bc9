//! Forward processes, their grids, and the reverse samplers.
//!
//! Reverse samplers integrate from the noise end T to the data end on a [`Grid`]; every step is
//! shown to an [`Observer`] as a [`StepView`]. See [`sampler`] for the update rules.

pub mod process;
pub mod sampler;

pub use process::{
    Ddpm, Grid, GridPoint, Process, SubVp, Ve, Vp, VpCosine, ddpm_alpha_bar, ddpm_beta,
};
pub use sampler::{
    AncestralVariance, EndView, NoObserver, Observer, Sampler, StepView, Transition, sample,
};
