// Fused reverse-SDE step for neural score models (twin: src/cpu/sde_step.rs; oracle:
// cpu::reference::sde_step). One block per trajectory b, threads over the D elements:
//   s = −ε̂_∅/σ, s_y = −ε̂_y/σ, Δ_y = s_y − s, z ~ Philox(seed, traj0 + b, step, e),
//   dot_y = Σ_e Δ_y·z, ‖Δ_y‖² = Σ_e Δ_y²,
//   x' = a x + c s + √var z,
//   ln π_y += (c/√var) dot_y − c²/(2 var) ‖Δ_y‖², then log-sum-exp normalised,
// and the step's per-trajectory record (3 + 2K values): H(π) before the update, Σ_y π_y‖Δ_y‖²,
// the non-finite flag, ‖Δ_y‖² (K), and ln π before the update (K), from which the host
// accumulates every information sum after the run.
// ε̂ is the network's output for the K + 1 labels of each state, null label first: (B, K+1, D).
#include "common.cuh"

#define SDE_STEP_MAX_CLASSES 32

// Mirrors `SdeStepParams` in src/cpu/sde_step.rs (#[repr(C)]).
struct SdeStepParams {
    float a, c, sd, cs, kl, neg_inv_sigma;
    unsigned int key0, key1;
    unsigned long long traj0;
    unsigned int step, dim, classes, batch;
};

// One element's contribution: Δ_y·z and Δ_y² summed into dot/d2, x updated in place.
__device__ __forceinline__ void sde_step_element(const SdeStepParams& p, const float* eps_b,
                                                 float* x_b, unsigned long long traj,
                                                 unsigned int e, float* dot, float* d2) {
    const unsigned int d = p.dim, k = p.classes;
    float su = __fmul_rn(eps_b[e], p.neg_inv_sigma);
    float z = p.sd > 0.0f ? noise_normal(p.key0, p.key1, traj, p.step, e) : 0.0f;
    for (unsigned int y = 0; y < k; ++y) {
        float dy = __fsub_rn(__fmul_rn(eps_b[(1 + y) * d + e], p.neg_inv_sigma), su);
        dot[y] = __fmaf_rn(dy, z, dot[y]);
        d2[y] = __fmaf_rn(dy, dy, d2[y]);
    }
    x_b[e] = __fmaf_rn(p.a, x_b[e], __fmaf_rn(p.c, su, __fmul_rn(p.sd, z)));
}

// The classifier update and the record from the reduced dot/d2 (one thread per trajectory).
__device__ __forceinline__ void sde_step_classifier(const SdeStepParams& p, float* lp,
                                                    const float* dot, const float* d2,
                                                    float* rec, bool finite) {
    const unsigned int k = p.classes;
    float h = 0.0f, rb = 0.0f;
    for (unsigned int y = 0; y < k; ++y) {
        rec[3 + y] = d2[y];
        rec[3 + k + y] = lp[y];
        float pi = lane_exp(lp[y]);
        h = __fsub_rn(h, __fmul_rn(pi, lp[y]));
        rb = __fmaf_rn(pi, d2[y], rb);
    }
    if (p.sd > 0.0f) {
        float m = -3.0e38f;
        for (unsigned int y = 0; y < k; ++y) {
            lp[y] = __fadd_rn(lp[y], __fsub_rn(__fmul_rn(p.cs, dot[y]), __fmul_rn(p.kl, d2[y])));
            m = lane_max(m, lp[y]);
        }
        float s = 0.0f;
        for (unsigned int y = 0; y < k; ++y) s = __fadd_rn(s, lane_exp(__fsub_rn(lp[y], m)));
        float lse = __fadd_rn(m, lane_ln(s));
        for (unsigned int y = 0; y < k; ++y) lp[y] = __fsub_rn(lp[y], lse);
    }
    rec[0] = h;
    rec[1] = rb;
    rec[2] = finite ? 0.0f : 1.0f;
}

#ifndef INFODIFF_HOST_TWIN
// grid (B), block (SDE_STEP_THREADS); x (B, D), eps (B, K+1, D), log_pi (B, K), rec (B, 3+2K).
#define SDE_STEP_THREADS 256
extern "C" __global__ void __launch_bounds__(SDE_STEP_THREADS)
sde_step(SdeStepParams p, float* __restrict__ x, const float* __restrict__ eps,
         float* __restrict__ log_pi, float* __restrict__ rec) {
    __shared__ float red[2 * SDE_STEP_MAX_CLASSES][SDE_STEP_THREADS / 32];
    __shared__ int bad;
    const unsigned int b = blockIdx.x, k = p.classes, d = p.dim;
    if (b >= p.batch) return;
    if (threadIdx.x == 0) bad = 0;
    __syncthreads();
    float dot[SDE_STEP_MAX_CLASSES], d2[SDE_STEP_MAX_CLASSES];
    for (unsigned int y = 0; y < k; ++y) { dot[y] = 0.0f; d2[y] = 0.0f; }
    const float* eps_b = eps + (size_t)b * (k + 1) * d;
    float* x_b = x + (size_t)b * d;
    bool finite = true;
    for (unsigned int e = threadIdx.x; e < d; e += blockDim.x) {
        sde_step_element(p, eps_b, x_b, p.traj0 + b, e, dot, d2);
        finite = finite && isfinite(x_b[e]);
    }
    if (!finite) bad = 1;
    // Warp then block reduction of the 2K partial sums.
    const unsigned int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (unsigned int y = 0; y < k; ++y) {
        float a = dot[y], q = d2[y];
        for (int off = 16; off > 0; off >>= 1) {
            a += __shfl_down_sync(0xffffffffu, a, off);
            q += __shfl_down_sync(0xffffffffu, q, off);
        }
        if (lane == 0) { red[2 * y][warp] = a; red[2 * y + 1][warp] = q; }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (unsigned int y = 0; y < k; ++y) {
            float a = 0.0f, q = 0.0f;
            for (unsigned int w = 0; w < blockDim.x / 32; ++w) { a += red[2 * y][w]; q += red[2 * y + 1][w]; }
            dot[y] = a; d2[y] = q;
        }
        sde_step_classifier(p, log_pi + (size_t)b * k, dot, d2, rec + (size_t)b * (3 + 2 * k), bad == 0);
    }
}
#endif
