//! Fused whole-trajectory kernel for exact Gaussian mixtures: each SIMD lane carries one
//! trajectory through every step with exact scores, Philox noise, the sampler update
//! x' = a x + c s(x) + √var z, the online classifier
//! ln π_y += (c/√var) z·Δ_y − c²‖Δ_y‖²/(2 var) (then log-sum-exp), the exact posterior, and the
//! per-point sums of [`InfoSums`] — no intermediate arrays beyond a chunk of 128 trajectories.
//!
//! It reads only the flat [`MixturePlan`] ([`super::plan`] builds it from the domain) and
//! writes [`InfoSums`] (columns by their [`Layout`]).
//!
//! Its slow twin is [`crate::fused::mixture_trajectory::reference::mixture_trajectory`] (f64, one trajectory at a time);
//! every ISA instantiation is tested against it and against each other (bit-identical).

use rayon::prelude::*;

use super::plan::MixturePlan;
use crate::error::{Error, Result};
use crate::info::{InfoSums, Layout};
use crate::rng::INIT_STEP;
use crate::simd::isa::{Isa, IsaKind};
use crate::simd::math::{box_muller, exp, ln, philox};

/// Trajectories per chunk (the unit of work of one task).
pub const CHUNK: usize = 128;

impl MixturePlan {
    /// Lane vectors of state per lane group: x (D), ln π (K), π (K), 4 running integrals.
    fn stride(&self) -> usize {
        self.dim + 2 * self.classes + 4
    }
}

/// Runs trajectories `first..first + n` and returns their information sums; with `final_x`
/// (n·D) also the final states. Chunks run in parallel on rayon's pool; sums are reduced in a
/// fixed order, so the result does not depend on the number of threads.
pub fn run(
    plan: &MixturePlan,
    kind: IsaKind,
    first: u64,
    n: usize,
    final_x: Option<&mut [f32]>,
) -> Result<InfoSums> {
    run_with_progress(plan, kind, first, n, final_x, None)
}

/// [`run`], calling `progress` with the number of trajectories of each finished chunk.
pub fn run_with_progress(
    plan: &MixturePlan,
    kind: IsaKind,
    first: u64,
    n: usize,
    final_x: Option<&mut [f32]>,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<InfoSums> {
    let d = plan.dim;
    // An ISA this machine lacks runs as scalar (as `isa_dispatch!` does); size scratch for it.
    let kind = if kind.available() {
        kind
    } else {
        IsaKind::Scalar
    };
    if first + n as u64 > (u32::MAX - 16) as u64 {
        return Err(Error::config(
            "trajectories",
            "first + count < 2^32 − 16 for the fused kernel",
            first + n as u64,
        ));
    }
    let chunks = n.div_ceil(CHUNK);
    // Chunks summed sequentially per task: at most 16 tasks (their partial sums are O(steps)
    // each), and a grouping that depends on n only, so the reduction order does not depend on
    // the number of threads.
    let group = chunks.div_ceil(16).max(1);
    // The final-state slices of each task's chunks (empty lists when not asked for).
    let n_groups = chunks.div_ceil(group);
    let mut xs_groups: Vec<Vec<&mut [f32]>> = (0..n_groups).map(|_| Vec::new()).collect();
    if let Some(buf) = final_x {
        if buf.len() != n * d {
            return Err(Error::shape("mixture_trajectory::run", n * d, buf.len()));
        }
        for (c, xs) in buf.chunks_mut(CHUNK * d).enumerate() {
            xs_groups[c / group].push(xs);
        }
    }
    // Scratch memory (a few MB each) is reused across tasks: at most one per running thread.
    // Partial sums are merged in task order as soon as their predecessors are done, and their
    // buffers reused, so only about one per thread is ever live (fresh pages are costly).
    struct Merge {
        next: usize,
        ready: std::collections::BTreeMap<usize, InfoSums>,
        free: Vec<InfoSums>,
        scratch: Vec<Scratch>,
        total: InfoSums,
    }
    let state = std::sync::Mutex::new(Merge {
        next: 0,
        ready: Default::default(),
        free: vec![],
        scratch: vec![],
        total: InfoSums::new(plan.layout, plan.steps + 1),
    });
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    xs_groups
        .par_iter_mut()
        .enumerate()
        .try_for_each(|(g, xg)| -> Result<()> {
            let (scr, sums) = {
                let mut st = lock();
                (st.scratch.pop(), st.free.pop())
            };
            let mut scr = scr.unwrap_or_else(|| Scratch::new(plan, kind));
            let mut sums = sums.unwrap_or_else(|| InfoSums::new(plan.layout, plan.steps + 1));
            let chunks = g * group..((g + 1) * group).min(chunks);
            run_group(
                plan, kind, &mut scr, first, n, chunks, xg, &mut sums, progress,
            )?;
            let mut st = lock();
            st.scratch.push(scr);
            st.ready.insert(g, sums);
            while let Some(mut done) = {
                let next = st.next;
                st.ready.remove(&next)
            } {
                st.total.merge(&done);
                done.data.fill(0.0);
                st.free.push(done);
                st.next += 1;
            }
            Ok(())
        })?;
    let st = state.into_inner().unwrap_or_else(|e| e.into_inner());
    debug_assert_eq!(st.next, n_groups);
    Ok(st.total)
}

#[allow(clippy::too_many_arguments)]
fn run_group(
    plan: &MixturePlan,
    kind: IsaKind,
    scr: &mut Scratch,
    first: u64,
    n: usize,
    chunks: std::ops::Range<usize>,
    xs: &mut [&mut [f32]],
    sums: &mut InfoSums,
    progress: Option<&(dyn Fn(usize) + Sync)>,
) -> Result<()> {
    for (i, c) in chunks.enumerate() {
        let start = c * CHUNK;
        let count = CHUNK.min(n - start);
        let out = xs.get_mut(i).map(|s| &mut **s);
        chunk(kind, plan, scr, first + start as u64, count, sums, out)?;
        if let Some(p) = progress {
            p(count);
        }
    }
    Ok(())
}

/// Per-task scratch memory, reused across chunks.
pub struct Scratch {
    /// Per lane group (G): x (D), ln π (K), π (K), running integrals (4). (G, D + 2K + 4, L)
    state: Vec<f32>,
    /// (S+1, G, 1+K, L): h and ‖Δ_y‖² per point, for the final-posterior weighting.
    trail: Vec<f32>,
    /// Lane accumulators. (width, L)
    acc: Vec<f32>,
    /// Lane masks of the chunk. (G, L)
    mask: Vec<f32>,
    /// Noise cache: the normals of four steps. (G, D, 4, L)
    zc: Vec<f32>,
    /// Per-lane temporaries (see `Tmp`).
    tmp: Vec<f32>,
    /// Each group's point record for the second pass (see `Ctx::pt_at`): π before the update,
    /// u = Σ_y π_y ln π_y Δ_y, Δ_y, five per-trajectory values, π_a and π_b.
    /// (G, K + D + KD + 5 + 2P, L)
    pt: Vec<f32>,
    lanes: usize,
}

impl Scratch {
    pub fn new(plan: &MixturePlan, kind: IsaKind) -> Self {
        let l = match kind {
            IsaKind::Avx512 => 16,
            IsaKind::Avx2Fma => 8,
            IsaKind::Scalar => 1,
        };
        let g = CHUNK / l;
        let (d, k, kc) = (plan.dim, plan.classes, plan.comps);
        Scratch {
            state: vec![0.0; g * plan.stride() * l],
            trail: vec![0.0; (plan.steps + 1) * g * (1 + k) * l],
            acc: vec![0.0; plan.layout.width() * l],
            mask: vec![0.0; CHUNK],
            zc: vec![0.0; g * d * 4 * l],
            tmp: vec![0.0; (2 * kc + d + k * d + 2 * k) * l],
            pt: vec![0.0; g * (k + d + k * d + PT_SCALARS + 2 * plan.parts.len()) * l],
            lanes: l,
        }
    }
}

/// Instantiates the kernel for one shape (D, K, Kc; 0 = given by the plan at run time) on every ISA.
macro_rules! shape_kernel {
    ($name:ident, $inner:ident, $d:literal, $k:literal, $kc:literal) => {
        #[inline(always)]
        unsafe fn $inner<I: Isa>(
            plan: &MixturePlan,
            scr: &mut Scratch,
            first: u64,
            count: usize,
            sums: &mut InfoSums,
            out: Option<&mut [f32]>,
        ) -> Result<()> {
            // SAFETY: forwarded from the caller (the ISA is available).
            unsafe { chunk_kernel::<I, $d, $k, $kc>(plan, scr, first, count, sums, out) }
        }
        crate::isa_dispatch! {
            fn $name(plan: &MixturePlan, scr: &mut Scratch, first: u64, count: usize, sums: &mut InfoSums, out: Option<&mut [f32]>) -> Result<()> => $inner
        }
    };
}

shape_kernel!(chunk_any, kernel_any, 0, 0, 0);
shape_kernel!(chunk_1_2, kernel_1_2, 1, 2, 2);
shape_kernel!(chunk_1_3, kernel_1_3, 1, 3, 3);
shape_kernel!(chunk_1_4, kernel_1_4, 1, 4, 4);
shape_kernel!(chunk_2_2, kernel_2_2, 2, 2, 2);
shape_kernel!(chunk_2_4, kernel_2_4, 2, 4, 4);

/// One chunk of up to [`CHUNK`] trajectories starting at `first`: the kernel specialised for the
/// plan's shape where one exists (small D with one component per class), the general one otherwise.
fn chunk(
    kind: IsaKind,
    plan: &MixturePlan,
    scr: &mut Scratch,
    first: u64,
    count: usize,
    sums: &mut InfoSums,
    out: Option<&mut [f32]>,
) -> Result<()> {
    let f = match (plan.dim, plan.classes, plan.comps) {
        (1, 2, 2) => chunk_1_2,
        (1, 3, 3) => chunk_1_3,
        (1, 4, 4) => chunk_1_4,
        (2, 2, 2) => chunk_2_2,
        (2, 4, 4) => chunk_2_4,
        _ => chunk_any,
    };
    f(kind, plan, scr, first, count, sums, out)
}

/// Sums the lanes of `acc` (width, L) into `row` in f64, lane by lane in order.
fn reduce_lanes(acc: &[f32], l: usize, cols: &[usize], row: &mut [f64]) {
    // Four independent f64 chains per column (lanes i, i+4, …), then a pairwise sum: a single
    // 16-long chain per column is latency bound and would cost as much as the step itself.
    for &q in cols {
        let lanes = &acc[q * l..(q + 1) * l];
        let mut s = [0.0f64; 4];
        for (i, v) in lanes.iter().enumerate() {
            s[i & 3] += *v as f64;
        }
        row[q] += (s[0] + s[1]) + (s[2] + s[3]);
    }
}

/// Per-trajectory values in a point record between Δ and the partitions' masses.
const PT_SCALARS: usize = 5;

/// Pointers and offsets of one chunk's scratch; methods are the pieces of the kernel body.
struct Ctx<'a, I: Isa, const D: usize, const K: usize, const KC: usize> {
    plan: &'a MixturePlan,
    st: *mut f32,
    tmp: *mut f32,
    acc: *mut f32,
    trail: *mut f32,
    pt: *mut f32,
    /// Lane masks: 1 for a real trajectory, 0 for padding. (G, L)
    mask: *mut f32,
    /// Normals of the current block of four steps. (G, D, 4, L)
    zc: *mut f32,
    first: u64,
    g_n: usize,
    _isa: std::marker::PhantomData<I>,
}

// Offsets into `tmp`, in units of L lanes.
struct Tmp {
    logp: usize, // (Kc) component log densities
    e: usize,    // (Kc) e_k = exp(l_k − max)
    su: usize,   // (D) s(x)
    sy: usize,   // (K, D) Σ_{k∈y} e_k s_k, then Δ_y
    d2: usize,   // (K) ‖Δ_y‖²
    py: usize,   // (K) exact p(y | x)
}

impl Tmp {
    fn new(p: &MixturePlan) -> Tmp {
        let (kc, d, k) = (p.comps, p.dim, p.classes);
        let su = 2 * kc;
        let sy = su + d;
        let d2 = sy + k * d;
        let py = d2 + k;
        Tmp {
            logp: 0,
            e: kc,
            su,
            sy,
            d2,
            py,
        }
    }
}

impl<I: Isa, const D: usize, const K: usize, const KC: usize> Ctx<'_, I, D, K, KC> {
    /// Dimensions: the const parameter where it is nonzero (a specialised kernel, loops unrolled
    /// and indices constant), the plan's value otherwise.
    #[inline(always)]
    fn d(&self) -> usize {
        if D > 0 { D } else { self.plan.dim }
    }
    #[inline(always)]
    fn k(&self) -> usize {
        if K > 0 { K } else { self.plan.classes }
    }
    #[inline(always)]
    fn kc(&self) -> usize {
        if KC > 0 { KC } else { self.plan.comps }
    }
    #[inline(always)]
    fn stride(&self) -> usize {
        self.d() + 2 * self.k() + 4
    }
    /// Row p of a per-point table with `w` entries per point.
    #[inline(always)]
    fn row<'t>(&self, v: &'t [f32], p: usize, w: usize) -> &'t [f32] {
        &v[p * w..(p + 1) * w]
    }
    // SAFETY (all methods): offsets are within the scratch sized by `Scratch::new` for this plan
    // and lane count, and each access covers I::LANES consecutive f32.
    #[inline(always)]
    unsafe fn ld(&self, p: *mut f32, o: usize) -> I::F {
        unsafe { I::load(p.add(o * I::LANES)) }
    }
    #[inline(always)]
    unsafe fn sto(&self, p: *mut f32, o: usize, v: I::F) {
        unsafe { I::store(p.add(o * I::LANES), v) }
    }
    #[inline(always)]
    fn x_at(&self, g: usize, j: usize) -> usize {
        g * self.stride() + j
    }
    #[inline(always)]
    fn lp_at(&self, g: usize, y: usize) -> usize {
        g * self.stride() + self.d() + y
    }
    #[inline(always)]
    fn pi_at(&self, g: usize, y: usize) -> usize {
        g * self.stride() + self.d() + self.k() + y
    }
    /// Running integrals of group g: 0 = Rao–Blackwell sum, 1 = its last integrand,
    /// 2 = Girsanov sum, 3 = its last integrand.
    #[inline(always)]
    fn run_at(&self, g: usize, q: usize) -> usize {
        g * self.stride() + self.d() + 2 * self.k() + q
    }
    /// Group g's point record (offsets in [`Ctx::pt_off`]): π_y, u_j = Σ_y π_y ln π_y Δ_{y,j},
    /// Δ_{y,j}, then the per-trajectory values `PT_SCALARS` (the Rao–Blackwell integrand rb, its
    /// running integral R, h(0) − h − R, d/σ² + ∇·s, d/σ² − ‖s‖²), then π_a, π_b of each
    /// partition.
    #[inline(always)]
    fn pt_at(&self, g: usize, q: usize) -> usize {
        let (d, k) = (self.d(), self.k());
        g * (k + d + k * d + PT_SCALARS + 2 * self.plan.parts.len()) + q
    }
    /// Offsets in a point record: (u, Δ, rb, pab) after the K values of π; R, h(0) − h − R,
    /// production and its integration-by-parts form follow rb.
    #[inline(always)]
    fn pt_off(&self) -> (usize, usize, usize, usize) {
        let (d, k) = (self.d(), self.k());
        (k, k + d, k + d + k * d, k + d + k * d + PT_SCALARS)
    }
    #[inline(always)]
    fn trail_at(&self, p: usize, g: usize, q: usize) -> usize {
        (p * self.g_n + g) * (1 + self.k()) + q
    }
    /// 1 for lanes holding a real trajectory, 0 for padding.
    #[inline(always)]
    unsafe fn valid(&self, g: usize) -> I::F {
        unsafe { self.ld(self.mask, g) }
    }
    /// Adds lane sums `v` (already masked) to accumulator q.
    #[inline(always)]
    unsafe fn acc_col(&self, q: usize, v: I::F) {
        unsafe { self.sto(self.acc, q, I::add(self.ld(self.acc, q), v)) }
    }
    /// Adds vmask·v to accumulator q.
    #[inline(always)]
    unsafe fn acc_add(&self, q: usize, vmask: I::F, v: I::F) {
        unsafe { self.sto(self.acc, q, I::fma(vmask, v, self.ld(self.acc, q))) }
    }
    /// Philox words of counter (c0, c1, trajectory lanes of group g).
    #[inline(always)]
    unsafe fn words(&self, g: usize, c0: u32, c1: u32) -> [I::U; 4] {
        let t = self.first + (g * I::LANES) as u64; // < 2^32 − L (checked in `run`)
        unsafe {
            let lo = I::u_add(I::splat_u(t as u32), I::iota_u());
            philox::<I>(
                [I::splat_u(c0), I::splat_u(c1), lo, I::splat_u(0)],
                self.plan.key,
            )
        }
    }
    /// The normals of steps 4·block … 4·block+3 of every element for group g, into the cache
    /// (see `crate::rng` for the counter layout).
    #[inline(always)]
    unsafe fn draw(&self, g: usize, block: u32) {
        unsafe {
            for e in 0..self.d() {
                let w = self.words(g, e as u32, block);
                let (z0, z1) = box_muller::<I>(w[0], w[1]);
                let (z2, z3) = box_muller::<I>(w[2], w[3]);
                for (i, z) in [z0, z1, z2, z3].into_iter().enumerate() {
                    self.sto(self.zc, (g * self.d() + e) * 4 + i, z);
                }
            }
        }
    }
    /// The cached normal of element e at `step` for group g.
    #[inline(always)]
    unsafe fn z(&self, g: usize, e: usize, step: u32) -> I::F {
        unsafe { self.ld(self.zc, (g * self.d() + e) * 4 + (step & 3) as usize) }
    }
    /// Exact mixture at point p: fills tmp.logp, tmp.e, tmp.py; returns (1/Σe, exact entropy).
    #[inline(always)]
    unsafe fn exact_at(&self, tm: &Tmp, g: usize, p: usize) -> (I::F, I::F) {
        let plan = self.plan;
        let (d, kc, k) = (self.d(), self.kc(), self.k());
        let (sm, inv) = (
            self.row(&plan.sm, p, kc * d),
            self.row(&plan.inv, p, kc * d),
        );
        let lognorm = self.row(&plan.lognorm, p, kc);
        let class_of = &plan.class_of[..kc];
        unsafe {
            let zero = I::splat(0.0);
            let mut m = I::splat(f32::NEG_INFINITY);
            for c in 0..kc {
                let mut q = zero;
                for j in 0..d {
                    let diff = I::sub(self.ld(self.st, self.x_at(g, j)), I::splat(sm[c * d + j]));
                    q = I::fma(I::mul(diff, diff), I::splat(inv[c * d + j]), q);
                }
                let lc = I::fma(I::splat(-0.5), q, I::splat(lognorm[c]));
                self.sto(self.tmp, tm.logp + c, lc);
                m = I::max(m, lc);
            }
            let mut s = zero;
            for c in 0..kc {
                let e = exp::<I>(I::sub(self.ld(self.tmp, tm.logp + c), m));
                self.sto(self.tmp, tm.e + c, e);
                s = I::add(s, e);
            }
            let inv_s = I::div(I::splat(1.0), s);
            let ln_s = ln::<I>(s);
            let mut hx = zero;
            if plan.one_per_class {
                for (c, &y) in class_of.iter().enumerate() {
                    let py = I::mul(self.ld(self.tmp, tm.e + c), inv_s);
                    let lpy = I::sub(I::sub(self.ld(self.tmp, tm.logp + c), m), ln_s);
                    self.sto(self.tmp, tm.py + y, py);
                    hx = I::fma(py, lpy, hx);
                }
            } else {
                for y in 0..k {
                    let mut ey = zero;
                    for (c, &yc) in class_of.iter().enumerate() {
                        if yc == y {
                            ey = I::add(ey, self.ld(self.tmp, tm.e + c));
                        }
                    }
                    let py = I::mul(ey, inv_s);
                    self.sto(self.tmp, tm.py + y, py);
                    hx = I::fma(py, I::sub(ln::<I>(ey), ln_s), hx);
                }
            }
            (inv_s, I::sub(zero, hx))
        }
    }
    /// Records the tracked posterior of group g (entropy, partitions) and the exact entropy `hx`
    /// into the accumulators; returns the tracked entropy h.
    #[inline(always)]
    unsafe fn record(&self, g: usize, vmask: I::F, hx: I::F) -> I::F {
        let plan = self.plan;
        let lay = plan.layout;
        unsafe {
            let zero = I::splat(0.0);
            let mut h = zero;
            for y in 0..self.k() {
                h = I::fma(
                    self.ld(self.st, self.pi_at(g, y)),
                    self.ld(self.st, self.lp_at(g, y)),
                    h,
                );
            }
            let h = I::sub(zero, h);
            self.acc_add(Layout::H, vmask, h);
            self.acc_add(Layout::H2, vmask, I::mul(h, h));
            self.acc_add(Layout::HX, vmask, hx);
            self.acc_add(Layout::HX2, vmask, I::mul(hx, hx));
            for (i, pp) in plan.parts.iter().enumerate() {
                let mut pa = zero;
                let mut pb = zero;
                for &c in &pp.a {
                    pa = I::add(pa, self.ld(self.st, self.pi_at(g, c)));
                }
                for &c in &pp.b {
                    pb = I::add(pb, self.ld(self.st, self.pi_at(g, c)));
                }
                let pab_at = self.pt_off().3 + 2 * i;
                self.sto(self.pt, self.pt_at(g, pab_at), pa);
                self.sto(self.pt, self.pt_at(g, pab_at + 1), pb);
                let pab = I::add(pa, pb);
                // ln of a single class's mass is its tracked ln π; a∪b covering all classes has
                // mass 1 (π is normalised).
                // (No closures here: they would be compiled without the ISA's target features.)
                let ln_pa = match pp.a_single {
                    Some(c) => self.ld(self.st, self.lp_at(g, c)),
                    None => ln::<I>(pa),
                };
                let ln_pb = match pp.b_single {
                    Some(c) => self.ld(self.st, self.lp_at(g, c)),
                    None => ln::<I>(pb),
                };
                let ln_pab = if pp.covers_all { zero } else { ln::<I>(pab) };
                // H(Z) = ln P_ab − (P_a ln P_a + P_b ln P_b)/P_ab
                let num = I::fma(pa, ln_pa, I::mul(pb, ln_pb));
                let hz = I::sub(ln_pab, I::div(num, pab));
                let wgt = I::mul(pab, I::splat(pp.inv_mass));
                self.acc_add(lay.part_w(i), vmask, wgt);
                self.acc_add(lay.part_wh(i), vmask, I::mul(wgt, hz));
            }
            h
        }
    }
    /// Advances running integral `q` (0: Rao–Blackwell, 2: Girsanov) of group g to point p with
    /// integrand `v` there; returns the integral.
    #[inline(always)]
    unsafe fn advance(&self, g: usize, q: usize, p: usize, v: I::F) -> I::F {
        let [w0, w1] = self.plan.gw[p];
        unsafe {
            let prev = self.ld(self.st, self.run_at(g, q + 1));
            let run = I::fma(
                I::splat(w0),
                prev,
                I::fma(I::splat(w1), v, self.ld(self.st, self.run_at(g, q))),
            );
            self.sto(self.st, self.run_at(g, q), run);
            self.sto(self.st, self.run_at(g, q + 1), v);
            run
        }
    }
    #[inline(always)]
    unsafe fn zero_acc(&self) {
        unsafe {
            for q in 0..self.plan.layout.width() {
                self.sto(self.acc, q, I::splat(0.0));
            }
        }
    }
}

#[inline(always)]
unsafe fn chunk_kernel<I: Isa, const D: usize, const K: usize, const KC: usize>(
    plan: &MixturePlan,
    scr: &mut Scratch,
    first: u64,
    count: usize,
    sums: &mut InfoSums,
    out: Option<&mut [f32]>,
) -> Result<()> {
    let l = I::LANES;
    debug_assert_eq!(l, scr.lanes);
    let g_n = CHUNK / l;
    let steps = plan.steps;
    let lay = plan.layout;

    let tm = Tmp::new(plan);
    let cx = Ctx::<I, D, K, KC> {
        plan,
        st: scr.state.as_mut_ptr(),
        tmp: scr.tmp.as_mut_ptr(),
        acc: scr.acc.as_mut_ptr(),
        trail: scr.trail.as_mut_ptr(),
        pt: scr.pt.as_mut_ptr(),
        mask: scr.mask.as_mut_ptr(),
        zc: scr.zc.as_mut_ptr(),
        first,
        g_n,
        _isa: std::marker::PhantomData,
    };
    let (d, k, kc) = (cx.d(), cx.k(), cx.kc());
    let (pt_u, pt_dl, pt_rb, pt_pab) = cx.pt_off();
    for (i, m) in scr.mask.iter_mut().enumerate() {
        *m = if i < count { 1.0 } else { 0.0 };
    }
    // SAFETY: see `Ctx`: every offset is inside the scratch sized for this plan and lane count.
    unsafe {
        let zero = I::splat(0.0);
        let one = I::splat(1.0);
        let (st, tmp, trail) = (cx.st, cx.tmp, cx.trail);

        // Initial state x_T: component k by uniform, then s_T m_k + sd_k z.
        for g in 0..g_n {
            let wpick = cx.words(g, u32::MAX, u32::MAX);
            let u = I::mul(I::i_to_f(I::u_shr8(wpick[0])), I::splat(1.0 / 16_777_216.0));
            cx.draw(g, INIT_STEP >> 2);
            for j in 0..d {
                let mut mean = I::splat(plan.init_mean[j]);
                let mut sd = I::splat(plan.init_sd[j]);
                for c in 1..kc {
                    let keep = I::lt(u, I::splat(plan.cum[c - 1]));
                    mean = I::select(keep, mean, I::splat(plan.init_mean[c * d + j]));
                    sd = I::select(keep, sd, I::splat(plan.init_sd[c * d + j]));
                }
                cx.sto(st, cx.x_at(g, j), I::fma(sd, cx.z(g, j, INIT_STEP), mean));
            }
            for y in 0..k {
                cx.sto(st, cx.lp_at(g, y), I::splat(plan.log_prior[y]));
                cx.sto(st, cx.pi_at(g, y), I::splat(plan.prior[y]));
            }
            for q in 0..4 {
                cx.sto(st, cx.run_at(g, q), zero);
            }
        }

        let mut cached_block = None;
        for step in 0..steps {
            cx.zero_acc();
            let [a, c, sd, cs, kl] = plan.coef[step];
            let update = sd > 0.0;
            let block = (step >> 2) as u32;
            let fresh = update && cached_block != Some(block);
            if fresh {
                cached_block = Some(block);
            }
            let (a, c, sdv, cs, nkl) = (
                I::splat(a),
                I::splat(c),
                I::splat(sd),
                I::splat(cs),
                I::splat(-kl),
            );
            for g in 0..g_n {
                let vmask = cx.valid(g);
                let (inv_s, hx) = cx.exact_at(&tm, g, step);
                let h = cx.record(g, vmask, hx);
                // s_k = −(x − s m_k)/Σ_k; s = Σ w_k s_k; Σ_{k∈y} e_k s_k; ∇·s.
                for j in 0..d {
                    cx.sto(tmp, tm.su + j, zero);
                }
                for q in 0..k * d {
                    cx.sto(tmp, tm.sy + q, zero);
                }
                // Entropy production without cancellation (I5, I8):
                // d/σ² + ∇·s = Σ_k w_k (d/σ² − tr Σ_k⁻¹) + Σ_k w_k ‖s_k − s‖².
                let mut prod = zero;
                let (sm, inv) = (
                    cx.row(&plan.sm, step, kc * d),
                    cx.row(&plan.inv, step, kc * d),
                );
                let dtrace = cx.row(&plan.dtrace, step, kc);
                for (cc, &y) in plan.class_of[..kc].iter().enumerate() {
                    let e = cx.ld(tmp, tm.e + cc);
                    let wk = I::mul(e, inv_s);
                    for j in 0..d {
                        let diff = I::sub(cx.ld(st, cx.x_at(g, j)), I::splat(sm[cc * d + j]));
                        let sk = I::mul(I::sub(zero, diff), I::splat(inv[cc * d + j]));
                        cx.sto(tmp, tm.su + j, I::fma(wk, sk, cx.ld(tmp, tm.su + j)));
                        let oy = tm.sy + y * d + j;
                        cx.sto(tmp, oy, I::fma(e, sk, cx.ld(tmp, oy)));
                    }
                    prod = I::fma(wk, I::splat(dtrace[cc]), prod);
                }
                for cc in 0..kc {
                    let wk = I::mul(cx.ld(tmp, tm.e + cc), inv_s);
                    let mut n2 = zero;
                    for j in 0..d {
                        let diff = I::sub(cx.ld(st, cx.x_at(g, j)), I::splat(sm[cc * d + j]));
                        let sk = I::mul(I::sub(zero, diff), I::splat(inv[cc * d + j]));
                        let dk = I::sub(sk, cx.ld(tmp, tm.su + j));
                        n2 = I::fma(dk, dk, n2);
                    }
                    prod = I::fma(wk, n2, prod);
                }
                // Δ_y = (Σ_{k∈y} e_k s_k)·(1/Σe)/p_y − s and ‖Δ_y‖². (A class with several
                // components whose every e_k is floored at e^−86 gets the unweighted mean of its
                // component scores; its posterior is below e^−86, so no estimate sees it.)
                let mut rb = zero;
                for y in 0..k {
                    let norm = I::div(inv_s, cx.ld(tmp, tm.py + y));
                    let mut d2 = zero;
                    for j in 0..d {
                        let oy = tm.sy + y * d + j;
                        let dy = I::sub(I::mul(cx.ld(tmp, oy), norm), cx.ld(tmp, tm.su + j));
                        cx.sto(tmp, oy, dy);
                        cx.sto(cx.pt, cx.pt_at(g, pt_dl + y * d + j), dy);
                        d2 = I::fma(dy, dy, d2);
                    }
                    cx.sto(tmp, tm.d2 + y, d2);
                    rb = I::fma(cx.ld(st, cx.pi_at(g, y)), d2, rb);
                    cx.sto(trail, cx.trail_at(step, g, 1 + y), d2);
                }
                cx.sto(trail, cx.trail_at(step, g, 0), h);
                let run = cx.advance(g, 0, step, rb);
                // h_i(0) − h_i(t) − R_i(t), the paired difference of ΔH and its integral.
                let h0 = cx.ld(trail, cx.trail_at(0, g, 0));
                let dr = I::sub(I::sub(h0, h), run);
                // Integration by parts: d/σ² − ‖s‖²; the gap to `prod` is ∇·s + ‖s‖².
                let mut s2 = zero;
                for j in 0..d {
                    let su = cx.ld(tmp, tm.su + j);
                    s2 = I::fma(su, su, s2);
                }
                let ibp = I::sub(I::splat(plan.d_over_s2[step]), s2);
                for (q, v) in [run, dr, prod, ibp].into_iter().enumerate() {
                    cx.sto(cx.pt, cx.pt_at(g, pt_rb + 1 + q), v);
                }
                // Their sums, and the decision and class rates, run in a second pass over the
                // groups (below), from this point record: π, u = Σ_y π_y ln π_y Δ_y, rb (Δ
                // stored above), R, h(0) − h − R, the production in both forms.
                for y in 0..k {
                    cx.sto(cx.pt, cx.pt_at(g, y), cx.ld(st, cx.pi_at(g, y)));
                }
                for j in 0..d {
                    let mut u = zero;
                    for y in 0..k {
                        let w = I::mul(cx.ld(st, cx.pi_at(g, y)), cx.ld(st, cx.lp_at(g, y)));
                        u = I::fma(w, cx.ld(tmp, tm.sy + y * d + j), u);
                    }
                    cx.sto(cx.pt, cx.pt_at(g, pt_u + j), u);
                }
                cx.sto(cx.pt, cx.pt_at(g, pt_rb), rb);

                // x' = a x + c s + √var z
                if fresh {
                    cx.draw(g, block);
                }
                let mut finite = true;
                for j in 0..d {
                    let x = cx.ld(st, cx.x_at(g, j));
                    let su = cx.ld(tmp, tm.su + j);
                    let z = if update {
                        cx.z(g, j, step as u32)
                    } else {
                        zero
                    };
                    let xn = I::fma(a, x, I::fma(c, su, I::mul(sdv, z)));
                    finite &= I::all_finite(xn);
                    cx.sto(st, cx.x_at(g, j), xn);
                }
                if !finite {
                    return Err(Error::NonFinite {
                        op: "mixture_trajectory",
                        step,
                        t: plan.times[step + 1],
                        what: format!(
                            "state in trajectories {}..{}",
                            first + (g * l) as u64,
                            first + ((g + 1) * l) as u64
                        ),
                    });
                }
                // Online classifier: ln π_y += (c/√var) z·Δ_y − c²‖Δ_y‖²/(2 var), then log-sum-exp.
                if update {
                    let mut m = I::splat(f32::NEG_INFINITY);
                    for y in 0..k {
                        let mut dot = zero;
                        for j in 0..d {
                            dot =
                                I::fma(cx.z(g, j, step as u32), cx.ld(tmp, tm.sy + y * d + j), dot);
                        }
                        let inc = I::fma(cs, dot, I::mul(nkl, cx.ld(tmp, tm.d2 + y)));
                        let lp = I::add(cx.ld(st, cx.lp_at(g, y)), inc);
                        cx.sto(st, cx.lp_at(g, y), lp);
                        m = I::max(m, lp);
                    }
                    let mut s = zero;
                    for y in 0..k {
                        let e = exp::<I>(I::sub(cx.ld(st, cx.lp_at(g, y)), m));
                        cx.sto(st, cx.pi_at(g, y), e);
                        s = I::add(s, e);
                    }
                    let shift = I::add(m, ln::<I>(s));
                    let inv = I::div(one, s);
                    for y in 0..k {
                        cx.sto(st, cx.lp_at(g, y), I::sub(cx.ld(st, cx.lp_at(g, y)), shift));
                        cx.sto(st, cx.pi_at(g, y), I::mul(cx.ld(st, cx.pi_at(g, y)), inv));
                    }
                }
            }
            // Pass B, from every group's point record: the Rao–Blackwell, production and paired
            // sums and the decision and class rates (kept out of the main loop, whose registers
            // they would crowd), each column summed over the groups in registers and added to
            // its accumulator once.
            let rec_w = cx.pt_at(1, 0);
            let pgs = |g: usize| cx.pt.add(g * rec_w * l);
            // Σ rb, Σ R, Σ R², Σ (h(0) − h − R)², Σ prod, Σ prod², Σ ibp, Σ ibp², Σ (prod − ibp)².
            {
                let mut s = [zero; 9];
                for g in 0..g_n {
                    let (pg, vm) = (pgs(g), cx.valid(g));
                    let rb = cx.ld(pg, pt_rb);
                    let run = cx.ld(pg, pt_rb + 1);
                    let dr = cx.ld(pg, pt_rb + 2);
                    let prod = cx.ld(pg, pt_rb + 3);
                    let ibp = cx.ld(pg, pt_rb + 4);
                    let gap = I::sub(prod, ibp);
                    for (q, v) in [rb, run, prod, ibp].into_iter().enumerate() {
                        s[q] = I::fma(vm, v, s[q]);
                    }
                    for (q, v) in [run, dr, prod, ibp, gap].into_iter().enumerate() {
                        s[4 + q] = I::fma(vm, I::mul(v, v), s[4 + q]);
                    }
                }
                let cols = [
                    Layout::RB,
                    Layout::RBC,
                    Layout::PROD,
                    Layout::IBP,
                    Layout::RBC2,
                    Layout::RBD2,
                    Layout::PROD2,
                    Layout::IBP2,
                    Layout::IBPD2,
                ];
                for (q, v) in cols.into_iter().zip(s) {
                    cx.acc_col(q, v);
                }
            }
            // Per-class rates: π_k (rb + 2 Δ_k·u).
            for y in 0..k {
                let (mut s1, mut s2) = (zero, zero);
                for g in 0..g_n {
                    let pg = pgs(g);
                    let mut cross = zero;
                    for j in 0..d {
                        cross = I::fma(cx.ld(pg, pt_dl + y * d + j), cx.ld(pg, pt_u + j), cross);
                    }
                    let v = I::mul(cx.ld(pg, y), I::fma(I::splat(2.0), cross, cx.ld(pg, pt_rb)));
                    let vm = I::mul(cx.valid(g), v);
                    s1 = I::add(s1, vm);
                    s2 = I::fma(vm, v, s2);
                }
                cx.acc_col(lay.class_rate(y), s1);
                cx.acc_col(lay.class_rate2(y), s2);
            }
            // Decision problems: (π_a π_b/(π_ab P(a∪b))) ‖s(x|a) − s(x|b)‖², with
            // s(x|a) − s(x|b) = A/π_a − B/π_b, A = Σ_{y∈a} π_y Δ_y, B = Σ_{y∈b} π_y Δ_y:
            // = ‖π_b A − π_a B‖²/(π_a π_b π_ab P(a∪b)), one division (0 where the denominator
            // underflows to 0); π_a and π_b as `record` summed them.
            for (i, pp) in plan.parts.iter().enumerate() {
                let (mut s1, mut s2) = (zero, zero);
                for g in 0..g_n {
                    let pg = pgs(g);
                    let pa = cx.ld(pg, pt_pab + 2 * i);
                    let pb = cx.ld(pg, pt_pab + 2 * i + 1);
                    let mut n2 = zero;
                    for j in 0..d {
                        let (mut va, mut vb) = (zero, zero);
                        for &c in &pp.a {
                            va = I::fma(cx.ld(pg, c), cx.ld(pg, pt_dl + c * d + j), va);
                        }
                        for &c in &pp.b {
                            vb = I::fma(cx.ld(pg, c), cx.ld(pg, pt_dl + c * d + j), vb);
                        }
                        let diff = I::sub(I::mul(pb, va), I::mul(pa, vb));
                        n2 = I::fma(diff, diff, n2);
                    }
                    let papb = I::mul(pa, pb);
                    let den = I::mul(papb, I::add(pa, pb));
                    let v = I::mul(I::div(n2, den), I::splat(pp.inv_mass));
                    let v = I::select(I::lt(zero, den), v, zero);
                    let vm = I::mul(cx.valid(g), v);
                    s1 = I::add(s1, vm);
                    s2 = I::fma(vm, v, s2);
                }
                cx.acc_col(lay.part_rate(i), s1);
                cx.acc_col(lay.part_rate2(i), s2);
            }
            reduce_lanes(&scr.acc, l, &plan.step_cols, sums.row_mut(step));
            // Every real trajectory of the chunk counts once in each count column.
            let row = sums.row_mut(step);
            for q in [Layout::N, Layout::HXN, Layout::RBN, Layout::PRODN] {
                row[q] += count as f64;
            }
        }

        // The data end: exact posterior (variance floored) and tracked posterior.
        cx.zero_acc();
        for g in 0..g_n {
            let vmask = cx.valid(g);
            let (_, hx) = cx.exact_at(&tm, g, steps);
            let h = cx.record(g, vmask, hx);
            let run = cx.advance(g, 0, steps, zero);
            cx.acc_add(Layout::RBC, vmask, run);
            cx.acc_add(Layout::RBC2, vmask, I::mul(run, run));
            let h0 = cx.ld(trail, cx.trail_at(0, g, 0));
            let dr = I::sub(I::sub(h0, h), run);
            cx.acc_add(Layout::RBD2, vmask, I::mul(dr, dr));
            cx.sto(trail, cx.trail_at(steps, g, 0), h);
            for y in 0..k {
                cx.sto(trail, cx.trail_at(steps, g, 1 + y), zero);
            }
        }
        reduce_lanes(&scr.acc, l, &plan.step_cols, sums.row_mut(steps));
        let row = sums.row_mut(steps);
        for q in [Layout::N, Layout::HXN] {
            row[q] += count as f64;
        }
        // Every point weighted by the final posterior: Σ_y π_y^final ‖Δ_y‖², π_k^final, π_k^final·h.
        for p in 0..=steps {
            cx.zero_acc();
            for g in 0..g_n {
                let vmask = cx.valid(g);
                let h = cx.ld(trail, cx.trail_at(p, g, 0));
                let mut gir = zero;
                for y in 0..k {
                    let pif = I::mul(vmask, cx.ld(st, cx.pi_at(g, y)));
                    gir = I::fma(pif, cx.ld(trail, cx.trail_at(p, g, 1 + y)), gir);
                    cx.sto(
                        cx.acc,
                        lay.class_w(y),
                        I::add(cx.ld(cx.acc, lay.class_w(y)), pif),
                    );
                    cx.sto(
                        cx.acc,
                        lay.class_wh(y),
                        I::fma(pif, h, cx.ld(cx.acc, lay.class_wh(y))),
                    );
                }
                cx.sto(cx.acc, Layout::GIR, I::add(cx.ld(cx.acc, Layout::GIR), gir));
                let run = cx.advance(g, 2, p, gir);
                cx.acc_add(Layout::GIRC2, vmask, I::mul(run, run));
                // h_i + G_i: H(Y) − h_i − G_i is the paired difference of the two MI estimates.
                let hg = I::add(h, run);
                cx.acc_add(Layout::HG2, vmask, I::mul(hg, hg));
            }
            reduce_lanes(&scr.acc, l, &plan.final_cols, sums.row_mut(p));
        }

        if let Some(out) = out {
            let mut lanes = [0.0f32; 16];
            for g in 0..g_n {
                for j in 0..d {
                    I::store(lanes.as_mut_ptr(), cx.ld(st, cx.x_at(g, j)));
                    for (i, v) in lanes.iter().enumerate().take(l) {
                        if g * l + i < count {
                            out[(g * l + i) * d + j] = *v;
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
