// GroupNorm fused with the SiLU that follows it (CPU twin: src/cpu/group_norm.rs; oracle
// cpu::reference::group_norm), one block per (image, group) slice of C/G channels × S positions:
// μ and σ² over the slice (two passes; per-thread f32 partial sums, totalled in f64 by thread
// 0 in thread order), y = (x − μ)/√(σ² + ε)·γ_c + β_c, then y·σ(y) when `silu`.
// The phases are device functions the host twin in tests/cuda.rs runs thread by thread.
#include "common.cuh"

#define GN_THREADS 256

// Mirrors `GroupNormParams` in src/cuda/ops.rs (#[repr(C)]).
struct GroupNormParams {
    unsigned int channels, groups, spatial, silu;
    float eps, pad_;
};

// Thread t's partial sum over the slice of Σ (x − shift)^power (power 1 or 2).
__device__ __forceinline__ float gn_partial(const float* x, unsigned int n, unsigned int t,
                                            float shift, int power) {
    float s = 0.0f;
    for (unsigned int e = t; e < n; e += GN_THREADS) {
        float d = __fsub_rn(x[e], shift);
        s = power == 1 ? __fadd_rn(s, d) : __fmaf_rn(d, d, s);
    }
    return s;
}

// Thread 0: the total of the partial sums, in f64, in thread order.
__device__ __forceinline__ double gn_total(const float* part) {
    double s = 0.0;
    for (int i = 0; i < GN_THREADS; ++i) s += (double)part[i];
    return s;
}

// Thread t normalises its elements of the slice of group g.
__device__ __forceinline__ void gn_apply(const GroupNormParams& P, const float* x, float* y,
                                         const float* gamma, const float* beta, unsigned int g,
                                         unsigned int t, float mean, float rstd) {
    unsigned int cg = P.channels / P.groups, n = cg * P.spatial;
    for (unsigned int e = t; e < n; e += GN_THREADS) {
        unsigned int c = g * cg + e / P.spatial;
        float v = __fmaf_rn(__fmul_rn(__fsub_rn(x[e], mean), rstd), gamma[c], beta[c]);
        if (P.silu) v = __fdiv_rn(v, __fadd_rn(1.0f, lane_exp(__fsub_rn(0.0f, v))));
        y[e] = v;
    }
}

#ifndef INFODIFF_HOST_TWIN
// grid (B·G), block 256; x, y (B, C, S).
extern "C" __global__ void __launch_bounds__(GN_THREADS)
group_norm(GroupNormParams P, const float* __restrict__ x, float* __restrict__ y,
           const float* __restrict__ gamma, const float* __restrict__ beta) {
    __shared__ float part[GN_THREADS];
    __shared__ float stats[2];
    const unsigned int slice = blockIdx.x, g = slice % P.groups, t = threadIdx.x;
    const unsigned int n = (P.channels / P.groups) * P.spatial;
    const float* xs = x + (size_t)slice * n;
    part[t] = gn_partial(xs, n, t, 0.0f, 1);
    __syncthreads();
    if (t == 0) stats[0] = (float)(gn_total(part) / (double)n);
    __syncthreads();
    const float mean = stats[0];
    part[t] = gn_partial(xs, n, t, mean, 2);
    __syncthreads();
    if (t == 0) stats[1] = (float)(1.0 / sqrt(gn_total(part) / (double)n + (double)P.eps));
    __syncthreads();
    gn_apply(P, xs, y + (size_t)slice * n, gamma, beta, g, t, mean, stats[1]);
}
#endif
