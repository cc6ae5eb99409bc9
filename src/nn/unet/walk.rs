//! The U-Net forward, walked once for every backend: conv_in; per level ResNet blocks (and
//! attention), skips kept, a strided conv down; the middle ResNet–attention–ResNet; per level
//! (layers + 1) × concat-with-skip, ResNet (and attention), nearest 2× up and a conv;
//! GroupNorm+SiLU and conv_out. Each op is one call of the backend's [`Ops`]; each ResNet's time
//! projection is a host linear of SiLU(emb) added per channel.

use super::weights::Params;
use super::{BlockKind, UNet};
use crate::error::{Error, Result};
use crate::nn::profile::scope;
use crate::ops::{Act, Ops};
use crate::tensor::Tensor;
use crate::tensor::ops::linear;

/// One forward: the backend, the network (host weights and config), its prepared parameters,
/// and SiLU(emb) (B, time_embed_dim) from [`UNet::embedding`].
pub(crate) struct Walk<'a, B: Ops> {
    pub be: &'a B,
    pub net: &'a UNet,
    pub p: &'a Params<B>,
    pub emb: &'a Tensor,
}

/// A copy of an activation (skip connections).
trait CopyAct: Ops {
    fn copy_act(&self, x: &Act<Self::Buf>) -> Result<Act<Self::Buf>> {
        Ok(Act {
            shape: x.shape,
            buf: self.copy(&x.buf)?,
        })
    }
}

impl<B: Ops> CopyAct for B {}

impl<B: Ops> Walk<'_, B> {
    fn conv(
        &self,
        x: &Act<B::Buf>,
        prefix: &str,
        stride: usize,
        pad: [usize; 4],
    ) -> Result<Act<B::Buf>> {
        let (w, b) = self.p.conv(prefix)?;
        scope("conv2d", || self.be.conv2d(x, w, b, stride, pad))
    }

    fn norm(
        &self,
        x: &Act<B::Buf>,
        prefix: &str,
        groups: usize,
        silu: bool,
    ) -> Result<Act<B::Buf>> {
        let (g, b) = self.p.norm(prefix)?;
        let eps = self.net.config.norm_eps;
        scope("group_norm+silu", || {
            self.be.group_norm_act(x, g, b, groups, eps, silu)
        })
    }

    fn attention(&self, x: &Act<B::Buf>, prefix: &str, groups: usize) -> Result<Act<B::Buf>> {
        let (g, b) = self.p.norm(&format!("{prefix}.group_norm"))?;
        let w = self.p.attn(prefix)?;
        let heads = self.net.config.heads(x.shape[1]);
        let norm = (g, b, groups, self.net.config.norm_eps);
        scope("attention", || self.be.attention(x, heads, norm, w))
    }

    fn add(&self, a: &Act<B::Buf>, b: &Act<B::Buf>) -> Result<Act<B::Buf>> {
        scope("add", || self.be.add_tensors(a, b))
    }

    /// ResnetBlock2D: h = conv1(SiLU(GN(x))) + proj(SiLU(emb)); h = conv2(SiLU(GN(h)));
    /// (shortcut(x) + h) / scale.
    fn resnet(&self, x: &Act<B::Buf>, p: &str, scale: f64) -> Result<Act<B::Buf>> {
        let g = self.net.config.norm_num_groups;
        let h = self.norm(x, &format!("{p}.norm1"), g, true)?;
        let mut h = self.conv(&h, &format!("{p}.conv1"), 1, [1; 4])?;
        let (pw, pb) = (
            self.net.tensor(&format!("{p}.time_emb_proj.weight"))?,
            self.net.tensor(&format!("{p}.time_emb_proj.bias"))?,
        );
        let tproj = scope("linear", || linear(self.emb, pw, Some(pb)))?; // (B, C)
        scope("add", || self.be.add_channel_bias(&mut h, &tproj.data))?;
        let h = self.norm(&h, &format!("{p}.norm2"), g, true)?;
        let h = self.conv(&h, &format!("{p}.conv2"), 1, [1; 4])?;
        let shortcut = format!("{p}.conv_shortcut");
        let mut y = if self.p.has_conv(&shortcut) {
            let short = self.conv(x, &shortcut, 1, [0; 4])?;
            self.add(&short, &h)?
        } else {
            self.add(x, &h)?
        };
        if scale != 1.0 {
            self.be.divide(&mut y, scale)?;
        }
        Ok(y)
    }

    /// The architecture walked once: `x` prepared ([`UNet::prepare_input`]) and on the
    /// backend.
    fn forward(&self, x: Act<B::Buf>) -> Result<Act<B::Buf>> {
        let cfg = &self.net.config;
        let levels = cfg.block_out_channels.len();
        let mut sample = self.conv(&x, "conv_in", 1, [1; 4])?;
        let mut skips = vec![self.be.copy_act(&sample)?];
        for (i, kind) in cfg.down_blocks.iter().enumerate() {
            for l in 0..cfg.layers_per_block {
                sample = self.resnet(&sample, &format!("down_blocks.{i}.resnets.{l}"), 1.0)?;
                if *kind == BlockKind::Attn {
                    let p = format!("down_blocks.{i}.attentions.{l}");
                    sample = self.attention(&sample, &p, cfg.norm_num_groups)?;
                }
                skips.push(self.be.copy_act(&sample)?);
            }
            if i + 1 < levels {
                // diffusers: padding 0 means an asymmetric (0, 1, 0, 1) pad before the conv.
                let p = cfg.downsample_padding;
                let pad = if p == 0 { [0, 1, 0, 1] } else { [p; 4] };
                sample = self.conv(
                    &sample,
                    &format!("down_blocks.{i}.downsamplers.0.conv"),
                    2,
                    pad,
                )?;
                skips.push(self.be.copy_act(&sample)?);
            }
        }
        // Middle.
        let ms = cfg.mid_block_scale_factor;
        sample = self.resnet(&sample, "mid_block.resnets.0", ms)?;
        if cfg.add_attention {
            let g = cfg.attn_norm_num_groups.unwrap_or(cfg.norm_num_groups);
            sample = self.attention(&sample, "mid_block.attentions.0", g)?;
            if ms != 1.0 {
                self.be.divide(&mut sample, ms)?;
            }
        }
        sample = self.resnet(&sample, "mid_block.resnets.1", ms)?;
        // Up path: each block consumes layers_per_block + 1 skips, last in first out.
        for (i, kind) in cfg.up_blocks.iter().enumerate() {
            for l in 0..=cfg.layers_per_block {
                let skip = skips.pop().ok_or_else(|| {
                    Error::shape("UNet::forward: skip connections", "one more", 0)
                })?;
                sample = scope("concat", || self.be.concat_channels(&sample, &skip))?;
                sample = self.resnet(&sample, &format!("up_blocks.{i}.resnets.{l}"), 1.0)?;
                if *kind == BlockKind::Attn {
                    let p = format!("up_blocks.{i}.attentions.{l}");
                    sample = self.attention(&sample, &p, cfg.norm_num_groups)?;
                }
            }
            if i + 1 < levels {
                sample = scope("upsample", || self.be.upsample_nearest2x(&sample))?;
                sample = self.conv(
                    &sample,
                    &format!("up_blocks.{i}.upsamplers.0.conv"),
                    1,
                    [1; 4],
                )?;
            }
        }
        let sample = self.norm(&sample, "conv_norm_out", cfg.norm_num_groups, true)?;
        self.conv(&sample, "conv_out", 1, [1; 4])
    }
}

/// The forward of `x` (prepared, on the backend) with prepared parameters `p`.
pub(crate) fn forward<B: Ops>(
    be: &B,
    net: &UNet,
    p: &Params<B>,
    x: Act<B::Buf>,
    emb: &Tensor,
) -> Result<Act<B::Buf>> {
    Walk { be, net, p, emb }.forward(x)
}
