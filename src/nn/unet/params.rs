//! A network's parameters as one flat f32 vector (the training state: weights, gradients, AdamW
//! moments and the EMA share this layout): [`ParamLayout`] gives every diffusers tensor name its
//! shape and offset, in [`super::expected_tensors`] order.

use std::collections::HashMap;

use rayon::prelude::*;

use super::UNetConfig;
use crate::error::{Error, Result};
use crate::nn::Weights;
use crate::rng::Noise;
use crate::tensor::Tensor;

/// One tensor of the layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamEntry {
    /// Number of values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every parameter of a config's network, by name, in one flat vector.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamLayout {
    pub entries: Vec<ParamEntry>,
}

impl ParamLayout {
    /// The layout of `cfg`'s network ([`super::expected_tensors`] order).
    pub fn new(cfg: &UNetConfig) -> ParamLayout {
        let mut offset = 0;
        let entries = super::expected_tensors(cfg)
            .into_iter()
            .map(|(name, shape)| {
                let e = ParamEntry {
                    name,
                    offset,
                    shape,
                };
                offset += e.numel();
                e
            })
            .collect();
        ParamLayout { entries }
    }

    /// Total number of values.
    pub fn len(&self) -> usize {
        self.entries.last().map_or(0, |e| e.offset + e.numel())
    }

    /// Whether the layout holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry `name`.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The values of `name` in `p` (a vector of this layout).
    pub fn slice<'a>(&self, p: &'a [f32], name: &str) -> Result<&'a [f32]> {
        let e = self.get(name).ok_or_else(|| Error::Unsupported {
            op: "ParamLayout",
            reason: format!("tensor `{name}` missing"),
        })?;
        p.get(e.offset..e.offset + e.numel())
            .ok_or_else(|| Error::shape("ParamLayout: parameter vector", self.len(), p.len()))
    }

    /// The named tensors of `p` (a vector of this layout), for saving or assembling a
    /// [`super::UNet`]; `path` names their origin in later errors.
    pub fn to_weights(&self, p: &[f32], path: &str) -> Result<Weights> {
        if p.len() != self.len() {
            return Err(Error::shape(
                "ParamLayout::to_weights: parameter vector",
                self.len(),
                p.len(),
            ));
        }
        let mut tensors = HashMap::with_capacity(self.entries.len());
        for e in &self.entries {
            let data = p[e.offset..e.offset + e.numel()].to_vec();
            tensors.insert(e.name.clone(), Tensor::new(e.shape.clone(), data)?);
        }
        Ok(Weights {
            tensors,
            ints: HashMap::new(),
            path: path.to_string(),
        })
    }

    /// A vector of this layout from named tensors: every tensor present with its shape (an
    /// error names the first missing or mis-shaped one), and no f32 tensor the layout does not
    /// have (a checkpoint of another architecture is refused, not partly read).
    pub fn from_weights(&self, w: &Weights) -> Result<Vec<f32>> {
        let mut p = Vec::with_capacity(self.len());
        for e in &self.entries {
            p.extend_from_slice(&w.get(&e.name, &e.shape)?.data);
        }
        let mut extra: Vec<&String> = w.tensors.keys().filter(|k| self.get(k).is_none()).collect();
        extra.sort(); // the same tensor named every time
        if let Some(k) = extra.first() {
            return Err(Error::model(
                &w.path,
                k.as_str(),
                "only the tensors of the configured architecture",
                "a tensor it does not have",
            ));
        }
        Ok(p)
    }

    /// PyTorch's default initialisation of diffusers' UNet2DModel (diffusers adds none of its
    /// own): convolution and linear weights Kaiming-uniform with a = √5, i.e. U(±b) with
    /// b = gain·√(3/fan_in), gain = √(2/(1 + a²)) = √(1/3), so b = 1/√fan_in (fan_in = in·kh·kw);
    /// their biases U(±1/√fan_in) of the same fan_in; GroupNorm γ = 1, β = 0; the class-embedding
    /// tables N(0, 1). Drawn from Philox with `seed`: tensor i of the layout is trajectory i, its
    /// element e the (e mod 4)-th word of counter (⌊e/4⌋, [`INIT_STREAM`]) for a uniform (24 bits),
    /// [`crate::rng::Noise::normal`]`(i, 0, e)` for a normal; the same values on any machine.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let noise = Noise::new(seed);
        let mut p = vec![0.0f32; self.len()];
        let mut rest = &mut p[..];
        let mut parts = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(e.numel());
            parts.push(head);
            rest = tail;
        }
        parts
            .into_par_iter()
            .enumerate()
            .for_each(|(i, out)| match self.init_kind(i) {
                Init::Uniform(b) => uniform(&noise, i as u64, b, out),
                Init::Normal => out
                    .iter_mut()
                    .enumerate()
                    .for_each(|(e, v)| *v = noise.normal(i as u64, 0, e)),
                Init::Const(c) => out.fill(c),
            });
        p
    }

    /// How entry `i` is initialised (see [`ParamLayout::init`]).
    fn init_kind(&self, i: usize) -> Init {
        let e = &self.entries[i];
        let is_table =
            e.name == "class_embedding.weight" || e.name.starts_with("class_embeddings.");
        let fan_in = |shape: &[usize]| shape[1..].iter().product::<usize>().max(1);
        if is_table {
            return Init::Normal;
        }
        if e.shape.len() >= 2 {
            return Init::Uniform(1.0 / (fan_in(&e.shape) as f64).sqrt());
        }
        // A 1-D tensor: a bias of a convolution or linear (its weight 2-D or more), or a
        // normalisation's γ (`.weight`) or β (`.bias`).
        if let Some(prefix) = e.name.strip_suffix(".bias")
            && let Some(w) = self.get(&format!("{prefix}.weight"))
            && w.shape.len() >= 2
        {
            return Init::Uniform(1.0 / (fan_in(&w.shape) as f64).sqrt());
        }
        Init::Const(if e.name.ends_with(".weight") {
            1.0
        } else {
            0.0
        })
    }
}

/// The second Philox counter word of [`ParamLayout::init`]'s uniforms.
pub const INIT_STREAM: u32 = 0x1417_0000;

/// One tensor's initial distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Init {
    /// U(−b, b).
    Uniform(f64),
    /// N(0, 1).
    Normal,
    Const(f32),
}

/// out[e] = b·(2u − 1), u ∈ [0, 1) the 24-bit uniform of word e mod 4 of counter (⌊e/4⌋,
/// INIT_STREAM, trajectory).
fn uniform(noise: &Noise, trajectory: u64, b: f64, out: &mut [f32]) {
    for (block, chunk) in out.chunks_mut(4).enumerate() {
        let w = noise.words(trajectory, block as u32, INIT_STREAM);
        for (v, word) in chunk.iter_mut().zip(w) {
            let u = (word >> 8) as f64 * (1.0 / 16_777_216.0);
            *v = (b * (2.0 * u - 1.0)) as f32;
        }
    }
}
