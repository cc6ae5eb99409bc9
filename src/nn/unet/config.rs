//! The supported part of diffusers' UNet2DModel `config.json` ([`UNetConfig`]): parsed with
//! every key used, checked to hold the one value implemented, or refused; sizes bounded; written
//! back ([`UNetConfig::to_json`]) with every key diffusers reads. One extension diffusers does
//! not read: `infodiff_factors` (multi-factor conditioning, one label table per factor, their
//! rows summed into the time embedding: emb = MLP(t) + Σ_j E_j\[y_j\]).

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

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
    /// infodiff's multi-factor conditioning (config key `infodiff_factors`, which diffusers does
    /// not read): one embedding table per factor of `factors[j]` rows (the factor's values and a
    /// null slot, the last), summed into the time embedding. Empty for a plain UNet2DModel.
    pub factors: Vec<usize>,
    /// The factors' names (`infodiff_factors[j].name`), one per entry of `factors`.
    pub factor_names: Vec<String>,
}

/// Largest channel count (and group or head size) a config may name.
pub const MAX_CHANNELS: usize = 1 << 14;
/// Most resolution levels (block_out_channels entries).
pub const MAX_LEVELS: usize = 8;
/// Largest `sample_size`.
pub const MAX_SAMPLE_SIZE: usize = 4096;
/// Largest `num_class_embeds`; also the most table rows all `infodiff_factors` together may
/// have (Σ_j (values_j + 1)), so that a multi-factor model's tables are no larger than the
/// largest single table.
pub const MAX_CLASS_EMBEDS: usize = 1 << 16;
/// Most `infodiff_factors` entries.
pub const MAX_FACTORS: usize = 64;
/// Longest factor name (bytes).
pub const MAX_FACTOR_NAME: usize = 256;
/// The `_diffusers_version` [`UNetConfig::to_json`] writes: the diffusers release whose
/// UNet2DModel reads every key written (the fixtures under tests/fixtures were saved by it).
pub const DIFFUSERS_VERSION: &str = "0.42.1";

fn cfg_err(key: &str, expected: &str, found: &Value) -> Error {
    Error::config(format!("config.json: {key}"), expected, found.to_string())
}

/// `infodiff_factors`: a non-empty list of at most [`MAX_FACTORS`] `{"name": …, "values": n}`
/// objects, names distinct and non-empty, n ≥ 1, Σ (n + 1) ≤ [`MAX_CLASS_EMBEDS`]. Returns the
/// table rows (n + 1: the values and the null slot) and the names.
fn parse_factors(v: &Value) -> Result<(Vec<usize>, Vec<String>)> {
    const KEY: &str = "infodiff_factors";
    let list = v
        .as_array()
        .filter(|l| !l.is_empty() && l.len() <= MAX_FACTORS)
        .ok_or_else(|| {
            cfg_err(
                KEY,
                &format!("a list of 1..={MAX_FACTORS} {{\"name\": …, \"values\": n}} objects"),
                v,
            )
        })?;
    let (mut rows, mut names) = (Vec::new(), Vec::<String>::new());
    for (j, f) in list.iter().enumerate() {
        let at = |k: &str| format!("{KEY}[{j}]{k}");
        let o = f
            .as_object()
            .ok_or_else(|| cfg_err(&at(""), "an object {\"name\": …, \"values\": n}", f))?;
        if let Some(k) = o.keys().find(|k| *k != "name" && *k != "values") {
            return Err(cfg_err(
                &at(&format!(".{k}")),
                "only name and values",
                &o[k],
            ));
        }
        let null = Value::Null;
        let name_v = o.get("name").unwrap_or(&null);
        let name = name_v
            .as_str()
            .filter(|n| !n.is_empty() && n.len() <= MAX_FACTOR_NAME)
            .ok_or_else(|| {
                cfg_err(
                    &at(".name"),
                    &format!("a name of 1..={MAX_FACTOR_NAME} bytes"),
                    name_v,
                )
            })?;
        if names.iter().any(|n| n == name) {
            return Err(cfg_err(&at(".name"), "a name no other factor has", name_v));
        }
        let values_v = o.get("values").unwrap_or(&null);
        let values = values_v
            .as_u64()
            .filter(|n| (1..MAX_CLASS_EMBEDS as u64).contains(n))
            .ok_or_else(|| {
                cfg_err(
                    &at(".values"),
                    &format!("a whole number in 1..={}", MAX_CLASS_EMBEDS - 1),
                    values_v,
                )
            })? as usize;
        rows.push(values + 1);
        names.push(name.to_string());
    }
    let total: usize = rows.iter().sum();
    if total > MAX_CLASS_EMBEDS {
        return Err(cfg_err(
            KEY,
            &format!("at most {MAX_CLASS_EMBEDS} table rows in all (Σ (values + 1))"),
            &Value::from(total),
        ));
    }
    Ok((rows, names))
}

/// `x` as a JSON number: an integer when it is a whole number of moderate size (as diffusers
/// writes its integer defaults), the f64 otherwise.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        Value::from(x)
    }
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
        const KNOWN: [&str; 32] = [
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
            "infodiff_factors",
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
        let num_class_embeds = opt_usize("num_class_embeds", 1, MAX_CLASS_EMBEDS)?;
        let (factors, factor_names) = match m.get("infodiff_factors") {
            None => (vec![], vec![]),
            Some(f) => {
                if num_class_embeds.is_some() {
                    return Err(cfg_err(
                        "num_class_embeds",
                        "absent or null with infodiff_factors (each factor has its own table)",
                        get("num_class_embeds"),
                    ));
                }
                parse_factors(f)?
            }
        };
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
            num_class_embeds,
            time_embed_dim,
            factors,
            factor_names,
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
            factors: vec![],
            factor_names: vec![],
        }
    }

    /// The class-embedding tables, (tensor name, rows), one per label an example carries:
    /// `class_embedding.weight` (num_class_embeds rows) for a plain class-conditional model,
    /// `class_embeddings.{j}.weight` (factors\[j\] rows) per factor of a multi-factor one,
    /// none for an unconditional model. Each table's last row is its null label.
    pub fn label_tables(&self) -> Vec<(String, usize)> {
        if !self.factors.is_empty() {
            return self
                .factors
                .iter()
                .enumerate()
                .map(|(j, &n)| (format!("class_embeddings.{j}.weight"), n))
                .collect();
        }
        self.num_class_embeds
            .map(|n| vec![("class_embedding.weight".to_string(), n)])
            .unwrap_or_default()
    }

    /// diffusers' config.json of this config (`_class_name` UNet2DModel, every key diffusers
    /// reads for it; `infodiff_factors` for a multi-factor model), so that [`UNetConfig::from_json`]
    /// reads back the same config.
    ///
    /// Keys are written in diffusers' order (sorted), with every default diffusers would save:
    /// `attention_head_dim` null for one head per attention (diffusers' own default is 8),
    /// `time_embedding_dim` null when it is diffusers' default 4·block_out_channels\[0\],
    /// `norm_eps` as the shortest decimal of its f32.
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        let names = |blocks: &[BlockKind], plain: &str, attn: &str| -> Vec<Value> {
            blocks
                .iter()
                .map(|b| match b {
                    BlockKind::Plain => plain.into(),
                    BlockKind::Attn => attn.into(),
                })
                .collect()
        };
        // The shortest decimal that reads back as the f32 (1e-5, not 9.999999747378752e-6).
        let eps = self
            .norm_eps
            .to_string()
            .parse::<f64>()
            .ok()
            .filter(|e| *e as f32 == self.norm_eps)
            .unwrap_or(self.norm_eps as f64);
        let default_temb = 4 * self.block_out_channels.first().copied().unwrap_or(0);
        let mut v = json!({
            "_class_name": "UNet2DModel",
            "_diffusers_version": DIFFUSERS_VERSION,
            "act_fn": "silu",
            "add_attention": self.add_attention,
            "attention_head_dim": self.attention_head_dim,
            "attn_norm_num_groups": self.attn_norm_num_groups,
            "block_out_channels": self.block_out_channels,
            "center_input_sample": self.center_input_sample,
            "class_embed_type": null,
            "down_block_types": names(&self.down_blocks, "DownBlock2D", "AttnDownBlock2D"),
            "downsample_padding": self.downsample_padding,
            "downsample_type": "conv",
            "dropout": 0.0,
            "flip_sin_to_cos": self.flip_sin_to_cos,
            "freq_shift": number(self.freq_shift),
            "in_channels": self.in_channels,
            "layers_per_block": self.layers_per_block,
            "mid_block_scale_factor": number(self.mid_block_scale_factor),
            "mid_block_type": "UNetMidBlock2D",
            "norm_eps": eps,
            "norm_num_groups": self.norm_num_groups,
            "num_class_embeds": self.num_class_embeds,
            "num_train_timesteps": null,
            "out_channels": self.out_channels,
            "resnet_time_scale_shift": "default",
            "sample_size": self.sample_size,
            "time_embedding_dim": (self.time_embed_dim != default_temb).then_some(self.time_embed_dim),
            "time_embedding_type": "positional",
            "up_block_types": names(&self.up_blocks, "UpBlock2D", "AttnUpBlock2D"),
            "upsample_type": "conv",
        });
        if !self.factors.is_empty() {
            let factors: Vec<Value> = self
                .factors
                .iter()
                .zip(&self.factor_names)
                .map(|(rows, name)| json!({"name": name, "values": rows.saturating_sub(1)}))
                .collect();
            if let Some(m) = v.as_object_mut() {
                m.insert("infodiff_factors".into(), Value::from(factors));
                m.sort_keys(); // (between in_channels and layers_per_block)
            }
        }
        v
    }
}
