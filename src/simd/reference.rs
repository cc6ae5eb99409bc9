//! Scalar f64 references for the lane math: the oracles the SIMD bodies are tested against.

/// Box–Muller in f64 from the same Philox words as [`crate::simd::math::box_muller`].
pub fn box_muller(w0: u32, w1: u32) -> (f64, f64) {
    let u1 = ((w0 >> 8) as f64 + 0.5) / 16_777_216.0;
    let u2 = (w1 >> 8) as f64 / 16_777_216.0;
    let r = (-2.0 * u1.ln()).sqrt();
    let th = std::f64::consts::TAU * u2;
    (r * th.cos(), r * th.sin())
}
