// Fused whole-trajectory kernel for exact Gaussian mixtures (twin: src/fused/mixture_trajectory/
// cpu.rs, oracle: fused::mixture_trajectory::reference; plan: its plan.rs). Each thread carries
// one trajectory through every step in registers: exact component log-densities, posterior and
// scores, the sampler update
// x' = a x + c s + √var z with in-kernel Philox noise, the online classifier
// ln π_y += (c/√var) z·Δ_y − c²‖Δ_y‖²/(2 var) (log-sum-exp normalised), and its contribution to
// the per-point sums of InfoSums (src/info/sums.rs `Layout`), reduced per block and added to a
// (points, W) f64 table once per block and point: no host synchronisation inside the loop.
// The per-trajectory arithmetic is the CPU kernel's operation for operation (explicitly rounded
// intrinsics), so states and per-trajectory values are bit-identical to the CPU's.
//
// The rows weighted by the final posterior (GIR, GIRC2, class weights) need π at the data end
// before any point can be weighted. Instead of storing a (points × trajectories) trail, pass 1
// writes each trajectory's final π and pass 2 replays the trajectory (same noise, same
// arithmetic, so the same values) and adds only those rows.
#include "common.cuh"

// Layout indices of src/info/sums.rs (L_*, MIX_FIXED, MIX_PER_*), the kernel's limits
// (MIX_MAX_*) and block size (MIX_THREADS): generated from src/info/layout_consts.rs.
#include "layout.cuh"

#define MIX_MAX_W (MIX_FIXED + MIX_PER_PARTITION * MIX_MAX_P + MIX_PER_CLASS * MIX_MAX_K)
// Per partition i from MIX_FIXED + MIX_PER_PARTITION·i: Σw, Σw·h_Z, Σ rate, Σ rate²;
// per class k after the partitions, MIX_PER_CLASS each: Σπ^final, Σπ^final·h, Σ rate, Σ rate².

// Mirrors `MixParams` in src/fused/mixture_trajectory/cuda.rs (#[repr(C)]; tests/cuda.rs
// checks size and offsets).
struct MixParams {
    unsigned int dim, classes, comps, parts, steps, one_per_class, key0, key1;
    unsigned long long first, count;
};

// Read-only plan arrays (device pointers), mirrored by the host's upload order.
struct MixPlan {
    const float* sm;        // (S+1, Kc, D) s_t m_k
    const float* inv;       // (S+1, Kc, D) 1/Σ_k
    const float* lognorm;   // (S+1, Kc)
    const float* dtrace;    // (S+1, Kc)
    const float* d_over_s2; // (S+1) d/σ²
    const float* coef;      // (S, 5) a, c, √var, c/√var, c²/(2 var)
    const float* gw;        // (S+1, 2)
    const float* init_mean; // (Kc, D)
    const float* init_sd;   // (Kc, D)
    const float* cum;       // (Kc)
    const float* prior;     // (K)
    const float* log_prior; // (K)
    const unsigned int* class_of; // (Kc)
    const unsigned int* part_a;   // (P) class bitmasks
    const unsigned int* part_b;   // (P)
    const int* part_a_single;     // (P) −1 or the class
    const int* part_b_single;     // (P)
    const unsigned int* part_covers_all; // (P)
    const float* part_inv_mass;   // (P)
};

struct MixState {
    float x[MIX_MAX_D], lp[MIX_MAX_K], pi[MIX_MAX_K], run[4];
    float h0; // the tracked entropy at the noise end
};

__device__ __forceinline__ unsigned int mix_width(const MixParams& P) {
    return MIX_FIXED + MIX_PER_PARTITION * P.parts + MIX_PER_CLASS * P.classes;
}

// run[q] = w0·run[q+1] + (w1·v + run[q]); run[q+1] = v (the trapezoid running integral).
__device__ __forceinline__ float mix_advance(MixState& s, const MixPlan& L, unsigned int q,
                                             unsigned int p, float v) {
    float w0 = L.gw[2 * p], w1 = L.gw[2 * p + 1];
    float run = __fmaf_rn(w0, s.run[q + 1], __fmaf_rn(w1, v, s.run[q]));
    s.run[q] = run;
    s.run[q + 1] = v;
    return run;
}

__device__ __forceinline__ void mix_init(const MixParams& P, const MixPlan& L, MixState& s,
                                         unsigned long long traj) {
    const unsigned int d = P.dim, kc = P.comps, k = P.classes;
    Words4 wp = philox(0xffffffffu, 0xffffffffu, (unsigned int)traj, (unsigned int)(traj >> 32),
                       P.key0, P.key1);
    float u = __fmul_rn(__int2float_rn((int)(wp.w[0] >> 8)), 1.0f / 16777216.0f);
    for (unsigned int j = 0; j < d; ++j) {
        float mean = L.init_mean[j], sd = L.init_sd[j];
        for (unsigned int c = 1; c < kc; ++c) {
            bool keep = u < L.cum[c - 1];
            mean = keep ? mean : L.init_mean[c * d + j];
            sd = keep ? sd : L.init_sd[c * d + j];
        }
        float z = noise_normal(P.key0, P.key1, traj, 0xffffffffu, j);
        s.x[j] = __fmaf_rn(sd, z, mean);
    }
    for (unsigned int y = 0; y < k; ++y) {
        s.lp[y] = L.log_prior[y];
        s.pi[y] = L.prior[y];
    }
    for (int q = 0; q < 4; ++q) s.run[q] = 0.0f;
    s.h0 = 0.0f;
}

// Exact posterior at point p: e_c, 1/Σe, p(y|x) and its entropy hx (src: `exact_at`).
__device__ __forceinline__ void mix_exact(const MixParams& P, const MixPlan& L, const MixState& s,
                                          unsigned int p, float* logp, float* e, float* py,
                                          float* inv_s_out, float* hx_out) {
    const unsigned int d = P.dim, kc = P.comps, k = P.classes;
    const float* sm = L.sm + (size_t)p * kc * d;
    const float* inv = L.inv + (size_t)p * kc * d;
    const float* lognorm = L.lognorm + (size_t)p * kc;
    float m = -__int_as_float(0x7f800000);
    for (unsigned int c = 0; c < kc; ++c) {
        float q = 0.0f;
        for (unsigned int j = 0; j < d; ++j) {
            float diff = __fsub_rn(s.x[j], sm[c * d + j]);
            q = __fmaf_rn(__fmul_rn(diff, diff), inv[c * d + j], q);
        }
        float lc = __fmaf_rn(-0.5f, q, lognorm[c]);
        logp[c] = lc;
        m = lane_max(m, lc);
    }
    float sum = 0.0f;
    for (unsigned int c = 0; c < kc; ++c) {
        e[c] = lane_exp(__fsub_rn(logp[c], m));
        sum = __fadd_rn(sum, e[c]);
    }
    float inv_s = __fdiv_rn(1.0f, sum);
    float ln_s = lane_ln(sum);
    float hx = 0.0f;
    if (P.one_per_class) {
        for (unsigned int c = 0; c < kc; ++c) {
            unsigned int y = L.class_of[c];
            float pyv = __fmul_rn(e[c], inv_s);
            float lpy = __fsub_rn(__fsub_rn(logp[c], m), ln_s);
            py[y] = pyv;
            hx = __fmaf_rn(pyv, lpy, hx);
        }
    } else {
        for (unsigned int y = 0; y < k; ++y) {
            float ey = 0.0f;
            for (unsigned int c = 0; c < kc; ++c)
                if (L.class_of[c] == y) ey = __fadd_rn(ey, e[c]);
            float pyv = __fmul_rn(ey, inv_s);
            py[y] = pyv;
            hx = __fmaf_rn(pyv, __fsub_rn(lane_ln(ey), ln_s), hx);
        }
    }
    *inv_s_out = inv_s;
    *hx_out = __fsub_rn(0.0f, hx);
}

// Entropies of the tracked posterior and the decision problems (src: `record`); returns h.
__device__ __forceinline__ float mix_record(const MixParams& P, const MixPlan& L, const MixState& s,
                                            float hx, float* acc) {
    const unsigned int k = P.classes;
    float h = 0.0f;
    for (unsigned int y = 0; y < k; ++y) h = __fmaf_rn(s.pi[y], s.lp[y], h);
    h = __fsub_rn(0.0f, h);
    acc[L_N] = __fadd_rn(acc[L_N], 1.0f);
    acc[L_H] = __fadd_rn(acc[L_H], h);
    acc[L_H2] = __fadd_rn(acc[L_H2], __fmul_rn(h, h));
    acc[L_HX] = __fadd_rn(acc[L_HX], hx);
    acc[L_HX2] = __fadd_rn(acc[L_HX2], __fmul_rn(hx, hx));
    acc[L_HXN] = __fadd_rn(acc[L_HXN], 1.0f);
    for (unsigned int i = 0; i < P.parts; ++i) {
        float pa = 0.0f, pb = 0.0f;
        for (unsigned int c = 0; c < k; ++c) {
            if (L.part_a[i] >> c & 1u) pa = __fadd_rn(pa, s.pi[c]);
        }
        for (unsigned int c = 0; c < k; ++c) {
            if (L.part_b[i] >> c & 1u) pb = __fadd_rn(pb, s.pi[c]);
        }
        float pab = __fadd_rn(pa, pb);
        float ln_pa = L.part_a_single[i] >= 0 ? s.lp[L.part_a_single[i]] : lane_ln(pa);
        float ln_pb = L.part_b_single[i] >= 0 ? s.lp[L.part_b_single[i]] : lane_ln(pb);
        float ln_pab = L.part_covers_all[i] ? 0.0f : lane_ln(pab);
        float num = __fmaf_rn(pa, ln_pa, __fmul_rn(pb, ln_pb));
        float hz = __fsub_rn(ln_pab, __fdiv_rn(num, pab));
        float wgt = __fmul_rn(pab, L.part_inv_mass[i]);
        const unsigned int pw = MIX_FIXED + MIX_PER_PARTITION * i;
        acc[pw] = __fadd_rn(acc[pw], wgt);
        acc[pw + 1] = __fadd_rn(acc[pw + 1], __fmul_rn(wgt, hz));
    }
    return h;
}

// One step: the point's sums into acc (pass 1), h and ‖Δ_y‖² out (both passes), the update.
// Returns false when the new state is not finite.
__device__ __forceinline__ bool mix_step(const MixParams& P, const MixPlan& L, MixState& s,
                                         unsigned long long traj, unsigned int step, float* acc,
                                         float* h_out, float* d2) {
    const unsigned int d = P.dim, kc = P.comps, k = P.classes;
    float logp[MIX_MAX_KC], e[MIX_MAX_KC], py[MIX_MAX_K], su[MIX_MAX_D], sy[MIX_MAX_K][MIX_MAX_D];
    const float* cf = L.coef + 5 * step;
    const float a = cf[0], c = cf[1], sdv = cf[2], cs = cf[3], nkl = -cf[4];
    const bool update = sdv > 0.0f;
    float inv_s, hx;
    mix_exact(P, L, s, step, logp, e, py, &inv_s, &hx);
    *h_out = mix_record(P, L, s, hx, acc);
    for (unsigned int j = 0; j < d; ++j) su[j] = 0.0f;
    for (unsigned int y = 0; y < k; ++y)
        for (unsigned int j = 0; j < d; ++j) sy[y][j] = 0.0f;
    const float* sm = L.sm + (size_t)step * kc * d;
    const float* inv = L.inv + (size_t)step * kc * d;
    const float* dtrace = L.dtrace + (size_t)step * kc;
    float prod = 0.0f;
    for (unsigned int cc = 0; cc < kc; ++cc) {
        unsigned int y = L.class_of[cc];
        float wk = __fmul_rn(e[cc], inv_s);
        for (unsigned int j = 0; j < d; ++j) {
            float diff = __fsub_rn(s.x[j], sm[cc * d + j]);
            float sk = __fmul_rn(__fsub_rn(0.0f, diff), inv[cc * d + j]);
            su[j] = __fmaf_rn(wk, sk, su[j]);
            sy[y][j] = __fmaf_rn(e[cc], sk, sy[y][j]);
        }
        prod = __fmaf_rn(wk, dtrace[cc], prod);
    }
    for (unsigned int cc = 0; cc < kc; ++cc) {
        float wk = __fmul_rn(e[cc], inv_s);
        float n2 = 0.0f;
        for (unsigned int j = 0; j < d; ++j) {
            float diff = __fsub_rn(s.x[j], sm[cc * d + j]);
            float sk = __fmul_rn(__fsub_rn(0.0f, diff), inv[cc * d + j]);
            float dk = __fsub_rn(sk, su[j]);
            n2 = __fmaf_rn(dk, dk, n2);
        }
        prod = __fmaf_rn(wk, n2, prod);
    }
    float rb = 0.0f;
    for (unsigned int y = 0; y < k; ++y) {
        float norm = __fdiv_rn(inv_s, py[y]);
        float q = 0.0f;
        for (unsigned int j = 0; j < d; ++j) {
            float dy = __fsub_rn(__fmul_rn(sy[y][j], norm), su[j]);
            sy[y][j] = dy;
            q = __fmaf_rn(dy, dy, q);
        }
        d2[y] = q;
        rb = __fmaf_rn(s.pi[y], q, rb);
    }
    float run = mix_advance(s, L, 0, step, rb);
    acc[L_RB] = __fadd_rn(acc[L_RB], rb);
    acc[L_RBN] = __fadd_rn(acc[L_RBN], 1.0f);
    acc[L_RBC] = __fadd_rn(acc[L_RBC], run);
    acc[L_RBC2] = __fadd_rn(acc[L_RBC2], __fmul_rn(run, run));
    // h_i(0) − h_i(t) − R_i(t), the paired difference of ΔH and its integral.
    if (step == 0) s.h0 = *h_out;
    float dr = __fsub_rn(__fsub_rn(s.h0, *h_out), run);
    acc[L_RBD2] = __fadd_rn(acc[L_RBD2], __fmul_rn(dr, dr));
    acc[L_PROD] = __fadd_rn(acc[L_PROD], prod);
    acc[L_PRODN] = __fadd_rn(acc[L_PRODN], 1.0f);
    acc[L_PROD2] = __fadd_rn(acc[L_PROD2], __fmul_rn(prod, prod));
    // Integration by parts: d/σ² − ‖s‖²; the gap to `prod` is ∇·s + ‖s‖².
    float s2 = 0.0f;
    for (unsigned int j = 0; j < d; ++j) s2 = __fmaf_rn(su[j], su[j], s2);
    float ibp = __fsub_rn(L.d_over_s2[step], s2);
    acc[L_IBP] = __fadd_rn(acc[L_IBP], ibp);
    acc[L_IBP2] = __fadd_rn(acc[L_IBP2], __fmul_rn(ibp, ibp));
    float gap = __fsub_rn(prod, ibp);
    acc[L_IBPD2] = __fadd_rn(acc[L_IBPD2], __fmul_rn(gap, gap));
    // Per-class rates: π_k (rb + 2 Δ_k·u), u = Σ_y π_y ln π_y Δ_y.
    float u[MIX_MAX_D];
    for (unsigned int j = 0; j < d; ++j) {
        float uj = 0.0f;
        for (unsigned int y = 0; y < k; ++y)
            uj = __fmaf_rn(__fmul_rn(s.pi[y], s.lp[y]), sy[y][j], uj);
        u[j] = uj;
    }
    const unsigned int cw0 = MIX_FIXED + MIX_PER_PARTITION * P.parts;
    for (unsigned int y = 0; y < k; ++y) {
        float cross = 0.0f;
        for (unsigned int j = 0; j < d; ++j) cross = __fmaf_rn(sy[y][j], u[j], cross);
        float v = __fmul_rn(s.pi[y], __fmaf_rn(2.0f, cross, rb));
        const unsigned int cw = cw0 + MIX_PER_CLASS * y;
        acc[cw + 2] = __fadd_rn(acc[cw + 2], v);
        acc[cw + 3] = __fadd_rn(acc[cw + 3], __fmul_rn(v, v));
    }
    // Decision problems: (π_a π_b/(π_ab P(a∪b))) ‖s(x|a) − s(x|b)‖²
    // = ‖π_b A − π_a B‖²/(π_a π_b π_ab P(a∪b)), A = Σ_{y∈a} π_y Δ_y, B = Σ_{y∈b} π_y Δ_y
    // (0 where the denominator underflows to 0).
    for (unsigned int i = 0; i < P.parts; ++i) {
        float pa = 0.0f, pb = 0.0f;
        for (unsigned int cl = 0; cl < k; ++cl)
            if (L.part_a[i] >> cl & 1u) pa = __fadd_rn(pa, s.pi[cl]);
        for (unsigned int cl = 0; cl < k; ++cl)
            if (L.part_b[i] >> cl & 1u) pb = __fadd_rn(pb, s.pi[cl]);
        float n2 = 0.0f;
        for (unsigned int j = 0; j < d; ++j) {
            float va = 0.0f, vb = 0.0f;
            for (unsigned int cl = 0; cl < k; ++cl)
                if (L.part_a[i] >> cl & 1u) va = __fmaf_rn(s.pi[cl], sy[cl][j], va);
            for (unsigned int cl = 0; cl < k; ++cl)
                if (L.part_b[i] >> cl & 1u) vb = __fmaf_rn(s.pi[cl], sy[cl][j], vb);
            float diff = __fsub_rn(__fmul_rn(pb, va), __fmul_rn(pa, vb));
            n2 = __fmaf_rn(diff, diff, n2);
        }
        float papb = __fmul_rn(pa, pb);
        float den = __fmul_rn(papb, __fadd_rn(pa, pb));
        float v = __fmul_rn(__fdiv_rn(n2, den), L.part_inv_mass[i]);
        v = 0.0f < den ? v : 0.0f;
        const unsigned int pw = MIX_FIXED + MIX_PER_PARTITION * i;
        acc[pw + 2] = __fadd_rn(acc[pw + 2], v);
        acc[pw + 3] = __fadd_rn(acc[pw + 3], __fmul_rn(v, v));
    }
    // x' = a x + c s + √var z
    float z[MIX_MAX_D];
    bool finite = true;
    for (unsigned int j = 0; j < d; ++j) {
        z[j] = update ? noise_normal(P.key0, P.key1, traj, step, j) : 0.0f;
        float xn = __fmaf_rn(a, s.x[j], __fmaf_rn(c, su[j], __fmul_rn(sdv, z[j])));
        finite = finite && (xn - xn == 0.0f);
        s.x[j] = xn;
    }
    if (update) {
        float m = -__int_as_float(0x7f800000);
        for (unsigned int y = 0; y < k; ++y) {
            float dot = 0.0f;
            for (unsigned int j = 0; j < d; ++j) dot = __fmaf_rn(z[j], sy[y][j], dot);
            float inc = __fmaf_rn(cs, dot, __fmul_rn(nkl, d2[y]));
            s.lp[y] = __fadd_rn(s.lp[y], inc);
            m = lane_max(m, s.lp[y]);
        }
        float sum = 0.0f;
        for (unsigned int y = 0; y < k; ++y) {
            s.pi[y] = lane_exp(__fsub_rn(s.lp[y], m));
            sum = __fadd_rn(sum, s.pi[y]);
        }
        float shift = __fadd_rn(m, lane_ln(sum));
        float inv_sum = __fdiv_rn(1.0f, sum);
        for (unsigned int y = 0; y < k; ++y) {
            s.lp[y] = __fsub_rn(s.lp[y], shift);
            s.pi[y] = __fmul_rn(s.pi[y], inv_sum);
        }
    }
    return finite;
}

// The data end (point S): exact and tracked entropies, the last Rao–Blackwell running value.
__device__ __forceinline__ void mix_end(const MixParams& P, const MixPlan& L, MixState& s,
                                        float* acc, float* h_out) {
    float logp[MIX_MAX_KC], e[MIX_MAX_KC], py[MIX_MAX_K], inv_s, hx;
    mix_exact(P, L, s, P.steps, logp, e, py, &inv_s, &hx);
    *h_out = mix_record(P, L, s, hx, acc);
    float run = mix_advance(s, L, 0, P.steps, 0.0f);
    acc[L_RBC] = __fadd_rn(acc[L_RBC], run);
    acc[L_RBC2] = __fadd_rn(acc[L_RBC2], __fmul_rn(run, run));
    float dr = __fsub_rn(__fsub_rn(s.h0, *h_out), run);
    acc[L_RBD2] = __fadd_rn(acc[L_RBD2], __fmul_rn(dr, dr));
}

// Pass 2 at point p: weights by the final posterior pif (h and ‖Δ_y‖² of the replayed point).
__device__ __forceinline__ void mix_final_weight(const MixParams& P, const MixPlan& L, MixState& s,
                                                 unsigned int p, const float* pif, float h,
                                                 const float* d2, float* acc) {
    const unsigned int k = P.classes;
    float gir = 0.0f;
    for (unsigned int y = 0; y < k; ++y) {
        gir = __fmaf_rn(pif[y], d2[y], gir);
        unsigned int cw = MIX_FIXED + MIX_PER_PARTITION * P.parts + MIX_PER_CLASS * y;
        acc[cw] = __fadd_rn(acc[cw], pif[y]);
        acc[cw + 1] = __fmaf_rn(pif[y], h, acc[cw + 1]);
    }
    acc[L_GIR] = __fadd_rn(acc[L_GIR], gir);
    float run = mix_advance(s, L, 2, p, gir);
    acc[L_GIRC2] = __fadd_rn(acc[L_GIRC2], __fmul_rn(run, run));
    // h_i + G_i: H(Y) − h_i − G_i is the paired difference of the two MI estimates.
    float hg = __fadd_rn(h, run);
    acc[L_HG2] = __fadd_rn(acc[L_HG2], __fmul_rn(hg, hg));
}

#ifndef INFODIFF_HOST_TWIN
// Adds each thread's acc[0..w) over the block (valid threads only) into sums[row·w + q] (f64).
__device__ void mix_block_add(float* acc, unsigned int w, bool valid, double* sums, unsigned int row,
                              float (*red)[MIX_THREADS / 32]) {
    const unsigned int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (unsigned int q = 0; q < w; ++q) {
        float v = valid ? acc[q] : 0.0f;
        for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
        if (lane == 0) red[q][warp] = v;
        acc[q] = 0.0f;
    }
    __syncthreads();
    if (threadIdx.x < w) {
        double t = 0.0;
        for (unsigned int i = 0; i < MIX_THREADS / 32; ++i) t += (double)red[threadIdx.x][i];
        atomicAdd(&sums[(size_t)row * w + threadIdx.x], t);
    }
    __syncthreads();
}

// grid ⌈count/128⌉, block 128. Pass 1 (replay = 0): sums (S+1, W) but the final-weighted rows,
// final π (count, K), final x (count, D), non-finite flags (count) with the first bad step.
// Pass 2 (replay = 1): only the final-weighted rows, from final π.
extern "C" __global__ void __launch_bounds__(MIX_THREADS)
mixture_trajectory(MixParams P, MixPlan L, unsigned int replay, double* __restrict__ sums,
                   float* __restrict__ final_pi, float* __restrict__ final_x,
                   unsigned int* __restrict__ bad_step) {
    __shared__ float red[MIX_MAX_W][MIX_THREADS / 32];
    const unsigned long long i = (unsigned long long)blockIdx.x * MIX_THREADS + threadIdx.x;
    const bool valid = i < P.count;
    const unsigned long long traj = P.first + (valid ? i : 0);
    const unsigned int w = mix_width(P), k = P.classes;
    float acc[MIX_MAX_W];
    for (unsigned int q = 0; q < w; ++q) acc[q] = 0.0f;
    MixState s;
    mix_init(P, L, s, traj);
    float pif[MIX_MAX_K], d2[MIX_MAX_K], h;
    if (replay)
        for (unsigned int y = 0; y < k; ++y) pif[y] = final_pi[i * k + y];
    unsigned int first_bad = 0xffffffffu;
    for (unsigned int step = 0; step < P.steps; ++step) {
        bool ok = mix_step(P, L, s, traj, step, acc, &h, d2);
        if (!ok && first_bad == 0xffffffffu) first_bad = step;
        if (replay) {
            for (unsigned int q = 0; q < w; ++q) acc[q] = 0.0f;
            mix_final_weight(P, L, s, step, pif, h, d2, acc);
        }
        mix_block_add(acc, w, valid, sums, step, red);
    }
    mix_end(P, L, s, acc, &h);
    if (replay) {
        for (unsigned int q = 0; q < w; ++q) acc[q] = 0.0f;
        for (unsigned int y = 0; y < k; ++y) d2[y] = 0.0f;
        mix_final_weight(P, L, s, P.steps, pif, h, d2, acc);
    }
    mix_block_add(acc, w, valid, sums, P.steps, red);
    if (valid && !replay) {
        for (unsigned int y = 0; y < k; ++y) final_pi[i * k + y] = s.pi[y];
        for (unsigned int j = 0; j < P.dim; ++j) final_x[i * P.dim + j] = s.x[j];
        bad_step[i] = first_bad;
    }
}
#endif
