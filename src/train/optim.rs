//! The optimiser of [`super::Trainer`], as PyTorch and diffusers' `train_unconditional.py` run it.
//!
//! **AdamW** (`torch.optim.AdamW`, single-tensor path), element-wise at step k ≥ 1 with learning
//! rate η_k, weight decay λ and gradient g:
//!
//! θ ← θ·(1 − η_k λ);  m ← m + (1 − β₁)(g − m);  v ← v·β₂ + ((1 − β₂) g) g;
//! θ ← θ + ((−η_k / (1 − β₁ᵏ)) m) / (√v / √(1 − β₂ᵏ) + ε)
//!
//! in f32 with the scalars formed in f64 and rounded to f32 once, operation for operation as
//! torch's `mul_`, `lerp_`, `addcmul_`, `sqrt`, `div`, `add_` and `addcdiv_` do it.
//!
//! **Gradient clipping** by the global norm (`torch.nn.utils.clip_grad_norm_`):
//! ‖g‖ = √Σ g² (accumulated in f64 over fixed chunks, partials summed in chunk order, so the
//! norm is the same on any thread count), g ← g · min(1, c / (‖g‖ + 10⁻⁶)).
//!
//! **EMA** of the weights (diffusers' `EMAModel.step`): θ̄ ← θ̄ − (1 − d_k)(θ̄ − θ) with
//! d_k = min(decay, w(k − 1)), d_1 = 0 (the first update copies θ), and the warm-up w(s) =
//! 1 − (1 + s/γ)^(−p) ([`EmaWarmup::Power`], diffusers' `use_ema_warmup`), (1 + s)/(10 + s)
//! ([`EmaWarmup::Simple`], its default otherwise) or none ([`EmaWarmup::Off`]: d_k = decay).
//!
//! **Learning-rate schedule** (diffusers' `get_scheduler`, a `LambdaLR` stepped after each
//! update): η_k = η · f(k − 1), f(s) = s/W below the W warm-up steps, then 1 ([`LrSchedule::
//! Constant`]) or max(0, ½(1 + cos(π (s − W)/(S − W)))) ([`LrSchedule::Cosine`], S the total).
//!
//! The element-wise kernels run on SIMD lanes ([`crate::simd::isa::Isa`], IEEE-exact operations
//! only and no fused multiply-add, so every ISA gives the scalar loop's bits) over fixed chunks
//! in parallel; [`reference`] holds their f64 twins.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::simd::isa::{Isa, IsaKind};

/// Elements per parallel chunk of the element-wise kernels and of the norm's partial sums.
pub const CHUNK: usize = 1 << 14;

/// AdamW's hyper-parameters (the learning rate comes per step from [`LrSchedule`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamW {
    /// diffusers' `train_unconditional.py`: β₁ 0.95, β₂ 0.999, ε 1e-8, weight decay 1e-6.
    fn default() -> AdamW {
        AdamW {
            beta1: 0.95,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-6,
        }
    }
}

/// The f32 scalars of one AdamW step (formed in f64, rounded once).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    /// 1 − η λ.
    pub decay: f32,
    /// 1 − β₁.
    pub w1: f32,
    /// β₂.
    pub beta2: f32,
    /// 1 − β₂.
    pub w2: f32,
    /// √(1 − β₂ᵏ).
    pub bc2_sqrt: f32,
    /// ε.
    pub eps: f32,
    /// −η / (1 − β₁ᵏ).
    pub neg_step: f32,
}

impl AdamW {
    /// Checks the hyper-parameters (β in [0, 1), ε > 0, λ ≥ 0, all finite).
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64, ok: bool, expected: &str| -> Result<()> {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(Error::config(format!("adamw.{name}"), expected, v))
            }
        };
        check(
            "beta1",
            self.beta1,
            (0.0..1.0).contains(&self.beta1),
            "a number in [0, 1)",
        )?;
        check(
            "beta2",
            self.beta2,
            (0.0..1.0).contains(&self.beta2),
            "a number in [0, 1)",
        )?;
        check("eps", self.eps, self.eps > 0.0, "a number > 0")?;
        check(
            "weight_decay",
            self.weight_decay,
            self.weight_decay >= 0.0,
            "a number ≥ 0",
        )
    }

    /// The scalars of step `k` (1-based) at learning rate `lr`, as torch forms them.
    pub fn scalars(&self, lr: f64, k: u64) -> AdamScalars {
        let kf = k as f64;
        let bc1 = 1.0 - self.beta1.powf(kf);
        let bc2 = 1.0 - self.beta2.powf(kf);
        AdamScalars {
            decay: (1.0 - lr * self.weight_decay) as f32,
            w1: (1.0 - self.beta1) as f32,
            beta2: self.beta2 as f32,
            w2: (1.0 - self.beta2) as f32,
            bc2_sqrt: bc2.sqrt() as f32,
            eps: self.eps as f32,
            neg_step: (-(lr / bc1)) as f32,
        }
    }

    /// One AdamW step over the flat vectors (all of one length): θ `params`, m, v updated in
    /// place from gradient `grads`, at learning rate `lr`, step `k` ≥ 1. Fixed chunks in
    /// parallel; every element is independent, so the result does not depend on the threads.
    pub fn step(
        &self,
        lr: f64,
        k: u64,
        params: &mut [f32],
        m: &mut [f32],
        v: &mut [f32],
        grads: &[f32],
    ) -> Result<()> {
        let n = params.len();
        for (name, len) in [("m", m.len()), ("v", v.len()), ("grads", grads.len())] {
            if len != n {
                return Err(Error::shape(
                    "AdamW::step",
                    format!("{name} of {n} values (the parameters)"),
                    len,
                ));
            }
        }
        if k == 0 {
            return Err(Error::config("AdamW::step: k", "a step ≥ 1", k));
        }
        let s = self.scalars(lr, k);
        let kind = crate::simd::detected();
        params
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK).zip(grads.par_chunks(CHUNK)))
            .for_each(|((p, m), (v, g))| adamw_on(kind, s, p, m, v, g));
        Ok(())
    }
}

crate::isa_dispatch! {
    /// The AdamW element update on one chunk (slices of one length) on `kind`'s lanes.
    pub fn adamw_on(s: AdamScalars, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) -> () => adamw_kernel
}

/// One element of AdamW in torch's operation order (the scalar tail and the oracle of the
/// lanes).
#[inline(always)]
fn adamw_scalar(s: &AdamScalars, p: &mut f32, m: &mut f32, v: &mut f32, g: f32) {
    *p *= s.decay;
    *m += s.w1 * (g - *m);
    *v = *v * s.beta2 + s.w2 * g * g;
    let denom = v.sqrt() / s.bc2_sqrt + s.eps;
    *p += s.neg_step * *m / denom;
}

#[inline(always)]
unsafe fn adamw_kernel<I: Isa>(
    s: AdamScalars,
    p: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
) {
    let n = p.len().min(m.len()).min(v.len()).min(g.len());
    let l = I::LANES;
    let full = n - n % l;
    // SAFETY: every vector access lies in 0..full ≤ the length of each slice.
    unsafe {
        let decay = I::splat(s.decay);
        let w1 = I::splat(s.w1);
        let b2 = I::splat(s.beta2);
        let w2 = I::splat(s.w2);
        let bc2 = I::splat(s.bc2_sqrt);
        let eps = I::splat(s.eps);
        let step = I::splat(s.neg_step);
        for i in (0..full).step_by(l) {
            let pp = p.as_mut_ptr().add(i);
            let mp = m.as_mut_ptr().add(i);
            let vp = v.as_mut_ptr().add(i);
            let gi = I::load(g.as_ptr().add(i));
            let pi = I::mul(I::load(pp), decay);
            let mi = I::load(mp);
            let mi = I::add(mi, I::mul(w1, I::sub(gi, mi)));
            let vi = I::add(I::mul(I::load(vp), b2), I::mul(I::mul(w2, gi), gi));
            let denom = I::add(I::div(I::sqrt(vi), bc2), eps);
            let pi = I::add(pi, I::div(I::mul(step, mi), denom));
            I::store(pp, pi);
            I::store(mp, mi);
            I::store(vp, vi);
        }
    }
    for i in full..n {
        adamw_scalar(&s, &mut p[i], &mut m[i], &mut v[i], g[i]);
    }
}

/// The global L2 norm √Σ g² (f64; partial sums over fixed chunks of [`CHUNK`] summed in chunk
/// order, so it does not depend on the threads). NaN or ∞ where a gradient is.
pub fn grad_norm(grads: &[f32]) -> f64 {
    let partials: Vec<f64> = grads
        .par_chunks(CHUNK)
        .map(|c| c.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
        .collect();
    partials.iter().sum::<f64>().sqrt()
}

/// The clipping factor min(1, max_norm / (norm + 10⁻⁶)) of `torch.nn.utils.clip_grad_norm_`.
pub fn clip_coef(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Clips `grads` in place to global norm `max_norm` (None: no clipping); returns the norm
/// before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: Option<f64>) -> f64 {
    let norm = grad_norm(grads);
    if let Some(c) = max_norm {
        let coef = clip_coef(norm, c);
        if coef < 1.0 && norm.is_finite() {
            let coef = coef as f32;
            let kind = crate::simd::detected();
            grads
                .par_chunks_mut(CHUNK)
                .for_each(|g| scale_on(kind, g, coef));
        }
    }
    norm
}

crate::isa_dispatch! {
    /// g ← c g on one chunk on `kind`'s lanes.
    pub fn scale_on(g: &mut [f32], c: f32) -> () => scale_kernel
}

#[inline(always)]
unsafe fn scale_kernel<I: Isa>(g: &mut [f32], c: f32) {
    let l = I::LANES;
    let full = g.len() - g.len() % l;
    // SAFETY: every vector access lies in 0..full ≤ g.len().
    unsafe {
        let cv = I::splat(c);
        for i in (0..full).step_by(l) {
            let p = g.as_mut_ptr().add(i);
            I::store(p, I::mul(I::load(p), cv));
        }
    }
    for x in &mut g[full..] {
        *x *= c;
    }
}

/// How the EMA's decay warms up.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EmaWarmup {
    /// w(s) = 1 − (1 + s/γ)^(−p) (diffusers' `use_ema_warmup`; train_unconditional: γ = 1,
    /// p = 3/4).
    Power { inv_gamma: f64, power: f64 },
    /// w(s) = (1 + s)/(10 + s) (diffusers' EMAModel without warm-up).
    Simple,
    /// The decay from the first step on.
    Off,
}

/// The EMA of the weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ema {
    /// The largest decay (diffusers' `decay`, train_unconditional's `ema_max_decay`).
    pub decay: f64,
    pub warmup: EmaWarmup,
}

impl Default for Ema {
    /// Decay up to 0.999 (short runs), diffusers' power warm-up with γ = 1, p = 3/4.
    fn default() -> Ema {
        Ema {
            decay: 0.999,
            warmup: EmaWarmup::Power {
                inv_gamma: 1.0,
                power: 0.75,
            },
        }
    }
}

impl Ema {
    /// Checks the decay (in [0, 1]) and the warm-up's constants (γ > 0, p > 0).
    pub fn validate(&self) -> Result<()> {
        if !(self.decay.is_finite() && (0.0..=1.0).contains(&self.decay)) {
            return Err(Error::config("ema.decay", "a number in [0, 1]", self.decay));
        }
        if let EmaWarmup::Power { inv_gamma, power } = self.warmup {
            if !(inv_gamma.is_finite() && inv_gamma > 0.0) {
                return Err(Error::config(
                    "ema.warmup.inv_gamma",
                    "a number > 0",
                    inv_gamma,
                ));
            }
            if !(power.is_finite() && power > 0.0) {
                return Err(Error::config("ema.warmup.power", "a number > 0", power));
            }
        }
        Ok(())
    }

    /// The decay d_k of update `k` (1-based), as diffusers' `EMAModel.get_decay(k)` with
    /// `update_after_step` 0 and `min_decay` 0.
    pub fn decay_at(&self, k: u64) -> f64 {
        let s = k.saturating_sub(1) as f64;
        let w = match self.warmup {
            EmaWarmup::Off => return self.decay,
            _ if s <= 0.0 => return 0.0,
            EmaWarmup::Power { inv_gamma, power } => 1.0 - (1.0 + s / inv_gamma).powf(-power),
            EmaWarmup::Simple => (1.0 + s) / (10.0 + s),
        };
        w.min(self.decay).max(0.0)
    }

    /// θ̄ ← θ̄ − (1 − d_k)(θ̄ − θ) for update `k` (1-based), fixed chunks in parallel.
    pub fn update(&self, k: u64, ema: &mut [f32], params: &[f32]) -> Result<()> {
        if ema.len() != params.len() {
            return Err(Error::shape(
                "Ema::update",
                format!("{} values (the parameters)", params.len()),
                ema.len(),
            ));
        }
        let one_minus = (1.0 - self.decay_at(k)) as f32;
        let kind = crate::simd::detected();
        ema.par_chunks_mut(CHUNK)
            .zip(params.par_chunks(CHUNK))
            .for_each(|(e, p)| ema_on(kind, one_minus, e, p));
        Ok(())
    }
}

crate::isa_dispatch! {
    /// e ← e − w (e − p) on one chunk on `kind`'s lanes.
    pub fn ema_on(w: f32, e: &mut [f32], p: &[f32]) -> () => ema_kernel
}

#[inline(always)]
unsafe fn ema_kernel<I: Isa>(w: f32, e: &mut [f32], p: &[f32]) {
    let n = e.len().min(p.len());
    let l = I::LANES;
    let full = n - n % l;
    // SAFETY: every vector access lies in 0..full ≤ the length of both slices.
    unsafe {
        let wv = I::splat(w);
        for i in (0..full).step_by(l) {
            let ep = e.as_mut_ptr().add(i);
            let ei = I::load(ep);
            let d = I::mul(wv, I::sub(ei, I::load(p.as_ptr().add(i))));
            I::store(ep, I::sub(ei, d));
        }
    }
    for i in full..n {
        e[i] -= w * (e[i] - p[i]);
    }
}

/// The shape of the learning rate after the warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// diffusers' `constant_with_warmup`.
    Constant,
    /// diffusers' `cosine` (half a cosine period down to 0 at the last step).
    Cosine,
}

impl LrSchedule {
    /// The factor f(s) of the learning rate of update s + 1 (s = 0, 1, …) with `warmup` warm-up
    /// steps of `total` (diffusers' `lr_lambda(current_step = s)`).
    pub fn factor(self, s: u64, warmup: u64, total: u64) -> f64 {
        if s < warmup {
            return s as f64 / warmup.max(1) as f64;
        }
        match self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Cosine => {
                let progress = (s - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }

    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        }
    }
}

/// f64 twins of the element-wise kernels (the oracles of the tests).
pub mod reference {
    use super::AdamW;

    /// One AdamW step in f64 (same formula, no rounding to f32).
    #[allow(clippy::too_many_arguments)]
    pub fn adamw_step(
        opt: &AdamW,
        lr: f64,
        k: u64,
        p: &mut [f64],
        m: &mut [f64],
        v: &mut [f64],
        g: &[f64],
    ) {
        let kf = k as f64;
        let bc1 = 1.0 - opt.beta1.powf(kf);
        let bc2 = 1.0 - opt.beta2.powf(kf);
        for i in 0..p.len() {
            p[i] *= 1.0 - lr * opt.weight_decay;
            m[i] += (1.0 - opt.beta1) * (g[i] - m[i]);
            v[i] = v[i] * opt.beta2 + (1.0 - opt.beta2) * g[i] * g[i];
            let denom = v[i].sqrt() / bc2.sqrt() + opt.eps;
            p[i] -= lr / bc1 * m[i] / denom;
        }
    }

    /// e ← e − w (e − p) in f64.
    pub fn ema(w: f64, e: &mut [f64], p: &[f64]) {
        for (e, p) in e.iter_mut().zip(p) {
            *e -= w * (*e - p);
        }
    }

    /// √Σ g² summed in index order in f64.
    pub fn grad_norm(g: &[f32]) -> f64 {
        g.iter()
            .map(|&x| (x as f64) * (x as f64))
            .sum::<f64>()
            .sqrt()
    }
}

/// The scalar (one-lane) instantiation of the AdamW kernel on one chunk: the loop every ISA is
/// tested against bit for bit.
pub fn adamw_scalar_chunk(s: AdamScalars, p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32]) {
    adamw_on(IsaKind::Scalar, s, p, m, v, g)
}
