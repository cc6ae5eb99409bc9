// Element-wise ops of the U-Net (CPU twins: src/cpu/elementwise.rs and src/tensor/ops.rs):
// y = a + b; x[(b·C + c)·S + p] += v[b·C + c]; channel concatenation; nearest 2× upsampling.
// One thread per output element; each op's body is a device function of the output index.
#include "common.cuh"

__device__ __forceinline__ float ew_add(const float* a, const float* b, size_t i) {
    return __fadd_rn(a[i], b[i]);
}

// Plane i / s of x gets v[plane].
__device__ __forceinline__ float ew_add_plane(const float* x, const float* v, size_t i,
                                              unsigned int s) {
    return __fadd_rn(x[i], v[i / s]);
}

// Output (b, c, p) of concat((B, C1, S), (B, C2, S)).
__device__ __forceinline__ float ew_concat(const float* a, const float* b, size_t i,
                                           unsigned int c1, unsigned int c2, unsigned int s) {
    size_t per = (size_t)(c1 + c2) * s, img = i / per, r = i % per;
    return r < (size_t)c1 * s ? a[img * c1 * s + r] : b[img * c2 * s + (r - (size_t)c1 * s)];
}

// Output (plane, Y, X) of the 2× upsampling of (planes, h, w).
__device__ __forceinline__ float ew_upsample2x(const float* x, size_t i, unsigned int h,
                                               unsigned int w) {
    size_t plane = i / ((size_t)4 * h * w), r = i % ((size_t)4 * h * w);
    unsigned int yy = (unsigned int)(r / (2 * w)), xx = (unsigned int)(r % (2 * w));
    return x[plane * h * w + (yy / 2) * w + xx / 2];
}

// Output row r of `times` copies of each of the rows of x (rows of d values): row r / times.
__device__ __forceinline__ float ew_repeat(const float* x, size_t i, unsigned int d,
                                           unsigned int times) {
    size_t row = i / d;
    return x[(row / times) * d + i % d];
}

#ifndef INFODIFF_HOST_TWIN
#define EW_GRID for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; \
                     i += (size_t)gridDim.x * blockDim.x)

extern "C" __global__ void add(const float* __restrict__ a, const float* __restrict__ b,
                               float* __restrict__ y, size_t n) {
    EW_GRID y[i] = ew_add(a, b, i);
}

extern "C" __global__ void add_plane(float* __restrict__ x, const float* __restrict__ v, size_t n,
                                     unsigned int s) {
    EW_GRID x[i] = ew_add_plane(x, v, i, s);
}

extern "C" __global__ void concat(const float* __restrict__ a, const float* __restrict__ b,
                                  float* __restrict__ y, size_t n, unsigned int c1,
                                  unsigned int c2, unsigned int s) {
    EW_GRID y[i] = ew_concat(a, b, i, c1, c2, s);
}

extern "C" __global__ void repeat_rows(const float* __restrict__ x, float* __restrict__ y, size_t n,
                                       unsigned int d, unsigned int times) {
    EW_GRID y[i] = ew_repeat(x, i, d, times);
}

extern "C" __global__ void upsample2x(const float* __restrict__ x, float* __restrict__ y, size_t n,
                                      unsigned int h, unsigned int w) {
    EW_GRID y[i] = ew_upsample2x(x, i, h, w);
}
#endif

#ifndef INFODIFF_HOST_TWIN
// x[i] /= s (diffusers' output scale factors).
extern "C" __global__ void scale_div(float* __restrict__ x, size_t n, float s) {
    EW_GRID x[i] = __fdiv_rn(x[i], s);
}
#endif
