//! A UNet2DModel compatible with diffusers' `config.json` and `diffusion_pytorch_model.safetensors`:
//! ε̂ = UNet(x_t, timestep, class label).
//!
//! Supported: DownBlock2D, AttnDownBlock2D, UpBlock2D, AttnUpBlock2D, UNetMidBlock2D (with or
//! without attention); layers_per_block, block_out_channels, norm_num_groups, norm_eps,
//! attention_head_dim, attn_norm_num_groups, num_class_embeds (class-conditional, any label
//! including a null class), positional time embedding with flip_sin_to_cos and freq_shift,
//! time_embedding_dim, resnet_time_scale_shift "default", conv down/upsampling with
//! downsample_padding, mid_block_scale_factor, center_input_sample. Any other value is refused
//! with an error naming the key and the value.

use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;

use serde_json::Value;

use super::Weights;
use crate::error::{Error, Result};
use crate::nn::profile::scope;
use crate::tensor::Tensor;
use crate::tensor::ops::{
    AttnWeights, ConvWeight, add, add_channel_bias, concat_channels, conv2d_packed, embedding,
    group_norm, linear, silu, spatial_attention_packed, timestep_embedding, upsample_nearest2x,
};

/// A block of the down or up path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    Plain,
    Attn,
}

/// The supported part of diffusers' UNet2DModel config.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub sample_size: Option<usize>,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    pub down_blocks: Vec<BlockKind>,
    pub up_blocks: Vec<BlockKind>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f32,
    pub add_attention: bool,
    pub num_class_embeds: Option<usize>,
    pub time_embed_dim: usize,
}

/// Largest channel count (and group or head size) a config may name.
pub const MAX_CHANNELS: usize = 1 << 14;
/// Most resolution levels (block_out_channels entries).
pub const MAX_LEVELS: usize = 8;
/// Largest `sample_size`.
pub const MAX_SAMPLE_SIZE: usize = 4096;
/// Largest `num_class_embeds`.
pub const MAX_CLASS_EMBEDS: usize = 1 << 16;

fn cfg_err(key: &str, expected: &str, found: &Value) -> Error {
    Error::config(format!("config.json: {key}"), expected, found.to_string())
}

impl UNetConfig {
    /// Parses diffusers' config.json; every key is either used, checked to hold the one value
    /// the engine implements, or refused.
    pub fn from_json(v: &Value) -> Result<UNetConfig> {
        let m = v
            .as_object()
            .ok_or_else(|| cfg_err("(top level)", "an object", v))?;
        let null = Value::Null;
        let get = |k: &str| m.get(k).unwrap_or(&null);
        // Whole numbers within the range the engine handles (sizes past these would overflow
        // or allocate without bound before any tensor is read). A `null` is refused where
        // diffusers needs a number; only the optional keys (`opt_usize`) take it as "none".
        let in_range = |k: &str, x: &Value, lo: usize, hi: usize| -> Result<usize> {
            x.as_u64()
                .filter(|u| (lo as u64..=hi as u64).contains(u))
                .map(|u| u as usize)
                .ok_or_else(|| cfg_err(k, &format!("a whole number in {lo}..={hi}"), x))
        };
        let usize_of = |k: &str, default: usize, lo: usize, hi: usize| -> Result<usize> {
            match m.get(k) {
                None => Ok(default),
                Some(x) => in_range(k, x, lo, hi),
            }
        };
        let opt_usize = |k: &str, lo: usize, hi: usize| -> Result<Option<usize>> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => in_range(k, x, lo, hi).map(Some),
            }
        };
        let bool_of = |k: &str, default: bool| -> Result<bool> {
            match m.get(k) {
                None => Ok(default),
                Some(x) => x.as_bool().ok_or_else(|| cfg_err(k, "true or false", x)),
            }
        };
        // A number in [lo, hi] (open at 0 when `positive`), finite as the f32 the engine uses.
        let f64_of = |k: &str, default: f64, lo: f64, hi: f64, positive: bool| -> Result<f64> {
            let expected = if positive {
                format!("a number in (0, {hi:e}]")
            } else {
                format!("a number in [{lo:e}, {hi:e}]")
            };
            match m.get(k) {
                None => Ok(default),
                Some(x) => x
                    .as_f64()
                    .filter(|v| {
                        (lo..=hi).contains(v) && (!positive || (*v > 0.0 && (*v as f32) > 0.0))
                    })
                    .ok_or_else(|| cfg_err(k, &expected, x)),
            }
        };
        let must = |k: &str, allowed: &[Value]| -> Result<()> {
            match m.get(k) {
                None => Ok(()),
                Some(x) if allowed.contains(x) => Ok(()),
                Some(x) => Err(cfg_err(
                    k,
                    &format!(
                        "{} (the only value supported)",
                        allowed
                            .iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                    x,
                )),
            }
        };
        const KNOWN: [&str; 31] = [
            "_class_name",
            "_diffusers_version",
            "_name_or_path",
            "act_fn",
            "add_attention",
            "attention_head_dim",
            "attn_norm_num_groups",
            "block_out_channels",
            "center_input_sample",
            "class_embed_type",
            "down_block_types",
            "downsample_padding",
            "downsample_type",
            "dropout",
            "flip_sin_to_cos",
            "freq_shift",
            "in_channels",
            "layers_per_block",
            "mid_block_scale_factor",
            "mid_block_type",
            "norm_eps",
            "norm_num_groups",
            "num_class_embeds",
            "num_train_timesteps",
            "out_channels",
            "resnet_time_scale_shift",
            "sample_size",
            "time_embedding_dim",
            "time_embedding_type",
            "up_block_types",
            "upsample_type",
        ];
        if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(cfg_err(
                k,
                "a UNet2DModel key this engine implements",
                &m[k],
            ));
        }
        must("_class_name", &["UNet2DModel".into()])?;
        must("act_fn", &["silu".into()])?;
        must("time_embedding_type", &["positional".into()])?;
        must("resnet_time_scale_shift", &["default".into()])?;
        must("class_embed_type", &[Value::Null])?;
        must("downsample_type", &["conv".into()])?;
        must("upsample_type", &["conv".into()])?;
        // (diffusers builds no middle block for null: not supported here.)
        must("mid_block_type", &["UNetMidBlock2D".into()])?;
        let blocks = |k: &str, plain: &str, attn: &str| -> Result<Vec<BlockKind>> {
            let list = get(k)
                .as_array()
                .ok_or_else(|| cfg_err(k, "a list of block types", get(k)))?;
            list.iter()
                .map(|b| match b.as_str() {
                    Some(s) if s == plain => Ok(BlockKind::Plain),
                    Some(s) if s == attn => Ok(BlockKind::Attn),
                    _ => Err(cfg_err(k, &format!("\"{plain}\" or \"{attn}\" entries"), b)),
                })
                .collect()
        };
        let down_blocks = blocks("down_block_types", "DownBlock2D", "AttnDownBlock2D")?;
        let up_blocks = blocks("up_block_types", "UpBlock2D", "AttnUpBlock2D")?;
        let boc = get("block_out_channels");
        let block_out_channels: Vec<usize> = boc
            .as_array()
            .ok_or_else(|| cfg_err("block_out_channels", "a list of channel counts", boc))?
            .iter()
            .map(|c| in_range("block_out_channels", c, 1, MAX_CHANNELS))
            .collect::<Result<_>>()?;
        if block_out_channels.len() > MAX_LEVELS {
            return Err(cfg_err(
                "block_out_channels",
                &format!("at most {MAX_LEVELS} levels"),
                &Value::from(block_out_channels.len()),
            ));
        }
        if block_out_channels.is_empty()
            || down_blocks.len() != block_out_channels.len()
            || up_blocks.len() != block_out_channels.len()
        {
            return Err(cfg_err(
                "down_block_types",
                &format!(
                    "as many down and up blocks as block_out_channels ({})",
                    block_out_channels.len()
                ),
                &Value::from(format!(
                    "{} down, {} up",
                    down_blocks.len(),
                    up_blocks.len()
                )),
            ));
        }
        let norm_num_groups = usize_of("norm_num_groups", 32, 1, MAX_CHANNELS)?;
        if let Some(c) = block_out_channels
            .iter()
            .find(|c| norm_num_groups == 0 || *c % norm_num_groups != 0)
        {
            return Err(cfg_err(
                "norm_num_groups",
                &format!("a divisor of every block_out_channels entry (not of {c})"),
                get("norm_num_groups"),
            ));
        }
        let attention_head_dim = opt_usize("attention_head_dim", 1, MAX_CHANNELS)?;
        // Channels of every attention: the attention blocks' and the middle block's.
        let attn_channels: Vec<usize> = down_blocks
            .iter()
            .zip(&block_out_channels)
            .chain(up_blocks.iter().zip(block_out_channels.iter().rev()))
            .filter(|(k, _)| **k == BlockKind::Attn)
            .map(|(_, c)| *c)
            .chain(std::iter::once(
                block_out_channels[block_out_channels.len() - 1],
            ))
            .collect();
        if let Some(d) = attention_head_dim
            && let Some(c) = attn_channels.iter().find(|c| d == 0 || *c % d != 0)
        {
            return Err(cfg_err(
                "attention_head_dim",
                &format!("a divisor of every attention block's channels (not of {c})"),
                get("attention_head_dim"),
            ));
        }
        let attn_norm_num_groups = opt_usize("attn_norm_num_groups", 1, MAX_CHANNELS)?;
        if let Some(g) = attn_norm_num_groups
            && let Some(c) = attn_channels.iter().find(|c| *c % g != 0)
        {
            return Err(cfg_err(
                "attn_norm_num_groups",
                &format!("a divisor of every attention block's channels (not of {c})"),
                get("attn_norm_num_groups"),
            ));
        }
        let time_embed_dim = opt_usize("time_embedding_dim", 1, 4 * MAX_CHANNELS)?
            .unwrap_or(block_out_channels[0] * 4);
        let levels = block_out_channels.len();
        let sample_size = opt_usize("sample_size", 1, MAX_SAMPLE_SIZE)?;
        if let Some(n) = sample_size
            && n % (1 << (levels - 1)) != 0
        {
            return Err(cfg_err(
                "sample_size",
                &format!("a multiple of 2^(levels − 1) = {}", 1 << (levels - 1)),
                get("sample_size"),
            ));
        }
        Ok(UNetConfig {
            in_channels: usize_of("in_channels", 3, 1, MAX_CHANNELS)?,
            out_channels: usize_of("out_channels", 3, 1, MAX_CHANNELS)?,
            sample_size,
            center_input_sample: bool_of("center_input_sample", false)?,
            flip_sin_to_cos: bool_of("flip_sin_to_cos", true)?,
            freq_shift: f64_of("freq_shift", 0.0, -1e6, 1e6, false)?,
            down_blocks,
            up_blocks,
            block_out_channels,
            layers_per_block: usize_of("layers_per_block", 2, 1, 64)?,
            mid_block_scale_factor: f64_of("mid_block_scale_factor", 1.0, 0.0, 1e6, true)?,
            // 1: symmetric padding; 0: diffusers' (0, 1, 0, 1). Others do not halve the size.
            downsample_padding: usize_of("downsample_padding", 1, 0, 1)?,
            attention_head_dim,
            norm_num_groups,
            attn_norm_num_groups,
            norm_eps: f64_of("norm_eps", 1e-5, 0.0, 1.0, true)? as f32,
            add_attention: bool_of("add_attention", true)?,
            num_class_embeds: opt_usize("num_class_embeds", 1, MAX_CLASS_EMBEDS)?,
            time_embed_dim,
        })
    }

    /// Reads and validates `dir/config.json`.
    pub fn load(dir: &Path) -> Result<UNetConfig> {
        let path = dir.join("config.json");
        let text = crate::io::read_text(&path)?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.display().to_string(),
            message: format!("not valid JSON: {e}"),
        })?;
        UNetConfig::from_json(&v)
    }

    /// Peak activation memory of a forward of `images` images of h × w with `parallel` images in
    /// flight (an upper estimate, bytes, saturating): every level's skip connections and working
    /// tensors, and the largest attention's score matrices.
    pub fn forward_bytes(&self, images: usize, h: usize, w: usize, parallel: usize) -> u64 {
        let hw = (h as u64).saturating_mul(w as u64);
        let per_layer = self.layers_per_block as u64 + 5;
        let mut act = 0u64;
        let mut attn = 0u64;
        for (l, (c, kind)) in self
            .block_out_channels
            .iter()
            .zip(&self.down_blocks)
            .enumerate()
        {
            let hw_l = hw >> (2 * l);
            act = act.saturating_add(per_layer.saturating_mul(*c as u64).saturating_mul(hw_l));
            if *kind == BlockKind::Attn || l + 1 == self.block_out_channels.len() {
                let heads = self.heads(*c) as u64;
                attn = attn.max(heads.saturating_mul(hw_l).saturating_mul(hw_l));
            }
        }
        let par = parallel.clamp(1, images.max(1)) as u64;
        act.saturating_mul(images as u64)
            .saturating_add(attn.saturating_mul(par))
            .saturating_mul(4)
    }

    /// Heads of an attention block with `channels` channels.
    pub(crate) fn heads(&self, channels: usize) -> usize {
        self.attention_head_dim.map_or(1, |d| channels / d)
    }
}

/// The network: config and weights.
pub struct UNet {
    pub config: UNetConfig,
    w: Weights,
    /// Every 4-D (convolution) weight, packed into GEMM panels at load.
    conv: HashMap<String, ConvWeight>,
    /// Every attention block's projections (by block prefix), packed at load.
    attn: HashMap<String, AttnWeights>,
}

impl UNet {
    /// Loads `dir/config.json` and `dir/diffusion_pytorch_model.safetensors`; checks every
    /// tensor the architecture needs (name and shape) and refuses unexpected ones.
    pub fn load(dir: &Path) -> Result<UNet> {
        let config = UNetConfig::load(dir)?;
        let w = Weights::load(&dir.join("diffusion_pytorch_model.safetensors"))?;
        let expected = expected_tensors(&config);
        for (name, shape) in &expected {
            w.get(name, shape)?;
        }
        if let Some(extra) = w
            .tensors
            .keys()
            .find(|k| !expected.iter().any(|(n, _)| n == *k))
        {
            return Err(Error::model(
                &w.path,
                extra,
                "only the tensors of the configured architecture",
                "a tensor it does not have",
            ));
        }
        UNet::assemble(config, w)
    }

    /// The network of `config` over checked weights `w`: packs the convolution weights.
    fn assemble(config: UNetConfig, w: Weights) -> Result<UNet> {
        let conv = w
            .tensors
            .par_iter()
            .filter(|(_, t)| t.shape.len() == 4)
            .map(|(name, t)| Ok((name.clone(), ConvWeight::new(t)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let t = |name: String| {
            w.tensors.get(&name).ok_or_else(|| Error::Unsupported {
                op: "UNet",
                reason: format!("tensor `{name}` missing"),
            })
        };
        let mut attn = HashMap::new();
        for name in w.tensors.keys().filter(|n| n.ends_with(".to_q.weight")) {
            let p = name.trim_end_matches(".to_q.weight");
            let pr = |n: &str| -> Result<(&Tensor, &Tensor)> {
                Ok((t(format!("{p}.{n}.weight"))?, t(format!("{p}.{n}.bias"))?))
            };
            let packed = AttnWeights::new(pr("to_q")?, pr("to_k")?, pr("to_v")?, pr("to_out.0")?)?;
            attn.insert(p.to_string(), packed);
        }
        Ok(UNet {
            config,
            w,
            conv,
            attn,
        })
    }

    fn t(&self, name: &str) -> Result<&Tensor> {
        let t = self.w.tensors.get(name).ok_or_else(|| Error::Unsupported {
            op: "UNet",
            reason: format!("tensor `{name}` missing"),
        })?;
        Ok(t)
    }

    /// A weight tensor by name (for devices that upload the network).
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.t(name)
    }

    /// Names of every weight tensor.
    pub fn tensor_names(&self) -> impl Iterator<Item = &String> {
        self.w.tensors.keys()
    }

    /// SiLU(time embedding (+ class embedding)) for the batch, (B, time_embed_dim): the small
    /// MLP every device runs on the CPU; each ResNet projects it to its channels.
    pub fn embedding(
        &self,
        b: usize,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        if timesteps.len() != b {
            return Err(Error::shape(
                "UNet::forward: timesteps (B)",
                b,
                timesteps.len(),
            ));
        }
        let c0 = cfg.block_out_channels[0];
        let temb = timestep_embedding(timesteps, c0, cfg.flip_sin_to_cos, cfg.freq_shift, 10000.0);
        let mut emb = linear(
            &temb,
            self.t("time_embedding.linear_1.weight")?,
            Some(self.t("time_embedding.linear_1.bias")?),
        )?;
        silu(&mut emb);
        let mut emb = linear(
            &emb,
            self.t("time_embedding.linear_2.weight")?,
            Some(self.t("time_embedding.linear_2.bias")?),
        )?;
        if let Some(n) = cfg.num_class_embeds {
            let labels = class_labels.ok_or_else(|| Error::Unsupported {
                op: "UNet::forward",
                reason: "class_labels are required by a class-conditional model (num_class_embeds is set)".into(),
            })?;
            if labels.len() != b {
                return Err(Error::shape(
                    "UNet::forward: class_labels (B)",
                    b,
                    labels.len(),
                ));
            }
            let ids: Vec<usize> = labels
                .iter()
                .map(|&l| {
                    usize::try_from(l).ok().filter(|&l| l < n).ok_or_else(|| {
                        Error::shape("UNet::forward: class label in 0..num_class_embeds", n, l)
                    })
                })
                .collect::<Result<_>>()?;
            let cemb = embedding(self.t("class_embedding.weight")?, &ids)?;
            emb = add(&emb, &cemb)?;
        }
        silu(&mut emb); // every ResNet's time_emb_proj sees SiLU(emb)
        Ok(emb)
    }

    /// The input checked against the config ((B, C, H, W) with C = in_channels and H, W
    /// divisible by 2^(levels−1)) and centred when the config asks; returns B.
    pub fn prepare_input(&self, x: &Tensor) -> Result<(usize, Tensor)> {
        let cfg = &self.config;
        let (b, c, h, w) = x.dims4("UNet::forward: sample")?;
        if c != cfg.in_channels {
            return Err(Error::shape(
                "UNet::forward: sample channels",
                cfg.in_channels,
                c,
            ));
        }
        if b == 0 || h == 0 || w == 0 {
            return Err(Error::shape(
                "UNet::forward: sample (B, C, H, W) with B, H, W ≥ 1",
                "(≥ 1, C, ≥ 1, ≥ 1)",
                &x.shape,
            ));
        }
        let div = 1usize << (cfg.block_out_channels.len() - 1);
        if h % div != 0 || w % div != 0 {
            return Err(Error::shape(
                "UNet::forward: H and W divisible by 2^(levels−1)",
                div,
                (h, w),
            ));
        }
        if let Some(limit) = crate::io::memory_limit() {
            let need = cfg.forward_bytes(b, h, w, rayon::current_num_threads());
            if need > limit {
                return Err(Error::shape(
                    "UNet::forward: sample small enough for this machine's memory",
                    format!("a forward within {limit} bytes"),
                    format!("{:?} needing about {need} bytes", x.shape),
                ));
            }
        }
        let mut x = x.clone();
        if cfg.center_input_sample {
            x.data.iter_mut().for_each(|v| *v = 2.0 * *v - 1.0);
        }
        Ok((b, x))
    }

    /// ResnetBlock2D: h = conv1(SiLU(GN(x))) + proj(SiLU(emb)); h = conv2(SiLU(GN(h)));
    /// (shortcut(x) + h) / scale.
    fn resnet<O: UNetOps>(
        &self,
        o: &O,
        x: &O::T,
        emb_act: &Tensor,
        p: &str,
        scale: f64,
    ) -> Result<O::T> {
        let g = self.config.norm_num_groups;
        let h = o.norm(x, &format!("{p}.norm1"), g, true)?;
        let mut h = o.conv(&h, &format!("{p}.conv1"), 1, [1; 4])?;
        let (pw, pb) = (
            self.t(&format!("{p}.time_emb_proj.weight"))?,
            self.t(&format!("{p}.time_emb_proj.bias"))?,
        );
        let tproj = scope("linear", || linear(emb_act, pw, Some(pb)))?;
        o.add_channel_bias(&mut h, &tproj)?;
        let h = o.norm(&h, &format!("{p}.norm2"), g, true)?;
        let h = o.conv(&h, &format!("{p}.conv2"), 1, [1; 4])?;
        let shortcut = format!("{p}.conv_shortcut");
        let mut y = if self.w.tensors.contains_key(&format!("{shortcut}.weight")) {
            let short = o.conv(x, &shortcut, 1, [0; 4])?;
            o.add(&short, &h)?
        } else {
            o.add(x, &h)?
        };
        if scale != 1.0 {
            o.scale(&mut y, scale)?;
        }
        Ok(y)
    }

    /// ε̂ for x (B, C, H, W), diffusers timesteps (B) and class labels (B) for class-conditional
    /// models. Returns (B, out_channels, H, W).
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<Tensor> {
        let (b, x) = self.prepare_input(x)?;
        let emb_act = self.embedding(b, timesteps, class_labels)?;
        self.forward_on(&CpuOps(self), x, &emb_act)
    }

    /// The architecture walked once for any device: `x` prepared and on the device, `emb_act`
    /// from [`UNet::embedding`].
    pub fn forward_on<O: UNetOps>(&self, o: &O, x: O::T, emb_act: &Tensor) -> Result<O::T> {
        let cfg = &self.config;
        let levels = cfg.block_out_channels.len();
        let mut sample = o.conv(&x, "conv_in", 1, [1; 4])?;
        let mut skips = vec![o.dup(&sample)?];
        for (i, kind) in cfg.down_blocks.iter().enumerate() {
            for l in 0..cfg.layers_per_block {
                sample = self.resnet(
                    o,
                    &sample,
                    emb_act,
                    &format!("down_blocks.{i}.resnets.{l}"),
                    1.0,
                )?;
                if *kind == BlockKind::Attn {
                    let p = format!("down_blocks.{i}.attentions.{l}");
                    sample = o.attention(&sample, &p, cfg.norm_num_groups)?;
                }
                skips.push(o.dup(&sample)?);
            }
            if i + 1 < levels {
                // diffusers: padding 0 means an asymmetric (0, 1, 0, 1) pad before the conv.
                let p = cfg.downsample_padding;
                let pad = if p == 0 { [0, 1, 0, 1] } else { [p; 4] };
                sample = o.conv(
                    &sample,
                    &format!("down_blocks.{i}.downsamplers.0.conv"),
                    2,
                    pad,
                )?;
                skips.push(o.dup(&sample)?);
            }
        }
        // Middle.
        let ms = cfg.mid_block_scale_factor;
        sample = self.resnet(o, &sample, emb_act, "mid_block.resnets.0", ms)?;
        if cfg.add_attention {
            let g = cfg.attn_norm_num_groups.unwrap_or(cfg.norm_num_groups);
            sample = o.attention(&sample, "mid_block.attentions.0", g)?;
            if ms != 1.0 {
                o.scale(&mut sample, ms)?;
            }
        }
        sample = self.resnet(o, &sample, emb_act, "mid_block.resnets.1", ms)?;
        // Up path: each block consumes layers_per_block + 1 skips, last in first out.
        for (i, kind) in cfg.up_blocks.iter().enumerate() {
            for l in 0..=cfg.layers_per_block {
                let skip = skips.pop().ok_or_else(|| {
                    Error::shape("UNet::forward: skip connections", "one more", 0)
                })?;
                sample = o.concat(&sample, &skip)?;
                sample = self.resnet(
                    o,
                    &sample,
                    emb_act,
                    &format!("up_blocks.{i}.resnets.{l}"),
                    1.0,
                )?;
                if *kind == BlockKind::Attn {
                    let p = format!("up_blocks.{i}.attentions.{l}");
                    sample = o.attention(&sample, &p, cfg.norm_num_groups)?;
                }
            }
            if i + 1 < levels {
                sample = o.upsample(&sample)?;
                sample = o.conv(
                    &sample,
                    &format!("up_blocks.{i}.upsamplers.0.conv"),
                    1,
                    [1; 4],
                )?;
            }
        }
        let sample = o.norm(&sample, "conv_norm_out", cfg.norm_num_groups, true)?;
        o.conv(&sample, "conv_out", 1, [1; 4])
    }
}

/// The operations a U-Net forward needs, on one device's tensors; [`UNet::forward_on`] walks
/// the architecture with them. Weights are named by their diffusers prefix.
pub trait UNetOps {
    /// A (B, C, H, W) activation on the device.
    type T;
    /// A copy (skip connections).
    fn dup(&self, x: &Self::T) -> Result<Self::T>;
    /// The conv `prefix` (weight and bias), padding (top, bottom, left, right).
    fn conv(&self, x: &Self::T, prefix: &str, stride: usize, pad: [usize; 4]) -> Result<Self::T>;
    /// GroupNorm `prefix` (weight and bias), then SiLU when `silu`.
    fn norm(&self, x: &Self::T, prefix: &str, groups: usize, silu: bool) -> Result<Self::T>;
    /// x + the spatial attention block `prefix` of x.
    fn attention(&self, x: &Self::T, prefix: &str, groups: usize) -> Result<Self::T>;
    fn add(&self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// x[b, c, ·] += v[b, c], v a host (B, C) tensor.
    fn add_channel_bias(&self, x: &mut Self::T, v: &Tensor) -> Result<()>;
    fn concat(&self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    fn upsample(&self, x: &Self::T) -> Result<Self::T>;
    /// x / s (diffusers' output scale factors).
    fn scale(&self, x: &mut Self::T, s: f64) -> Result<()>;
}

/// The CPU device: the engine's tensor ops, weights packed at load.
pub struct CpuOps<'a>(pub &'a UNet);

impl UNetOps for CpuOps<'_> {
    type T = Tensor;
    fn dup(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    fn conv(&self, x: &Tensor, prefix: &str, stride: usize, pad: [usize; 4]) -> Result<Tensor> {
        let name = format!("{prefix}.weight");
        let w = self.0.conv.get(&name).ok_or_else(|| Error::Unsupported {
            op: "UNet",
            reason: format!("tensor `{name}` missing"),
        })?;
        let b = self.0.t(&format!("{prefix}.bias"))?;
        scope("conv2d", || conv2d_packed(x, w, Some(b), stride, pad))
    }
    fn norm(&self, x: &Tensor, prefix: &str, groups: usize, silu: bool) -> Result<Tensor> {
        let (w, b) = (
            self.0.t(&format!("{prefix}.weight"))?,
            self.0.t(&format!("{prefix}.bias"))?,
        );
        let eps = self.0.config.norm_eps;
        scope("group_norm+silu", || group_norm(x, groups, w, b, eps, silu))
    }
    fn attention(&self, x: &Tensor, p: &str, groups: usize) -> Result<Tensor> {
        let c = x.shape[1];
        let (gw, gb) = (
            self.0.t(&format!("{p}.group_norm.weight"))?,
            self.0.t(&format!("{p}.group_norm.bias"))?,
        );
        let wts = self.0.attn.get(p).ok_or_else(|| Error::Unsupported {
            op: "UNet",
            reason: format!("tensor `{p}.to_q.weight` missing"),
        })?;
        let norm = (gw, gb, groups, self.0.config.norm_eps);
        let heads = self.0.config.heads(c);
        scope("attention", || {
            spatial_attention_packed(x, heads, norm, wts)
        })
    }
    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        scope("add", || add(a, b))
    }
    fn add_channel_bias(&self, x: &mut Tensor, v: &Tensor) -> Result<()> {
        scope("add", || add_channel_bias(x, v))
    }
    fn concat(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        scope("concat", || concat_channels(a, b))
    }
    fn upsample(&self, x: &Tensor) -> Result<Tensor> {
        scope("upsample", || upsample_nearest2x(x))
    }
    fn scale(&self, x: &mut Tensor, s: f64) -> Result<()> {
        x.data.iter_mut().for_each(|v| *v = (*v as f64 / s) as f32);
        Ok(())
    }
}

/// Every tensor the configured architecture needs, with its shape.
pub fn expected_tensors(cfg: &UNetConfig) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = vec![];
    let mut push = |n: String, s: Vec<usize>| out.push((n, s));
    let te = cfg.time_embed_dim;
    let ch = &cfg.block_out_channels;
    let conv = |push: &mut dyn FnMut(String, Vec<usize>), p: &str, o: usize, i: usize, k: usize| {
        push(format!("{p}.weight"), vec![o, i, k, k]);
        push(format!("{p}.bias"), vec![o]);
    };
    let vecs = |push: &mut dyn FnMut(String, Vec<usize>), p: &str, n: usize| {
        push(format!("{p}.weight"), vec![n]);
        push(format!("{p}.bias"), vec![n]);
    };
    let lin = |push: &mut dyn FnMut(String, Vec<usize>), p: &str, o: usize, i: usize| {
        push(format!("{p}.weight"), vec![o, i]);
        push(format!("{p}.bias"), vec![o]);
    };
    let resnet = |push: &mut dyn FnMut(String, Vec<usize>), p: &str, i: usize, o: usize| {
        vecs(push, &format!("{p}.norm1"), i);
        conv(push, &format!("{p}.conv1"), o, i, 3);
        lin(push, &format!("{p}.time_emb_proj"), o, te);
        vecs(push, &format!("{p}.norm2"), o);
        conv(push, &format!("{p}.conv2"), o, o, 3);
        if i != o {
            conv(push, &format!("{p}.conv_shortcut"), o, i, 1);
        }
    };
    let attn = |push: &mut dyn FnMut(String, Vec<usize>), p: &str, c: usize| {
        vecs(push, &format!("{p}.group_norm"), c);
        for n in ["to_q", "to_k", "to_v", "to_out.0"] {
            lin(push, &format!("{p}.{n}"), c, c);
        }
    };
    lin(&mut push, "time_embedding.linear_1", te, ch[0]);
    lin(&mut push, "time_embedding.linear_2", te, te);
    if let Some(n) = cfg.num_class_embeds {
        push("class_embedding.weight".into(), vec![n, te]);
    }
    conv(&mut push, "conv_in", ch[0], cfg.in_channels, 3);
    let levels = ch.len();
    let mut skip_ch = vec![ch[0]];
    let mut prev = ch[0];
    for (i, kind) in cfg.down_blocks.iter().enumerate() {
        for l in 0..cfg.layers_per_block {
            let cin = if l == 0 { prev } else { ch[i] };
            resnet(
                &mut push,
                &format!("down_blocks.{i}.resnets.{l}"),
                cin,
                ch[i],
            );
            if *kind == BlockKind::Attn {
                attn(&mut push, &format!("down_blocks.{i}.attentions.{l}"), ch[i]);
            }
            skip_ch.push(ch[i]);
        }
        if i + 1 < levels {
            conv(
                &mut push,
                &format!("down_blocks.{i}.downsamplers.0.conv"),
                ch[i],
                ch[i],
                3,
            );
            skip_ch.push(ch[i]);
        }
        prev = ch[i];
    }
    let cm = ch[levels - 1];
    resnet(&mut push, "mid_block.resnets.0", cm, cm);
    if cfg.add_attention {
        attn(&mut push, "mid_block.attentions.0", cm);
    }
    resnet(&mut push, "mid_block.resnets.1", cm, cm);
    let rev: Vec<usize> = ch.iter().rev().cloned().collect();
    let mut cur = rev[0];
    for (i, kind) in cfg.up_blocks.iter().enumerate() {
        let out_ch = rev[i];
        for l in 0..=cfg.layers_per_block {
            let skip = skip_ch.pop().unwrap_or(0);
            resnet(
                &mut push,
                &format!("up_blocks.{i}.resnets.{l}"),
                cur + skip,
                out_ch,
            );
            if *kind == BlockKind::Attn {
                attn(&mut push, &format!("up_blocks.{i}.attentions.{l}"), out_ch);
            }
            cur = out_ch;
        }
        if i + 1 < levels {
            conv(
                &mut push,
                &format!("up_blocks.{i}.upsamplers.0.conv"),
                out_ch,
                out_ch,
                3,
            );
        }
    }
    vecs(&mut push, "conv_norm_out", ch[0]);
    conv(&mut push, "conv_out", cfg.out_channels, ch[0], 3);
    out
}

/// `infodiff denoise`: runs the network in `model_dir` on `input` (safetensors with `sample`
/// (B, C, H, W) f32, `timestep` (B), optional `class_labels` (B) integers) and writes tensor
/// `out` (B, out_channels, H, W) f32 to `output` atomically.
pub fn denoise_file(model_dir: &Path, input: &Path, output: &Path) -> Result<()> {
    denoise_file_on(model_dir, input, output, None)
}

/// [`denoise_file`] with the network on a GPU when one is given (weights stored as asked).
pub fn denoise_file_on(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    gpu: Option<(&crate::cuda::Gpu, crate::cuda::unet::Storage)>,
) -> Result<()> {
    // The destination is checked (and its temporary created) before any work.
    let dest = crate::io::atomic::AtomicFile::prepare(output, "--output")?;
    let net = UNet::load(model_dir)?;
    let io = Weights::load(input)?;
    let name = input.display().to_string();
    let missing =
        |k: &str| Error::model(&name, k, "an f32 tensor", "nothing (the tensor is missing)");
    let x = io.tensors.get("sample").ok_or_else(|| missing("sample"))?;
    let t: Vec<f32> = match (io.tensors.get("timestep"), io.ints.get("timestep")) {
        (Some(t), _) => t.data.clone(),
        (None, Some((_, v))) => v.iter().map(|&i| i as f32).collect(),
        _ => return Err(missing("timestep")),
    };
    let labels = io.ints.get("class_labels").map(|(_, v)| v.as_slice());
    let out = match gpu {
        Some((g, storage)) => {
            crate::cuda::unet::GpuUNet::new(g, &net, storage)?.forward(x, &t, labels)?
        }
        None => net.forward(x, &t, labels)?,
    };
    let bytes: Vec<u8> = out.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::F32, out.shape.clone(), &bytes)
            .map_err(|e| Error::Unsupported {
                op: "denoise",
                reason: format!("output tensor: {e}"),
            })?;
    let data = safetensors::serialize([("out", view)], &None).map_err(|e| Error::Unsupported {
        op: "denoise",
        reason: format!("serialising `out`: {e}"),
    })?;
    dest.commit(&data)
}

impl UNetConfig {
    /// The DDPM CIFAR-10 architecture (diffusers' google/ddpm-cifar10-32): 32×32×3,
    /// block_out_channels 128/256/256/256, 2 layers per block, attention at 16×16, 35.7M
    /// parameters.
    pub fn ddpm_cifar10() -> UNetConfig {
        use BlockKind::{Attn, Plain};
        UNetConfig {
            in_channels: 3,
            out_channels: 3,
            sample_size: Some(32),
            center_input_sample: false,
            flip_sin_to_cos: false,
            freq_shift: 1.0,
            down_blocks: vec![Plain, Attn, Plain, Plain],
            up_blocks: vec![Plain, Plain, Attn, Plain],
            block_out_channels: vec![128, 256, 256, 256],
            layers_per_block: 2,
            mid_block_scale_factor: 1.0,
            downsample_padding: 0,
            attention_head_dim: None,
            norm_num_groups: 32,
            attn_norm_num_groups: None,
            norm_eps: 1e-6,
            add_attention: true,
            num_class_embeds: None,
            time_embed_dim: 512,
        }
    }
}

impl UNet {
    /// A network of `config` with random weights N(0, 0.05²) (Philox, `seed`): for benchmarks.
    pub fn random(config: UNetConfig, seed: u64) -> Result<UNet> {
        let noise = crate::rng::Noise::new(seed);
        let mut tensors = std::collections::HashMap::new();
        for (i, (name, shape)) in expected_tensors(&config).into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let data = (0..n)
                .map(|e| 0.05 * noise.normal(i as u64, 0, e))
                .collect();
            tensors.insert(name, Tensor::new(shape, data)?);
        }
        let w = Weights {
            tensors,
            ints: Default::default(),
            path: format!("<random weights, seed {seed}>"),
        };
        UNet::assemble(config, w)
    }

    /// Number of parameters.
    pub fn parameters(&self) -> usize {
        self.w.tensors.values().map(|t| t.numel()).sum()
    }
}
