"""PyTorch eager baseline for `infodiff bench unet`: throughput and peak memory of the DDPM
CIFAR-10 architecture's forward pass (diffusers UNet2DModel, google/ddpm-cifar10-32's config,
35.7M parameters, random weights) on this machine's CPU cores, float32, torch.no_grad().

Each measurement runs in a fresh Python process, so its peak resident set size (ru_maxrss of
the child) holds the interpreter, torch, the weights and one batch's activations, as it does
for the infodiff process it is compared with. Timing: one warm-up forward, then the best of
`--reps` forwards (as `infodiff bench unet` does).

With `--infodiff PATH` the same is done for `PATH bench unet --batch B --json` (the engine's
own benchmark, same architecture and batch), and both are printed side by side.

Run (from the repository root; torch and diffusers from PyPI):
    python3 benches/torch_unet_baseline.py --infodiff target/release/infodiff
On a GPU machine: `--device cuda --batch 256` (infodiff built with `--features cuda`).
Options: --batch B (repeatable; default 64 and 1), --threads T (default 2), --reps R (timed
forwards: default 3 at batch ≥ 8, 20 below; `infodiff bench unet` takes 2 and 10).
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time, resource
import torch
from diffusers import UNet2DModel
batch, threads, reps, device = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
torch.set_num_threads(threads)
sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
torch.manual_seed(0)
model = UNet2DModel(
    sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 256, 256, 256),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
    attention_head_dim=None).eval().to(device)
x = torch.randn(batch, 3, 32, 32, device=device)
t = torch.arange(batch, dtype=torch.float32, device=device) * 37 % 1000
with torch.no_grad():
    model(x, t)
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        model(x, t)
        sync()
        best = min(best, time.perf_counter() - t0)
print(json.dumps(dict(parameters=sum(p.numel() for p in model.parameters()), seconds=best,
                      images_per_s=batch / best, torch=torch.__version__)))
"""


def run(cmd):
    """Runs `cmd`, returns (its JSON line, its own peak RSS in MiB, from wait4)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=0,
                    help="timed forwards per measurement (default: 3 at batch ≥ 8, 20 below)")
    ap.add_argument("--infodiff")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: PyTorch eager on the GPU (default TF32 settings) against "
                         "`infodiff bench unet --device cuda`")
    args = ap.parse_args()
    for b in args.batch or [64, 1]:
        reps = args.reps or (3 if b >= 8 else 20)
        res, rss = run([sys.executable, "-c", CHILD, str(b), str(args.threads), str(reps),
                        args.device])
        print(f"torch {res['torch']} batch {b}: {res['images_per_s']:.2f} images/s "
              f"({res['seconds'] * 1e3:.0f} ms), peak RSS {rss:.0f} MiB, "
              f"{res['parameters']} parameters")
        if args.infodiff:
            env_cmd = [args.infodiff, "bench", "unet", "--batch", str(b), "--json",
                       "--device", args.device]
            ours, ours_rss = run(env_cmd)
            print(f"infodiff batch {b}: {ours['images_per_s']:.2f} images/s "
                  f"({ours['seconds'] * 1e3:.0f} ms), peak RSS {ours_rss:.0f} MiB; "
                  f"speed {ours['images_per_s'] / res['images_per_s']:.2f}x torch, "
                  f"memory {ours_rss / rss:.2f}x torch")


if __name__ == "__main__":
    main()
