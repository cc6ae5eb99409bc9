//! Fused domain kernels: whole computations of the information layer written as one kernel per
//! backend, apart from the generic tensor ops.
//!
//! - [`mixture_trajectory`]: whole reverse trajectories on an exact Gaussian mixture with the
//!   online classifier and every information sum, per trajectory in registers;
//! - [`sde_step`]: one reverse step of a network-scored batch (state update, in-kernel noise,
//!   classifier, per-step record);
//! - [`neural`]: the device-resident measurement loop around the U-Net and [`sde_step`].

pub mod mixture_trajectory;
pub mod neural;
pub mod sde_step;
