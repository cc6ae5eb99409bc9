//! Closed forms and quadratures that the estimators are tested against (estimators.md).

use crate::score::GaussianMixture;

/// ∫ φ(z) f(z) dz by the trapezoid rule on [−12, 12] (n = 4801 nodes): exact to ~1e-12 for the
/// smooth, slowly growing integrands here.
pub fn gauss_expect(f: impl Fn(f64) -> f64) -> f64 {
    let n = 4800;
    let (lo, hi) = (-12.0f64, 12.0f64);
    let h = (hi - lo) / n as f64;
    let mut acc = 0.0;
    for i in 0..=n {
        let z = lo + i as f64 * h;
        let w = if i == 0 || i == n { 0.5 } else { 1.0 };
        acc += w * (-0.5 * z * z).exp() * f(z);
    }
    acc * h / (2.0 * std::f64::consts::PI).sqrt()
}

/// ln cosh x without overflow.
pub fn ln_cosh(x: f64) -> f64 {
    let a = x.abs();
    a + (-2.0 * a).exp().ln_1p() - std::f64::consts::LN_2
}

/// I(Y; √snr·Y + Z) for equiprobable Y = ±1 (BPSK), nats: snr − E[ln cosh(snr + √snr Z)].
pub fn bpsk_mutual_information(snr: f64) -> f64 {
    snr - gauss_expect(|z| ln_cosh(snr + snr.sqrt() * z))
}

/// Exact H(Y | X_t) of a one-dimensional mixture at kernel coefficients (s, σ), nats, by
/// quadrature: Σ_k π_k E_{z}[H(p(y | s m_k + √(s²C_k + σ²) z))].
pub fn mixture_conditional_entropy_1d(m: &GaussianMixture, s: f64, sigma: f64) -> f64 {
    m.components()
        .iter()
        .zip(m.weights())
        .map(|(c, w)| {
            let sd = (s * s * c.var[0] + sigma * sigma).sqrt();
            w * gauss_expect(|z| {
                super::entropy(&m.eval(&[s * c.mean[0] + sd * z], s, sigma).posterior)
            })
        })
        .sum()
}

/// I(Y; X_t) = −½ ln(1 − ᾱ ρ²) for a Gaussian latent with correlation ρ under VP, nats.
pub fn gaussian_latent_mutual_information(alpha_bar: f64, rho: f64) -> f64 {
    -0.5 * (1.0 - alpha_bar * rho * rho).ln()
}

/// Σ_k π_k E_z[f(s m_k + √(s²C_k + σ²) z)] over the components whose class `keep` accepts, for a
/// one-dimensional mixture at kernel coefficients (s, σ): the unnormalised expectation of f under
/// those classes' part of the marginal p_t.
fn mixture_expect_1d(
    m: &GaussianMixture,
    s: f64,
    sigma: f64,
    keep: impl Fn(usize) -> bool,
    f: impl Fn(f64) -> f64,
) -> f64 {
    m.components()
        .iter()
        .zip(m.weights())
        .filter(|(c, _)| keep(c.class))
        .map(|(c, w)| {
            let sd = (s * s * c.var[0] + sigma * sigma).sqrt();
            w * gauss_expect(|z| f(s * c.mean[0] + sd * z))
        })
        .sum()
}

/// Exact H(Z | X_t, Y ∈ a∪b) of the decision problem a vs b of a one-dimensional mixture, nats:
/// E[H(P(a | x)/(P(a | x) + P(b | x)))] under p(x | a∪b), by quadrature.
pub fn mixture_decision_entropy_1d(
    m: &GaussianMixture,
    a: &[usize],
    b: &[usize],
    s: f64,
    sigma: f64,
) -> f64 {
    let inside = |y: usize| a.contains(&y) || b.contains(&y);
    let mass = mixture_expect_1d(m, s, sigma, inside, |_| 1.0);
    mixture_expect_1d(m, s, sigma, inside, |x| {
        let p = m.eval(&[x], s, sigma).posterior;
        let pa: f64 = a.iter().map(|&y| p[y]).sum();
        let pb: f64 = b.iter().map(|&y| p[y]).sum();
        super::decision_entropy(pa, pb)
    }) / mass
}

/// Exact E[H(Y | x) | Y = k] of a one-dimensional mixture (the entropy left, on average, along
/// trajectories of class k), nats, by quadrature under p(x | k).
pub fn mixture_class_entropy_1d(m: &GaussianMixture, k: usize, s: f64, sigma: f64) -> f64 {
    let mass = mixture_expect_1d(m, s, sigma, |y| y == k, |_| 1.0);
    mixture_expect_1d(
        m,
        s,
        sigma,
        |y| y == k,
        |x| super::entropy(&m.eval(&[x], s, sigma).posterior),
    ) / mass
}
