//! Networks: a compact UNet2DModel compatible with diffusers' weights ([`unet`]), and the
//! safetensors reader they load through ([`Weights`]).

pub mod profile;
pub mod unet;

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Named tensors read from a safetensors file (f32 kept as is; f64, f16, bf16 and integer
/// tensors converted to f32 where asked for).
pub struct Weights {
    pub tensors: HashMap<String, Tensor>,
    pub ints: HashMap<String, (Vec<usize>, Vec<i64>)>,
    pub path: String,
}

impl Weights {
    /// Reads every tensor of `path`. A truncated or corrupt file, an unsupported dtype or a
    /// non-finite value is an error naming the file and the tensor.
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let name = path.display().to_string();
        // The header and every offset are validated by the safetensors crate (checked sizes,
        // data within the file) before any tensor is converted.
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::model(&name, "", "a valid safetensors file", e))?;
        let mut tensors = HashMap::new();
        let mut ints = HashMap::new();
        let mut views = st.tensors();
        views.sort_by(|a, b| a.0.cmp(&b.0)); // errors name the same tensor every time
        for (key, view) in views {
            let shape = view.shape().to_vec();
            let data = view.data();
            use safetensors::Dtype;
            let floats = |v: Vec<f32>| -> Result<Tensor> {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::model(
                        &name,
                        &key,
                        "finite f32 values",
                        format!("{} at element {i}", v[i]),
                    ));
                }
                Tensor::new(shape.clone(), v)
            };
            match view.dtype() {
                Dtype::F32 => {
                    let v = data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    tensors.insert(key.clone(), floats(v)?);
                }
                Dtype::F64 => {
                    let v = data
                        .chunks_exact(8)
                        .map(|b| {
                            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                                as f32
                        })
                        .collect();
                    tensors.insert(key.clone(), floats(v)?);
                }
                Dtype::I64 => {
                    let v = data
                        .chunks_exact(8)
                        .map(|b| {
                            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                        })
                        .collect();
                    ints.insert(key, (shape, v));
                }
                Dtype::I32 => {
                    let v = data
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                        .collect();
                    ints.insert(key, (shape, v));
                }
                other => {
                    return Err(Error::model(
                        &name,
                        &key,
                        "dtype F32, F64, I32 or I64",
                        format!("{other:?}"),
                    ));
                }
            }
        }
        Ok(Weights {
            tensors,
            ints,
            path: name,
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
