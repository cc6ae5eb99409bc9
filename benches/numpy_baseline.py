"""Plain vectorised NumPy baseline for infodiff's fused mixture kernel (the "default job").

What it measures: throughput, in trajectory-steps per second, of the per-step loop that the
fused Rust kernel runs. The job is a 1-D mixture of 4 equally weighted point masses at
-8, -4, 6, 8 (class k = component k), under the DDPM forward process with
beta = linspace(1e-4, 0.02, S). N trajectories are sampled by reverse ancestral sampling from
state S down to 0. At each state i (before the update) we compute the exact responsibilities w,
the class scores s_k and the unconditional score s = sum_k w_k s_k, then record the mean exact
posterior entropy, the mean tracked (online) entropy, the mean Rao-Blackwell term
sum_k pi_k Delta_k^2 and the mean entropy of the {0,1} vs {2,3} decision. Then x takes an
ancestral step and the online classifier log pi is updated from the same noise z.

Everything is float32 over arrays of shape (K, N) or (N,); only the loop over steps is in
Python. The job runs once on 2000 trajectories as a warm-up, then once timed.

Run (from the repository root, numpy installed):
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python3 benches/numpy_baseline.py
Options: --trajectories N (default 20000), --steps S (default 1000), --seed.
"""
import argparse
import time

import numpy as np

F = np.float32
MEANS = np.array([-8.0, -4.0, 6.0, 8.0], dtype=F)[:, None]  # (K, 1)
K = MEANS.shape[0]


def entropy(p):
    """-sum p ln p over axis 0 (nats), with 0 ln 0 = 0."""
    return -np.sum(p * np.log(np.maximum(p, F(1e-30))), axis=0)


def run_job(n, steps, rng):
    beta = np.linspace(1e-4, 0.02, steps)
    abar = np.concatenate([[1.0], np.cumprod(1.0 - beta)])  # abar[i], i = 0..S
    rec = {k: np.zeros(steps + 1) for k in ("h_exact", "h_track", "rb", "h_dec")}
    # x_T from the exact marginal: component by prior, then s_T m_k + sigma_T z.
    s_t, sig_t = F(np.sqrt(abar[steps])), F(np.sqrt(1.0 - abar[steps]))
    comp = rng.integers(0, K, size=n)
    x = s_t * MEANS[comp, 0] + sig_t * rng.standard_normal(n, dtype=F)
    log_pi = np.full((K, n), np.log(1.0 / K), dtype=F)
    for i in range(steps, 0, -1):
        s_i, var_i = F(np.sqrt(abar[i])), F(1.0 - abar[i])
        diff = x[None, :] - s_i * MEANS  # (K, N)
        l = diff * diff * F(-0.5 / var_i)
        l -= l.max(axis=0)
        w = np.exp(l)
        w /= w.sum(axis=0)
        cls = diff * F(-1.0 / var_i)  # class scores s_k
        score = np.sum(w * cls, axis=0)  # unconditional score s
        delta = cls - score
        pi = np.exp(log_pi)
        rec["h_exact"][i] = entropy(w).mean()
        rec["h_track"][i] = entropy(pi).mean()
        rec["rb"][i] = np.sum(pi * delta * delta, axis=0).mean()
        q = np.clip(pi[0] + pi[1], 0.0, 1.0)
        rec["h_dec"][i] = entropy(np.stack([q, 1.0 - q])).mean()
        # Ancestral step i -> i-1.
        v = 1.0 - abar[i] / abar[i - 1]
        r = np.sqrt(1.0 - v)
        c = v / r
        x = (x + F(v) * score) * F(1.0 / r)
        if i > 1:  # no noise (and no classifier update) on the very last step
            z = rng.standard_normal(n, dtype=F)
            x += F(np.sqrt(v)) * z
            log_pi += F(c / np.sqrt(v)) * z * delta - F(c * c / (2.0 * v)) * delta * delta
            m = log_pi.max(axis=0)
            log_pi -= m + np.log(np.exp(log_pi - m).sum(axis=0))
    pi = np.exp(log_pi)
    rec["h_track"][0] = entropy(pi).mean()
    return rec


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trajectories", type=int, default=20000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    run_job(2000, a.steps, rng)  # warm-up
    t0 = time.perf_counter()
    rec = run_job(a.trajectories, a.steps, rng)
    dt = time.perf_counter() - t0
    rate = a.trajectories * a.steps / dt
    print(f"numpy: {a.trajectories} trajectories x {a.steps} steps in {dt:.3f} s "
          f"= {rate:.4g} trajectory-steps/s")
    bits = 1.0 / np.log(2.0)
    for i in (500, 200):
        if i <= a.steps:
            print(f"  state i={i}: online entropy {rec['h_track'][i] * bits:.4f} bits, "
                  f"exact {rec['h_exact'][i] * bits:.4f} bits, "
                  f"RB term {rec['rb'][i]:.4g}, decision entropy {rec['h_dec'][i] * bits:.4f} bits")
    print(f"  numpy {np.__version__}")


if __name__ == "__main__":
    main()
