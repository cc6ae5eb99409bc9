//! Neural measurement on a device with no host synchronisation inside the sampling loop: per
//! step, the states are replicated for the K + 1 labels on the device, the U-Net runs there
//! ([`DeviceUNet`]), and the fused step (`kernels/sde_step.cu`) updates states and classifier
//! and writes its record into a (steps, B, 3 + 2K) device table; the host only queues work
//! (the small time-embedding MLP and its uploads) until one download after the last step, from
//! which [`InfoObserver::record_point`] builds the same sums as the CPU observer.

use super::ops::Dev;
use super::unet::{DevTensor, DeviceUNet};
use crate::cpu::sde_step::SdeStepParams;
use crate::error::{Error, Result};
use crate::info::{InfoObserver, InfoSpec, InfoSums, Layout, PointScores, Tracking};
use crate::rng::Noise;
use crate::score::ScoreModel;
use crate::score::unet::UNetScore;
use crate::sde::{Grid, Sampler};

/// [`crate::info::measure_trajectories`] for a U-Net score model whose network and sampling
/// step run on `dnet`'s device, in batches of `batch` trajectories.
#[allow(clippy::too_many_arguments)]
pub fn measure_on<D: Dev>(
    dnet: &DeviceUNet<'_, D>,
    score: &UNetScore,
    spec: &InfoSpec,
    grid: &Grid,
    sampler: &Sampler,
    noise: Noise,
    first: u64,
    n: usize,
    batch: usize,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<InfoSums> {
    if let Some(reason) = sampler.online_classifier_refusal() {
        return Err(Error::Unsupported {
            op: "measure (device)",
            reason,
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
    let dev = dnet.device();
    let rw = 3 + 2 * k;
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
        let mut rec = dev.alloc(steps * bsz * rw)?; // (S, B, 3 + 2K)
        // each state's labels: the null label first, then the classes (UNetScore's layout)
        let labels: Vec<i64> = (0..bsz)
            .flat_map(|_| std::iter::once(k as i64).chain(0..k as i64))
            .collect();
        for j in 0..steps {
            let tr = sampler
                .transition(&pts[j], &pts[j + 1], j + 1 == steps)
                .ok_or_else(|| Error::Unsupported {
                    op: "measure (device)",
                    reason: "a stochastic sampler step is needed".into(),
                })?;
            let mut xs = dev.alloc(bsz * (k + 1) * d)?; // (B·(K+1), D)
            dev.repeat_rows(&x, &mut xs, bsz, d, k + 1)?;
            let t = vec![pts[j].index as f32 - 1.0; bsz * (k + 1)];
            let emb = score.net.embedding(bsz * (k + 1), &t, Some(&labels))?;
            let input = DevTensor {
                shape: [bsz * (k + 1), c, h, w],
                buf: xs,
            };
            let eps = score.net.forward_on(dnet, input, &emb)?;
            let p = SdeStepParams::new(
                (tr.a, tr.c, tr.var),
                pts[j].sigma,
                noise,
                traj0,
                j as u32,
                (bsz, k, d),
            )?;
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
                if r[2] != 0.0 {
                    return Err(Error::NonFinite {
                        op: "measure (device)",
                        step: j,
                        t: pts[j + 1].t,
                        what: format!("state of trajectory {}", traj0 + b as u64),
                    });
                }
                let d2: Vec<f64> = r[3..3 + k].iter().map(|v| *v as f64).collect();
                let lpb: Vec<f64> = r[3 + k..].iter().map(|v| *v as f64).collect();
                // The device record holds ‖Δ_y‖² only: the cross terms, the partitions' score
                // gaps and ‖s‖² are not yet recorded there (NaN: their curves are absent).
                let nan_k = vec![f64::NAN; k];
                let nan_p = vec![f64::NAN; spec.partitions.len()];
                let ps = PointScores {
                    delta2: &d2,
                    cross: &nan_k,
                    part_d2: &nan_p,
                    s2: f64::NAN,
                    div: None,
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
