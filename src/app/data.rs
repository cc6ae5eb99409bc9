//! `--data SPEC` opened (every source; `gmm:` through the measure config reader): a
//! [`Dataset`] of N labelled (C, H, W) images.
//!
//! - `gmm:FILE.json`: `train_examples` (default 50,000) draws of the config's mixture, shaped
//!   by its `image` [C, H, W] ([`crate::data::gmm`], [`super::config::mixture_data`]);
//! - `digits`, `shapes[:16|:32]`, `folder:DIR`: [`crate::data::open_builtin`].

use crate::data::{DataSpec, Dataset, folder::Folder, gmm::GmmData, open_builtin};
use crate::error::Result;

/// Opens the data `spec` names; `seed` keys the draws of `gmm:` data (the other sources are
/// fixed sets). `folder:` images keep their own size (all must agree; see [`open_data_sized`]).
pub fn open_data(spec: &DataSpec, seed: u64) -> Result<Box<dyn Dataset>> {
    open_data_sized(spec, seed, None)
}

/// [`open_data`], with `folder:` images resampled to `resize` × `resize` when given (the model's
/// sample size; other sources ignore it: their size is their own).
pub fn open_data_sized(
    spec: &DataSpec,
    seed: u64,
    resize: Option<usize>,
) -> Result<Box<dyn Dataset>> {
    match spec {
        DataSpec::Gmm(path) => {
            let m = super::config::mixture_data(path)?;
            Ok(Box::new(GmmData::new(
                m.mixture,
                m.image,
                m.train_examples,
                seed,
                &path.display().to_string(),
            )?))
        }
        DataSpec::Folder(dir) => Ok(Box::new(Folder::open(dir, resize)?)),
        _ => open_builtin(spec, seed),
    }
}
