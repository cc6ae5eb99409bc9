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
/// `crate::app::data::open_data`, which opens every spec). `folder:` keeps the images' own
/// size here ([`folder::Folder::open`] with `resize`: None). `seed` is unused by these three
/// sources (each is a fixed set; the order is [`Batches`]'s).
pub fn open_builtin(spec: &DataSpec, seed: u64) -> Result<Box<dyn Dataset>> {
    let _ = seed;
    match spec {
        DataSpec::Digits => Ok(Box::new(digits::Digits::new()?)),
        DataSpec::Shapes { size } => Ok(Box::new(shapes::Shapes::new(*size)?)),
        DataSpec::Folder(dir) => Ok(Box::new(folder::Folder::open(dir, None)?)),
        DataSpec::Gmm(_) => Err(Error::Unsupported {
            op: "data::open_builtin",
            reason: "`gmm:` data needs the measure config reader (app::data::open_data)".into(),
        }),
    }
}

/// The counter word that marks the permutation stream of [`Batches`] (Philox counter
/// `(i_lo, PERMUTATION_STREAM ⊕ i_hi, epoch_lo, epoch_hi)`), a second word no sampler step
/// (< 2³⁰) or probe stream word at a step below 2³¹ − 1 reaches for a dataset of fewer
/// than 2³² examples.
pub const PERMUTATION_STREAM: u32 = 0xB47C_5E00;

/// Deterministic minibatches over a dataset of `len` examples.
///
/// Epoch e's order is a Fisher–Yates shuffle: for i = len−1 down to 1, swap positions i and
/// j = ⌊u·(i+1)/2⁶⁴⌋ with u the 64-bit word (w₀ + 2³²w₁) of Philox4x32-10 at counter
/// `(i_lo, PERMUTATION_STREAM ⊕ i_hi, e_lo, e_hi)` under the key `seed` (the bias of j is
/// below (i+1)/2⁶⁴). Minibatch `step` of size b is positions step·b .. (step+1)·b of the epochs'
/// orders laid end to end, so a batch may straddle two epochs.
///
/// ```
/// use infodiff::data::Batches;
/// let b = Batches { len: 10, seed: 3 };
/// let mut e0 = b.indices(0, 10);
/// e0.sort();
/// assert_eq!(e0, (0..10).collect::<Vec<_>>());
/// ```
#[derive(Clone, Debug)]
pub struct Batches {
    pub len: usize,
    pub seed: u64,
}

impl Batches {
    /// The example indices of minibatch `step` of size `b`: positions step·b .. (step+1)·b of
    /// the concatenated epoch permutations (empty when the data is).
    pub fn indices(&self, step: u64, b: usize) -> Vec<usize> {
        if self.len == 0 || b == 0 {
            return vec![];
        }
        let n = self.len as u128;
        let start = step as u128 * b as u128;
        let mut out = Vec::with_capacity(b);
        let mut perm: Option<(u64, std::sync::Arc<Vec<usize>>)> = None;
        for pos in start..start + b as u128 {
            // (epoch, position in it); an epoch index past u64 wraps (never reached)
            let (e, at) = ((pos / n) as u64, (pos % n) as usize);
            if perm.as_ref().is_none_or(|(pe, _)| *pe != e) {
                perm = Some((e, self.epoch_cached(e)));
            }
            out.push(perm.as_ref().map_or(0, |(_, p)| p[at]));
        }
        out
    }

    /// Epoch `e`'s order of the examples (a permutation of 0..len).
    pub fn epoch(&self, e: u64) -> Vec<usize> {
        self.epoch_cached(e).as_ref().clone()
    }

    /// Epoch `e`'s order, from a per-thread cache of the last two epochs asked for (a training
    /// loop asks for the same epoch hundreds of times; the order costs one Philox call per
    /// example).
    fn epoch_cached(&self, e: u64) -> std::sync::Arc<Vec<usize>> {
        use std::cell::RefCell;
        type Key = (usize, u64, u64);
        thread_local! {
            static CACHE: RefCell<Vec<(Key, std::sync::Arc<Vec<usize>>)>> =
                const { RefCell::new(Vec::new()) };
        }
        let key = (self.len, self.seed, e);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if let Some((_, p)) = c.iter().find(|(k, _)| *k == key) {
                return p.clone();
            }
            let p = std::sync::Arc::new(self.shuffle(e));
            if c.len() >= 2 {
                c.remove(0);
            }
            c.push((key, p.clone()));
            p
        })
    }

    /// The Fisher–Yates shuffle of epoch `e` (see the type's docs).
    fn shuffle(&self, e: u64) -> Vec<usize> {
        let key = [self.seed as u32, (self.seed >> 32) as u32];
        let mut p: Vec<usize> = (0..self.len).collect();
        for i in (1..self.len).rev() {
            let hi = (i as u64 >> 32) as u32;
            let w = crate::rng::philox4x32_10(
                [
                    i as u32,
                    PERMUTATION_STREAM ^ hi,
                    e as u32,
                    (e >> 32) as u32,
                ],
                key,
            );
            let u = (w[0] as u64) | ((w[1] as u64) << 32);
            let j = ((u as u128 * (i as u128 + 1)) >> 64) as usize;
            p.swap(i, j);
        }
        p
    }
}
