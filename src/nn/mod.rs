//! Networks: a compact UNet2DModel compatible with diffusers' weights ([`unet`]), and the
//! safetensors reader they load through ([`Weights`]).

pub mod profile;
pub mod unet;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::io::safetensors::{self, Values};
use crate::tensor::Tensor;

/// Named tensors read from a safetensors file (F32, F64, F16 and BF16 as f32; I32 and I64 as
/// i64).
pub struct Weights {
    pub tensors: HashMap<String, Tensor>,
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
    pub path: String,
}

impl Weights {
    /// Reads every tensor of `path` (see [`crate::io::safetensors::read`]: floating dtypes as
    /// f32, integer ones as i64). A truncated or corrupt file, an unsupported dtype or a
    /// non-finite value is an error naming the file and the tensor.
    pub fn load(path: &Path) -> Result<Weights> {
        let mut tensors = HashMap::new();
        let mut ints = HashMap::new();
        for e in safetensors::read(path)? {
            match e.values {
                Values::F32(v) => {
                    tensors.insert(e.name, Tensor::new(e.shape, v)?);
                }
                Values::I64(v) => {
                    ints.insert(e.name, (e.shape, v));
                }
            }
        }
        Ok(Weights {
            tensors,
            ints,
            path: path.display().to_string(),
        })
    }

    /// The f32 tensor `key` with shape `shape`, or an error naming the tensor and both shapes.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<&Tensor> {
        let t = self.tensors.get(key).ok_or_else(|| {
            let found = match self.ints.get(key) {
                Some((s, _)) => format!("an integer tensor of shape {s:?}"),
                None => "nothing (the tensor is missing)".into(),
            };
            Error::model(
                &self.path,
                key,
                format!("an f32 tensor of shape {shape:?}"),
                found,
            )
        })?;
        if t.shape != shape {
            return Err(Error::model(
                &self.path,
                key,
                format!("shape {shape:?}"),
                format!("shape {:?}", t.shape),
            ));
        }
        Ok(t)
    }
}
