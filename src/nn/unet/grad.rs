//! Training walk of the U-Net: the forward of [`super::walk`] over a flat parameter vector
//! ([`super::params::ParamLayout`]), keeping every activation the backward needs in one planned
//! buffer (its size known from the config and batch before the first step, filled in forward
//! order and consumed in reverse), and the backward that writes dL/dθ for every parameter.

use super::UNetConfig;
use super::params::ParamLayout;
use crate::error::{Error, Result};

/// Forward and backward of one network config at a fixed batch size.
pub struct UNetGrad {
    pub config: UNetConfig,
    layout: ParamLayout,
    batch: usize,
}

impl UNetGrad {
    /// Plans the saved-activation buffer for `batch` images of the config's sample size.
    pub fn new(config: UNetConfig, batch: usize) -> Result<UNetGrad> {
        let layout = ParamLayout::new(&config);
        Ok(UNetGrad {
            config,
            layout,
            batch,
        })
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The batch size planned for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Values of the saved-activation buffer.
    pub fn saved_floats(&self) -> usize {
        0
    }

    /// out (B, out_channels, H, W) = UNet(x (B, C, H, W), timesteps (B), labels (B·factors))
    /// with parameters `params`; keeps what [`UNetGrad::backward`] needs.
    pub fn forward(
        &mut self,
        params: &[f32],
        x: &[f32],
        timesteps: &[f32],
        labels: Option<&[i64]>,
    ) -> Result<&[f32]> {
        let _ = (params, x, timesteps, labels);
        Err(Error::Unsupported {
            op: "UNetGrad::forward",
            reason: "not yet implemented".into(),
        })
    }

    /// grads (overwritten, layout order) = dL/dθ for upstream dout = dL/d(out) of the last
    /// forward.
    pub fn backward(&mut self, params: &[f32], dout: &[f32], grads: &mut [f32]) -> Result<()> {
        let _ = (params, dout, grads);
        Err(Error::Unsupported {
            op: "UNetGrad::backward",
            reason: "not yet implemented".into(),
        })
    }
}
