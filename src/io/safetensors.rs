//! safetensors files: named tensors read as f32 (F32, F64, F16, BF16) or i64 (I32, I64) values,
//! and written from f32, f64, f16, bf16, i32 or i64 slices through an atomic file.
//!
//! The container (8-byte header length, JSON header, body; every offset and size checked) is
//! the `safetensors` crate's; the bytes of a tensor become numbers through `bytemuck` casts
//! (a zero-copy view where the body is aligned for the type, an aligned copy where it is not)
//! and `half` for f16/bf16. safetensors stores little-endian values and so do these casts:
//! the crate builds only for little-endian targets.

use std::path::Path;

use ::safetensors::Dtype;
use bytemuck::Pod;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::error::{Error, Result};

#[cfg(target_endian = "big")]
compile_error!(
    "io::safetensors casts little-endian tensor bytes in place: little-endian targets only"
);

/// A tensor's values as read: floating types widen or narrow to f32, integer types to i64.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// One named tensor of a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub name: String,
    /// The stored dtype (before widening to f32 / i64).
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// shape.iter().product() values, row-major.
    pub values: Values,
}

/// A tensor to write: its values in the dtype they are stored as.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    F16(&'a [f16]),
    BF16(&'a [bf16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
}

impl View<'_> {
    fn dtype_and_bytes(&self) -> (Dtype, &[u8]) {
        match *self {
            View::F32(v) => (Dtype::F32, bytemuck::cast_slice(v)),
            View::F64(v) => (Dtype::F64, bytemuck::cast_slice(v)),
            View::F16(v) => (Dtype::F16, bytemuck::cast_slice(v.reinterpret_cast())),
            View::BF16(v) => (Dtype::BF16, bytemuck::cast_slice(v.reinterpret_cast())),
            View::I32(v) => (Dtype::I32, bytemuck::cast_slice(v)),
            View::I64(v) => (Dtype::I64, bytemuck::cast_slice(v)),
        }
    }
}

/// `bytes` as values of `T`: a cast where `bytes` is aligned for `T`, else an aligned copy.
/// None when the length is not a whole number of values.
pub fn pod_vec<T: Pod>(bytes: &[u8]) -> Option<Vec<T>> {
    let size = std::mem::size_of::<T>();
    if size == 0 || bytes.len() % size != 0 {
        return None;
    }
    match bytemuck::try_cast_slice::<u8, T>(bytes) {
        Ok(v) => Some(v.to_vec()),
        Err(_) => {
            // Misaligned (a body offset that is not a multiple of the type's alignment).
            let mut v = vec![T::zeroed(); bytes.len() / size];
            bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
            Some(v)
        }
    }
}

/// The tensors of the safetensors bytes `bytes` (`file` names it in errors), sorted by name.
/// A truncated or corrupt file, an unsupported dtype or a non-finite float is an error naming
/// the file and the tensor.
pub fn decode(bytes: &[u8], file: &str) -> Result<Vec<Entry>> {
    // The header and every offset are validated by the safetensors crate (checked sizes, data
    // within the file) before any tensor is converted.
    let st = ::safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| Error::model(file, "", "a valid safetensors file", e))?;
    let mut views = st.tensors();
    views.sort_by(|a, b| a.0.cmp(&b.0)); // errors name the same tensor every time
    views
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let bad_size = || {
                Error::model(
                    file,
                    &name,
                    format!("{:?} data", view.dtype()),
                    format!("{} bytes", data.len()),
                )
            };
            let floats = |v: Option<Vec<f32>>| -> Result<Values> {
                let v = v.ok_or_else(bad_size)?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(Error::model(
                        file,
                        &name,
                        "finite f32 values",
                        format!("{} at element {i}", v[i]),
                    ));
                }
                Ok(Values::F32(v))
            };
            let values = match view.dtype() {
                Dtype::F32 => floats(pod_vec::<f32>(data))?,
                Dtype::F64 => {
                    floats(pod_vec::<f64>(data).map(|v| v.iter().map(|&x| x as f32).collect()))?
                }
                Dtype::F16 => floats(
                    pod_vec::<u16>(data)
                        .map(|v| v.iter().map(|&b| f16::from_bits(b).to_f32()).collect()),
                )?,
                Dtype::BF16 => floats(
                    pod_vec::<u16>(data)
                        .map(|v| v.iter().map(|&b| bf16::from_bits(b).to_f32()).collect()),
                )?,
                Dtype::I64 => Values::I64(pod_vec::<i64>(data).ok_or_else(bad_size)?),
                Dtype::I32 => Values::I64(
                    pod_vec::<i32>(data)
                        .ok_or_else(bad_size)?
                        .into_iter()
                        .map(i64::from)
                        .collect(),
                ),
                other => {
                    return Err(Error::model(
                        file,
                        &name,
                        "dtype F32, F64, F16, BF16, I32 or I64",
                        format!("{other:?}"),
                    ));
                }
            };
            Ok(Entry {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                name,
                values,
            })
        })
        .collect()
}

/// Reads the tensors of the safetensors file `path` (see [`decode`]).
pub fn read(path: &Path) -> Result<Vec<Entry>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode(&bytes, &path.display().to_string())
}

/// The safetensors bytes of `tensors` (name, shape, values); a shape that does not hold its
/// values is an error naming the tensor.
pub fn encode(tensors: &[(&str, &[usize], View<'_>)]) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(name, shape, values)| {
            let (dtype, bytes) = values.dtype_and_bytes();
            ::safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes)
                .map(|v| (name.to_string(), v))
                .map_err(|e| Error::Unsupported {
                    op: "safetensors::encode",
                    reason: format!("tensor `{name}` of shape {shape:?}: {e}"),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    ::safetensors::serialize(views, &None).map_err(|e| Error::Unsupported {
        op: "safetensors::encode",
        reason: e.to_string(),
    })
}

/// Writes `tensors` (see [`encode`]) into `dest`, a file checked before the run: readers see the
/// old file or the whole new one.
pub fn write(
    dest: super::atomic::AtomicFile,
    tensors: &[(&str, &[usize], View<'_>)],
) -> Result<()> {
    dest.commit(&encode(tensors)?)
}

/// [`write()`] to `path`, checked now (`option` names it in errors).
pub fn write_file(path: &Path, option: &str, tensors: &[(&str, &[usize], View<'_>)]) -> Result<()> {
    write(super::atomic::AtomicFile::prepare(path, option)?, tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(e: &Entry) -> &[f32] {
        match &e.values {
            Values::F32(v) => v,
            other => panic!("{}: not f32: {other:?}", e.name),
        }
    }

    #[test]
    fn every_dtype_reads_back_what_was_written() {
        let xs = [1.5f32, -2.25, 0.0, 3.0e4, -7.0, 0.125];
        let f64s: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
        let h: Vec<f16> = xs.iter().map(|&x| f16::from_f32(x)).collect();
        let b: Vec<bf16> = xs.iter().map(|&x| bf16::from_f32(x)).collect();
        let i32s = [1i32, -2, i32::MAX, i32::MIN, 0, 5];
        let i64s = [1i64 << 40, -3, i64::MAX, i64::MIN, 0, 7];
        let shape: &[usize] = &[2, 3];
        let bytes = encode(&[
            ("a_f32", shape, View::F32(&xs)),
            ("b_f64", shape, View::F64(&f64s)),
            ("c_f16", shape, View::F16(&h)),
            ("d_bf16", shape, View::BF16(&b)),
            ("e_i32", shape, View::I32(&i32s)),
            ("f_i64", shape, View::I64(&i64s)),
        ])
        .unwrap();
        let e = decode(&bytes, "mem").unwrap();
        let names: Vec<&str> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            ["a_f32", "b_f64", "c_f16", "d_bf16", "e_i32", "f_i64"]
        );
        assert!(e.iter().all(|e| e.shape == shape));
        assert_eq!(f32s(&e[0]), xs);
        // f64 → f32: exact for values that are f32 to begin with
        assert_eq!(f32s(&e[1]), xs);
        // these values are exact in f16 (11-bit significand; 3e4 < 65504) …
        assert_eq!(f32s(&e[2]), xs);
        assert_eq!(e[2].dtype, Dtype::F16);
        // … and within bf16's 8-bit significand to 2⁻⁸ relative
        for (got, want) in f32s(&e[3]).iter().zip(xs) {
            assert!((got - want).abs() <= want.abs() / 256.0, "{got} vs {want}");
        }
        let wide: Vec<i64> = i32s.iter().map(|&v| v as i64).collect();
        assert_eq!(e[4].values, Values::I64(wide));
        assert_eq!(e[5].values, Values::I64(i64s.to_vec()));
    }

    #[test]
    fn misaligned_bytes_are_copied_not_refused() {
        let xs: Vec<f64> = (0..9).map(|i| i as f64 * 0.5 - 2.0).collect();
        let bytes: &[u8] = bytemuck::cast_slice(&xs);
        // one byte in: the slice is not 8-aligned, so the cast fails and the copy serves
        let mut buf = vec![0u8; bytes.len() + 1];
        buf[1..].copy_from_slice(bytes);
        let off = &buf[1..];
        assert!(bytemuck::try_cast_slice::<u8, f64>(off).is_err());
        assert_eq!(pod_vec::<f64>(off).unwrap(), xs);
        assert_eq!(pod_vec::<f64>(bytes).unwrap(), xs);
        assert_eq!(
            pod_vec::<f64>(&off[..7]),
            None,
            "not a whole number of values"
        );
        // a whole file whose body starts at an odd offset in memory decodes the same
        let file = encode(&[("x", &[9], View::F64(&xs))]).unwrap();
        let mut shifted = vec![0u8; file.len() + 1];
        shifted[1..].copy_from_slice(&file);
        let e = decode(&shifted[1..], "mem").unwrap();
        let want: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
        assert_eq!(f32s(&e[0]), want);
    }

    #[test]
    fn refusals_name_the_file_and_tensor() {
        let inf = [f16::from_f32(1.0), f16::INFINITY];
        let e = decode(
            &encode(&[("w", &[2], View::F16(&inf))]).unwrap(),
            "m.safetensors",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("m.safetensors") && e.contains("`w`") && e.contains("finite"),
            "{e}"
        );
        let e = decode(b"garbage", "g.safetensors").unwrap_err().to_string();
        assert!(
            e.contains("g.safetensors") && e.contains("safetensors file"),
            "{e}"
        );
        let e = encode(&[("short", &[3], View::F32(&[1.0, 2.0]))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`short`"), "{e}");
    }

    #[test]
    fn write_file_is_atomic_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("infodiff-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.safetensors");
        let xs = [0.5f32, 1.5];
        write_file(&path, "--output", &[("out", &[1, 2], View::F32(&xs))]).unwrap();
        let e = read(&path).unwrap();
        assert_eq!(
            (e[0].name.as_str(), e[0].shape.as_slice()),
            ("out", &[1usize, 2][..])
        );
        assert_eq!(f32s(&e[0]), xs);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no temporary left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
