//! Training data (`--data SPEC`): a [`Dataset`] is a fixed, indexed set of labelled images of one
//! (C, H, W) shape, with one label per factor (a factor: a discrete latent such as the class,
//! or Shapes3D's floor hue). [`Batches`] draws deterministic minibatches: epoch e visits every
//! example once in a Philox permutation keyed by (seed, e).
//!
//! Sources: [`gmm`] (samples of a measure config's mixture), [`digits`] (the 1,797 8×8 UCI
//! digits, committed), [`shapes`] (a procedural Shapes3D-like generator), [`folder`] (PNG images
//! in class subfolders).

pub mod digits;
pub mod folder;
pub mod gmm;
pub mod shapes;

use std::path::PathBuf;
use std::str::FromStr;

use crate::error::{Error, Result};

/// One discrete latent factor: its name and number of values (labels 0..cardinality).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Factor {
    pub name: String,
    pub cardinality: usize,
}

/// A fixed, indexed set of labelled images.
pub trait Dataset: Send + Sync {
    /// One line naming the data (for logs and summaries).
    fn name(&self) -> String;
    /// Number of examples.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// (C, H, W) of every image.
    fn shape(&self) -> [usize; 3];
    /// The factors, in label order (one label per factor per example).
    fn factors(&self) -> &[Factor];
    /// Example i: its image (C·H·W values, nominally in [−1, 1]) into `image`, its labels (one
    /// per factor) into `labels`.
    fn example(&self, i: usize, image: &mut [f32], labels: &mut [i64]) -> Result<()>;
}

/// What `--data` names.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSpec {
    /// `gmm:FILE.json`: samples of the `mixture` block of a measure config.
    Gmm(PathBuf),
    /// `digits`: the UCI handwritten digits.
    Digits,
    /// `shapes` or `shapes:16` / `shapes:32`: the procedural Shapes3D-like set.
    Shapes { size: usize },
    /// `folder:DIR`: PNG images in class subfolders.
    Folder(PathBuf),
}

impl FromStr for DataSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<DataSpec> {
        let bad = || {
            Error::config(
                "--data",
                "gmm:FILE.json, digits, shapes, shapes:16, shapes:32 or folder:DIR",
                s,
            )
        };
        if let Some(f) = s.strip_prefix("gmm:") {
            return Ok(DataSpec::Gmm(f.into()));
        }
        if let Some(d) = s.strip_prefix("folder:") {
            return Ok(DataSpec::Folder(d.into()));
        }
        match s {
            "digits" => Ok(DataSpec::Digits),
            "shapes" | "shapes:16" => Ok(DataSpec::Shapes { size: 16 }),
            "shapes:32" => Ok(DataSpec::Shapes { size: 32 }),
            _ => Err(bad()),
        }
    }
}

/// Opens `digits`, `shapes` and `folder:` data (`gmm:` needs a measure config, read by
/// `crate::app::data::open_data`, which opens every spec).
pub fn open_builtin(spec: &DataSpec, seed: u64) -> Result<Box<dyn Dataset>> {
    let _ = (spec, seed);
    Err(Error::Unsupported {
        op: "data::open",
        reason: "not yet implemented".into(),
    })
}

/// Deterministic minibatches over a dataset of `len` examples.
#[derive(Clone, Debug)]
pub struct Batches {
    pub len: usize,
    pub seed: u64,
}

impl Batches {
    /// The example indices of minibatch `step` of size `b`: positions step·b .. (step+1)·b of
    /// the concatenated epoch permutations.
    pub fn indices(&self, step: u64, b: usize) -> Vec<usize> {
        let _ = (step, b);
        vec![]
    }
}
