//! A network's parameters prepared for one backend, by diffusers name: every convolution
//! weight in the backend's [`Conv2dOp::ConvWeight`] form (packed panels on the CPU, f32 or bf16
//! device buffers), every attention block's projections as its [`AttentionOp::AttnWeight`], and
//! every 1-D tensor (biases, normalisation γ and β) as a backend buffer. The time-embedding MLP's
//! matrices stay on the host ([`super::UNet`]'s weights).

use std::collections::HashMap;

use crate::backend::Storage;
use crate::error::{Error, Result};
use crate::nn::Weights;
use crate::ops::{AttentionOp, Conv2dOp, Ops};

/// The prepared parameters of one network on backend `B`.
pub struct Params<B: Ops> {
    /// By convolution prefix (`down_blocks.0.resnets.0.conv1`).
    conv: HashMap<String, B::ConvWeight>,
    /// By attention block prefix (`mid_block.attentions.0`).
    attn: HashMap<String, B::AttnWeight>,
    /// Every 1-D tensor by name.
    vecs: HashMap<String, B::Buf>,
}

fn missing(name: &str) -> Error {
    Error::Unsupported {
        op: "UNet",
        reason: format!("tensor `{name}` missing"),
    }
}

impl<B: Ops> Params<B> {
    /// Prepares every weight of `w` on `be`, the GEMM weights in `storage`.
    pub fn new(be: &B, w: &Weights, storage: Storage) -> Result<Params<B>> {
        let t = |name: &str| w.tensors.get(name).ok_or_else(|| missing(name));
        let mut conv = HashMap::new();
        let mut attn = HashMap::new();
        let mut vecs = HashMap::new();
        let mut names: Vec<&String> = w.tensors.keys().collect();
        names.sort(); // errors name the same tensor every time
        for name in names {
            let x = &w.tensors[name];
            match x.shape[..] {
                [o, c, kh, kw] => {
                    let prefix = name.strip_suffix(".weight").unwrap_or(name);
                    let cw = be.conv_weight(&x.data, [o, c, kh, kw], storage)?;
                    conv.insert(prefix.to_string(), cw);
                }
                [_] => {
                    vecs.insert(name.clone(), be.upload(&x.data)?);
                }
                _ => {}
            }
            if let Some(p) = name.strip_suffix(".to_q.weight") {
                let pair = |n: &str| -> Result<(&[f32], &[f32])> {
                    let (wt, b) = (t(&format!("{p}.{n}.weight"))?, t(&format!("{p}.{n}.bias"))?);
                    Ok((&wt.data, &b.data))
                };
                let qkvo = [
                    pair("to_q")?,
                    pair("to_k")?,
                    pair("to_v")?,
                    pair("to_out.0")?,
                ];
                attn.insert(p.to_string(), be.attn_weight(qkvo, storage)?);
            }
        }
        Ok(Params { conv, attn, vecs })
    }

    /// The convolution `prefix`: its prepared weight and its bias.
    pub fn conv(&self, prefix: &str) -> Result<(&<B as Conv2dOp>::ConvWeight, &B::Buf)> {
        let w = self
            .conv
            .get(prefix)
            .ok_or_else(|| missing(&format!("{prefix}.weight")))?;
        Ok((w, self.vec(&format!("{prefix}.bias"))?))
    }

    /// Whether the network has the convolution `prefix` (optional shortcuts).
    pub fn has_conv(&self, prefix: &str) -> bool {
        self.conv.contains_key(prefix)
    }

    /// The normalisation `prefix`: γ and β.
    pub fn norm(&self, prefix: &str) -> Result<(&B::Buf, &B::Buf)> {
        Ok((
            self.vec(&format!("{prefix}.weight"))?,
            self.vec(&format!("{prefix}.bias"))?,
        ))
    }

    /// The attention block `prefix`'s projections.
    pub fn attn(&self, prefix: &str) -> Result<&<B as AttentionOp>::AttnWeight> {
        self.attn
            .get(prefix)
            .ok_or_else(|| missing(&format!("{prefix}.to_q.weight")))
    }

    /// The 1-D tensor `name`.
    pub fn vec(&self, name: &str) -> Result<&B::Buf> {
        self.vecs.get(name).ok_or_else(|| missing(name))
    }
}
