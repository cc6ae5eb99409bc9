//! `--data SPEC` opened (every source; `gmm:` through the measure config reader).

use crate::data::{DataSpec, Dataset};
use crate::error::{Error, Result};

/// Opens the data `spec` names; `seed` keys the draws of `gmm:` data.
pub fn open_data(spec: &DataSpec, seed: u64) -> Result<Box<dyn Dataset>> {
    let _ = (spec, seed);
    Err(Error::Unsupported {
        op: "open_data",
        reason: "not yet implemented".into(),
    })
}
