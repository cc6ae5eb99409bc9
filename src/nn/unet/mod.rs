//! A UNet2DModel compatible with diffusers' `config.json` and `diffusion_pytorch_model.safetensors`:
//! ε̂ = UNet(x_t, timestep, class label), on any backend: [`config`] (the supported config),
//! [`weights`] (parameters prepared per backend, by name), [`walk`] (the architecture, walked
//! once for every [`Ops`] backend). [`UNet::forward`] runs on the CPU (weights packed at load);
//! [`UNetOn`] holds a network's parameters on another backend (the emulator, a GPU).
//!
//! Supported: DownBlock2D, AttnDownBlock2D, UpBlock2D, AttnUpBlock2D, UNetMidBlock2D (with or
//! without attention); layers_per_block, block_out_channels, norm_num_groups, norm_eps,
//! attention_head_dim, attn_norm_num_groups, num_class_embeds (class-conditional, any label
//! including a null class) or infodiff's `infodiff_factors` (one label table per factor, rows
//! summed), positional time embedding with flip_sin_to_cos and freq_shift,
//! time_embedding_dim, resnet_time_scale_shift "default", conv down/upsampling with
//! downsample_padding, mid_block_scale_factor, center_input_sample. Any other value is refused
//! with an error naming the key and the value.

pub mod config;
pub mod grad;
pub mod params;
pub mod walk;
pub mod weights;

use std::path::Path;

pub use config::{
    BlockKind, MAX_CHANNELS, MAX_CLASS_EMBEDS, MAX_LEVELS, MAX_SAMPLE_SIZE, UNetConfig,
};
pub use weights::Params;

use super::Weights;
use crate::backend::{Cpu, Storage};
use crate::error::{Error, Result};
use crate::ops::{Act, Ops};
use crate::tensor::Tensor;
use crate::tensor::ops::{add, embedding, linear, silu, timestep_embedding};

/// The network: config and weights (on the host, and packed for the CPU).
pub struct UNet {
    pub config: UNetConfig,
    w: Weights,
    /// Every convolution weight and attention projection packed into GEMM panels at load.
    cpu: Params<Cpu>,
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

    /// The network of `config` over weights `w` (a trained parameter vector's tensors, see
    /// [`params::ParamLayout::to_weights`]): every tensor the architecture needs is checked.
    pub fn from_weights(config: UNetConfig, w: Weights) -> Result<UNet> {
        for (name, shape) in &expected_tensors(&config) {
            w.get(name, shape)?;
        }
        UNet::assemble(config, w)
    }

    /// The network of `config` over checked weights `w`: packs the convolution weights and
    /// attention projections for the CPU.
    fn assemble(config: UNetConfig, w: Weights) -> Result<UNet> {
        let cpu = Params::new(&Cpu, &w, Storage::F32)?;
        Ok(UNet { config, w, cpu })
    }

    fn t(&self, name: &str) -> Result<&Tensor> {
        let t = self.w.tensors.get(name).ok_or_else(|| Error::Unsupported {
            op: "UNet",
            reason: format!("tensor `{name}` missing"),
        })?;
        Ok(t)
    }

    /// A host weight tensor by name.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.t(name)
    }

    /// Names of every weight tensor.
    pub fn tensor_names(&self) -> impl Iterator<Item = &String> {
        self.w.tensors.keys()
    }

    /// SiLU(time embedding (+ the label tables' rows)) for the batch, (B, time_embed_dim): the
    /// small MLP every device runs on the CPU; each ResNet projects it to its channels. Labels
    /// are (B, F) row-major, F = [`UNetConfig::label_tables`]`.len()` (1 for a plain
    /// class-conditional model, one per factor of a multi-factor one); label j of an image is
    /// below table j's rows.
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
        // Every label table's row added in table order: emb = MLP(t) + Σ_j E_j[y_j].
        let tables = cfg.label_tables();
        if !tables.is_empty() {
            let f = tables.len();
            let labels = class_labels.ok_or_else(|| Error::Unsupported {
                op: "UNet::forward",
                reason: if cfg.factors.is_empty() {
                    "class_labels are required by a class-conditional model (num_class_embeds is set)".into()
                } else {
                    format!("labels are required by a multi-factor model ({f} per image: infodiff_factors)")
                },
            })?;
            if labels.len() != b * f {
                return Err(Error::shape(
                    "UNet::forward: class_labels (B, factors), row-major",
                    (b, f),
                    labels.len(),
                ));
            }
            for (j, (name, rows)) in tables.iter().enumerate() {
                let ids: Vec<usize> = labels
                    .iter()
                    .skip(j)
                    .step_by(f)
                    .map(|&l| {
                        usize::try_from(l)
                            .ok()
                            .filter(|&l| l < *rows)
                            .ok_or_else(|| match cfg.factor_names.get(j) {
                                None => Error::shape(
                                    "UNet::forward: class label in 0..num_class_embeds",
                                    rows,
                                    l,
                                ),
                                Some(factor) => Error::shape(
                                    "UNet::forward: label of (factor, rows) in 0..rows",
                                    (factor, rows),
                                    l,
                                ),
                            })
                    })
                    .collect::<Result<_>>()?;
                let cemb = embedding(self.t(name)?, &ids)?;
                emb = add(&emb, &cemb)?;
            }
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

    /// ε̂ for x (B, C, H, W), diffusers timesteps (B) and class labels (B) for class-conditional
    /// models, on the CPU. Returns (B, out_channels, H, W).
    pub fn forward(
        &self,
        x: &Tensor,
        timesteps: &[f32],
        class_labels: Option<&[i64]>,
    ) -> Result<Tensor> {
        let (b, x) = self.prepare_input(x)?;
        let emb = self.embedding(b, timesteps, class_labels)?;
        let y = walk::forward(&Cpu, self, &self.cpu, x.into_act()?, &emb)?;
        Ok(Tensor::from_act(y))
    }
}

/// A network with its parameters prepared on backend `B` (uploaded once; the GEMM weights in
/// the storage asked for): the U-Net on the emulator or a GPU.
pub struct UNetOn<'n, B: Ops> {
    be: B,
    net: &'n UNet,
    p: Params<B>,
}

impl<'n, B: Ops> UNetOn<'n, B> {
    /// Prepares every weight of `net` on `be`, the GEMM weights in `storage`.
    pub fn new(be: B, net: &'n UNet, storage: Storage) -> Result<Self> {
        let p = Params::new(&be, &net.w, storage)?;
        Ok(UNetOn { be, net, p })
    }

    /// The backend the network lives on.
    pub fn backend(&self) -> &B {
        &self.be
    }

    /// The network (host weights and config).
    pub fn net(&self) -> &UNet {
        self.net
    }

    /// ε̂ of x (prepared, on the backend) with SiLU(emb) from [`UNet::embedding`].
    pub fn forward_act(&self, x: Act<B::Buf>, emb: &Tensor) -> Result<Act<B::Buf>> {
        walk::forward(&self.be, self.net, &self.p, x, emb)
    }

    /// ε̂ for x (B, C, H, W), timesteps (B), class labels (B) where the model has classes:
    /// uploaded, run, downloaded.
    pub fn forward(&self, x: &Tensor, t: &[f32], labels: Option<&[i64]>) -> Result<Tensor> {
        let (b, x) = self.net.prepare_input(x)?;
        let emb = self.net.embedding(b, t, labels)?;
        let (_, c, h, w) = x.dims4("UNet::forward: sample")?;
        let xt = Act {
            shape: [b, c, h, w],
            buf: self.be.upload(&x.data)?,
        };
        let y = self.forward_act(xt, &emb)?;
        let data = self.be.download(&y.buf)?;
        let n = y.numel();
        let data = data
            .get(..n)
            .ok_or_else(|| Error::shape("UNet::forward: output", n, data.len()))?;
        Tensor::new(y.shape.to_vec(), data.to_vec())
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
    for (name, rows) in cfg.label_tables() {
        push(name, vec![rows, te]);
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
