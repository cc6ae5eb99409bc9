// Row softmax with a scale, for attention scores (CPU twin: src/cpu/softmax.rs; oracle
// cpu::reference::softmax_rows): y_j = e^{s(x_j − max)} / Σ_k e^{s(x_k − max)}, in place, one
// block per row; per-thread partial max and sums, totalled by thread 0 in thread order.
#include "common.cuh"

#define SOFTMAX_THREADS 256

// Thread t's partial max over its elements of the row.
__device__ __forceinline__ float softmax_partial_max(const float* x, unsigned int n, unsigned int t) {
    float m = -__int_as_float(0x7f800000);
    for (unsigned int e = t; e < n; e += SOFTMAX_THREADS) m = lane_max(m, x[e]);
    return m;
}

// Thread t exponentiates its elements (in place) and returns their sum.
__device__ __forceinline__ float softmax_partial_exp(float* x, unsigned int n, unsigned int t,
                                                     float scale, float m) {
    float s = 0.0f;
    for (unsigned int e = t; e < n; e += SOFTMAX_THREADS) {
        float v = lane_exp(__fmul_rn(scale, __fsub_rn(x[e], m)));
        x[e] = v;
        s = __fadd_rn(s, v);
    }
    return s;
}

__device__ __forceinline__ void softmax_scale(float* x, unsigned int n, unsigned int t, float inv) {
    for (unsigned int e = t; e < n; e += SOFTMAX_THREADS) x[e] = __fmul_rn(x[e], inv);
}

#ifndef INFODIFF_HOST_TWIN
// grid (rows), block 256; x (rows, n) in place.
extern "C" __global__ void __launch_bounds__(SOFTMAX_THREADS)
softmax_rows(float* __restrict__ x, unsigned int n, float scale) {
    __shared__ float part[SOFTMAX_THREADS];
    __shared__ float total;
    float* row = x + (size_t)blockIdx.x * n;
    const unsigned int t = threadIdx.x;
    part[t] = softmax_partial_max(row, n, t);
    __syncthreads();
    if (t == 0) {
        float m = part[0];
        for (int i = 1; i < SOFTMAX_THREADS; ++i) m = lane_max(m, part[i]);
        total = m;
    }
    __syncthreads();
    const float m = total;
    __syncthreads();
    part[t] = softmax_partial_exp(row, n, t, scale, m);
    __syncthreads();
    if (t == 0) {
        double s = 0.0;
        for (int i = 0; i < SOFTMAX_THREADS; ++i) s += (double)part[i];
        total = (float)(1.0 / s);
    }
    __syncthreads();
    softmax_scale(row, n, t, total);
}
#endif
