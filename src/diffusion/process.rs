//! Forward processes x_t = s_t x_0 + σ_t ε, dx = f(t) x dt + g(t) dW, and their schedules.
//!
//! Schedules are pure functions returning the whole grid ([`ddpm_alpha_bar`], [`Process::grid`]).
//! Time runs forward: data at t = 0, noise at t = T. For DDPM, t is the state index i (0 = data,
//! N = noise) and rates are per unit index; a network trained with diffusers takes timestep i − 1
//! for the state x_i ([`crate::diffusion::param::network_timestep`]).

use crate::error::{Error, Result};

/// A linear forward SDE with Gaussian kernel.
///
/// ```
/// use infodiff::diffusion::{Process, Vp};
/// let vp = Vp::new(0.1, 20.0).unwrap();
/// let (s, sigma) = vp.marginal(1.0);
/// assert!((s * s + sigma * sigma - 1.0).abs() < 1e-12); // variance preserving
/// ```
pub trait Process: Send + Sync {
    /// Signal coefficient s_t and noise σ_t of the kernel x_t = s_t x_0 + σ_t ε.
    fn marginal(&self, t: f64) -> (f64, f64);
    /// Drift coefficient f(t) of dx = f(t) x dt + g(t) dW.
    fn drift(&self, t: f64) -> f64;
    /// Squared diffusion g²(t).
    fn g2(&self, t: f64) -> f64;
    /// The end of the forward process T (the noise end).
    fn t_max(&self) -> f64;
    /// log SNR = ln(s_t²/σ_t²) (+∞ where σ_t = 0).
    fn log_snr(&self, t: f64) -> f64 {
        let (s, sigma) = self.marginal(t);
        2.0 * (s.ln() - sigma.ln())
    }
    /// Sampler grid of `steps` transitions from T to 0 (steps + 1 points, noise first).
    fn grid(&self, steps: usize) -> Result<Grid> {
        if steps == 0 {
            return Err(Error::config("sampler.steps", "at least 1", 0));
        }
        let tm = self.t_max();
        let ts: Vec<f64> = (0..=steps)
            .map(|j| tm * ((steps - j) as f64 / steps as f64))
            .collect();
        Ok(Grid::from_times(self, &ts, |j| j))
    }
    /// Short name (`ddpm`, `vp`, …).
    fn name(&self) -> &'static str;
}

/// One point of a sampler grid: the time and every coefficient of the process there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridPoint {
    /// State index: the DDPM index i, or the position j on a continuous grid counted from t = 0.
    pub index: usize,
    pub t: f64,
    pub s: f64,
    pub sigma: f64,
    pub f: f64,
    pub g2: f64,
    /// The timestep a diffusers-trained network takes for the state here (may be fractional, as
    /// EulerDiscreteScheduler's are): DDPM state x_i is timestep i − 1 (diffusers counts the
    /// first noisy state as 0); a point that is never evaluated (σ = 0) holds −1.
    pub timestep: f64,
}

impl GridPoint {
    /// ln(s²/σ²); +∞ at σ = 0.
    pub fn log_snr(&self) -> f64 {
        2.0 * (self.s.ln() - self.sigma.ln())
    }
}

/// Grid points from noise (first) to data (last).
#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub points: Vec<GridPoint>,
    /// Where step j lands, when that is not `points[j + 1]` (one entry per step): diffusers'
    /// DDIMScheduler steps from timestep t to t − ⌊T/S⌋ whatever the spacing, and then evaluates
    /// the network at the next listed timestep (DDPMScheduler lands on the next listed timestep,
    /// its `previous_timestep`). None: every step lands on the next point.
    pub lands: Option<Vec<GridPoint>>,
}

impl Grid {
    /// Builds grid points at times `ts` (decreasing); `index(j)` names the state index of point j.
    pub fn from_times<P: Process + ?Sized>(
        p: &P,
        ts: &[f64],
        index: impl Fn(usize) -> usize,
    ) -> Grid {
        let n = ts.len();
        let points = ts
            .iter()
            .enumerate()
            .map(|(j, &t)| {
                let (s, sigma) = p.marginal(t);
                GridPoint {
                    index: index(n - 1 - j),
                    t,
                    s,
                    sigma,
                    f: p.drift(t),
                    g2: p.g2(t),
                    timestep: index(n - 1 - j) as f64 - 1.0,
                }
            })
            .collect();
        Grid {
            points,
            lands: None,
        }
    }
    /// The point step j lands on: `lands[j]` where given, else `points[j + 1]`.
    pub fn target(&self, j: usize) -> &GridPoint {
        match &self.lands {
            Some(l) => &l[j],
            None => &self.points[j + 1],
        }
    }
    /// Number of transitions.
    pub fn steps(&self) -> usize {
        self.points.len() - 1
    }
}

/// ᾱ_i = ∏_{j≤i} (1 − β_j) for i = 0..=n with β_i = linspace(β_start, β_end, n) (i = 1..n), ᾱ_0 = 1.
pub fn ddpm_alpha_bar(beta_start: f64, beta_end: f64, n: usize) -> Vec<f64> {
    alpha_bar_of((1..n + 1).map(|i| ddpm_beta(beta_start, beta_end, n, i)))
}

/// ᾱ_0 = 1, ᾱ_i = exp(Σ_{j≤i} ln(1 − β_j)) for the β_1, β_2, … given.
fn alpha_bar_of(betas: impl ExactSizeIterator<Item = f64>) -> Vec<f64> {
    let mut out = Vec::with_capacity(betas.len() + 1);
    let mut log_ab = 0.0f64;
    out.push(1.0);
    for b in betas {
        log_ab += (-b).ln_1p();
        out.push(log_ab.exp());
    }
    out
}

/// β_i of the DDPM schedule (i = 1..=n).
pub fn ddpm_beta(beta_start: f64, beta_end: f64, n: usize, i: usize) -> f64 {
    if n == 1 {
        beta_start
    } else {
        beta_start + (beta_end - beta_start) * (i - 1) as f64 / (n - 1) as f64
    }
}

fn positive(field: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(Error::config(field, "a finite number > 0", v))
    }
}

/// Discrete DDPM (Ho et al. 2020): β_i = linspace(β_start, β_end, N) (or any β_i given,
/// [`Ddpm::from_betas`]), states x_0 … x_N, t = i.
/// Between indices, ln ᾱ is interpolated linearly and g²(t) = −d ln ᾱ/dt = −ln(1 − β_⌈t⌉), so
/// that the continuous SDE reproduces ᾱ_i at every index.
#[derive(Clone, Debug, PartialEq)]
pub struct Ddpm {
    pub beta_start: f64,
    pub beta_end: f64,
    pub n: usize,
    alpha_bar: Vec<f64>,
    /// β_1..β_N when given as a table ([`Ddpm::from_betas`]); None: linspace(β_start, β_end, N).
    betas: Option<Vec<f64>>,
}

impl Ddpm {
    pub fn new(beta_start: f64, beta_end: f64, n: usize) -> Result<Self> {
        positive("process.beta_start", beta_start)?;
        positive("process.beta_end", beta_end)?;
        if beta_start >= 1.0 || beta_end >= 1.0 {
            return Err(Error::config(
                "process.beta_end",
                "β < 1",
                beta_start.max(beta_end),
            ));
        }
        if n == 0 {
            return Err(Error::config("process.steps", "at least 1", 0));
        }
        Ok(Ddpm {
            beta_start,
            beta_end,
            n,
            alpha_bar: ddpm_alpha_bar(beta_start, beta_end, n),
            betas: None,
        })
    }
    /// The DDPM with β_1..β_N = `betas` (a scheduler's table: `trained_betas`, scaled_linear,
    /// squaredcos_cap_v2, a zero-terminal-SNR rescale). Each β must lie in (0, 1]; β_N = 1
    /// (zero terminal SNR) makes ᾱ_N = 0, a noise end with no signal.
    pub fn from_betas(betas: &[f64]) -> Result<Self> {
        if betas.is_empty() {
            return Err(Error::config("betas", "at least 1", 0));
        }
        for (i, &b) in betas.iter().enumerate() {
            if !(b > 0.0 && b <= 1.0) {
                return Err(Error::config(
                    &format!("betas[{i}]"),
                    "a number in (0, 1]",
                    b,
                ));
            }
        }
        let alpha_bar = alpha_bar_of(betas.iter().copied());
        Ok(Ddpm {
            beta_start: betas[0],
            beta_end: betas[betas.len() - 1],
            n: betas.len(),
            alpha_bar,
            betas: Some(betas.to_vec()),
        })
    }
    /// β_i (i = 1..=N).
    pub fn beta(&self, i: usize) -> f64 {
        match &self.betas {
            Some(b) => b[i - 1],
            None => ddpm_beta(self.beta_start, self.beta_end, self.n, i),
        }
    }
    /// ᾱ_i for i = 0..=N.
    pub fn alpha_bar(&self) -> &[f64] {
        &self.alpha_bar
    }
    fn log_ab(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, self.n as f64);
        let i = (t.floor() as usize).min(self.n - 1);
        let frac = t - i as f64;
        let (a, b) = (self.alpha_bar[i].ln(), self.alpha_bar[i + 1].ln());
        a + (b - a) * frac
    }
}

impl Process for Ddpm {
    fn marginal(&self, t: f64) -> (f64, f64) {
        if t.fract() == 0.0 && t >= 0.0 && t <= self.n as f64 {
            let ab = self.alpha_bar[t as usize];
            return (ab.sqrt(), (1.0 - ab).sqrt());
        }
        let lab = self.log_ab(t);
        ((0.5 * lab).exp(), (-lab.exp_m1()).sqrt())
    }
    fn drift(&self, t: f64) -> f64 {
        -0.5 * self.g2(t)
    }
    fn g2(&self, t: f64) -> f64 {
        let i = (t.ceil() as usize).clamp(1, self.n);
        -(-self.beta(i)).ln_1p()
    }
    fn t_max(&self) -> f64 {
        self.n as f64
    }
    /// `steps` transitions on the indices round(N·(S−j)/S), j = 0..S (all N indices when S = N).
    fn grid(&self, steps: usize) -> Result<Grid> {
        if steps == 0 || steps > self.n {
            return Err(Error::config(
                "sampler.steps",
                format!("1..={} (the DDPM's N)", self.n),
                steps,
            ));
        }
        let idx: Vec<usize> = (0..=steps)
            .map(|j| ((self.n * (steps - j)) as f64 / steps as f64).round() as usize)
            .collect();
        let ts: Vec<f64> = idx.iter().map(|&i| i as f64).collect();
        let n = ts.len();
        Ok(Grid::from_times(self, &ts, |k| idx[n - 1 - k]))
    }
    fn name(&self) -> &'static str {
        "ddpm"
    }
}

/// VP SDE with linear β(t) = β_min + t(β_max − β_min), t ∈ [0, 1] (Song et al. 2021):
/// ᾱ(t) = exp(−β_min t − ½(β_max − β_min)t²), s = √ᾱ, σ² = 1 − ᾱ, f = −β/2, g² = β.
#[derive(Clone, Debug, PartialEq)]
pub struct Vp {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl Vp {
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        positive("process.beta_min", beta_min)?;
        positive("process.beta_max", beta_max)?;
        Ok(Vp { beta_min, beta_max })
    }
    /// ln ᾱ(t).
    pub fn log_alpha_bar(&self, t: f64) -> f64 {
        -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t
    }
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }
}

impl Process for Vp {
    fn marginal(&self, t: f64) -> (f64, f64) {
        let l = self.log_alpha_bar(t);
        ((0.5 * l).exp(), (-l.exp_m1()).sqrt())
    }
    fn drift(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }
    fn g2(&self, t: f64) -> f64 {
        self.beta(t)
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn name(&self) -> &'static str {
        "vp"
    }
}

/// VP with the cosine schedule (Nichol & Dhariwal 2021):
/// ᾱ(t) = cos²(φ(t))/cos²(φ(0)), φ(t) = (t + s)/(1 + s)·π/2, t ∈ [0, t_max] (t_max < 1 keeps
/// g²(t) = −d ln ᾱ/dt = π/(1+s)·tan φ(t) finite).
#[derive(Clone, Debug, PartialEq)]
pub struct VpCosine {
    pub s: f64,
    pub t_max: f64,
}

impl VpCosine {
    pub fn new(s: f64, t_max: f64) -> Result<Self> {
        positive("process.s", s)?;
        if !(t_max > 0.0 && t_max < 1.0) {
            return Err(Error::config("process.t_max", "a number in (0, 1)", t_max));
        }
        Ok(VpCosine { s, t_max })
    }
    fn phi(&self, t: f64) -> f64 {
        (t + self.s) / (1.0 + self.s) * std::f64::consts::FRAC_PI_2
    }
    pub fn alpha_bar(&self, t: f64) -> f64 {
        (self.phi(t).cos() / self.phi(0.0).cos()).powi(2)
    }
}

impl Process for VpCosine {
    fn marginal(&self, t: f64) -> (f64, f64) {
        let ab = self.alpha_bar(t);
        (ab.sqrt(), (1.0 - ab).max(0.0).sqrt())
    }
    fn drift(&self, t: f64) -> f64 {
        -0.5 * self.g2(t)
    }
    fn g2(&self, t: f64) -> f64 {
        std::f64::consts::PI / (1.0 + self.s) * self.phi(t).tan()
    }
    fn t_max(&self) -> f64 {
        self.t_max
    }
    fn name(&self) -> &'static str {
        "vp_cosine"
    }
}

/// sub-VP SDE (Song et al. 2021): s = √ᾱ, σ² = (1 − ᾱ)², f = −β/2, g² = β(1 − ᾱ²), with the
/// linear β of [`Vp`].
#[derive(Clone, Debug, PartialEq)]
pub struct SubVp {
    pub vp: Vp,
}

impl SubVp {
    pub fn new(beta_min: f64, beta_max: f64) -> Result<Self> {
        Ok(SubVp {
            vp: Vp::new(beta_min, beta_max)?,
        })
    }
}

impl Process for SubVp {
    fn marginal(&self, t: f64) -> (f64, f64) {
        let l = self.vp.log_alpha_bar(t);
        ((0.5 * l).exp(), -l.exp_m1())
    }
    fn drift(&self, t: f64) -> f64 {
        self.vp.drift(t)
    }
    fn g2(&self, t: f64) -> f64 {
        let l = self.vp.log_alpha_bar(t);
        self.vp.beta(t) * (-(2.0 * l).exp_m1())
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn name(&self) -> &'static str {
        "subvp"
    }
}

/// VE SDE (Song et al. 2021) with geometric σ(t) = σ_min (σ_max/σ_min)^t, t ∈ [0, 1]:
/// s = 1, σ_t = σ(t) (so t = 0 is the data with σ_min of noise), f = 0, g² = dσ²/dt = 2σ² ln(σ_max/σ_min).
#[derive(Clone, Debug, PartialEq)]
pub struct Ve {
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl Ve {
    pub fn new(sigma_min: f64, sigma_max: f64) -> Result<Self> {
        positive("process.sigma_min", sigma_min)?;
        positive("process.sigma_max", sigma_max)?;
        if sigma_max <= sigma_min {
            return Err(Error::config(
                "process.sigma_max",
                format!("> sigma_min = {sigma_min}"),
                sigma_max,
            ));
        }
        Ok(Ve {
            sigma_min,
            sigma_max,
        })
    }
    pub fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }
}

impl Process for Ve {
    fn marginal(&self, t: f64) -> (f64, f64) {
        (1.0, self.sigma(t))
    }
    fn drift(&self, _t: f64) -> f64 {
        0.0
    }
    fn g2(&self, t: f64) -> f64 {
        2.0 * self.sigma(t).powi(2) * (self.sigma_max / self.sigma_min).ln()
    }
    fn t_max(&self) -> f64 {
        1.0
    }
    fn name(&self) -> &'static str {
        "ve"
    }
}
