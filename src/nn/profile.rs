//! Wall time spent in each kind of op of a forward pass, collected only while enabled
//! (`infodiff bench unet --profile`); disabled, a scope costs one relaxed atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);
/// (op, seconds, calls), in order of first appearance.
static TIMES: Mutex<Vec<(&'static str, f64, u64)>> = Mutex::new(Vec::new());

/// Starts (or stops) collecting; starting clears what was collected.
pub fn enable(on: bool) {
    if on {
        TIMES.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// Runs `f`, adding its wall time to `op` when collecting.
pub fn scope<R>(op: &'static str, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let dt = t.elapsed().as_secs_f64();
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    match times.iter_mut().find(|(name, _, _)| *name == op) {
        Some(entry) => {
            entry.1 += dt;
            entry.2 += 1;
        }
        None => times.push((op, dt, 1)),
    }
    r
}

/// What was collected: (op, seconds, calls).
pub fn collected() -> Vec<(&'static str, f64, u64)> {
    TIMES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}
