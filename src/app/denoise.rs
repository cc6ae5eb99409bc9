//! `infodiff denoise`: one forward of a U-Net on tensors read from a safetensors file, the
//! output written atomically, on the CPU or a GPU.

use std::path::Path;

use crate::backend::{Cuda, Gpu, Storage};
use crate::error::{Error, Result};
use crate::nn::Weights;
use crate::nn::unet::{UNet, UNetOn};

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
    gpu: Option<(&Gpu, Storage)>,
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
        Some((g, storage)) => UNetOn::new(Cuda(g), &net, storage)?.forward(x, &t, labels)?,
        None => net.forward(x, &t, labels)?,
    };
    use crate::io::safetensors::{View, write};
    write(dest, &[("out", &out.shape, View::F32(&out.data))])
}
