//! Training walk of the U-Net: out = UNet_θ(x, t, labels) as [`super::walk`] computes it, over a
//! flat parameter vector θ ([`super::params::ParamLayout`]), and the backward
//! dL/dθ = (∂out/∂θ)ᵀ·dL/d(out) for an upstream dL/d(out), through every layer in reverse.
//!
//! The walk is planned once per (config, batch) ([`UNetGrad::new`]): a chain of nodes (conv_in;
//! per level ResNets, attention, a strided conv; the middle ResNet–attention–ResNet; per level
//! ResNets over the concatenation with a skip, attention, a nearest 2× upsampling fused with its
//! conv; GroupNorm+SiLU fused with conv_out), each node's output a *value* A_{k+1} computed from
//! A_k (and, for an up ResNet, a skip A_j, j < k). Every value, each ResNet's inner
//! h = conv1(SiLU(GN1(x))) + proj(SiLU(emb)), each attention block's kept intermediates
//! ([`crate::ops::attention::backward::saved_len`]) and the time-embedding MLP's activations lie
//! in ONE saved-activation buffer whose size is known before the first step
//! ([`UNetGrad::saved_floats`]), filled in forward order (checked segment by segment) and read by
//! the backward in reverse. What the buffer does not hold is recomputed in the backward: the
//! GroupNorm(+SiLU) outputs that feed a convolution (one GroupNorm forward, cheaper than a
//! convolution), a concatenation, an upsampling.
//!
//! The skips are values of the chain, so an up ResNet's backward splits d(concat) into the
//! gradient of its main input and a pending gradient of the skip, added to the skip's gradient
//! when the backward reaches the node that produced it. The time embedding
//! emb = linear_2(SiLU(linear_1(sinusoid(t)))) + Σ_j table_j[label_j] enters every ResNet as
//! SiLU(emb) through its time_emb_proj; its gradient is summed over the ResNets in reverse walk
//! order, then taken through the MLP and into the tables' rows.
//!
//! Every reduction is in a fixed order (the ops sum parameter gradients over images in image
//! order), so the gradients do not depend on the thread count.

use std::ops::Range;

use rayon::prelude::*;

use super::params::ParamLayout;
use super::{BlockKind, UNetConfig};
use crate::backend::pool::Pooled;
use crate::error::{Error, Result};
use crate::ops::attention::backward::{
    AttnGrads, AttnParams, attention_backward, attention_forward_save, saved_len,
};
use crate::ops::conv2d::backward::conv2d_backward;
use crate::ops::conv2d::cpu::{ConvWeight, conv2d};
use crate::ops::conv2d::out_size;
use crate::ops::elementwise::backward::{
    silu_backward, split_channels, sum_planes, upsample2x_backward,
};
use crate::ops::elementwise::cpu::{add_par, add_planes_par, concat_par, silu_par, upsample2x_par};
use crate::ops::embedding::{embedding, embedding_backward, timestep_embedding};
use crate::ops::group_norm::backward::{group_norm_backward, group_norm_forward_save};
use crate::ops::linear::backward::linear_backward;
use crate::ops::linear::cpu::linear;

/// Values of one parameter tensor in the flat vector.
type R = Range<usize>;

/// A convolution: weight (O, C, kh, kw) and bias (O) in θ, its stride and (top, bottom, left,
/// right) padding, its index among the convolutions packed per forward.
#[derive(Clone, Debug)]
struct ConvP {
    w: R,
    b: R,
    shape: [usize; 4],
    stride: usize,
    pad: [usize; 4],
    packed: usize,
}

/// A GroupNorm: γ, β (C) in θ and its groups.
#[derive(Clone, Debug)]
struct NormP {
    g: R,
    b: R,
    groups: usize,
}

/// A linear layer: weight (out, in), bias (out) in θ.
#[derive(Clone, Debug)]
struct LinP {
    w: R,
    b: R,
    fin: usize,
    fout: usize,
}

/// One node of the chain.
#[derive(Clone, Debug)]
enum Op {
    /// y = conv(x), or conv(up2(x)) (an up block's upsampler).
    Conv { conv: ConvP, upsample: bool },
    /// ResnetBlock2D over x = A_k, or x = concat(A_k, A_skip):
    /// h = conv1(SiLU(GN1(x))) + proj(SiLU(emb)) (kept at `h1`);
    /// y = (shortcut(x) + conv2(SiLU(GN2(h)))) / scale.
    Resnet {
        norm1: NormP,
        conv1: ConvP,
        proj: LinP,
        norm2: NormP,
        conv2: ConvP,
        short: Option<ConvP>,
        scale: f64,
        skip: Option<usize>,
        h1: usize,
    },
    /// y = (x + attention(GN(x))) / scale, the op's kept values at `extra`.
    Attn {
        norm: NormP,
        heads: usize,
        qkvo: [LinP; 4],
        scale: f64,
        extra: R,
    },
    /// y = conv_out(SiLU(GN(x))).
    Head { norm: NormP, conv: ConvP },
}

/// Node: `out` = op(`input`) (value ids).
#[derive(Clone, Debug)]
struct Node {
    op: Op,
    input: usize,
    out: usize,
}

/// A value of the chain: its offset in the saved buffer and its (B, C, H, W) shape.
#[derive(Clone, Copy, Debug)]
struct Value {
    off: usize,
    shape: [usize; 4],
}

impl Value {
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
    fn range(&self) -> R {
        self.off..self.off + self.len()
    }
}

/// The time-embedding MLP and the label tables ((values in θ, rows) each), and where its
/// activations lie in the saved buffer: sinusoid (B, c0), a1 = linear_1 (B, te), s1 = SiLU(a1),
/// e = linear_2(s1) + Σ tables (B, te), semb = SiLU(e).
#[derive(Clone, Debug)]
struct TimeP {
    l1: LinP,
    l2: LinP,
    tables: Vec<(R, usize)>,
    temb: usize,
    a1: usize,
    s1: usize,
    e: usize,
    semb: usize,
}

/// The planned walk of one (config, batch).
#[derive(Clone, Debug)]
struct Plan {
    nodes: Vec<Node>,
    /// Value 0 is the prepared input; value k + 1 the output of node k.
    values: Vec<Value>,
    time: TimeP,
    /// Floats of the saved buffer.
    len: usize,
    /// Convolutions (packed once per forward).
    convs: Vec<(R, [usize; 4])>,
}

/// Builds a [`Plan`] by walking the architecture's shapes in forward order.
struct Planner<'a> {
    cfg: &'a UNetConfig,
    layout: &'a ParamLayout,
    b: usize,
    len: usize,
    values: Vec<Value>,
    nodes: Vec<Node>,
    convs: Vec<(R, [usize; 4])>,
}

impl Planner<'_> {
    /// `n` floats of the saved buffer, next in forward order.
    fn take(&mut self, n: usize) -> Result<usize> {
        let off = self.len;
        self.len = off.checked_add(n).ok_or_else(|| {
            Error::shape("UNetGrad: saved-activation buffer size", usize::MAX, "more")
        })?;
        Ok(off)
    }

    fn value(&mut self, shape: [usize; 4]) -> Result<usize> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::shape("UNetGrad: activation size", usize::MAX, shape))?;
        let off = self.take(n)?;
        self.values.push(Value { off, shape });
        Ok(self.values.len() - 1)
    }

    /// The parameter `name`'s values and shape.
    fn param(&self, name: &str) -> Result<(R, Vec<usize>)> {
        let e = self.layout.get(name).ok_or_else(|| Error::Unsupported {
            op: "UNetGrad",
            reason: format!("tensor `{name}` missing from the parameter layout"),
        })?;
        Ok((e.offset..e.offset + e.numel(), e.shape.clone()))
    }

    fn conv(&mut self, prefix: &str, stride: usize, pad: [usize; 4]) -> Result<ConvP> {
        let (w, s) = self.param(&format!("{prefix}.weight"))?;
        let (b, bs) = self.param(&format!("{prefix}.bias"))?;
        let shape: [usize; 4] = s
            .as_slice()
            .try_into()
            .map_err(|_| Error::shape("UNetGrad: convolution weight (O, C, kh, kw)", 4, &s))?;
        if bs != [shape[0]] {
            return Err(Error::shape(
                "UNetGrad: convolution bias (O)",
                [shape[0]],
                bs,
            ));
        }
        self.convs.push((w.clone(), shape));
        Ok(ConvP {
            w,
            b,
            shape,
            stride,
            pad,
            packed: self.convs.len() - 1,
        })
    }

    fn norm(&self, prefix: &str, groups: usize, channels: usize) -> Result<NormP> {
        let (g, gs) = self.param(&format!("{prefix}.weight"))?;
        let (b, bs) = self.param(&format!("{prefix}.bias"))?;
        if gs != [channels] || bs != [channels] {
            return Err(Error::shape(
                "UNetGrad: GroupNorm weight, bias (C)",
                [channels],
                (gs, bs),
            ));
        }
        if groups == 0 || channels % groups != 0 {
            return Err(Error::shape(
                "UNetGrad: GroupNorm channels divisible by groups",
                groups,
                channels,
            ));
        }
        Ok(NormP { g, b, groups })
    }

    fn lin(&self, prefix: &str, fin: usize, fout: usize) -> Result<LinP> {
        let (w, ws) = self.param(&format!("{prefix}.weight"))?;
        let (b, bs) = self.param(&format!("{prefix}.bias"))?;
        if ws != [fout, fin] || bs != [fout] {
            return Err(Error::shape(
                "UNetGrad: linear weight (out, in), bias (out)",
                ([fout, fin], [fout]),
                (ws, bs),
            ));
        }
        Ok(LinP { w, b, fin, fout })
    }

    /// Appends node `op` on value `input` with an output of `shape`; returns the output's id.
    fn push(&mut self, op: Op, input: usize, shape: [usize; 4]) -> Result<usize> {
        let out = self.value(shape)?;
        self.nodes.push(Node { op, input, out });
        Ok(out)
    }

    fn conv_node(
        &mut self,
        input: usize,
        prefix: &str,
        stride: usize,
        pad: [usize; 4],
        upsample: bool,
    ) -> Result<usize> {
        let conv = self.conv(prefix, stride, pad)?;
        let [b, c, h, w] = self.values[input].shape;
        let xs = if upsample {
            [b, c, 2 * h, 2 * w]
        } else {
            [b, c, h, w]
        };
        let (ho, wo) = out_size(xs, conv.shape, stride, pad)?;
        let shape = [b, conv.shape[0], ho, wo];
        self.push(Op::Conv { conv, upsample }, input, shape)
    }

    fn resnet(&mut self, input: usize, skip: Option<usize>, p: &str, scale: f64) -> Result<usize> {
        let [b, c1, h, w] = self.values[input].shape;
        let cin = match skip {
            Some(s) => {
                let [b2, c2, h2, w2] = self.values[s].shape;
                if (b2, h2, w2) != (b, h, w) {
                    return Err(Error::shape(
                        "UNetGrad: skip connection (B, ·, H, W)",
                        (b, h, w),
                        (b2, h2, w2),
                    ));
                }
                c1 + c2
            }
            None => c1,
        };
        let groups = self.cfg.norm_num_groups;
        let norm1 = self.norm(&format!("{p}.norm1"), groups, cin)?;
        let conv1 = self.conv(&format!("{p}.conv1"), 1, [1; 4])?;
        let cout = conv1.shape[0];
        out_size([b, cin, h, w], conv1.shape, 1, [1; 4])?;
        let proj = self.lin(&format!("{p}.time_emb_proj"), self.cfg.time_embed_dim, cout)?;
        let norm2 = self.norm(&format!("{p}.norm2"), groups, cout)?;
        let conv2 = self.conv(&format!("{p}.conv2"), 1, [1; 4])?;
        out_size([b, cout, h, w], conv2.shape, 1, [1; 4])?;
        let short = if self
            .layout
            .get(&format!("{p}.conv_shortcut.weight"))
            .is_some()
        {
            let s = self.conv(&format!("{p}.conv_shortcut"), 1, [0; 4])?;
            out_size([b, cin, h, w], s.shape, 1, [0; 4])?;
            Some(s)
        } else if cin != cout {
            return Err(Error::Unsupported {
                op: "UNetGrad",
                reason: format!("`{p}` changes channels ({cin} → {cout}) without a shortcut"),
            });
        } else {
            None
        };
        let h1 = self.take(b * cout * h * w)?;
        let op = Op::Resnet {
            norm1,
            conv1,
            proj,
            norm2,
            conv2,
            short,
            scale,
            skip,
            h1,
        };
        self.push(op, input, [b, cout, h, w])
    }

    fn attn(&mut self, input: usize, p: &str, groups: usize, scale: f64) -> Result<usize> {
        let shape = self.values[input].shape;
        let c = shape[1];
        let norm = self.norm(&format!("{p}.group_norm"), groups, c)?;
        let heads = self.cfg.heads(c);
        let l = |n: &str| self.lin(&format!("{p}.{n}"), c, c);
        let qkvo = [l("to_q")?, l("to_k")?, l("to_v")?, l("to_out.0")?];
        let n = saved_len(shape, heads, groups);
        let off = self.take(n)?;
        let op = Op::Attn {
            norm,
            heads,
            qkvo,
            scale,
            extra: off..off + n,
        };
        self.push(op, input, shape)
    }

    /// The walk of [`super::walk`], shapes only.
    fn plan(mut self) -> Result<Plan> {
        let cfg = self.cfg;
        let b = self.b;
        let s = cfg.sample_size.ok_or_else(|| {
            Error::config(
                "config.json: sample_size",
                "the training image size (a whole number)",
                "null",
            )
        })?;
        let ch = &cfg.block_out_channels;
        let (c0, te) = (ch[0], cfg.time_embed_dim);
        let l1 = self.lin("time_embedding.linear_1", c0, te)?;
        let l2 = self.lin("time_embedding.linear_2", te, te)?;
        let tables = cfg
            .label_tables()
            .iter()
            .map(|(name, rows)| {
                let (r, shape) = self.param(name)?;
                if shape != [*rows, te] {
                    return Err(Error::shape(
                        "UNetGrad: label table (rows, time_embed_dim)",
                        [*rows, te],
                        shape,
                    ));
                }
                Ok((r, *rows))
            })
            .collect::<Result<Vec<_>>>()?;
        let temb = self.take(b * c0)?;
        let a1 = self.take(b * te)?;
        let s1 = self.take(b * te)?;
        let e = self.take(b * te)?;
        let semb = self.take(b * te)?;
        let time = TimeP {
            l1,
            l2,
            tables,
            temb,
            a1,
            s1,
            e,
            semb,
        };

        let x = self.value([b, cfg.in_channels, s, s])?;
        let levels = ch.len();
        let mut cur = self.conv_node(x, "conv_in", 1, [1; 4], false)?;
        let mut skips = vec![cur];
        for (i, kind) in cfg.down_blocks.iter().enumerate() {
            for l in 0..cfg.layers_per_block {
                cur = self.resnet(cur, None, &format!("down_blocks.{i}.resnets.{l}"), 1.0)?;
                if *kind == BlockKind::Attn {
                    let p = format!("down_blocks.{i}.attentions.{l}");
                    cur = self.attn(cur, &p, cfg.norm_num_groups, 1.0)?;
                }
                skips.push(cur);
            }
            if i + 1 < levels {
                // diffusers: padding 0 means an asymmetric (0, 1, 0, 1) pad before the conv.
                let p = cfg.downsample_padding;
                let pad = if p == 0 { [0, 1, 0, 1] } else { [p; 4] };
                let prefix = format!("down_blocks.{i}.downsamplers.0.conv");
                cur = self.conv_node(cur, &prefix, 2, pad, false)?;
                skips.push(cur);
            }
        }
        let ms = cfg.mid_block_scale_factor;
        cur = self.resnet(cur, None, "mid_block.resnets.0", ms)?;
        if cfg.add_attention {
            let g = cfg.attn_norm_num_groups.unwrap_or(cfg.norm_num_groups);
            cur = self.attn(cur, "mid_block.attentions.0", g, ms)?;
        }
        cur = self.resnet(cur, None, "mid_block.resnets.1", ms)?;
        for (i, kind) in cfg.up_blocks.iter().enumerate() {
            for l in 0..=cfg.layers_per_block {
                let skip = skips
                    .pop()
                    .ok_or_else(|| Error::shape("UNetGrad: skip connections", "one more", 0))?;
                let p = format!("up_blocks.{i}.resnets.{l}");
                cur = self.resnet(cur, Some(skip), &p, 1.0)?;
                if *kind == BlockKind::Attn {
                    let p = format!("up_blocks.{i}.attentions.{l}");
                    cur = self.attn(cur, &p, cfg.norm_num_groups, 1.0)?;
                }
            }
            if i + 1 < levels {
                let prefix = format!("up_blocks.{i}.upsamplers.0.conv");
                cur = self.conv_node(cur, &prefix, 1, [1; 4], true)?;
            }
        }
        let norm = self.norm(
            "conv_norm_out",
            cfg.norm_num_groups,
            self.values[cur].shape[1],
        )?;
        let conv = self.conv("conv_out", 1, [1; 4])?;
        let [b, c, h, w] = self.values[cur].shape;
        let (ho, wo) = out_size([b, c, h, w], conv.shape, 1, [1; 4])?;
        let oshape = [b, conv.shape[0], ho, wo];
        self.push(Op::Head { norm, conv }, cur, oshape)?;
        Ok(Plan {
            nodes: self.nodes,
            values: self.values,
            time,
            len: self.len,
            convs: self.convs,
        })
    }
}

/// Disjoint mutable parts `rs` of `g` (any order; they must not overlap).
fn parts<'a, const N: usize>(g: &'a mut [f32], rs: [&R; N]) -> Result<[&'a mut [f32]; N]> {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by_key(|&i| rs[i].start);
    let mut out: [Option<&'a mut [f32]>; N] = std::array::from_fn(|_| None);
    let mut rest = g;
    let mut base = 0;
    for &i in &order {
        let r = rs[i];
        if r.start < base || r.end > base + rest.len() || r.end < r.start {
            return Err(Error::shape(
                "UNetGrad: disjoint parameter tensors",
                base..base + rest.len(),
                r.clone(),
            ));
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(r.start - base);
        let (mid, tail) = tail.split_at_mut(r.end - r.start);
        out[i] = Some(mid);
        rest = tail;
        base = r.end;
    }
    Ok(out.map(|o| o.unwrap_or_default()))
}

/// a += b element-wise, in parallel chunks (each element one addition: the order of the chunks
/// does not change the result).
fn add_assign(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x += y));
}

/// x /= s as the walk divides (in f64, rounded once).
fn divide(x: &mut [f32], s: f64) {
    if s != 1.0 {
        x.par_chunks_mut(1 << 14)
            .for_each(|c| c.iter_mut().for_each(|v| *v = (*v as f64 / s) as f32));
    }
}

/// Forward and backward of one network config at a fixed batch size.
pub struct UNetGrad {
    pub config: UNetConfig,
    layout: ParamLayout,
    batch: usize,
    plan: Plan,
    /// The saved-activation buffer ([`UNetGrad::saved_floats`] values), allocated once.
    saved: Vec<f32>,
    /// Floats of `saved` the last forward filled (0 before one succeeds).
    used: usize,
    /// Every convolution's weight packed by the last forward.
    packed: Vec<ConvWeight>,
    /// Label ids of the last forward, per table (B each).
    ids: Vec<Vec<usize>>,
}

impl UNetGrad {
    /// Plans the saved-activation buffer for `batch` images of the config's sample size (a
    /// config without `sample_size` is refused) and allocates it; refuses a buffer larger than
    /// the machine's memory.
    pub fn new(config: UNetConfig, batch: usize) -> Result<UNetGrad> {
        if batch == 0 {
            return Err(Error::shape("UNetGrad: batch", "≥ 1", 0));
        }
        let layout = ParamLayout::new(&config);
        let plan = Planner {
            cfg: &config,
            layout: &layout,
            b: batch,
            len: 0,
            values: vec![],
            nodes: vec![],
            convs: vec![],
        }
        .plan()?;
        let bytes = (plan.len as u64).saturating_mul(4);
        if let Some(limit) = crate::io::memory_limit()
            && bytes > limit
        {
            return Err(Error::shape(
                "UNetGrad: saved activations within this machine's memory",
                format!("at most {limit} bytes"),
                format!("{bytes} bytes for batch {batch}"),
            ));
        }
        let saved = vec![0.0f32; plan.len];
        Ok(UNetGrad {
            config,
            layout,
            batch,
            plan,
            saved,
            used: 0,
            packed: vec![],
            ids: vec![],
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

    /// The input shape planned for, (B, C, H, W).
    pub fn input_shape(&self) -> [usize; 4] {
        self.plan.values[0].shape
    }

    /// The output shape, (B, out_channels, H, W).
    pub fn output_shape(&self) -> [usize; 4] {
        self.plan.values[self.plan.values.len() - 1].shape
    }

    /// Values of the saved-activation buffer (planned from the config and batch).
    pub fn saved_floats(&self) -> usize {
        self.plan.len
    }

    /// Values of the saved-activation buffer the last forward filled, segment by segment in
    /// forward order (0 before a forward succeeds); equal to [`UNetGrad::saved_floats`].
    pub fn used_floats(&self) -> usize {
        self.used
    }

    /// out (B, out_channels, H, W) = UNet(x (B, C, H, W), timesteps (B), labels (B·F), F the
    /// config's label tables, row-major: image b's label of table j at b·F + j) with parameters
    /// `params`; keeps what [`UNetGrad::backward`] needs. A model without label tables takes
    /// `None` (or no labels).
    pub fn forward(
        &mut self,
        params: &[f32],
        x: &[f32],
        timesteps: &[f32],
        labels: Option<&[i64]>,
    ) -> Result<&[f32]> {
        self.used = 0;
        let b = self.batch;
        if params.len() != self.layout.len() {
            return Err(Error::shape(
                "UNetGrad::forward: parameters",
                self.layout.len(),
                params.len(),
            ));
        }
        let xin = self.plan.values[0];
        if x.len() != xin.len() {
            return Err(Error::shape(
                "UNetGrad::forward: sample (B, C, H, W) as planned",
                xin.shape,
                x.len(),
            ));
        }
        if timesteps.len() != b {
            return Err(Error::shape(
                "UNetGrad::forward: timesteps (B)",
                b,
                timesteps.len(),
            ));
        }
        self.ids = self.label_ids(labels)?;
        self.packed = self
            .plan
            .convs
            .iter()
            .map(|(r, shape)| ConvWeight::new(&params[r.clone()], *shape))
            .collect::<Result<_>>()?;
        let mut pos = 0usize;
        self.time_forward(params, timesteps, &mut pos)?;
        // The prepared input (centred when the config asks).
        let seg = segment(&mut pos, xin.off, xin.len())?;
        let dst = &mut self.saved[seg];
        dst.copy_from_slice(x);
        if self.config.center_input_sample {
            dst.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
        }
        for k in 0..self.plan.nodes.len() {
            self.node_forward(k, params, &mut pos)?;
        }
        if pos != self.plan.len {
            return Err(Error::shape(
                "UNetGrad::forward: saved-activation buffer filled as planned",
                self.plan.len,
                pos,
            ));
        }
        self.used = pos;
        let out = self.plan.values[self.plan.values.len() - 1];
        Ok(&self.saved[out.range()])
    }

    /// The labels checked against the tables: ids per table (B each).
    fn label_ids(&self, labels: Option<&[i64]>) -> Result<Vec<Vec<usize>>> {
        let b = self.batch;
        let tables = &self.plan.time.tables;
        let f = tables.len();
        let labels = match labels {
            None if f > 0 => {
                return Err(Error::Unsupported {
                    op: "UNetGrad::forward",
                    reason: format!(
                        "labels are required by a class-conditional model ({f} label table(s))"
                    ),
                });
            }
            None => &[][..],
            Some(l) => l,
        };
        if labels.len() != b * f {
            return Err(Error::shape(
                "UNetGrad::forward: labels (B·tables)",
                b * f,
                labels.len(),
            ));
        }
        (0..f)
            .map(|j| {
                let rows = tables[j].1;
                (0..b)
                    .map(|i| {
                        let l = labels[i * f + j];
                        usize::try_from(l)
                            .ok()
                            .filter(|&l| l < rows)
                            .ok_or_else(|| match self.config.factor_names.get(j) {
                                None => Error::shape(
                                    "UNetGrad::forward: class label in 0..num_class_embeds",
                                    rows,
                                    l,
                                ),
                                Some(f) => Error::shape(
                                    "UNetGrad::forward: label of (factor, rows) in 0..rows",
                                    (f, rows),
                                    l,
                                ),
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// The time embedding (sinusoid, linear_1, SiLU, linear_2 + label rows, SiLU) into the
    /// saved buffer.
    fn time_forward(&mut self, params: &[f32], t: &[f32], pos: &mut usize) -> Result<()> {
        let b = self.batch;
        let tp = &self.plan.time;
        let (c0, te) = (tp.l1.fin, tp.l1.fout);
        let cfg = &self.config;
        let sv = &mut self.saved;
        let seg = segment(pos, tp.temb, b * c0)?;
        timestep_embedding(
            t,
            c0,
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
            10000.0,
            &mut sv[seg.clone()],
        );
        let a1 = segment(pos, tp.a1, b * te)?;
        {
            let (lo, hi) = sv.split_at_mut(a1.start);
            let l = &tp.l1;
            linear(
                &lo[seg],
                (b, c0),
                &params[l.w.clone()],
                te,
                Some(&params[l.b.clone()]),
                &mut hi[..b * te],
            )?;
        }
        let s1 = segment(pos, tp.s1, b * te)?;
        sv.copy_within(a1.clone(), s1.start);
        silu_par(&mut sv[s1.clone()]);
        let e = segment(pos, tp.e, b * te)?;
        {
            let (lo, hi) = sv.split_at_mut(e.start);
            let l = &tp.l2;
            let out = &mut hi[..b * te];
            linear(
                &lo[s1],
                (b, te),
                &params[l.w.clone()],
                te,
                Some(&params[l.b.clone()]),
                out,
            )?;
            for ((r, rows), ids) in tp.tables.iter().zip(&self.ids) {
                let rowsv = embedding(&params[r.clone()], (*rows, te), ids)?; // (B, te)
                let sum = out.to_vec();
                add_par(&sum, &rowsv, out);
            }
        }
        let semb = segment(pos, tp.semb, b * te)?;
        sv.copy_within(e, semb.start);
        silu_par(&mut sv[semb]);
        Ok(())
    }

    /// Node `k`'s forward: its output (and kept intermediates) into the saved buffer.
    fn node_forward(&mut self, k: usize, params: &[f32], pos: &mut usize) -> Result<()> {
        let plan = &self.plan;
        let node = &plan.nodes[k];
        let xv = plan.values[node.input];
        let ov = plan.values[node.out];
        let eps = self.config.norm_eps;
        let packed = &self.packed;
        let sv = &mut self.saved;
        let [b, c, h, w] = xv.shape;
        match &node.op {
            Op::Conv { conv, upsample } => {
                let seg = segment(pos, ov.off, ov.len())?;
                let (lo, hi) = sv.split_at_mut(seg.start);
                let x = &lo[xv.range()];
                let y = &mut hi[..ov.len()];
                let bias = Some(&params[conv.b.clone()]);
                let cw = &packed[conv.packed];
                if *upsample {
                    let mut up = Pooled::stale(4 * xv.len()); // (B, C, 2H, 2W), all written
                    upsample2x_par(x, &mut up.0, h, w);
                    conv2d(
                        &up.0,
                        [b, c, 2 * h, 2 * w],
                        cw,
                        bias,
                        conv.stride,
                        conv.pad,
                        y,
                    )?;
                } else {
                    conv2d(x, xv.shape, cw, bias, conv.stride, conv.pad, y)?;
                }
            }
            Op::Resnet {
                norm1,
                conv1,
                proj,
                norm2,
                conv2,
                short,
                scale,
                skip,
                h1,
            } => {
                let cout = ov.shape[1];
                let (n_out, hw) = (ov.len(), h * w);
                let hseg = segment(pos, *h1, n_out)?;
                let oseg = segment(pos, ov.off, n_out)?;
                let (lo, hi) = sv.split_at_mut(hseg.start);
                let (hbuf, rest) = hi.split_at_mut(n_out);
                let y = &mut rest[oseg.start - hseg.end..][..n_out];
                let semb = &lo[plan.time.semb..plan.time.semb + b * proj.fin];
                // x (B, Cin, H, W): the input, or its concatenation with the skip.
                let xcat;
                let (x, cin) = match skip {
                    Some(s) => {
                        let sk = plan.values[*s];
                        let c2 = sk.shape[1];
                        let mut cat = Pooled::stale(b * (c + c2) * hw); // all copied in
                        concat_par(
                            &lo[xv.range()],
                            &lo[sk.range()],
                            &mut cat.0,
                            c * hw,
                            c2 * hw,
                        );
                        xcat = cat;
                        (&xcat.0[..], c + c2)
                    }
                    None => (&lo[xv.range()], c),
                };
                let xs = [b, cin, h, w];
                let os = [b, cout, h, w];
                let mut g1 = Pooled::stale(x.len()); // SiLU(GN1(x)), all written
                gn_forward(params, norm1, x, xs, eps, &mut g1.0)?;
                conv_fwd(params, packed, conv1, &g1.0, xs, hbuf)?;
                drop(g1);
                let mut tproj = vec![0.0f32; b * cout]; // (B, Cout)
                linear(
                    semb,
                    (b, proj.fin),
                    &params[proj.w.clone()],
                    cout,
                    Some(&params[proj.b.clone()]),
                    &mut tproj,
                )?;
                add_planes_par(hbuf, &tproj, hw);
                let mut g2 = Pooled::stale(n_out); // SiLU(GN2(h)), all written
                gn_forward(params, norm2, hbuf, os, eps, &mut g2.0)?;
                let mut h2 = Pooled::stale(n_out); // conv2(g2), all written
                conv_fwd(params, packed, conv2, &g2.0, os, &mut h2.0)?;
                drop(g2);
                match short {
                    Some(sc) => {
                        let mut s = Pooled::stale(n_out); // shortcut(x), all written
                        conv_fwd(params, packed, sc, x, xs, &mut s.0)?;
                        add_par(&s.0, &h2.0, y);
                    }
                    None => add_par(x, &h2.0, y),
                }
                divide(y, *scale);
            }
            Op::Attn {
                norm,
                heads,
                qkvo,
                scale,
                extra,
            } => {
                let eseg = segment(pos, extra.start, extra.len())?;
                let oseg = segment(pos, ov.off, ov.len())?;
                let (lo, hi) = sv.split_at_mut(eseg.start);
                let (ebuf, rest) = hi.split_at_mut(eseg.len());
                let y = &mut rest[oseg.start - eseg.end..][..ov.len()];
                let p = attn_params(params, norm, *heads, qkvo, eps);
                attention_forward_save(&lo[xv.range()], xv.shape, &p, y, ebuf)?;
                divide(y, *scale);
            }
            Op::Head { norm, conv } => {
                let seg = segment(pos, ov.off, ov.len())?;
                let (lo, hi) = sv.split_at_mut(seg.start);
                let x = &lo[xv.range()];
                let mut g = Pooled::stale(x.len()); // SiLU(GN(x)), all written
                gn_forward(params, norm, x, xv.shape, eps, &mut g.0)?;
                conv_fwd(params, packed, conv, &g.0, xv.shape, &mut hi[..ov.len()])?;
            }
        }
        Ok(())
    }

    /// grads (overwritten, layout order) = dL/dθ for upstream dout = dL/d(out) of the last
    /// forward, whose parameters `params` must be (the backward reads the weights again).
    pub fn backward(&mut self, params: &[f32], dout: &[f32], grads: &mut [f32]) -> Result<()> {
        if self.used != self.plan.len {
            return Err(Error::Unsupported {
                op: "UNetGrad::backward",
                reason: "no forward to take the gradient of (run UNetGrad::forward first)".into(),
            });
        }
        let n = self.layout.len();
        if params.len() != n || grads.len() != n {
            return Err(Error::shape(
                "UNetGrad::backward: parameters, gradients",
                (n, n),
                (params.len(), grads.len()),
            ));
        }
        let plan = &self.plan;
        let out = plan.values[plan.values.len() - 1];
        if dout.len() != out.len() {
            return Err(Error::shape(
                "UNetGrad::backward: dout (B, out_channels, H, W)",
                out.shape,
                dout.len(),
            ));
        }
        grads.fill(0.0);
        let b = self.batch;
        let te = plan.time.l2.fout;
        let mut dsemb = vec![0.0f32; b * te]; // dL/d SiLU(emb) (B, te), summed over ResNets
        let mut pending: Vec<Option<Pooled>> = (0..plan.values.len()).map(|_| None).collect();
        let mut dcur = Pooled::stale(dout.len());
        dcur.0.copy_from_slice(dout);
        let ctx = Ctx {
            params,
            saved: &self.saved,
            plan,
            eps: self.config.norm_eps,
            b,
        };
        for node in plan.nodes.iter().rev() {
            if let Some(p) = pending[node.out].take() {
                add_assign(&mut dcur.0, &p.0);
            }
            match ctx.node_backward(node, dcur, grads, &mut dsemb, &mut pending)? {
                Some(d) => dcur = d,
                None => break, // conv_in: the input is not learned
            }
        }
        ctx.time_backward(&self.ids, &dsemb, grads)
    }
}

/// Claims `n` floats at `off` of the saved buffer, which must be the next in forward order.
fn segment(pos: &mut usize, off: usize, n: usize) -> Result<R> {
    if off != *pos {
        return Err(Error::shape(
            "UNetGrad: saved-activation buffer filled in forward order",
            *pos,
            off,
        ));
    }
    *pos += n;
    Ok(off..off + n)
}

/// y = SiLU(GN(x)) (stats discarded).
fn gn_forward(
    params: &[f32],
    n: &NormP,
    x: &[f32],
    shape: [usize; 4],
    eps: f32,
    y: &mut [f32],
) -> Result<()> {
    let mut stats = vec![0.0f32; shape[0] * n.groups * 2];
    group_norm_forward_save(
        x,
        shape,
        n.groups,
        &params[n.g.clone()],
        &params[n.b.clone()],
        eps,
        true,
        y,
        &mut stats,
    )
}

/// y = conv(x) with the weight packed by this forward.
fn conv_fwd(
    params: &[f32],
    packed: &[ConvWeight],
    c: &ConvP,
    x: &[f32],
    xs: [usize; 4],
    y: &mut [f32],
) -> Result<()> {
    let bias = Some(&params[c.b.clone()]);
    conv2d(x, xs, &packed[c.packed], bias, c.stride, c.pad, y)?;
    Ok(())
}

fn attn_params<'a>(
    params: &'a [f32],
    norm: &NormP,
    heads: usize,
    qkvo: &[LinP; 4],
    eps: f32,
) -> AttnParams<'a> {
    let pair = |l: &LinP| (&params[l.w.clone()], &params[l.b.clone()]);
    AttnParams {
        gamma: &params[norm.g.clone()],
        beta: &params[norm.b.clone()],
        groups: norm.groups,
        eps,
        heads,
        qkvo: [
            pair(&qkvo[0]),
            pair(&qkvo[1]),
            pair(&qkvo[2]),
            pair(&qkvo[3]),
        ],
    }
}

/// What the backward reads: parameters, the saved buffer, the plan.
struct Ctx<'a> {
    params: &'a [f32],
    saved: &'a [f32],
    plan: &'a Plan,
    eps: f32,
    b: usize,
}

impl Ctx<'_> {
    fn p(&self, r: &R) -> &[f32] {
        &self.params[r.clone()]
    }

    /// SiLU(GN(x)) and its (μ, r) stats, recomputed.
    fn gn_recompute(&self, n: &NormP, x: &[f32], shape: [usize; 4]) -> Result<(Pooled, Vec<f32>)> {
        let mut y = Pooled::stale(x.len()); // all written
        let mut stats = vec![0.0f32; shape[0] * n.groups * 2];
        group_norm_forward_save(
            x,
            shape,
            n.groups,
            self.p(&n.g),
            self.p(&n.b),
            self.eps,
            true,
            &mut y.0,
            &mut stats,
        )?;
        Ok((y, stats))
    }

    /// dx and the GroupNorm's dγ, dβ (+=) of y = SiLU(GN(x)).
    fn gn_backward(
        &self,
        n: &NormP,
        x: &[f32],
        shape: [usize; 4],
        stats: &[f32],
        dy: &[f32],
        grads: &mut [f32],
    ) -> Result<Pooled> {
        let mut dx = Pooled::stale(x.len()); // overwritten by the op
        let [dg, db] = parts(grads, [&n.g, &n.b])?;
        group_norm_backward(
            x,
            shape,
            n.groups,
            self.p(&n.g),
            self.p(&n.b),
            true,
            stats,
            dy,
            &mut dx.0,
            dg,
            db,
        )?;
        Ok(dx)
    }

    /// The convolution's dx (when `want_dx`) and dW, db (+=).
    fn conv_backward(
        &self,
        c: &ConvP,
        x: &[f32],
        xs: [usize; 4],
        dy: &[f32],
        grads: &mut [f32],
        want_dx: bool,
    ) -> Result<Option<Pooled>> {
        let mut dx = want_dx.then(|| Pooled::stale(x.len())); // overwritten by the op
        let [dw, db] = parts(grads, [&c.w, &c.b])?;
        conv2d_backward(
            x,
            xs,
            self.p(&c.w),
            c.shape,
            c.stride,
            c.pad,
            dy,
            dx.as_mut().map(|d| &mut d.0[..]),
            dw,
            db,
        )?;
        Ok(dx)
    }

    /// Node `node`'s backward from dy = dL/d(its output): the parameter gradients (+=), the
    /// gradient of a skip into `pending`, and dL/d(its input) (None for conv_in).
    fn node_backward(
        &self,
        node: &Node,
        mut dy: Pooled,
        grads: &mut [f32],
        dsemb: &mut [f32],
        pending: &mut [Option<Pooled>],
    ) -> Result<Option<Pooled>> {
        let plan = self.plan;
        let xv = plan.values[node.input];
        let ov = plan.values[node.out];
        let sv = self.saved;
        let x = &sv[xv.range()];
        let [b, c, h, w] = xv.shape;
        let want_dx = node.input != 0;
        match &node.op {
            Op::Conv { conv, upsample } => {
                if *upsample {
                    let mut up = Pooled::stale(4 * x.len()); // (B, C, 2H, 2W), all written
                    upsample2x_par(x, &mut up.0, h, w);
                    let us = [b, c, 2 * h, 2 * w];
                    let dup = self.conv_backward(conv, &up.0, us, &dy.0, grads, true)?;
                    let mut dx = Pooled::stale(x.len()); // overwritten by the op
                    if let Some(dup) = dup {
                        upsample2x_backward(&dup.0, h, w, &mut dx.0)?;
                    }
                    Ok(Some(dx))
                } else {
                    self.conv_backward(conv, x, xv.shape, &dy.0, grads, want_dx)
                }
            }
            Op::Resnet {
                norm1,
                conv1,
                proj,
                norm2,
                conv2,
                short,
                scale,
                skip,
                h1,
            } => {
                let cout = ov.shape[1];
                let (n_out, hw) = (ov.len(), h * w);
                divide(&mut dy.0, *scale);
                let hbuf = &sv[*h1..*h1 + n_out];
                let os = [b, cout, h, w];
                // conv2 and norm2.
                let (g2, st2) = self.gn_recompute(norm2, hbuf, os)?;
                let dg2 = self
                    .conv_backward(conv2, &g2.0, os, &dy.0, grads, true)?
                    .unwrap_or_else(|| Pooled::zeroed(0));
                drop(g2);
                let dh = self.gn_backward(norm2, hbuf, os, &st2, &dg2.0, grads)?;
                drop(dg2);
                // The time projection: d proj = Σ_positions dh.
                let mut dtp = vec![0.0f32; b * cout]; // (B, Cout)
                sum_planes(&dh.0, hw, &mut dtp)?;
                let mut dse = vec![0.0f32; b * proj.fin]; // (B, te)
                let semb = &sv[plan.time.semb..plan.time.semb + b * proj.fin];
                {
                    let [dw, db] = parts(grads, [&proj.w, &proj.b])?;
                    linear_backward(
                        semb,
                        (b, proj.fin, proj.fout),
                        self.p(&proj.w),
                        &dtp,
                        Some(&mut dse),
                        dw,
                        db,
                    )?;
                }
                add_assign(dsemb, &dse);
                // x: the input, or its concatenation with the skip (recomputed).
                let xcat;
                let (x, cin) = match skip {
                    Some(s) => {
                        let sk = plan.values[*s];
                        let c2 = sk.shape[1];
                        let mut cat = Pooled::stale(b * (c + c2) * hw); // all copied in
                        concat_par(x, &sv[sk.range()], &mut cat.0, c * hw, c2 * hw);
                        xcat = cat;
                        (&xcat.0[..], c + c2)
                    }
                    None => (x, c),
                };
                let xs = [b, cin, h, w];
                // conv1 and norm1.
                let (g1, st1) = self.gn_recompute(norm1, x, xs)?;
                let dg1 = self
                    .conv_backward(conv1, &g1.0, xs, &dh.0, grads, true)?
                    .unwrap_or_else(|| Pooled::zeroed(0));
                drop((g1, dh));
                let mut dx = self.gn_backward(norm1, x, xs, &st1, &dg1.0, grads)?;
                drop(dg1);
                // The shortcut.
                match short {
                    Some(sc) => {
                        if let Some(ds) = self.conv_backward(sc, x, xs, &dy.0, grads, true)? {
                            add_assign(&mut dx.0, &ds.0);
                        }
                    }
                    None => add_assign(&mut dx.0, &dy.0),
                }
                match skip {
                    Some(s) => {
                        let c2 = cin - c;
                        let mut dmain = Pooled::stale(xv.len()); // overwritten by the op
                        let mut dskip = Pooled::stale(b * c2 * hw); // overwritten by the op
                        split_channels(&dx.0, [b, c, c2, hw], &mut dmain.0, &mut dskip.0)?;
                        match &mut pending[*s] {
                            Some(p) => add_assign(&mut p.0, &dskip.0),
                            slot => *slot = Some(dskip),
                        }
                        Ok(Some(dmain))
                    }
                    None => Ok(Some(dx)),
                }
            }
            Op::Attn {
                norm,
                heads,
                qkvo,
                scale,
                extra,
            } => {
                divide(&mut dy.0, *scale);
                let p = attn_params(self.params, norm, *heads, qkvo, self.eps);
                let mut dx = Pooled::stale(x.len()); // overwritten by the op
                let [gg, gb, qw, qb, kw, kb, vw, vb, ow, ob] = parts(
                    grads,
                    [
                        &norm.g, &norm.b, &qkvo[0].w, &qkvo[0].b, &qkvo[1].w, &qkvo[1].b,
                        &qkvo[2].w, &qkvo[2].b, &qkvo[3].w, &qkvo[3].b,
                    ],
                )?;
                let mut g = AttnGrads {
                    gamma: gg,
                    beta: gb,
                    qkvo: [(qw, qb), (kw, kb), (vw, vb), (ow, ob)],
                };
                attention_backward(
                    x,
                    xv.shape,
                    &p,
                    &sv[extra.clone()],
                    &dy.0,
                    &mut dx.0,
                    &mut g,
                )?;
                Ok(Some(dx))
            }
            Op::Head { norm, conv } => {
                let (g, st) = self.gn_recompute(norm, x, xv.shape)?;
                let dg = self
                    .conv_backward(conv, &g.0, xv.shape, &dy.0, grads, true)?
                    .unwrap_or_else(|| Pooled::zeroed(0));
                drop(g);
                Ok(Some(
                    self.gn_backward(norm, x, xv.shape, &st, &dg.0, grads)?,
                ))
            }
        }
    }

    /// The time-embedding MLP's and the label tables' gradients from dsemb = dL/d SiLU(emb).
    fn time_backward(&self, ids: &[Vec<usize>], dsemb: &[f32], grads: &mut [f32]) -> Result<()> {
        let tp = &self.plan.time;
        let b = self.b;
        let (c0, te) = (tp.l1.fin, tp.l1.fout);
        let sv = self.saved;
        let mut de = vec![0.0f32; b * te]; // dL/de (B, te)
        silu_backward(&sv[tp.e..tp.e + b * te], dsemb, &mut de)?;
        for ((r, rows), ids) in tp.tables.iter().zip(ids) {
            embedding_backward(&de, (*rows, te), ids, &mut grads[r.clone()])?;
        }
        let mut ds1 = vec![0.0f32; b * te]; // dL/d SiLU(a1) (B, te)
        {
            let [dw, db] = parts(grads, [&tp.l2.w, &tp.l2.b])?;
            linear_backward(
                &sv[tp.s1..tp.s1 + b * te],
                (b, te, te),
                self.p(&tp.l2.w),
                &de,
                Some(&mut ds1),
                dw,
                db,
            )?;
        }
        let mut da1 = vec![0.0f32; b * te]; // dL/da1 (B, te)
        silu_backward(&sv[tp.a1..tp.a1 + b * te], &ds1, &mut da1)?;
        let [dw, db] = parts(grads, [&tp.l1.w, &tp.l1.b])?;
        linear_backward(
            &sv[tp.temb..tp.temb + b * c0],
            (b, c0, te),
            self.p(&tp.l1.w),
            &da1,
            None,
            dw,
            db,
        )
    }
}
