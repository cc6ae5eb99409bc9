"""diffusers' scheduler loop, the baseline of `infodiff sample` (README performance table).

Loads a UNet2DModel folder (bare, or a pipeline folder's unet/ + scheduler/), builds the
scheduler class that infodiff's `--sampler` reproduces from the folder's scheduler config, and
times the sampling loop only (model loaded, noise given): for each batch of the `noise` tensor
of `--init` (N, C, H, W), latents = noise * init_noise_sigma, then for every timestep
scale_model_input, one forward (2B rows with classifier-free guidance: the null label, the last
class embedding, first), out = out(null) + W * (out(y) - out(null)) and scheduler.step.

Prints samples/s of the loop and the network's share of it (the rest is diffusers' own
per-step overhead); `--compare samples.safetensors` prints the relative L2 difference between
infodiff's `samples` and this loop's (deterministic samplers only). `--write-init FILE` writes
standard normals `noise` (N, C, H, W) f32 from torch's generator with `--seed` first.

Usage (torch 2 threads, as in the README):
    /work/venv/bin/python benches/diffusers_sample.py --model tests/fixtures/unet/tiny-class \
        --sampler dpmpp_2m --steps 20 --classes 1,2,3 --guidance 3 --num 64 --batch 64 \
        --write-init /tmp/init.safetensors
    target/release/infodiff sample --model tests/fixtures/unet/tiny-class --sampler dpmpp_2m \
        --steps 20 --classes 1,2,3 --guidance 3 --batch 64 --init /tmp/init.safetensors \
        --threads 2 --no-images --out /tmp/s
    /work/venv/bin/python benches/diffusers_sample.py ... --init /tmp/init.safetensors \
        --compare /tmp/s/samples.safetensors
"""

import argparse
import inspect
import json
import os
import time

import torch
from safetensors.torch import load_file, save_file

import diffusers
from diffusers import UNet2DModel


def scheduler_for(name, config, karras, log_snr, spacing):
    """The diffusers class infodiff's `--sampler NAME` reproduces, from the folder's config."""
    classes = {
        "ddpm": ("DDPMScheduler", {}),
        "ddim": ("DDIMScheduler", {}),
        "euler": ("EulerDiscreteScheduler", {}),
        "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
        "heun": ("HeunDiscreteScheduler", {}),
        "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
        "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
        "dpmpp_3m_sde": (
            "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        ),
    }
    cls, extra = classes[name]
    extra = dict(extra)
    if karras:
        extra["use_karras_sigmas"] = True
    if log_snr:
        extra["use_lu_lambdas"] = True
    if spacing:
        # A keyword, not a config entry: from_config drops the entries a config lists under
        # `_use_default_values`.
        extra["timestep_spacing"] = spacing
    return getattr(diffusers, cls).from_config(config, **extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--spacing", choices=["linspace", "leading", "trailing"])
    ap.add_argument("--karras", action="store_true")
    ap.add_argument("--log-snr", action="store_true")
    ap.add_argument("--eta", type=float, default=0.0)
    ap.add_argument("--classes", default="", help="comma-separated, cycled over samples")
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", help="safetensors with `noise` (N, C, H, W) f32")
    ap.add_argument("--write-init", help="write standard normals `noise` here and use them")
    ap.add_argument("--compare", help="infodiff's samples.safetensors")
    ap.add_argument("--reps", type=int, default=1, help="timed repetitions (best is printed)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    root = a.model
    if os.path.exists(os.path.join(root, "model_index.json")):
        unet_dir = os.path.join(root, "unet")
        with open(os.path.join(root, "scheduler", "scheduler_config.json")) as f:
            sched_cfg = json.load(f)
    else:
        unet_dir = root
        p = os.path.join(root, "scheduler_config.json")
        sched_cfg = json.load(open(p)) if os.path.exists(p) else diffusers.DDPMScheduler().config
    unet = UNet2DModel.from_pretrained(unet_dir).eval()
    c, s = unet.config.in_channels, unet.config.sample_size
    n_embeds = unet.config.num_class_embeds

    if a.write_init:
        g = torch.Generator().manual_seed(a.seed)
        noise = torch.randn((a.num, c, s, s), generator=g, dtype=torch.float32)
        save_file({"noise": noise}, a.write_init)
    elif a.init:
        noise = load_file(a.init)["noise"]
    else:
        noise = torch.randn((a.num, c, s, s), generator=torch.Generator().manual_seed(a.seed))
    n = noise.shape[0]
    classes = [int(v) for v in a.classes.split(",") if v != ""]
    guided = bool(classes) and a.guidance != 1.0
    null = n_embeds - 1 if n_embeds else None

    def run():
        out_all = []
        net_s = 0.0
        start = time.perf_counter()
        for k0 in range(0, n, a.batch):
            b = min(a.batch, n - k0)
            sched = scheduler_for(a.sampler, sched_cfg, a.karras, a.log_snr, a.spacing)
            sched.set_timesteps(a.steps)
            x = noise[k0 : k0 + b] * sched.init_noise_sigma
            if classes:
                y = torch.tensor([classes[(k0 + i) % len(classes)] for i in range(b)])
            elif null is not None:
                y = torch.full((b,), null)
            else:
                y = None
            labels = torch.cat([torch.full((b,), null), y]) if guided else y
            gen = torch.Generator().manual_seed(a.seed)
            takes_generator = "generator" in inspect.signature(sched.step).parameters
            for t in sched.timesteps:
                inp = sched.scale_model_input(x, t)
                if guided:
                    inp = torch.cat([inp, inp])
                t0 = time.perf_counter()
                with torch.no_grad():
                    out = unet(inp, t, class_labels=labels).sample
                net_s += time.perf_counter() - t0
                if guided:
                    u, co = out.chunk(2)
                    out = u + a.guidance * (co - u)
                kw = {"generator": gen} if takes_generator else {}
                if a.sampler == "ddim":
                    kw["eta"] = a.eta
                x = sched.step(out, t, x, **kw).prev_sample
            out_all.append(x)
        wall = time.perf_counter() - start
        return torch.cat(out_all), wall, net_s

    best = None
    for _ in range(max(a.reps, 1)):
        samples, wall, net_s = run()
        if best is None or wall < best[1]:
            best = (samples, wall, net_s)
    samples, wall, net_s = best
    res = {
        "what": "diffusers scheduler loop",
        "sampler": a.sampler,
        "steps": a.steps,
        "guidance": a.guidance,
        "samples": n,
        "batch": a.batch,
        "threads": a.threads,
        "loop_s": wall,
        "samples_per_s": n / wall,
        "network_s": net_s,
        "overhead_fraction": (wall - net_s) / wall,
    }
    if a.compare:
        ours = load_file(a.compare)["samples"].to(torch.float64)
        ref = samples.to(torch.float64)
        res["relative_l2"] = float((ours - ref).norm() / ref.norm())
    if a.json:
        print(json.dumps(res))
    else:
        print(
            f"diffusers {a.sampler} {a.steps} steps, W = {a.guidance}: {n} samples in {wall:.3f} s "
            f"({n / wall:.2f} samples/s; network {net_s:.3f} s, other {wall - net_s:.3f} s = "
            f"{100 * (wall - net_s) / wall:.1f}%)"
        )
        if "relative_l2" in res:
            print(f"relative L2 to {a.compare}: {res['relative_l2']:.3e}")


if __name__ == "__main__":
    main()
