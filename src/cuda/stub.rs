//! The GPU handle when infodiff is built without the `cuda` feature: it never opens.

use super::Unavailable;

/// A GPU (never constructed in this build).
pub struct Gpu {
    _never: std::convert::Infallible,
}

impl Gpu {
    pub fn open(_ordinal: usize) -> Result<Gpu, Unavailable> {
        Err(Unavailable::new(
            "this build has no GPU backend (rebuild with `--features cuda`)",
        ))
    }
    pub fn describe(&self) -> String {
        self.unreachable()
    }
    /// No value of this type exists, so no code taking one runs.
    pub(crate) fn unreachable(&self) -> ! {
        match self._never {}
    }
}

/// NVRTC needs the `cuda` feature.
pub fn nvrtc_compile_all(_arch: &'static str) -> Result<Vec<(&'static str, usize)>, Unavailable> {
    Err(Unavailable::new(
        "this build has no GPU backend (rebuild with `--features cuda`)",
    ))
}
