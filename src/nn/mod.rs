//! Networks: a compact UNet2DModel compatible with diffusers' weights ([`unet`]), and the
//! safetensors reader they load through ([`Weights`]).

pub mod bench;
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
    /// Reads every tensor of `path`. A truncated or corrupt file is an error naming the file.
    pub fn load(path: &Path) -> Result<Weights> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let name = path.display().to_string();
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Json {
            path: name.clone(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        let mut tensors = HashMap::new();
        let mut ints = HashMap::new();
        for (key, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let data = view.data();
            use safetensors::Dtype;
            match view.dtype() {
                Dtype::F32 => {
                    let v = data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    tensors.insert(key, Tensor::new(shape, v)?);
                }
                Dtype::F64 => {
                    let v = data
                        .chunks_exact(8)
                        .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                        .collect();
                    tensors.insert(key, Tensor::new(shape, v)?);
                }
                Dtype::I64 => {
                    let v = data
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                        .collect();
                    ints.insert(key, (shape, v));
                }
                Dtype::I32 => {
                    let v = data
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                        .collect();
                    ints.insert(key, (shape, v));
                }
                other => {
                    return Err(Error::Unsupported {
                        op: "Weights::load",
                        reason: format!(
                            "{name}: tensor `{key}` has dtype {other:?}; f32, f64, i32 and i64 are supported"
                        ),
                    });
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
        let t = self.tensors.get(key).ok_or_else(|| Error::Unsupported {
            op: "Weights",
            reason: format!(
                "{}: tensor `{key}` of shape {shape:?} is missing",
                self.path
            ),
        })?;
        if t.shape != shape {
            return Err(Error::Shape {
                op: "Weights",
                expected: format!("`{key}` {shape:?}"),
                found: format!("{:?}", t.shape),
            });
        }
        Ok(t)
    }
}
