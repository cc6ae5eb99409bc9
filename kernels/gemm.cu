// SGEMM for the U-Net on the GPU (CPU twin: src/cpu/gemm.rs; oracle cpu::reference::gemm):
// C (M, N) = [C +] A (M, K) · B (K, N) [+ bias], f32 with fused multiply-adds (A optionally
// stored as bfloat16), batched over
// grid.z. A and B are strided views (element (i, p) at base + i·rs + p·cs), or B is the implicit
// im2col matrix of a batch of images (row (ci, i, j), column b·Ho·Wo + oy·Wo + ox), in which
// case C is written straight into the NCHW output y[(b·M + o)·Ho·Wo + oy·Wo + ox].
// 64 × 64 tiles of C per block of 256 threads, 4 × 4 per thread, K in slices of 16 through
// shared memory. The phases (load, multiply, store) are device functions the host twin in
// tests/cuda.rs runs thread by thread.
#include "common.cuh"

#define GEMM_TILE 64
#define GEMM_BK 16
#define GEMM_THREADS 256

// Mirrors `GemmParams` in src/cuda/ops.rs (#[repr(C)]).
struct GemmParams {
    long long a_rs, a_cs, b_rs, b_cs, c_rs, c_cs;
    // batch z: offset (z / zdiv)·outer + (z % zdiv)·inner, for A, B and C.
    long long a_outer, a_inner, b_outer, b_inner, c_outer, c_inner;
    unsigned int m, n, k, zdiv;
    // a_bf16: A holds bfloat16 values (two per 32-bit word, element i in the low half when i
    // is even), widened to f32 on load: weights stored at half the bytes, f32 accumulation.
    unsigned int b_im2col, bias_mode, accumulate, a_bf16;
    // im2col geometry (b_im2col = 1): image (C, H, W), kernel kh × kw, stride, top/left padding,
    // output Ho × Wo; columns span every image of the batch.
    unsigned int ic, ih, iw, kh, kw, stride, pad_t, pad_l, oh, ow;
};

__device__ __forceinline__ long long zoff(unsigned int z, unsigned int zdiv, long long outer,
                                          long long inner) {
    return (long long)(z / zdiv) * outer + (long long)(z % zdiv) * inner;
}

// B element (row p, column col).
__device__ __forceinline__ float gemm_b(const GemmParams& P, const float* b, unsigned int z,
                                        unsigned int p, unsigned int col) {
    if (!P.b_im2col) return b[zoff(z, P.zdiv, P.b_outer, P.b_inner) + p * P.b_rs + col * P.b_cs];
    unsigned int hw = P.oh * P.ow, img = col / hw, q = col % hw, oy = q / P.ow, ox = q % P.ow;
    unsigned int ci = p / (P.kh * P.kw), r = p % (P.kh * P.kw), i = r / P.kw, j = r % P.kw;
    int iy = (int)(oy * P.stride + i) - (int)P.pad_t, ix = (int)(ox * P.stride + j) - (int)P.pad_l;
    if (iy < 0 || ix < 0 || iy >= (int)P.ih || ix >= (int)P.iw) return 0.0f;
    return b[(((size_t)img * P.ic + ci) * P.ih + iy) * P.iw + ix];
}

// Index of C element (row, col).
__device__ __forceinline__ size_t gemm_c_index(const GemmParams& P, unsigned int z, unsigned int row,
                                               unsigned int col) {
    if (P.b_im2col) {
        unsigned int hw = P.oh * P.ow;
        return ((size_t)(col / hw) * P.m + row) * hw + col % hw;
    }
    return zoff(z, P.zdiv, P.c_outer, P.c_inner) + row * P.c_rs + col * P.c_cs;
}

// A element at index i (f32, or bfloat16 widened exactly to f32).
__device__ __forceinline__ float gemm_a(const GemmParams& P, const float* a, long long i) {
    if (!P.a_bf16) return a[i];
    unsigned short h = ((const unsigned short*)a)[i];
    return __uint_as_float((unsigned int)h << 16);
}

// Phase 1: thread t loads 4 elements of the A slice (64 × 16, stored k-major) and 4 of B.
__device__ __forceinline__ void gemm_load(const GemmParams& P, const float* a, const float* b,
                                          unsigned int z, unsigned int row0, unsigned int col0,
                                          unsigned int k0, unsigned int t,
                                          float (*as)[GEMM_TILE], float (*bs)[GEMM_TILE]) {
    const long long ao = zoff(z, P.zdiv, P.a_outer, P.a_inner);
    for (int q = 0; q < 4; ++q) {
        unsigned int e = t + q * GEMM_THREADS;        // 0..1023
        unsigned int r = e / GEMM_BK, kk = e % GEMM_BK; // A: row r, k kk
        unsigned int gi = row0 + r, gk = k0 + kk;
        as[kk][r] = (gi < P.m && gk < P.k) ? gemm_a(P, a, ao + gi * P.a_rs + gk * P.a_cs) : 0.0f;
        unsigned int kb = e / GEMM_TILE, c = e % GEMM_TILE; // B: k kb, column c
        unsigned int gk2 = k0 + kb, gc = col0 + c;
        bs[kb][c] = (gk2 < P.k && gc < P.n) ? gemm_b(P, b, z, gk2, gc) : 0.0f;
    }
}

// Phase 2: thread t's 4 × 4 block of C += the slice's products.
__device__ __forceinline__ void gemm_multiply(unsigned int t, float (*as)[GEMM_TILE],
                                              float (*bs)[GEMM_TILE], float acc[4][4]) {
    unsigned int ty = t / 16, tx = t % 16;
    for (int kk = 0; kk < GEMM_BK; ++kk) {
        float av[4], bv[4];
        for (int i = 0; i < 4; ++i) av[i] = as[kk][ty * 4 + i];
        for (int j = 0; j < 4; ++j) bv[j] = bs[kk][tx * 4 + j];
        for (int i = 0; i < 4; ++i)
            for (int j = 0; j < 4; ++j) acc[i][j] = __fmaf_rn(av[i], bv[j], acc[i][j]);
    }
}

// Phase 3: thread t writes its 4 × 4 block (C + bias, or onto C when accumulating).
__device__ __forceinline__ void gemm_store(const GemmParams& P, float* c, const float* bias,
                                           unsigned int z, unsigned int row0, unsigned int col0,
                                           unsigned int t, float acc[4][4]) {
    unsigned int ty = t / 16, tx = t % 16;
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) {
            unsigned int r = row0 + ty * 4 + i, cc = col0 + tx * 4 + j;
            if (r >= P.m || cc >= P.n) continue;
            float v = acc[i][j];
            if (P.bias_mode == 1) v = __fadd_rn(v, bias[r]);
            if (P.bias_mode == 2) v = __fadd_rn(v, bias[cc]);
            size_t o = gemm_c_index(P, z, r, cc);
            c[o] = P.accumulate ? __fadd_rn(c[o], v) : v;
        }
}

#ifndef INFODIFF_HOST_TWIN
// grid (⌈N/64⌉, ⌈M/64⌉, batch), block 256.
extern "C" __global__ void __launch_bounds__(GEMM_THREADS)
gemm(GemmParams P, const float* __restrict__ a, const float* __restrict__ b,
     float* __restrict__ c, const float* __restrict__ bias) {
    __shared__ float as[GEMM_BK][GEMM_TILE];
    __shared__ float bs[GEMM_BK][GEMM_TILE];
    const unsigned int t = threadIdx.x, z = blockIdx.z;
    const unsigned int row0 = blockIdx.y * GEMM_TILE, col0 = blockIdx.x * GEMM_TILE;
    float acc[4][4] = {{0}};
    for (unsigned int k0 = 0; k0 < P.k; k0 += GEMM_BK) {
        gemm_load(P, a, b, z, row0, col0, k0, t, as, bs);
        __syncthreads();
        gemm_multiply(t, as, bs, acc);
        __syncthreads();
    }
    gemm_store(P, c, bias, z, row0, col0, t, acc);
}
#endif
