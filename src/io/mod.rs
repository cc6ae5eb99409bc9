//! Files in and out: outputs written atomically ([`atomic`]), safetensors read and written
//! ([`safetensors`]), model folders opened ([`model_dir`]), text and machine facts read with
//! errors that name the file.

pub mod atomic;
pub mod model_dir;
pub mod safetensors;

use std::path::Path;

use crate::error::{Error, Result};

/// Reads a text file; bytes that are not UTF-8 are a JSON error (bad input) naming the offset.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| Error::Json {
        path: path.display().to_string(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}

/// Writes `bytes` to `path` through a temporary in the same folder and a rename: readers see
/// the old file or the whole new one, never a part. A symlink, device or folder at `path` is
/// refused, not replaced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic::AtomicFile::prepare(path, "output")?.commit(bytes)
}

/// This machine's memory (MemTotal), or None where it cannot be read.
pub fn memory_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}
