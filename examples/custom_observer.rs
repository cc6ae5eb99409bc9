//! Runs DDPM ancestral sampling on a two-class mixture with an observer of its own: at every step
//! it records the mean exact posterior of the class on the right, the mean |x_t| and the mean
//! denoised estimate x̂₀ (which the step view carries), and at the end how many samples landed
//! on the right.
//!
//! `cargo run --release --example custom_observer`

use infodiff::Result;
use infodiff::diffusion::{
    AncestralVariance, Ddpm, EndView, Observer, Process, SamplerKind, StepView, sample,
};
use infodiff::rng::Noise;
use infodiff::score::{Component, GaussianMixture, ScoreModel};

/// Mean exact p(y = right | x_t), mean |x_t| and mean x̂₀ per step.
struct RightPosterior {
    rows: Vec<(f64, f64, f64, f64)>, // (t, mean p(right | x_t), mean |x_t|, mean x̂₀)
    final_right: usize,
}

impl Observer for RightPosterior {
    fn on_step(&mut self, v: &StepView<'_>) -> Result<()> {
        let post = v.scores.posterior.as_ref().expect("exact model");
        let k = v.scores.classes;
        let b = v.scores.batch;
        let p_right = (0..b).map(|i| post[i * k + 1]).sum::<f64>() / b as f64;
        let mean_abs = v.x.iter().map(|x| x.abs() as f64).sum::<f64>() / v.x.len() as f64;
        let mean_x0 = v.x0_hat.iter().map(|x| *x as f64).sum::<f64>() / v.x0_hat.len() as f64;
        self.rows.push((v.from.t, p_right, mean_abs, mean_x0));
        Ok(())
    }
    fn on_end(&mut self, v: &EndView<'_>) -> Result<()> {
        self.final_right = v.x.iter().filter(|x| **x > 0.0).count();
        Ok(())
    }
}

fn main() -> Result<()> {
    let model = GaussianMixture::new(vec![
        Component {
            weight: 1.0,
            mean: vec![-2.0],
            var: vec![0.25],
            class: 0,
        },
        Component {
            weight: 3.0,
            mean: vec![2.0],
            var: vec![0.25],
            class: 1,
        },
    ])?;
    let grid = Ddpm::new(1e-4, 0.02, 1000)?.grid(250)?;
    let sampler = SamplerKind::Ancestral {
        variance: AncestralVariance::BetaTilde,
    };
    let mut obs = RightPosterior {
        rows: vec![],
        final_right: 0,
    };
    let n = 4096;
    let x0 = sample(&model, &grid, &sampler, Noise::new(1), 0, n, &mut obs)?;
    println!("{}", model.describe());
    println!("     t   E p(right | x_t)   E |x_t|   E x̂₀");
    for (t, p, a, x0) in obs.rows.iter().step_by(25) {
        println!("{t:>6} {p:>18.4} {a:>9.4} {x0:>7.3}");
    }
    let frac = obs.final_right as f64 / n as f64;
    println!(
        "{} of {n} samples end on the right ({frac:.3}; the prior says 0.75)",
        obs.final_right
    );
    let mean = x0.iter().map(|v| *v as f64).sum::<f64>() / n as f64;
    println!("mean of x_0 = {mean:.3} (exact: 0.25·(−2) + 0.75·2 = 1.0)");
    Ok(())
}
