// Fused reverse-SDE step for neural score models (twin: src/fused/sde_step/cpu.rs; oracle:
// fused::sde_step::reference; parameters: its plan.rs). One block per trajectory b, threads over
// the D elements:
//   s = −ε̂_∅/σ, s_y = −ε̂_y/σ, Δ_y = s_y − s, z ~ Philox(seed, traj0 + b, step, e),
//   dot_y = Σ_e Δ_y·z, ‖Δ_y‖² = Σ_e Δ_y²,
//   x' = a x + c s + √var z,
//   ln π_y += (c/√var) dot_y − c²/(2 var) ‖Δ_y‖², then log-sum-exp normalised,
// and in the same pass, from coefficients fixed per trajectory by π before the update
// (w_y = π_y ln π_y; c_{i,y} = π_y/π_a on side a of partition i, −π_y/π_b on side b):
//   u_e = Σ_y w_y Δ_{y,e}, cross_k += Δ_{k,e} u_e, part_i += (Σ_y c_{i,y} Δ_{y,e})², s2 += s_e²,
//   div += Σ_n v_{n,e} (ε̂⁺_{n,e} − ε̂⁻_{n,e})   (N Hutchinson probes, Rademacher v from the
//   probe stream: Philox counter (e, 2³¹ | step, traj), probe n = bit n%16 of word n/16).
// The step's per-trajectory record (5 + 3K + P values): H(π) before the update, Σ_y π_y‖Δ_y‖²,
// the non-finite flag, ‖s‖², the ∇·s estimate div·(−1/(2hNσ)) (0 without probes), ‖Δ_y‖² (K),
// ln π before the update (K), Δ_k·u (K), ‖s(x|a) − s(x|b)‖² (P), from which the host
// accumulates every information sum after the run.
// ε̂ is the network's output per state, null label first, then the K classes, then the null
// label at x + h v_n and x − h v_n per probe: (B, K+1+2N, D) (inputs built by sde_probe_rows).
#include "common.cuh"
// SDE_STEP_MAX_CLASSES, SDE_STEP_MAX_PARTITIONS, SDE_STEP_THREADS and the record offsets
// SDE_STEP_REC_*: generated from src/info/layout_consts.rs.
#include "layout.cuh"

#define SDE_STEP_PROBE_STREAM 0x80000000u
// Accumulators per thread: dot, d2, cross (K each), partitions (P), ‖s‖², div.
#define SDE_STEP_MAX_ACC (3 * SDE_STEP_MAX_CLASSES + SDE_STEP_MAX_PARTITIONS + 2)

// Mirrors `SdeStepParams` in src/fused/sde_step/plan.rs (#[repr(C)], 136 bytes; tests/cuda.rs
// checks size and offsets).
struct SdeStepParams {
    float a, c, sd, cs, kl, neg_inv_sigma;
    unsigned int key0, key1;
    unsigned long long traj0;
    unsigned int step, dim, classes, batch;
    unsigned int partitions, probes;
    float probe_h, div_scale;
    unsigned int part_a[SDE_STEP_MAX_PARTITIONS], part_b[SDE_STEP_MAX_PARTITIONS];
};

// Per-trajectory coefficients from ln π before the update.
struct SdeStepCoef {
    float w[SDE_STEP_MAX_CLASSES];
    float part[SDE_STEP_MAX_PARTITIONS][SDE_STEP_MAX_CLASSES];
};

__device__ __forceinline__ void sde_step_coefficients(const SdeStepParams& p, const float* lp,
                                                      SdeStepCoef* cf) {
    const unsigned int k = p.classes;
    float pi[SDE_STEP_MAX_CLASSES];
    for (unsigned int y = 0; y < k; ++y) {
        pi[y] = lp[y] > -3.0e38f ? lane_exp(lp[y]) : 0.0f;
        cf->w[y] = pi[y] > 0.0f ? __fmul_rn(pi[y], lp[y]) : 0.0f;
    }
    for (unsigned int i = 0; i < p.partitions; ++i) {
        float pa = 0.0f, pb = 0.0f;
        for (unsigned int y = 0; y < k; ++y) {
            if ((p.part_a[i] >> y) & 1u) pa = __fadd_rn(pa, pi[y]);
            if ((p.part_b[i] >> y) & 1u) pb = __fadd_rn(pb, pi[y]);
        }
        bool ok = pa > 0.0f && pb > 0.0f;
        for (unsigned int y = 0; y < k; ++y) {
            float v = 0.0f;
            if (ok && ((p.part_a[i] >> y) & 1u)) v = __fdiv_rn(pi[y], pa);
            else if (ok && ((p.part_b[i] >> y) & 1u)) v = __fsub_rn(0.0f, __fdiv_rn(pi[y], pb));
            cf->part[i][y] = v;
        }
    }
}

// acc layout: dot (K), d2 (K), cross (K), part (P), s2, div.
__device__ __forceinline__ unsigned int sde_step_acc_count(const SdeStepParams& p) {
    return 3 * p.classes + p.partitions + 2;
}

// One element's contribution to every accumulator; x updated in place.
__device__ __forceinline__ void sde_step_element(const SdeStepParams& p, const SdeStepCoef& cf,
                                                 const float* eps_b, float* x_b,
                                                 unsigned long long traj, unsigned int e,
                                                 float* acc) {
    const unsigned int d = p.dim, k = p.classes, np = p.partitions;
    float* dot = acc;
    float* d2 = acc + k;
    float* cross = acc + 2 * k;
    float* part = acc + 3 * k;
    float su = __fmul_rn(eps_b[e], p.neg_inv_sigma);
    float z = p.sd > 0.0f ? noise_normal(p.key0, p.key1, traj, p.step, e) : 0.0f;
    float dl[SDE_STEP_MAX_CLASSES];
    float u = 0.0f;
    for (unsigned int y = 0; y < k; ++y) {
        float dy = __fsub_rn(__fmul_rn(eps_b[(1 + y) * d + e], p.neg_inv_sigma), su);
        dl[y] = dy;
        dot[y] = __fmaf_rn(dy, z, dot[y]);
        d2[y] = __fmaf_rn(dy, dy, d2[y]);
        u = __fmaf_rn(cf.w[y], dy, u);
    }
    for (unsigned int y = 0; y < k; ++y) cross[y] = __fmaf_rn(dl[y], u, cross[y]);
    for (unsigned int i = 0; i < np; ++i) {
        float q = 0.0f;
        for (unsigned int y = 0; y < k; ++y)
            if (cf.part[i][y] != 0.0f) q = __fmaf_rn(cf.part[i][y], dl[y], q);
        part[i] = __fmaf_rn(q, q, part[i]);
    }
    acc[3 * k + np] = __fmaf_rn(su, su, acc[3 * k + np]);
    if (p.probes > 0) {
        Words4 w = philox(e, SDE_STEP_PROBE_STREAM | p.step, (unsigned int)traj,
                          (unsigned int)(traj >> 32), p.key0, p.key1);
        float dv = 0.0f;
        for (unsigned int n = 0; n < p.probes; ++n) {
            float v = (w.w[n >> 4] & (1u << (n & 15))) ? -1.0f : 1.0f;
            float diff = __fsub_rn(eps_b[(k + 1 + 2 * n) * d + e], eps_b[(k + 2 + 2 * n) * d + e]);
            dv = __fmaf_rn(v, diff, dv);
        }
        acc[3 * k + np + 1] = __fadd_rn(acc[3 * k + np + 1], dv);
    }
    x_b[e] = __fmaf_rn(p.a, x_b[e], __fmaf_rn(p.c, su, __fmul_rn(p.sd, z)));
}

// The classifier update and the record from the reduced accumulators (one thread per trajectory).
__device__ __forceinline__ void sde_step_classifier(const SdeStepParams& p, float* lp,
                                                    const float* acc, float* rec, bool finite) {
    const unsigned int k = p.classes, np = p.partitions;
    const float* dot = acc;
    const float* d2 = acc + k;
    float h = 0.0f, rb = 0.0f;
    for (unsigned int y = 0; y < k; ++y) {
        rec[SDE_STEP_REC_FIXED + y] = d2[y];
        rec[SDE_STEP_REC_FIXED + k + y] = lp[y];
        rec[SDE_STEP_REC_FIXED + 2 * k + y] = acc[2 * k + y];
        float pi = lp[y] > -3.0e38f ? lane_exp(lp[y]) : 0.0f;
        if (pi > 0.0f) h = __fsub_rn(h, __fmul_rn(pi, lp[y]));
        rb = __fmaf_rn(pi, d2[y], rb);
    }
    for (unsigned int i = 0; i < np; ++i) rec[SDE_STEP_REC_FIXED + 3 * k + i] = acc[3 * k + i];
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
    rec[SDE_STEP_REC_H] = h;
    rec[SDE_STEP_REC_RB] = rb;
    rec[SDE_STEP_REC_FLAG] = finite ? 0.0f : 1.0f;
    rec[SDE_STEP_REC_S2] = acc[3 * k + np];
    rec[SDE_STEP_REC_DIV] = p.probes > 0 ? __fmul_rn(acc[3 * k + np + 1], p.div_scale) : 0.0f;
}

// Element i of the (B, K+1+2N, D) network input: the state for rows 0..K, x ± h v_n after.
__device__ __forceinline__ float sde_probe_row_value(const SdeStepParams& p, const float* x,
                                                     unsigned long long i) {
    const unsigned long long d = p.dim, rows = p.classes + 1 + 2 * p.probes;
    unsigned long long e = i % d, row = (i / d) % rows, b = i / (d * rows);
    float xv = x[b * d + e];
    if (row <= p.classes) return xv;
    unsigned int n = (unsigned int)(row - p.classes - 1) >> 1;
    unsigned long long traj = p.traj0 + b;
    Words4 w = philox((unsigned int)e, SDE_STEP_PROBE_STREAM | p.step, (unsigned int)traj,
                      (unsigned int)(traj >> 32), p.key0, p.key1);
    float v = (w.w[n >> 4] & (1u << (n & 15))) ? -1.0f : 1.0f;
    float h = ((row - p.classes - 1) & 1) ? -p.probe_h : p.probe_h;
    return __fmaf_rn(h, v, xv);
}

#ifndef INFODIFF_HOST_TWIN
// grid (B), block (SDE_STEP_THREADS); x (B, D), eps (B, K+1+2N, D), log_pi (B, K),
// rec (B, 5+3K+P).
extern "C" __global__ void __launch_bounds__(SDE_STEP_THREADS)
sde_step(SdeStepParams p, float* __restrict__ x, const float* __restrict__ eps,
         float* __restrict__ log_pi, float* __restrict__ rec) {
    __shared__ float red[SDE_STEP_MAX_ACC][SDE_STEP_THREADS / 32];
    __shared__ SdeStepCoef cf;
    __shared__ int bad;
    const unsigned int b = blockIdx.x, k = p.classes, d = p.dim;
    if (b >= p.batch) return;
    const unsigned int na = sde_step_acc_count(p);
    if (threadIdx.x == 0) {
        bad = 0;
        sde_step_coefficients(p, log_pi + (size_t)b * k, &cf);
    }
    __syncthreads();
    float acc[SDE_STEP_MAX_ACC];
    for (unsigned int j = 0; j < na; ++j) acc[j] = 0.0f;
    const size_t rows = k + 1 + 2 * p.probes;
    const float* eps_b = eps + (size_t)b * rows * d;
    float* x_b = x + (size_t)b * d;
    bool finite = true;
    for (unsigned int e = threadIdx.x; e < d; e += blockDim.x) {
        sde_step_element(p, cf, eps_b, x_b, p.traj0 + b, e, acc);
        finite = finite && isfinite(x_b[e]);
    }
    if (!finite) bad = 1;
    // Warp then block reduction of the partial sums.
    const unsigned int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (unsigned int j = 0; j < na; ++j) {
        float a = acc[j];
        for (int off = 16; off > 0; off >>= 1) a += __shfl_down_sync(0xffffffffu, a, off);
        if (lane == 0) red[j][warp] = a;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (unsigned int j = 0; j < na; ++j) {
            float a = 0.0f;
            for (unsigned int w = 0; w < blockDim.x / 32; ++w) a += red[j][w];
            acc[j] = a;
        }
        size_t rw = SDE_STEP_REC_FIXED + 3 * k + p.partitions;
        sde_step_classifier(p, log_pi + (size_t)b * k, acc, rec + (size_t)b * rw, bad == 0);
    }
}

// The network input of a step, y (B, K+1+2N, D) from x (B, D); grid-stride over its elements.
extern "C" __global__ void sde_probe_rows(SdeStepParams p, const float* __restrict__ x,
                                          float* __restrict__ y) {
    const unsigned long long n =
        (unsigned long long)p.batch * (p.classes + 1 + 2 * p.probes) * p.dim;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (unsigned long long)gridDim.x * blockDim.x)
        y[i] = sde_probe_row_value(p, x, i);
}
#endif
