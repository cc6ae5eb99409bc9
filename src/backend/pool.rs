//! A process-wide pool of f32 buffers keyed by length: activations of one layer reuse the
//! storage of earlier ones of the same size. Buffers above the pool's cap (1 GiB held in total)
//! go back to the allocator.

use std::collections::HashMap;
use std::sync::Mutex;

const CAP_BYTES: usize = 1 << 30;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    held: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(|| Pool {
        free: HashMap::new(),
        held: 0,
    }))
}

/// A pooled buffer of capacity n, if one is free.
fn pop(n: usize) -> Option<Vec<f32>> {
    with(|p| {
        let v = p.free.get_mut(&n).and_then(|l| l.pop());
        if v.is_some() {
            p.held -= n * 4;
        }
        v
    })
}

/// An empty buffer with capacity ≥ n (reused when the pool has one of length n).
pub fn take(n: usize) -> Vec<f32> {
    match pop(n) {
        Some(mut v) => {
            v.clear();
            v
        }
        None => Vec::with_capacity(n),
    }
}

/// A buffer of n zeros (a fresh one comes zeroed from the allocator, page by page on first
/// touch, rather than written here).
pub fn take_zeroed(n: usize) -> Vec<f32> {
    match pop(n) {
        Some(mut v) => {
            v.clear();
            v.resize(n, 0.0);
            v
        }
        None => vec![0.0; n],
    }
}

/// A buffer of n values, unspecified: a pooled buffer keeps what it held (old activations), a
/// fresh one is zero. For outputs whose every element is written before it is read.
pub fn take_stale(n: usize) -> Vec<f32> {
    match pop(n) {
        Some(mut v) => {
            v.resize(n, 0.0); // writes only past the length it was given back with
            v
        }
        None => vec![0.0; n],
    }
}

/// Returns a buffer to the pool (keyed by its capacity), unless the pool is full or the buffer
/// is small (< 16 KiB, which the allocator serves well).
pub fn give(v: Vec<f32>) {
    let n = v.capacity();
    if n < 4096 {
        return;
    }
    with(|p| {
        if p.held + n * 4 <= CAP_BYTES {
            p.held += n * 4;
            p.free.entry(n).or_default().push(v);
        }
    });
}

/// Bytes held by the pool.
pub fn held_bytes() -> usize {
    with(|p| p.held)
}

/// A buffer from the pool that returns there when dropped: the CPU backend's buffer, and the
/// GEMM's scratch panels.
#[derive(Debug)]
pub struct Pooled(pub Vec<f32>);

impl Pooled {
    /// n zeros.
    pub fn zeroed(n: usize) -> Pooled {
        Pooled(take_zeroed(n))
    }
    /// n unspecified values ([`take_stale`]).
    pub fn stale(n: usize) -> Pooled {
        Pooled(take_stale(n))
    }
    /// The buffer, no longer returned to the pool by this handle.
    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}
