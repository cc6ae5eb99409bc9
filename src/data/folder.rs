//! Data source `folder:DIR`: x = 2·v − 1 for the pixel values v ∈ [0, 1] of the PNG images
//! `DIR/<class>/*.png`, one factor `class` = the index of the class subfolder among DIR's
//! subfolders sorted by name.
//!
//! - Files: in each subfolder, every file whose name ends in `.png` (any case), sorted by name;
//!   entries whose names start with `.` are skipped, as are plain files in DIR itself. Every
//!   class subfolder must hold at least one image.
//! - Decoding (the `png` crate, with `Transformations::EXPAND`): grey, grey+alpha, RGB, RGBA at
//!   8 or 16 bits (v = sample / 255 or / 65535), palette images expanded to RGB(A), grey below
//!   8 bits expanded. Alpha is dropped (the colour samples are taken as stored).
//! - Channels: 1 if every image is grey, else 3, with grey images repeated into R = G = B.
//! - Size: without `resize`, every image must have the first image's width and height; with
//!   `resize` = S, each is resampled to S × S (aspect not kept), per axis: an area-weighted box
//!   filter where the axis shrinks, bilinear (half-pixel centres, edge clamped) where it grows.
//!
//! Everything is decoded once, at open, into memory ((N, C, H, W) f32).

use std::path::{Path, PathBuf};

use super::{Dataset, Factor};
use crate::error::{Error, Result};

/// PNG images in class subfolders, decoded.
#[derive(Clone, Debug)]
pub struct Folder {
    root: PathBuf,
    /// [C, H, W]
    shape: [usize; 3],
    /// Class subfolder names, in label order.
    classes: Vec<String>,
    /// (N, C, H, W)
    pixels: Vec<f32>,
    /// (N)
    labels: Vec<i64>,
    /// (N)
    files: Vec<PathBuf>,
    factors: Vec<Factor>,
}

/// One decoded image: channels 1 or 3, values x = 2·v − 1 ∈ [−1, 1] (computed in f64 and
/// rounded once), (C, H, W).
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// (C, H, W)
    pub data: Vec<f32>,
}

/// Decodes the PNG file at `path` (see the module docs); errors name the file.
pub fn decode_png(path: &Path) -> Result<Decoded> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let bad = |what: String| Error::model(path.display().to_string(), "", "a PNG image", what);
    let mut dec = png::Decoder::new(std::io::BufReader::new(file));
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec
        .read_info()
        .map_err(|e| bad(format!("an unreadable file ({e})")))?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| bad("an image too large to decode".into()))?;
    let mut buf = vec![0u8; size];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| bad(format!("an unreadable file ({e})")))?;
    let (w, h) = (info.width as usize, info.height as usize);
    let stored = match info.color_type {
        png::ColorType::Grayscale => 1,
        png::ColorType::GrayscaleAlpha => 2,
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        png::ColorType::Indexed => {
            return Err(bad("a palette image left unexpanded".into()));
        }
    };
    let bytes = match info.bit_depth {
        png::BitDepth::Eight => 1,
        png::BitDepth::Sixteen => 2,
        d => return Err(bad(format!("bit depth {d:?} after expansion"))),
    };
    let channels = if stored <= 2 { 1 } else { 3 };
    if w == 0 || h == 0 || info.line_size < w * stored * bytes {
        return Err(bad(format!("a {w}×{h} image")));
    }
    let mut data = vec![0.0f32; channels * h * w];
    for y in 0..h {
        let row = &buf[y * info.line_size..y * info.line_size + w * stored * bytes];
        for x in 0..w {
            for c in 0..channels {
                let at = (x * stored + c) * bytes;
                let v = if bytes == 1 {
                    row[at] as f64 / 255.0
                } else {
                    u16::from_be_bytes([row[at], row[at + 1]]) as f64 / 65535.0
                };
                data[(c * h + y) * w + x] = (2.0 * v - 1.0) as f32;
            }
        }
    }
    Ok(Decoded {
        channels,
        height: h,
        width: w,
        data,
    })
}

/// The weights of a 1-D resampling from `n_in` to `n_out` samples: for each output sample, its
/// (input index, weight) pairs (weights sum to 1). Box (area) filter where the axis shrinks,
/// bilinear with half-pixel centres where it grows, the identity where sizes agree.
pub fn resample_weights(n_in: usize, n_out: usize) -> Vec<Vec<(usize, f64)>> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|j| {
            if n_in == n_out {
                vec![(j, 1.0)]
            } else if n_out < n_in {
                // output j covers input [j·scale, (j+1)·scale)
                let (a, b) = (j as f64 * scale, (j + 1) as f64 * scale);
                let mut w = vec![];
                let first = a.floor() as usize;
                let last = (b.ceil() as usize).min(n_in);
                for i in first..last {
                    let overlap = (b.min((i + 1) as f64) - a.max(i as f64)).max(0.0);
                    if overlap > 0.0 {
                        w.push((i, overlap / scale));
                    }
                }
                w
            } else {
                let c = ((j as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = c.floor() as usize;
                let f = c - i0 as f64;
                let i1 = (i0 + 1).min(n_in - 1);
                if f == 0.0 || i1 == i0 {
                    vec![(i0, 1.0)]
                } else {
                    vec![(i0, 1.0 - f), (i1, f)]
                }
            }
        })
        .collect()
}

/// Resamples `img` (C, H, W) to (C, `oh`, `ow`) with [`resample_weights`] per axis.
pub fn resize(img: &Decoded, oh: usize, ow: usize) -> Decoded {
    let (c, h, w) = (img.channels, img.height, img.width);
    let wy = resample_weights(h, oh);
    let wx = resample_weights(w, ow);
    let mut tmp = vec![0.0f64; c * h * ow]; // (C, H, OW)
    for ch in 0..c {
        for y in 0..h {
            let row = &img.data[(ch * h + y) * w..(ch * h + y + 1) * w];
            for (x, ws) in wx.iter().enumerate() {
                tmp[(ch * h + y) * ow + x] = ws.iter().map(|&(i, a)| a * row[i] as f64).sum();
            }
        }
    }
    let mut data = vec![0.0f32; c * oh * ow];
    for ch in 0..c {
        for (y, ws) in wy.iter().enumerate() {
            for x in 0..ow {
                let v: f64 = ws
                    .iter()
                    .map(|&(i, a)| a * tmp[(ch * h + i) * ow + x])
                    .sum();
                data[(ch * oh + y) * ow + x] = v as f32;
            }
        }
    }
    Decoded {
        channels: c,
        height: oh,
        width: ow,
        data,
    }
}

/// Sorted names of the entries of `dir` that `keep` accepts (hidden ones skipped).
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<String>> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && keep(&e.path()) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn is_png(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .is_some_and(|e| e.to_string_lossy().eq_ignore_ascii_case("png"))
}

impl Folder {
    /// Decodes every image of `dir` (see the module docs); `resize` = S resamples each to S × S.
    /// Refusals: no class subfolder or an empty one, a PNG that does not decode (naming the
    /// file), sizes that differ from the first image's without `resize` (naming both files).
    pub fn open(dir: &Path, resize_to: Option<usize>) -> Result<Folder> {
        let none = |found: String| {
            Error::model(
                dir.display().to_string(),
                "",
                "PNG images in class subfolders (DIR/<class>/*.png)",
                found,
            )
        };
        if !dir.is_dir() {
            return Err(none("no such folder".into()));
        }
        if resize_to == Some(0) {
            return Err(Error::config("resize", "a size ≥ 1", 0));
        }
        let classes = sorted_entries(dir, |p| p.is_dir())?;
        if classes.is_empty() {
            return Err(none("no class subfolder".into()));
        }
        let mut decoded: Vec<Decoded> = vec![];
        let (mut labels, mut files): (Vec<i64>, Vec<PathBuf>) = (vec![], vec![]);
        for (y, class) in classes.iter().enumerate() {
            let sub = dir.join(class);
            let names = sorted_entries(&sub, is_png)?;
            if names.is_empty() {
                return Err(none(format!(
                    "class folder {} with no .png file",
                    sub.display()
                )));
            }
            for n in names {
                let path = sub.join(n);
                let mut img = decode_png(&path)?;
                if let Some(s) = resize_to {
                    img = resize(&img, s, s);
                } else if let Some(first) = decoded.first() {
                    if (img.height, img.width) != (first.height, first.width) {
                        return Err(Error::model(
                            path.display().to_string(),
                            "",
                            format!(
                                "the size of the first image {} ({}×{} W×H; or give a resize)",
                                files[0].display(),
                                first.width,
                                first.height
                            ),
                            format!("{}×{}", img.width, img.height),
                        ));
                    }
                }
                decoded.push(img);
                labels.push(y as i64);
                files.push(path);
            }
        }
        let c = if decoded.iter().any(|d| d.channels == 3) {
            3
        } else {
            1
        };
        let (h, w) = (decoded[0].height, decoded[0].width);
        let per = c * h * w;
        let mut pixels = Vec::with_capacity(decoded.len() * per);
        for d in &decoded {
            for ch in 0..c {
                let src = if d.channels == 1 { 0 } else { ch };
                pixels.extend_from_slice(&d.data[src * h * w..(src + 1) * h * w]);
            }
        }
        Ok(Folder {
            root: dir.to_path_buf(),
            shape: [c, h, w],
            factors: vec![Factor {
                name: "class".into(),
                cardinality: classes.len(),
            }],
            classes,
            pixels,
            labels,
            files,
        })
    }

    /// Class subfolder names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }
    /// The file of example `i`.
    pub fn file(&self, i: usize) -> Option<&Path> {
        self.files.get(i).map(|p| p.as_path())
    }
}

impl Dataset for Folder {
    fn name(&self) -> String {
        format!(
            "folder:{} ({} images, {} classes, {}×{}×{})",
            self.root.display(),
            self.labels.len(),
            self.classes.len(),
            self.shape[0],
            self.shape[1],
            self.shape[2]
        )
    }
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn shape(&self) -> [usize; 3] {
        self.shape
    }
    fn factors(&self) -> &[Factor] {
        &self.factors
    }
    fn example(&self, i: usize, image: &mut [f32], labels: &mut [i64]) -> Result<()> {
        let per: usize = self.shape.iter().product();
        if i >= self.labels.len() {
            return Err(Error::shape("Folder::example: index", self.labels.len(), i));
        }
        if image.len() != per || labels.len() != 1 {
            return Err(Error::shape(
                "Folder::example: image (C·H·W), labels (1)",
                (per, 1),
                (image.len(), labels.len()),
            ));
        }
        image.copy_from_slice(&self.pixels[i * per..(i + 1) * per]);
        labels[0] = self.labels[i];
        Ok(())
    }
}
