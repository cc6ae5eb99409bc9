// Device twins of src/cpu/math.rs and src/rng.rs: Philox4x32-10, the lane exp / ln /
// cos-sin(2πu) polynomials and the Box–Muller transform, written with explicitly rounded
// intrinsics (__fmaf_rn, __fmul_rn, __fadd_rn: no contraction, no fast-math) so that every
// value is bit-identical to the CPU's for the same (seed, trajectory, step, element).
// Header-only and free of system includes: NVRTC compiles it as it is (build.rs inlines it).
#pragma once

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

struct Words4 { unsigned int w[4]; };

// Philox4x32-10: counter (c0, c1, c2, c3), key (k0, k1).
__device__ __forceinline__ Words4 philox(unsigned int c0, unsigned int c1, unsigned int c2,
                                         unsigned int c3, unsigned int k0, unsigned int k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        unsigned int hi0 = __umulhi(c0, PHILOX_M0), lo0 = c0 * PHILOX_M0;
        unsigned int hi1 = __umulhi(c2, PHILOX_M1), lo1 = c2 * PHILOX_M1;
        unsigned int n0 = hi1 ^ c1 ^ k0;
        unsigned int n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += PHILOX_W0; k1 += PHILOX_W1;
    }
    Words4 out = {{c0, c1, c2, c3}};
    return out;
}

// Scalar-ISA semantics of min/max (`a < b ? a : b`, `a > b ? a : b`).
__device__ __forceinline__ float lane_min(float a, float b) { return a < b ? a : b; }
__device__ __forceinline__ float lane_max(float a, float b) { return a > b ? a : b; }

// e^x for x in [−86, 88] (src/cpu/math.rs `exp`).
__device__ __forceinline__ float lane_exp(float x) {
    x = lane_min(lane_max(x, -86.0f), 88.0f);
    int n = __float2int_rn(__fmul_rn(x, 1.44269504088896340736f));
    float nf = __int2float_rn(n);
    float r = __fmaf_rn(nf, -0.693359375f, x);
    r = __fmaf_rn(nf, 2.12194440e-4f, r);
    float p = 1.9875691e-4f;
    p = __fmaf_rn(p, r, 1.3982e-3f);
    p = __fmaf_rn(p, r, 8.333452e-3f);
    p = __fmaf_rn(p, r, 4.1665796e-2f);
    p = __fmaf_rn(p, r, 1.6666665e-1f);
    p = __fmaf_rn(p, r, 0.5f);
    float r2 = __fmul_rn(r, r);
    p = __fmaf_rn(p, r2, r);
    p = __fadd_rn(p, 1.0f);
    return __uint_as_float(__float_as_uint(p) + ((unsigned int)n << 23));
}

// ln x for positive normal x (src/cpu/math.rs `ln`).
__device__ __forceinline__ float lane_ln(float x) {
    unsigned int bits = __float_as_uint(x);
    unsigned int e_raw = bits >> 23;
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f000000u);
    float e = __fsub_rn(__int2float_rn((int)e_raw), 126.0f);
    bool small = m < 0.70710677f;
    e = small ? __fsub_rn(e, 1.0f) : e;
    m = small ? __fsub_rn(__fadd_rn(m, m), 1.0f) : __fsub_rn(m, 1.0f);
    float z = __fmul_rn(m, m);
    float y = 7.0376836e-2f;
    y = __fmaf_rn(y, m, -1.1514610e-1f);
    y = __fmaf_rn(y, m, 1.1676999e-1f);
    y = __fmaf_rn(y, m, -1.2420141e-1f);
    y = __fmaf_rn(y, m, 1.4249323e-1f);
    y = __fmaf_rn(y, m, -1.6668058e-1f);
    y = __fmaf_rn(y, m, 2.0000714e-1f);
    y = __fmaf_rn(y, m, -2.4999994e-1f);
    y = __fmaf_rn(y, m, 3.333333e-1f);
    y = __fmul_rn(__fmul_rn(y, m), z);
    y = __fmaf_rn(e, -2.12194440e-4f, y);
    y = __fmaf_rn(z, -0.5f, y);
    float r = __fadd_rn(m, y);
    return __fmaf_rn(e, 0.693359375f, r);
}

// (cos 2πu, sin 2πu) for |u| < 2^22 (src/cpu/math.rs `sincos_2pi`).
__device__ __forceinline__ void lane_sincos_2pi(float u, float* c_out, float* s_out) {
    float v = __fsub_rn(u, __int2float_rn(__float2int_rn(u)));
    bool neg = v < 0.0f;
    float a = lane_max(v, __fsub_rn(0.0f, v));
    bool flip = 0.25f < a;
    a = flip ? __fsub_rn(0.5f, a) : a;
    bool swap = 0.125f < a;
    float b = swap ? __fsub_rn(0.25f, a) : a;
    float th = __fmul_rn(b, 6.28318548f);
    float t2 = __fmul_rn(th, th);
    float s = -1.9515296e-4f;
    s = __fmaf_rn(s, t2, 8.332161e-3f);
    s = __fmaf_rn(s, t2, -1.6666655e-1f);
    s = __fmaf_rn(__fmul_rn(s, t2), th, th);
    float c = 2.4433157e-5f;
    c = __fmaf_rn(c, t2, -1.3887316e-3f);
    c = __fmaf_rn(c, t2, 4.1666646e-2f);
    c = __fmaf_rn(__fmul_rn(c, t2), t2, __fmaf_rn(t2, -0.5f, 1.0f));
    float cc = swap ? s : c, ss = swap ? c : s;
    cc = flip ? __fsub_rn(0.0f, cc) : cc;
    ss = neg ? __fsub_rn(0.0f, ss) : ss;
    *c_out = cc;
    *s_out = ss;
}

// Box–Muller of two words (src/cpu/math.rs `box_muller`).
__device__ __forceinline__ void box_muller(unsigned int w0, unsigned int w1, float* z0, float* z1) {
    const float scale = 1.0f / 16777216.0f;
    float u1 = __fmul_rn(__fadd_rn(__int2float_rn((int)(w0 >> 8)), 0.5f), scale);
    float u2 = __fmul_rn(__int2float_rn((int)(w1 >> 8)), scale);
    float r = __fsqrt_rn(__fmul_rn(-2.0f, lane_ln(u1)));
    float c, s;
    lane_sincos_2pi(u2, &c, &s);
    *z0 = __fmul_rn(r, c);
    *z1 = __fmul_rn(r, s);
}

// The standard normal of (trajectory, step, element) under key (k0, k1): Noise::normal.
__device__ __forceinline__ float noise_normal(unsigned int k0, unsigned int k1,
                                              unsigned long long traj, unsigned int step,
                                              unsigned int element) {
    Words4 w = philox(element, step >> 2, (unsigned int)traj, (unsigned int)(traj >> 32), k0, k1);
    float z[4];
    box_muller(w.w[0], w.w[1], &z[0], &z[1]);
    box_muller(w.w[2], w.w[3], &z[2], &z[3]);
    return z[step & 3];
}
