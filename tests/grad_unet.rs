//! The U-Net training walk ([`UNetGrad`]) and the flat parameter layout ([`ParamLayout`]):
//! the training forward against the inference forward ([`UNet::forward`]), the whole-network
//! gradient against central finite differences of the f32 forward (every parameter at once and
//! tensor group by group), the planned saved-activation buffer, determinism across thread
//! counts, shape refusals, the layout's round trip through named tensors and PyTorch's default
//! initialisation.
//!
//! Two small configs at the odd batch 3: `attn` (1×8×8, block_out_channels [8, 16], GroupNorm in
//! 4 groups, attention at the first level (2 heads) and in the middle, 4 classes) and `plain`
//! (3×8×8 → 2 channels, [8, 12], no attention, 2 layers per block, asymmetric downsampling pad,
//! mid_block_scale_factor 2, centred input, sin-first sinusoid with freq_shift 1), and `factors`
//! (`plain` with two infodiff_factors, one label table each).

mod common;

use infodiff::nn::unet::grad::UNetGrad;
use infodiff::nn::unet::params::ParamLayout;
use infodiff::nn::unet::{UNet, UNetConfig};
use infodiff::rng::Noise;
use infodiff::tensor::Tensor;
use serde_json::json;

fn cfg_attn() -> UNetConfig {
    UNetConfig::from_json(&json!({
        "_class_name": "UNet2DModel",
        "sample_size": 8,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": [8, 16],
        "down_block_types": ["AttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "AttnUpBlock2D"],
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "attention_head_dim": 4,
        "num_class_embeds": 4,
        "flip_sin_to_cos": true,
        "freq_shift": 0
    }))
    .unwrap()
}

fn cfg_plain() -> UNetConfig {
    UNetConfig::from_json(&plain_json()).unwrap()
}

/// `plain` conditioned on two factors (infodiff_factors: tables of 3 + 1 and 2 + 1 rows).
fn cfg_factors() -> UNetConfig {
    let mut v = plain_json();
    v["infodiff_factors"] =
        json!([{"name": "digit", "values": 3}, {"name": "colour", "values": 2}]);
    UNetConfig::from_json(&v).unwrap()
}

fn plain_json() -> serde_json::Value {
    json!({
        "_class_name": "UNet2DModel",
        "sample_size": 8,
        "in_channels": 3,
        "out_channels": 2,
        "block_out_channels": [8, 12],
        "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"],
        "layers_per_block": 2,
        "norm_num_groups": 4,
        "add_attention": false,
        "downsample_padding": 0,
        "mid_block_scale_factor": 2.0,
        "center_input_sample": true,
        "flip_sin_to_cos": false,
        "freq_shift": 1,
        "time_embedding_dim": 24
    })
}

const B: usize = 3;

/// One problem: parameters, inputs and a fixed upstream gradient.
struct Case {
    cfg: UNetConfig,
    layout: ParamLayout,
    params: Vec<f32>,
    x: Vec<f32>,
    t: Vec<f32>,
    labels: Option<Vec<i64>>,
    dout: Vec<f32>,
}

fn normals(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    Noise::new(seed).fill_normals(0, 0, &mut v);
    v
}

/// PyTorch's initialisation, then γ = 1 + 0.2z and β = 0.2z so that no norm sits at its
/// special initial point.
fn case(cfg: UNetConfig) -> Case {
    let layout = ParamLayout::new(&cfg);
    let mut params = layout.init(11);
    let z = normals(12, params.len());
    for e in &layout.entries {
        let is_norm = e.shape.len() == 1
            && (e.name.contains("norm") || e.name.contains("group_norm"))
            && !e.name.contains("time_emb_proj");
        if is_norm {
            for i in e.offset..e.offset + e.numel() {
                let base = if e.name.ends_with(".weight") {
                    1.0
                } else {
                    0.0
                };
                params[i] = base + 0.2 * z[i];
            }
        }
    }
    let s = cfg.sample_size.unwrap();
    let x = normals(13, B * cfg.in_channels * s * s);
    let dout = normals(14, B * cfg.out_channels * s * s);
    // (B, F) row-major: image i's label of table j is (2i + 1 + j) mod rows_j.
    let tables = cfg.label_tables();
    let labels = (!tables.is_empty()).then(|| {
        (0..B)
            .flat_map(|i| {
                let tables = &tables;
                (0..tables.len()).map(move |j| ((2 * i + 1 + j) % tables[j].1) as i64)
            })
            .collect::<Vec<_>>()
    });
    Case {
        cfg,
        layout,
        params,
        x,
        t: vec![17.0, 503.0, 999.0],
        labels,
        dout,
    }
}

impl Case {
    fn grad(&self) -> UNetGrad {
        UNetGrad::new(self.cfg.clone(), B).unwrap()
    }

    /// L = Σ dout ⊙ out (f64) at parameters p.
    fn loss(&self, g: &mut UNetGrad, p: &[f32]) -> f64 {
        let out = g
            .forward(p, &self.x, &self.t, self.labels.as_deref())
            .unwrap();
        out.iter()
            .zip(&self.dout)
            .map(|(o, d)| *o as f64 * *d as f64)
            .sum()
    }

    /// dL/dθ by the backward.
    fn gradient(&self, g: &mut UNetGrad) -> Vec<f32> {
        g.forward(&self.params, &self.x, &self.t, self.labels.as_deref())
            .unwrap();
        let mut grads = vec![f32::NAN; self.params.len()]; // overwritten
        g.backward(&self.params, &self.dout, &mut grads).unwrap();
        grads
    }
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let ta = Tensor::new(vec![a.len()], a.to_vec()).unwrap();
    let tb = Tensor::new(vec![b.len()], b.to_vec()).unwrap();
    common::rel_l2(&ta, &tb)
}

#[test]
fn training_forward_equals_the_inference_forward() {
    for cfg in [cfg_attn(), cfg_plain(), cfg_factors()] {
        let c = case(cfg);
        let mut g = c.grad();
        let got = g
            .forward(&c.params, &c.x, &c.t, c.labels.as_deref())
            .unwrap()
            .to_vec();
        let w = c.layout.to_weights(&c.params, "<test>").unwrap();
        let net = UNet::from_weights(c.cfg.clone(), w).unwrap();
        let s = c.cfg.sample_size.unwrap();
        let x = Tensor::new(vec![B, c.cfg.in_channels, s, s], c.x.clone()).unwrap();
        let want = net.forward(&x, &c.t, c.labels.as_deref()).unwrap();
        assert_eq!(want.shape, g.output_shape());
        let rel = rel_l2(&got, &want.data);
        eprintln!("forward vs UNet::forward: relative L2 {rel:.3e}");
        // Both walks run the same f32 kernels except GroupNorm and attention, whose training
        // forwards may order their sums differently: a few f32 roundings (2⁻²⁴ ≈ 6e-8) per
        // value, carried through ~20 layers.
        assert!(rel <= 1e-6, "relative L2 {rel:e}");
    }
}

/// The groups of tensors whose directions are checked one by one (name prefixes), per config.
fn groups(cfg: &UNetConfig) -> Vec<&'static str> {
    let mut g = vec![
        "conv_in.",
        "time_embedding.linear_1.",
        "time_embedding.linear_2.",
        "down_blocks.0.resnets.0.norm1.",
        "down_blocks.0.resnets.0.conv1.",
        "down_blocks.0.resnets.0.time_emb_proj.",
        "down_blocks.0.resnets.0.norm2.",
        "down_blocks.0.resnets.0.conv2.",
        "down_blocks.0.downsamplers.0.conv.",
        "down_blocks.1.resnets.0.conv_shortcut.",
        "mid_block.resnets.0.",
        "mid_block.resnets.1.conv2.",
        "up_blocks.0.resnets.0.conv_shortcut.",
        "up_blocks.0.upsamplers.0.conv.",
        "up_blocks.1.resnets.1.",
        "conv_norm_out.",
        "conv_out.",
    ];
    if !cfg.factors.is_empty() {
        g.extend(["class_embeddings.0.", "class_embeddings.1."]);
    } else if cfg.num_class_embeds.is_some() {
        g.push("class_embedding.");
    }
    if cfg.add_attention {
        g.extend([
            "mid_block.attentions.0.group_norm.",
            "mid_block.attentions.0.to_q.",
            "mid_block.attentions.0.to_k.",
            "mid_block.attentions.0.to_v.",
            "mid_block.attentions.0.to_out.0.",
            "down_blocks.0.attentions.0.",
            "up_blocks.1.attentions.1.",
        ]);
    }
    g
}

/// The direction v: z·scale per element over the tensors whose names start with `prefix`
/// (every tensor for ""), scale the tensor's typical magnitude (its init bound for weights and
/// biases, 1 for γ and the tables, 0.2 for β), so that θ ± hv moves every parameter by about
/// h of its own size.
fn direction(c: &Case, prefix: &str, seed: u64) -> Vec<f32> {
    let z = normals(seed, c.params.len());
    let mut v = vec![0.0f32; c.params.len()];
    let mut hit = false;
    for e in &c.layout.entries {
        if !e.name.starts_with(prefix) {
            continue;
        }
        hit = true;
        let r = e.offset..e.offset + e.numel();
        let rms = (c.params[r.clone()]
            .iter()
            .map(|p| (*p as f64).powi(2))
            .sum::<f64>()
            / e.numel() as f64)
            .sqrt();
        let scale = rms.max(0.05) as f32;
        for i in r {
            v[i] = z[i] * scale;
        }
    }
    assert!(hit, "no tensor starts with {prefix}");
    v
}

/// The gradient on the support of `random` (a [`direction`]), each tensor rescaled to the
/// RMS of `random` there: the steepest direction with the same per-element step size.
fn along_gradient(c: &Case, grads: &[f32], random: &[f32]) -> Vec<f32> {
    let mut v = vec![0.0f32; grads.len()];
    for e in &c.layout.entries {
        let r = e.offset..e.offset + e.numel();
        let rms = |x: &[f32]| {
            (x.iter().map(|a| (*a as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
        };
        let (rv, rg) = (rms(&random[r.clone()]), rms(&grads[r.clone()]));
        if rv > 0.0 && rg > 0.0 {
            for i in r {
                v[i] = (grads[i] as f64 * rv / rg) as f32;
            }
        }
    }
    v
}

/// ∇L·v (from the backward) and the central difference (L(θ + hv) − L(θ − hv))/2h, and its
/// Richardson-extrapolated form (4·D(h/2) − D(h))/3, which cancels the h² term.
fn directional(c: &Case, g: &mut UNetGrad, grads: &[f32], v: &[f32], h: f64) -> (f64, f64) {
    let an: f64 = grads
        .iter()
        .zip(v)
        .map(|(g, v)| *g as f64 * *v as f64)
        .sum();
    let mut d = |h: f64| {
        let shift = |s: f64| -> Vec<f32> {
            c.params
                .iter()
                .zip(v)
                .map(|(p, v)| (*p as f64 + s * *v as f64) as f32)
                .collect()
        };
        (c.loss(g, &shift(h)) - c.loss(g, &shift(-h))) / (2.0 * h)
    };
    let (d1, d2) = (d(h), d(h / 2.0));
    (an, (4.0 * d2 - d1) / 3.0)
}

#[test]
fn gradient_matches_finite_differences_of_the_forward() {
    // h = 1e-2 moves each parameter by ~1% of its size. The f32 forward's rounding noise ε
    // in L is amplified ~1.4/h by the Richardson difference (4·D(h/2) − D(h))/3, whose
    // truncation is O(h⁴): the error is noise (it grows as 1/h below h = 1e-2 and truncation
    // shows from h ≈ 3e-2; measured worst at h = 1e-2: 1.9e-5·Σ|dout·out|, i.e. ε ≈ 1.4e-7
    // of it, a few f32 roundings). Tolerance: 1e-3 of the derivative plus a floor of
    // 1e-4·Σ|dout·out|, 5× the worst noise seen. Each group is checked along a random
    // direction and along its own gradient (the steepest direction, where ∇L·v = ‖∇L‖², so
    // even a group with a small random-direction derivative is checked well above the floor).
    let h = 1e-2;
    let mut failures = vec![];
    for cfg in [cfg_attn(), cfg_plain(), cfg_factors()] {
        let c = case(cfg);
        let mut g = c.grad();
        let grads = c.gradient(&mut g);
        let out = g
            .forward(&c.params, &c.x, &c.t, c.labels.as_deref())
            .unwrap()
            .to_vec();
        let scale: f64 = out
            .iter()
            .zip(&c.dout)
            .map(|(o, d)| (*o as f64 * *d as f64).abs())
            .sum();
        let floor = 1e-4 * scale;
        let mut prefixes = vec![""];
        prefixes.extend(groups(&c.cfg));
        for (k, prefix) in prefixes.iter().enumerate() {
            let random = direction(&c, prefix, 100 + k as u64);
            // (Along the whole gradient, θ ± hv moves L by ~h·‖∇L‖², a third of L here: out of
            // the small-step regime; the groups' gradients cover it piece by piece.)
            let mut dirs = vec![("random", random)];
            if !prefix.is_empty() {
                dirs.push(("gradient", along_gradient(&c, &grads, &dirs[0].1)));
            }
            for (kind, v) in dirs {
                let (an, fd) = directional(&c, &mut g, &grads, &v, h);
                let err = (an - fd).abs();
                let tol = 1e-3 * an.abs().max(fd.abs()) + floor;
                let name = if prefix.is_empty() { "(all)" } else { prefix };
                eprintln!(
                    "{name:>40} {kind:>8}: backward {an:+.6e}, finite difference {fd:+.6e}, |diff| {err:.2e} (tol {tol:.2e})"
                );
                if !(err <= tol) {
                    failures.push(format!("{name} ({kind}): {an} vs {fd} (tol {tol:e})"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn every_parameter_gets_a_gradient_and_grads_are_overwritten() {
    let c = case(cfg_attn());
    let mut g = c.grad();
    let grads = c.gradient(&mut g);
    for e in &c.layout.entries {
        let s = &grads[e.offset..e.offset + e.numel()];
        assert!(s.iter().all(|v| v.is_finite()), "{}", e.name);
        assert!(s.iter().any(|v| *v != 0.0), "{}: zero gradient", e.name);
    }
    // A second backward into a buffer holding other values gives the same gradients.
    let mut again = vec![7.0f32; grads.len()];
    g.backward(&c.params, &c.dout, &mut again).unwrap();
    assert_eq!(again, grads);
    // The class table: only the rows of the batch's labels (1, 3, 1) receive a gradient.
    let e = c.layout.get("class_embedding.weight").unwrap();
    let d = e.shape[1];
    for row in 0..e.shape[0] {
        let s = &grads[e.offset + row * d..e.offset + (row + 1) * d];
        let used = c.labels.as_ref().unwrap().contains(&(row as i64));
        assert_eq!(s.iter().any(|v| *v != 0.0), used, "class row {row}");
    }
}

/// The saved buffer of `cfg_plain` counted by hand: the time embedding (sinusoid, and four
/// (B, te) activations), the input, every node's output and each ResNet's inner activation.
#[test]
fn planned_buffer_is_what_the_forward_fills() {
    for cfg in [cfg_attn(), cfg_plain(), cfg_factors()] {
        let c = case(cfg);
        let mut g = c.grad();
        let planned = g.saved_floats();
        assert_eq!(g.used_floats(), 0);
        g.forward(&c.params, &c.x, &c.t, c.labels.as_deref())
            .unwrap();
        assert_eq!(g.used_floats(), planned);
    }
    let cfg = cfg_plain();
    let g = UNetGrad::new(cfg.clone(), B).unwrap();
    let (c0, c1, te, hw) = (8, 12, 24, 64);
    let time = B * c0 + 4 * B * te;
    let input = B * 3 * hw;
    // (channels, positions) of every node's output, ResNets twice (inner h and output).
    let act = |c: usize, s: usize| B * c * s;
    let mut n = act(c0, hw); // conv_in
    n += 2 * 2 * act(c0, hw); // down 0: two ResNets
    n += act(c0, hw / 4); // downsampler
    n += 2 * 2 * act(c1, hw / 4); // down 1: two ResNets
    n += 2 * 2 * act(c1, hw / 4); // mid: two ResNets
    n += 3 * 2 * act(c1, hw / 4) + act(c1, hw); // up 0: three ResNets, upsample+conv
    n += 3 * 2 * act(c0, hw); // up 1: three ResNets
    n += act(2, hw); // conv_out
    assert_eq!(g.saved_floats(), time + input + n);
    assert_eq!(g.input_shape(), [B, 3, 8, 8]);
    assert_eq!(g.output_shape(), [B, 2, 8, 8]);
}

#[test]
fn gradients_are_bit_identical_on_one_and_two_threads() {
    for cfg in [cfg_attn(), cfg_plain(), cfg_factors()] {
        let c = case(cfg);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut g = c.grad();
                let out = g
                    .forward(&c.params, &c.x, &c.t, c.labels.as_deref())
                    .unwrap()
                    .to_vec();
                (out, c.gradient(&mut g))
            })
        };
        let (o1, g1) = run(1);
        let (o2, g2) = run(2);
        assert!(o1.iter().zip(&o2).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
    }
}

#[test]
fn wrong_shapes_are_errors() {
    let c = case(cfg_attn());
    let mut g = c.grad();
    let l = c.labels.as_deref();
    let mut grads = vec![0.0f32; c.params.len()];
    let e = g.backward(&c.params, &c.dout, &mut grads).unwrap_err();
    assert!(e.to_string().contains("forward first"), "{e}");
    // Another batch's input, timesteps, labels; a short parameter vector.
    assert!(
        g.forward(&c.params, &c.x[..c.x.len() - 64], &c.t, l)
            .is_err()
    );
    assert!(g.forward(&c.params, &c.x, &c.t[..2], l).is_err());
    assert!(g.forward(&c.params, &c.x, &c.t, Some(&[0, 1])).is_err());
    assert!(g.forward(&c.params, &c.x, &c.t, Some(&[0, 1, 4])).is_err()); // 4 rows
    assert!(g.forward(&c.params, &c.x, &c.t, Some(&[0, -1, 2])).is_err());
    let e = g.forward(&c.params, &c.x, &c.t, None).unwrap_err();
    assert!(e.to_string().contains("labels"), "{e}");
    assert!(g.forward(&c.params[1..], &c.x, &c.t, l).is_err());
    // A failed forward leaves nothing to take the gradient of.
    assert!(g.backward(&c.params, &c.dout, &mut grads).is_err());
    g.forward(&c.params, &c.x, &c.t, l).unwrap();
    assert!(g.backward(&c.params, &c.dout[1..], &mut grads).is_err());
    assert!(g.backward(&c.params, &c.dout, &mut grads[1..]).is_err());
    g.backward(&c.params, &c.dout, &mut grads).unwrap();
    // A multi-factor model takes (B, F) labels, each within its factor's table.
    let c = case(cfg_factors());
    let mut g = c.grad();
    assert!(g.forward(&c.params, &c.x, &c.t, Some(&[0, 1, 2])).is_err());
    let e = g
        .forward(&c.params, &c.x, &c.t, Some(&[0, 0, 1, 1, 2, 3]))
        .unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
    g.forward(&c.params, &c.x, &c.t, Some(&[0, 0, 1, 1, 3, 2]))
        .unwrap();
    // Planning needs a sample size and a batch.
    let mut cfg = cfg_attn();
    cfg.sample_size = None;
    assert!(UNetGrad::new(cfg, B).is_err());
    assert!(UNetGrad::new(cfg_attn(), 0).is_err());
}

#[test]
fn layout_round_trips_through_named_tensors() {
    let cfg = cfg_attn();
    let layout = ParamLayout::new(&cfg);
    let p = layout.init(5);
    let w = layout.to_weights(&p, "<test>").unwrap();
    assert_eq!(w.tensors.len(), layout.entries.len());
    for e in &layout.entries {
        let t = &w.tensors[&e.name];
        assert_eq!(t.shape, e.shape);
        assert_eq!(t.data, p[e.offset..e.offset + e.numel()]);
    }
    assert_eq!(layout.from_weights(&w).unwrap(), p);
    assert!(layout.to_weights(&p[1..], "<test>").is_err());
    // A missing, a mis-shaped and an unexpected tensor are refused by name.
    let name = "mid_block.attentions.0.to_k.weight";
    let mut w2 = layout.to_weights(&p, "<test>").unwrap();
    w2.tensors.remove(name);
    let e = layout.from_weights(&w2).unwrap_err().to_string();
    assert!(e.contains(name), "{e}");
    let mut w3 = layout.to_weights(&p, "<test>").unwrap();
    w3.tensors.insert(
        name.into(),
        Tensor::new(vec![16, 8], vec![0.0; 128]).unwrap(),
    );
    let e = layout.from_weights(&w3).unwrap_err().to_string();
    assert!(e.contains(name) && e.contains("[16, 8]"), "{e}");
    let mut w4 = layout.to_weights(&p, "<test>").unwrap();
    w4.tensors.insert(
        "extra.weight".into(),
        Tensor::new(vec![1], vec![0.0]).unwrap(),
    );
    let e = layout.from_weights(&w4).unwrap_err().to_string();
    assert!(e.contains("extra.weight"), "{e}");
    // Offsets are contiguous in expected_tensors order.
    let mut off = 0;
    for (e, (name, shape)) in layout
        .entries
        .iter()
        .zip(infodiff::nn::unet::expected_tensors(&cfg))
    {
        assert_eq!((&e.name, &e.shape, e.offset), (&name, &shape, off));
        off += e.numel();
    }
    assert_eq!(off, layout.len());
}

#[test]
fn init_follows_pytorch_defaults() {
    // The DDPM CIFAR-10 architecture (35.7M parameters), with 10 classes for a table.
    let mut cfg = UNetConfig::ddpm_cifar10();
    cfg.num_class_embeds = Some(10);
    let layout = ParamLayout::new(&cfg);
    let p = layout.init(3);
    assert_eq!(p, layout.init(3), "deterministic");
    assert_ne!(p, layout.init(4), "seeded");
    let fan_in = |s: &[usize]| s[1..].iter().product::<usize>() as f64;
    let mut checked = 0;
    for e in &layout.entries {
        let v = &p[e.offset..e.offset + e.numel()];
        let n = v.len() as f64;
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
        let bound = if e.name == "class_embedding.weight" {
            None
        } else if e.shape.len() >= 2 {
            Some(1.0 / fan_in(&e.shape).sqrt())
        } else {
            let w = e.name.strip_suffix(".bias").and_then(|p| {
                layout
                    .get(&format!("{p}.weight"))
                    .filter(|w| w.shape.len() >= 2)
            });
            w.map(|w| 1.0 / fan_in(&w.shape).sqrt())
        };
        match bound {
            Some(b) => {
                // Within ±b rounded to f32 (rounding is monotone: |round(b·s)| ≤ round(b)).
                assert!(v.iter().all(|x| x.abs() <= b as f32), "{}", e.name);
                if n >= 10_000.0 {
                    // U(±b): mean 0 and variance b²/3; the estimates' standard errors are
                    // b/√(3n) and ~0.9·(b²/3)/√n: 6 of them.
                    assert!(mean.abs() <= 6.0 * b / (3.0 * n).sqrt(), "{}", e.name);
                    let want = b * b / 3.0;
                    assert!((var - want).abs() <= 6.0 * want / n.sqrt(), "{}", e.name);
                    // Both tails are reached (|x| > 0.99 b occurs with probability 1%).
                    assert!(v.iter().any(|x| *x as f64 > 0.99 * b), "{}", e.name);
                    assert!(v.iter().any(|x| (*x as f64) < -0.99 * b), "{}", e.name);
                    checked += 1;
                }
            }
            None if e.name == "class_embedding.weight" => {
                // N(0, 1): 5120 values; standard errors 1/√n and √(2/n).
                assert!(mean.abs() <= 6.0 / n.sqrt(), "{}: mean {mean}", e.name);
                assert!(
                    (var - 1.0).abs() <= 6.0 * (2.0 / n).sqrt(),
                    "{}: {var}",
                    e.name
                );
            }
            None => {
                // GroupNorm: γ = 1, β = 0.
                let want = if e.name.ends_with(".weight") {
                    1.0
                } else {
                    0.0
                };
                assert!(v.iter().all(|x| *x == want), "{}", e.name);
            }
        }
    }
    assert!(checked > 50, "{checked} large tensors checked");
}
