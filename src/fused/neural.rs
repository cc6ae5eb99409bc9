//! Neural measurement on a device with no host synchronisation inside the sampling loop: per
//! step, the states are replicated for the K + 1 labels on the device and, with N Hutchinson
//! probes, perturbed to x ± h v_n for 2N more null-label rows (`sde_probe_rows`), the U-Net runs
//! once on all B·(K+1+2N) rows there ([`UNetOn`]), and the fused step (`kernels/sde_step.cu`)
//! updates states and classifier and writes its record (5 + 3K + P values: H(π), Σ π‖Δ‖², the
//! non-finite flag, ‖s‖², the Hutchinson ∇·s, ‖Δ_y‖², ln π, Δ_k·u, the partitions' score gaps)
//! into a (steps, B, 5 + 3K + P) device table; the host only queues work (the small
//! time-embedding MLP and its uploads) until one download after the last step, from which
//! [`InfoObserver::record_point`] builds the same sums as the CPU observer (with
//! [`crate::score::Hutchinson`] of the same probes, for the divergence).

use crate::backend::{Cuda, Gpu, Storage};
use crate::diffusion::{Grid, SamplerKind};
use crate::error::{Error, Result};
use crate::fused::sde_step::backend::SdeStepOp;
use crate::fused::sde_step::{REC_DIV, REC_FIXED, REC_FLAG, REC_S2, SdeStepParams};
use crate::info::{InfoObserver, InfoSpec, InfoSums, Layout, PointScores, Tracking};
use crate::nn::unet::UNetOn;
use crate::ops::{Act, Ops};
use crate::rng::Noise;
use crate::score::ScoreModel;
use crate::score::hutchinson::probe_step;
use crate::score::unet::UNetScore;

/// [`crate::info::measure_trajectories`] for a U-Net score model whose network and sampling
/// step run on `dnet`'s device, in batches of `batch` trajectories, with `probes` Hutchinson
/// probes per state and step for ∇·s (0: none, and no `hx0_rate`); the same sums as
/// `measure_trajectories` of `Hutchinson::new(score, probes)` (of `score` for 0).
#[allow(clippy::too_many_arguments)]
pub fn measure_on<D: Ops + SdeStepOp>(
    dnet: &UNetOn<'_, D>,
    score: &UNetScore,
    spec: &InfoSpec,
    grid: &Grid,
    sampler: &SamplerKind,
    noise: Noise,
    first: u64,
    n: usize,
    batch: usize,
    probes: usize,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<InfoSums> {
    if let Some(reason) = sampler.online_classifier_refusal() {
        return Err(Error::Unsupported {
            op: "measure (device)",
            reason,
        });
    }
    if score.prediction != crate::diffusion::Prediction::Epsilon {
        return Err(Error::Unsupported {
            op: "measure (device)",
            reason: format!(
                "the fused neural step takes ε-prediction networks; this one predicts {:?}",
                score.prediction
            ),
        });
    }
    let (k, d) = (score.num_classes(), score.dim());
    let (c, h, w) = score.image;
    if spec.classes() != k {
        return Err(Error::shape(
            "measure (device): classes of spec vs model",
            k,
            spec.classes(),
        ));
    }
    let pts = &grid.points;
    let steps = pts.len() - 1;
    let dev = dnet.backend();
    let np = spec.partitions.len();
    let rw = REC_FIXED + 3 * k + np;
    let rows = k + 1 + 2 * probes;
    let mut total = InfoSums::new(Layout::new(spec), steps + 1);
    for start in (0..n).step_by(batch.max(1)) {
        let bsz = batch.max(1).min(n - start);
        let traj0 = first + start as u64;
        // x_T as the CPU sampler draws it.
        let mut x0 = vec![0.0f32; bsz * d]; // (B, D)
        for (b, row) in x0.chunks_mut(d).enumerate() {
            score.initial_state(&pts[0], &noise, traj0 + b as u64, row);
        }
        let mut x = dev.upload(&x0)?;
        let lp0: Vec<f32> = (0..bsz)
            .flat_map(|_| spec.prior.iter().map(|p| p.ln() as f32))
            .collect();
        let mut lp = dev.upload(&lp0)?; // (B, K)
        let mut rec = dev.alloc(steps * bsz * rw)?; // (S, B, 5 + 3K + P)
        // each state's labels: the null label first, then the classes (UNetScore's layout),
        // then the null label for the 2N probe rows
        let labels: Vec<i64> = (0..bsz)
            .flat_map(|_| {
                std::iter::once(k as i64)
                    .chain(0..k as i64)
                    .chain(std::iter::repeat_n(k as i64, 2 * probes))
            })
            .collect();
        for j in 0..steps {
            // Step j lands on grid.target(j), as the generic driver's does.
            let tr = sampler
                .transition(&pts[j], grid.target(j), j + 1 == steps)
                .filter(|tr| tr.one_term().is_some())
                .ok_or_else(|| Error::Unsupported {
                    op: "measure (device)",
                    reason: format!(
                        "the fused neural step takes one-step linear-Gaussian transitions; {} \
                         is multistep, two-stage or clipped (the CPU engine runs it)",
                        sampler.name()
                    ),
                })?;
            let p = SdeStepParams::new(
                (tr.a, tr.c, tr.var),
                pts[j].sigma,
                noise,
                traj0,
                j as u32,
                (bsz, k, d),
            )?
            .with_partitions(spec.partitions.iter().map(|q| (&q.a[..], &q.b[..])))?
            .with_probes(probes, probe_step(&pts[j]))?;
            let mut xs = dev.alloc(bsz * rows * d)?; // (B·(K+1+2N), D)
            dev.sde_probe_rows(&p, &x, &mut xs)?;
            let t = vec![crate::diffusion::param::network_timestep(&pts[j]); bsz * rows];
            let emb = score.net.embedding(bsz * rows, &t, Some(&labels))?;
            let input = Act {
                shape: [bsz * rows, c, h, w],
                buf: xs,
            };
            let eps = dnet.forward_act(input, &emb)?;
            dev.sde_step(&p, &mut x, &eps.buf, &mut lp, (&mut rec, j * bsz * rw))?;
        }
        // The one download of the batch: every step's record and the final classifier.
        let rec = dev.download(&rec)?;
        let lp_final: Vec<f64> = dev.download(&lp)?[..bsz * k]
            .iter()
            .map(|v| *v as f64)
            .collect();
        let mut obs = InfoObserver::new(spec, Tracking::Online, bsz, grid);
        for j in 0..steps {
            for b in 0..bsz {
                let r = &rec[(j * bsz + b) * rw..(j * bsz + b + 1) * rw];
                if r[REC_FLAG] != 0.0 {
                    return Err(Error::NonFinite {
                        op: "measure (device)",
                        step: j,
                        t: pts[j + 1].t,
                        what: format!("state of trajectory {}", traj0 + b as u64),
                    });
                }
                let f = |a: usize, n: usize| -> Vec<f64> {
                    r[REC_FIXED + a..REC_FIXED + a + n]
                        .iter()
                        .map(|v| *v as f64)
                        .collect()
                };
                let (d2, lpb, cross, part) = (f(0, k), f(k, k), f(2 * k, k), f(3 * k, np));
                let ps = PointScores {
                    delta2: &d2,
                    cross: &cross,
                    part_d2: &part,
                    s2: r[REC_S2] as f64,
                    div: (probes > 0).then_some(r[REC_DIV] as f64),
                };
                obs.record_point(j, b, d, &lpb, &ps)?;
            }
        }
        obs.finish(&lp_final)?;
        total.merge(&obs.sums);
        if let Some(p) = progress {
            p(bsz);
        }
    }
    Ok(total)
}

/// [`measure_on`] on an opened GPU: `score`'s network uploaded (f32 weights), then the loop.
#[allow(clippy::too_many_arguments)]
pub fn measure_on_gpu(
    gpu: &Gpu,
    score: &UNetScore,
    spec: &InfoSpec,
    grid: &Grid,
    sampler: &SamplerKind,
    noise: Noise,
    n: usize,
    batch: usize,
    probes: usize,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<InfoSums> {
    let dnet = UNetOn::new(Cuda(gpu), &score.net, Storage::F32)?;
    measure_on(
        &dnet, score, spec, grid, sampler, noise, 0, n, batch, probes, progress,
    )
}
