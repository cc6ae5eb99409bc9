"""PyTorch eager baseline for `infodiff bench train`: training throughput (forward, MSE loss,
backward and one AdamW step, float32) and peak memory of a diffusers UNet2DModel built from a
config.json, on this machine's CPU cores.

Each measurement runs in a fresh Python process, so its peak resident set size (ru_maxrss of
the child) holds the interpreter, torch, the weights, the AdamW state and one step's saved
activations, as it does for the infodiff process it is compared with. Timing: two warm-up
steps, then the best of `--reps` steps (as `infodiff bench train` does).

With `--infodiff PATH` the same is done for `PATH bench train --unet CONFIG --batch B --json`
and both are printed side by side.

Run (from the repository root; torch and diffusers from PyPI):
    python3 benches/torch_train_baseline.py --unet benches/configs/unet16_class.json --batch 64 \
        --infodiff target/release/infodiff
    python3 benches/torch_train_baseline.py --unet benches/configs/ddpm_cifar10.json --batch 16 \
        --infodiff target/release/infodiff
Options: --threads T (default 2), --reps R (default 3).
"""
import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys, time
import torch
from diffusers import UNet2DModel
config, batch, threads, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = UNet2DModel.load_config(config)
model = UNet2DModel.from_config(cfg).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-6)
c, s = model.config.in_channels, model.config.sample_size
x = torch.randn(batch, c, s, s)
target = torch.randn(batch, model.config.out_channels, s, s)
t = torch.randint(0, 1000, (batch,))
n = model.config.num_class_embeds
labels = torch.randint(0, n, (batch,)) if n else None
def step():
    opt.zero_grad(set_to_none=True)
    out = model(x, t, class_labels=labels).sample
    loss = torch.nn.functional.mse_loss(out, target)
    loss.backward()
    opt.step()
for _ in range(2):
    step()
best = float("inf")
for _ in range(reps):
    t0 = time.perf_counter()
    step()
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
    ap.add_argument("--unet", required=True, help="a UNet2DModel config.json")
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--infodiff")
    args = ap.parse_args()
    for b in args.batch or [16]:
        res, rss = run([sys.executable, "-c", CHILD, args.unet, str(b), str(args.threads),
                        str(args.reps)])
        print(f"torch {res['torch']} {args.unet} batch {b}: {res['images_per_s']:.2f} images/s "
              f"({res['seconds'] * 1e3:.0f} ms/step), peak RSS {rss:.0f} MiB, "
              f"{res['parameters']} parameters")
        if args.infodiff:
            cmd = [args.infodiff, "bench", "train", "--unet", args.unet, "--batch", str(b),
                   "--threads", str(args.threads), "--json"]
            ours, ours_rss = run(cmd)
            print(f"infodiff batch {b}: {ours['images_per_s']:.2f} images/s "
                  f"({ours['seconds'] * 1e3:.0f} ms/step), peak RSS {ours_rss:.0f} MiB; "
                  f"speed {ours['images_per_s'] / res['images_per_s']:.2f}x torch, "
                  f"memory {ours_rss / rss:.2f}x torch")


if __name__ == "__main__":
    main()
