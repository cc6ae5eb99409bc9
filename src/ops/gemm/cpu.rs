//! Single-precision GEMM: C ← A·B (+ C when accumulating), A (M, K), B (K, N), C (M, N), each
//! addressed by row and column strides (so transposed operands cost nothing).
//!
//! GotoBLAS structure: B is packed once per K-block into NR-column panels, each task packs its
//! MC-row block of A into MR-row panels, and a register-blocked micro-kernel computes an MR × NR
//! tile of C with MR·NR/LANES accumulators (AVX-512: 14 × 32 in 28 zmm registers; AVX2+FMA:
//! 6 × 16 in 12 ymm; scalar: 4 × 2). One generic body serves every ISA; tasks (blocks of C) run
//! on rayon's pool. Its slow twin is [`super::reference::gemm`] (f64 accumulation).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::simd::isa::{Isa, IsaKind};

/// A matrix operand: element (i, j) is at `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major (rows, cols) matrix.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    /// Largest index touched + 1 (0 for an empty matrix).
    fn extent(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs + 1
        }
    }
}

/// AVX-512 register tiles: MR512 (or MR512_SHORT) rows × NV512 vectors of 16 lanes, 28 (or 24)
/// accumulators. The 12-row tile serves row counts that 14 divides badly (128: 140 rows computed
/// with 14, 132 with 12).
const MR512: usize = 14;
const MR512_SHORT: usize = 12;
const NV512: usize = 2;

/// Register tile and cache blocks of one ISA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub mr: usize,
    pub nr: usize,
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

/// The blocking used for `kind` and M rows: KC·NR·4 bytes of B panel and MR·KC·4 of A panel stay in L1,
/// the MC × KC block of A in L2, the KC × NC block of packed B (4 MiB) in L3. A task packs its
/// block of A once and sweeps all NC columns with it; `sgemm` narrows NC only when there are too
/// few row blocks to keep every core busy.
pub fn blocking(kind: IsaKind, m: usize) -> Blocking {
    match kind {
        IsaKind::Avx512 => {
            // the short tile when it computes ≥ 2% fewer padded rows
            let short = m.div_ceil(MR512_SHORT) * MR512_SHORT * 50 < m.div_ceil(MR512) * MR512 * 49;
            let mr = if short { MR512_SHORT } else { MR512 };
            Blocking {
                mr,
                nr: NV512 * 16,
                kc: 256,
                // ≈ 264 rows (A block ≈ 270 KiB of the 1 MiB L2): 256 channels are one block
                mc: mr * 264usize.div_ceil(mr),
                nc: 4096,
            }
        }
        IsaKind::Avx2Fma => Blocking {
            mr: 6,
            nr: 16,
            kc: 256,
            mc: 144,
            nc: 4096,
        },
        IsaKind::Scalar => Blocking {
            mr: 4,
            nr: 2,
            kc: 256,
            mc: 128,
            nc: 4096,
        },
    }
}

/// C ← A·B, or C ← C + A·B when `accumulate`, with C row-major (M, N) of row stride `ldc`.
///
/// ```
/// use infodiff::ops::gemm::{sgemm, MatRef};
/// let a = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // (2, 3)
/// let b = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0]; // (3, 2)
/// let mut c = [0.0f32; 4];
/// sgemm(infodiff::simd::detected(), MatRef::row_major(&a, 2, 3), MatRef::row_major(&b, 3, 2), &mut c, 2, false).unwrap();
/// assert_eq!(c, [4.0, 5.0, 10.0, 11.0]);
/// ```
pub fn sgemm(
    kind: IsaKind,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    sgemm_with(kind, a, &b, c, ldc, accumulate)
}

/// A B operand of the GEMM: anything that can pack its (kc, NR) panels. Stored matrices
/// ([`MatRef`]), the implicit im2col matrix of a convolution ([`Im2col`]) and its transpose
/// over a run of images ([`Im2colT`], for the weight gradient) are the kinds.
pub trait BOperand: Sync {
    /// (K, N).
    fn dims(&self) -> (usize, usize);
    /// Checks the operand's storage against its dimensions.
    fn check(&self) -> Result<()>;
    /// Packs B[pc..pc+kc, j0..j0+nr] as (kc, nr), zero-padding columns past N.
    fn pack(&self, pc: usize, kc: usize, j0: usize, nr: usize, panel: &mut [f32]);
}

impl BOperand for MatRef<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }
    fn check(&self) -> Result<()> {
        if self.data.len() < self.extent() {
            return Err(Error::shape(
                "sgemm: B operand storage",
                self.extent(),
                self.data.len(),
            ));
        }
        Ok(())
    }
    fn pack(&self, pc: usize, kc: usize, j0: usize, nr: usize, panel: &mut [f32]) {
        pack_b(*self, pc, kc, j0, nr, panel)
    }
}

/// The im2col matrix of one image, never stored: row (ci, i, j), column (oy, ox) holds
/// x[ci, oy·s + i − pad_top, ox·s + j − pad_left] (0 outside), so conv2d is W (O, C·kh·kw) ·
/// Im2col (C·kh·kw, Ho·Wo) and the GEMM reads the image straight into its packed panels.
#[derive(Clone, Copy, Debug)]
pub struct Im2col<'a> {
    /// One image, (C, H, W).
    pub x: &'a [f32],
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ho: usize,
    pub wo: usize,
}

impl BOperand for Im2col<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.c * self.kh * self.kw, self.ho * self.wo)
    }
    fn check(&self) -> Result<()> {
        if self.x.len() != self.c * self.h * self.w || self.stride == 0 {
            return Err(Error::shape(
                "sgemm: im2col image (C, H, W), stride ≥ 1",
                (self.c * self.h * self.w, 1),
                (self.x.len(), self.stride),
            ));
        }
        Ok(())
    }
    fn pack(&self, pc: usize, kc: usize, j0: usize, nr: usize, panel: &mut [f32]) {
        im2col_pack(crate::simd::detected(), self, pc, kc, j0, nr, panel)
    }
}

crate::isa_dispatch! {
    /// [`Im2col`]'s panel packing, compiled for each ISA (its row copies use full vectors).
    fn im2col_pack(op: &Im2col<'_>, pc: usize, kc: usize, j0: usize, nr: usize, panel: &mut [f32]) -> () => im2col_pack_generic
}

#[inline(always)]
unsafe fn im2col_pack_generic<I: Isa>(
    op: &Im2col<'_>,
    pc: usize,
    kc: usize,
    j0: usize,
    nr: usize,
    panel: &mut [f32],
) {
    {
        let this = op;
        let n = this.ho * this.wo;
        let end = (j0 + nr).min(n);
        // The panel's columns as runs along one output row: (oy, ox0, ox1), at most nr ≤ 32
        // of them (every `blocking` has nr ≤ 32).
        let mut runs = [(0usize, 0usize, 0usize); 32];
        let mut nruns = 0;
        let mut q = j0;
        while q < end {
            let (oy, ox0) = (q / this.wo, q % this.wo);
            let ox1 = this.wo.min(ox0 + end - q);
            runs[nruns] = (oy, ox0, ox1);
            nruns += 1;
            q += ox1 - ox0;
        }
        let (s, w, pl) = (this.stride, this.w, this.pad_left);
        let hw = this.h * w;
        // (ci, i, j) of row pc, then stepped along without divisions.
        let (mut ci, mut i, mut j) = (
            pc / (this.kh * this.kw),
            (pc / this.kw) % this.kh,
            pc % this.kw,
        );
        for p in 0..kc {
            let row = &mut panel[p * nr..(p + 1) * nr];
            let xc = &this.x[ci * hw..(ci + 1) * hw];
            // Valid ox (0 ≤ ox·s + j − pl < w) form one range lo_all..hi_all for this j.
            let (lo_all, hi_all) = if s == 1 {
                (pl.saturating_sub(j), (w + pl).saturating_sub(j)) // no division in the common case
            } else {
                let hi = if w + pl > j {
                    (w + pl - j - 1) / s + 1
                } else {
                    0
                };
                (pl.saturating_sub(j).div_ceil(s), hi)
            };
            let mut at = 0;
            for &(oy, ox0, ox1) in &runs[..nruns] {
                let out = &mut row[at..at + (ox1 - ox0)];
                at += ox1 - ox0;
                let iy = (oy * s + i) as isize - this.pad_top as isize;
                if iy < 0 || iy >= this.h as isize {
                    zero_short::<I>(out);
                    continue;
                }
                let xr = &xc[iy as usize * w..(iy as usize + 1) * w];
                let lo = lo_all.clamp(ox0, ox1);
                let hi = hi_all.clamp(lo, ox1);
                if lo > ox0 || hi < ox1 {
                    zero_short::<I>(out); // padding columns; the valid ones are written below
                }
                if hi == lo {
                    continue;
                }
                let x0 = lo * s + j - pl;
                let valid = &mut out[lo - ox0..hi - ox0];
                if s == 1 {
                    copy_short::<I>(valid, &xr[x0..x0 + (hi - lo)]);
                } else {
                    for (k, v) in valid.iter_mut().enumerate() {
                        *v = xr[x0 + k * s];
                    }
                }
            }
            row[at..].fill(0.0);
            j += 1;
            if j == this.kw {
                j = 0;
                i += 1;
                if i == this.kh {
                    i = 0;
                    ci += 1;
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for short slices, a vector at a time, the last vector
/// overlapping the one before (a library memmove call costs more than moving 32 floats).
#[inline(always)]
fn copy_short<I: Isa>(dst: &mut [f32], src: &[f32]) {
    let len = dst.len().min(src.len());
    if len < I::LANES {
        dst[..len].copy_from_slice(&src[..len]);
        return;
    }
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    // SAFETY: every vector lies in 0..len, within both slices.
    unsafe {
        for q in (0..len - I::LANES).step_by(I::LANES) {
            I::store(d.add(q), I::load(s.add(q)));
        }
        I::store(d.add(len - I::LANES), I::load(s.add(len - I::LANES)));
    }
}

/// `dst.fill(0.0)` for short slices, as [`copy_short`].
#[inline(always)]
fn zero_short<I: Isa>(dst: &mut [f32]) {
    let len = dst.len();
    if len < I::LANES {
        dst.fill(0.0);
        return;
    }
    let d = dst.as_mut_ptr();
    // SAFETY: every vector lies in 0..len.
    unsafe {
        let z = I::splat(0.0);
        for q in (0..len - I::LANES).step_by(I::LANES) {
            I::store(d.add(q), z);
        }
        I::store(d.add(len - I::LANES), z);
    }
}

/// The transposed im2col matrix of a run of images, never stored: row (b, oy, ox), column
/// (ci, i, j) holds x[b, ci, oy·s + i − pad_top, ox·s + j − pad_left] (0 outside), so the
/// weight gradient of conv2d is dW (O, C·kh·kw) += dY (O, B·Ho·Wo) · Im2colT (B·Ho·Wo, C·kh·kw),
/// summed over the images and positions in row order.
#[derive(Clone, Copy, Debug)]
pub struct Im2colT<'a> {
    /// `images` images, (images, C, H, W).
    pub x: &'a [f32],
    pub images: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad_top: usize,
    pub pad_left: usize,
    pub ho: usize,
    pub wo: usize,
}

impl BOperand for Im2colT<'_> {
    fn dims(&self) -> (usize, usize) {
        (self.images * self.ho * self.wo, self.c * self.kh * self.kw)
    }
    fn check(&self) -> Result<()> {
        if self.x.len() != self.images * self.c * self.h * self.w || self.stride == 0 {
            return Err(Error::shape(
                "sgemm: transposed im2col images (B, C, H, W), stride ≥ 1",
                (self.images * self.c * self.h * self.w, 1),
                (self.x.len(), self.stride),
            ));
        }
        Ok(())
    }
    fn pack(&self, pc: usize, kc: usize, j0: usize, nr: usize, panel: &mut [f32]) {
        // At most 32 columns at a time (every `blocking` has nr ≤ 32; a wider one goes round).
        for c0 in (0..nr).step_by(32) {
            im2colt_pack(self, pc, kc, j0 + c0, c0, 32.min(nr - c0), nr, panel);
        }
    }
}

/// Packs columns j0..j0+cw of [`Im2colT`]'s rows pc..pc+kc into panel columns c0..c0+cw (row
/// stride nr): each panel row gathers the (ci, i, j) taps of one output position, by offsets
/// worked out once per call for positions whose whole window lies in the image, and checked one
/// by one on the border.
#[allow(clippy::too_many_arguments)]
fn im2colt_pack(
    op: &Im2colT<'_>,
    pc: usize,
    kc: usize,
    j0: usize,
    c0: usize,
    cw: usize,
    nr: usize,
    panel: &mut [f32],
) {
    let (h, w, s) = (op.h, op.w, op.stride);
    let (hw, chw, hwo) = (h * w, op.c * h * w, op.ho * op.wo);
    let kk = op.kh * op.kw;
    let cols = cw.min((op.c * kk).saturating_sub(j0));
    // Per column: tap (i, j) and its offset from the window's corner pixel.
    let mut tap = [(0usize, 0usize); 32];
    let mut off = [0usize; 32];
    for (jj, (t, o)) in tap.iter_mut().zip(off.iter_mut()).take(cols).enumerate() {
        let r = j0 + jj;
        let (ci, i, j) = (r / kk, (r / op.kw) % op.kh, r % op.kw);
        *t = (i, j);
        *o = ci * hw + i * w + j;
    }
    if hwo == 0 {
        return;
    }
    // (image, oy, ox) of row pc, then stepped along without divisions.
    let (mut img, mut oy, mut ox) = (pc / hwo, (pc % hwo) / op.wo, pc % op.wo);
    for p in 0..kc {
        let row = &mut panel[p * nr + c0..p * nr + c0 + cw];
        let xi = &op.x[img * chw..(img + 1) * chw];
        // The window's corner pixel, (iy0, ix0), may lie in the padding.
        let iy0 = (oy * s) as isize - op.pad_top as isize;
        let ix0 = (ox * s) as isize - op.pad_left as isize;
        if iy0 >= 0 && iy0 as usize + op.kh <= h && ix0 >= 0 && ix0 as usize + op.kw <= w {
            let corner = &xi[iy0 as usize * w + ix0 as usize..];
            for (v, o) in row[..cols].iter_mut().zip(&off[..cols]) {
                *v = corner[*o];
            }
        } else {
            for (jj, v) in row[..cols].iter_mut().enumerate() {
                let (i, j) = tap[jj];
                let (iy, ix) = (iy0 + i as isize, ix0 + j as isize);
                *v = if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                    // the channel's offset plus the pixel's (off holds ci·hw + i·w + j)
                    xi[off[jj] - i * w - j + iy as usize * w + ix as usize]
                } else {
                    0.0
                };
            }
        }
        row[cols..].fill(0.0);
        ox += 1;
        if ox == op.wo {
            ox = 0;
            oy += 1;
            if oy == op.ho {
                oy = 0;
                img += 1;
            }
        }
    }
}

/// A matrix packed once into the GEMM's A panels, for reuse across many products with the
/// same left operand (a layer's weights against every image of a batch).
#[derive(Clone, Debug)]
pub struct PackedA {
    kind: IsaKind,
    bl: Blocking,
    m: usize,
    k: usize,
    /// Block (ib, kb) (MC rows × KC columns) at `(ib · kblocks + kb) · block_len`, laid out as
    /// `pack_a` writes it.
    data: Vec<f32>,
    block_len: usize,
}

impl PackedA {
    /// Packs `a` (M, K) for GEMMs run with `kind` (or the scalar kernel if `kind` is absent).
    pub fn new(kind: IsaKind, a: MatRef<'_>) -> Result<PackedA> {
        if a.data.len() < a.extent() {
            return Err(Error::shape(
                "sgemm: A operand storage",
                a.extent(),
                a.data.len(),
            ));
        }
        let kind = if kind.available() {
            kind
        } else {
            IsaKind::Scalar
        };
        let bl = blocking(kind, a.rows);
        let block_len = bl.mc.div_ceil(bl.mr) * bl.mr * bl.kc;
        let (mb, kb) = (a.rows.div_ceil(bl.mc), a.cols.div_ceil(bl.kc));
        let mut data = vec![0.0f32; mb * kb * block_len];
        data.par_chunks_mut(block_len.max(1))
            .enumerate()
            .for_each(|(blk, out)| {
                let (i0, pc) = ((blk / kb) * bl.mc, (blk % kb) * bl.kc);
                let (mc, kc) = (bl.mc.min(a.rows - i0), bl.kc.min(a.cols - pc));
                pack_a(a, i0, mc, pc, kc, bl.mr, out);
            });
        Ok(PackedA {
            kind,
            bl,
            m: a.rows,
            k: a.cols,
            data,
            block_len,
        })
    }

    /// (M, K).
    pub fn dims(&self) -> (usize, usize) {
        (self.m, self.k)
    }

    /// The ISA the panels were packed for (the one their products run with).
    pub fn kind(&self) -> IsaKind {
        self.kind
    }
}

/// The A operand of one product: packed per task, or packed beforehand.
#[derive(Clone, Copy)]
enum AOp<'a> {
    Mat(MatRef<'a>),
    Packed(&'a PackedA),
}

/// [`sgemm`] with any [`BOperand`] as B.
pub fn sgemm_with<B: BOperand>(
    kind: IsaKind,
    a: MatRef<'_>,
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) -> Result<()> {
    if a.data.len() < a.extent() {
        return Err(Error::shape(
            "sgemm: A operand storage",
            a.extent(),
            a.data.len(),
        ));
    }
    gemm(
        kind,
        AOp::Mat(a),
        (a.rows, a.cols),
        b,
        c,
        ldc,
        accumulate,
        None,
    )
}

/// [`sgemm`] with A packed beforehand ([`PackedA`]) and any [`BOperand`] as B; runs with the ISA
/// that A was packed for. `tasks` is how many parallel tasks to cut C into (None: twice the
/// thread pool; a caller that already runs many products side by side, one per image, asks for
/// fewer).
pub fn sgemm_packed<B: BOperand>(
    a: &PackedA,
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    tasks: Option<usize>,
) -> Result<()> {
    gemm(
        a.kind,
        AOp::Packed(a),
        a.dims(),
        b,
        c,
        ldc,
        accumulate,
        tasks,
    )
}

#[allow(clippy::too_many_arguments)]
fn gemm<B: BOperand>(
    kind: IsaKind,
    a: AOp<'_>,
    (m, k): (usize, usize),
    b: &B,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    tasks: Option<usize>,
) -> Result<()> {
    let (bk, n) = b.dims();
    if bk != k {
        return Err(Error::shape(
            "sgemm: A (M, K) · B (K, N)",
            (m, k, k, n),
            (m, k, bk, n),
        ));
    }
    b.check()?;
    let c_extent =
        (m > 0 && n > 0).then(|| (m - 1).checked_mul(ldc).and_then(|r| r.checked_add(n)));
    if let Some(extent) = c_extent
        && (ldc < n || extent.is_none_or(|e| c.len() < e))
    {
        return Err(Error::shape(
            "sgemm: C (M, N) with row stride ldc",
            (m, n, ldc),
            c.len(),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return Ok(());
    }
    let kind = if kind.available() {
        kind
    } else {
        IsaKind::Scalar
    };
    let bl = match a {
        AOp::Packed(p) => p.bl,
        AOp::Mat(_) => blocking(kind, m),
    };
    // C as a pointer shared by tasks that write disjoint tiles.
    let cptr = SendPtr(c.as_mut_ptr());
    // Tasks: (MC rows) × (NC columns) blocks of C, enough for every thread twice over (or as
    // asked); columns are split only when rows alone fall short.
    let target = tasks.unwrap_or(2 * rayon::current_num_threads()).max(1);
    let mb = m.div_ceil(bl.mc);
    let col_split = target.div_ceil(mb);
    let ncb = bl.nc.min(n.div_ceil(col_split).div_ceil(bl.nr) * bl.nr);
    let nb = n.div_ceil(ncb);
    let kb = k.div_ceil(bl.kc);
    if mb == 1 {
        // One row block (M ≤ MC): each task owns its tile of C through every K block and packs
        // its own B panels, so the product is one parallel region with no barrier per K block
        // (small GEMMs are otherwise dominated by synchronisation). Too few column blocks (a
        // narrow C) are made up for by splitting rows, at whole MR tiles.
        let row_split = target.div_ceil(nb).min(m.div_ceil(bl.mr));
        let rows_per = m.div_ceil(row_split).div_ceil(bl.mr) * bl.mr;
        let rb = m.div_ceil(rows_per);
        (0..rb * nb).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(sa, sb): &mut (Vec<f32>, Vec<f32>), task| {
                let (ri, jb) = (task / nb, task % nb);
                let (i0, mc) = (ri * rows_per, rows_per.min(m - ri * rows_per));
                let (j0, nc) = (jb * ncb, ncb.min(n - jb * ncb));
                let panels = nc.div_ceil(bl.nr);
                for pc in (0..k).step_by(bl.kc) {
                    let kc = bl.kc.min(k - pc);
                    sb.resize(bl.kc * panels * bl.nr, 0.0);
                    for (jp, panel) in sb.chunks_mut(kc * bl.nr).take(panels).enumerate() {
                        b.pack(pc, kc, j0 + jp * bl.nr, bl.nr, panel);
                    }
                    let apack = a_block(a, &bl, kb, 0, i0, mc, pc, kc, sa);
                    // SAFETY: tasks write disjoint tiles (i0.., j0..) of C, whose extent was
                    // checked above; the panels are sized for them.
                    unsafe {
                        macro_kernel(
                            kind,
                            bl.mr,
                            apack,
                            sb,
                            cptr.get(),
                            ldc,
                            i0,
                            mc,
                            j0,
                            nc,
                            kc,
                            pc == 0 && !accumulate,
                        );
                    }
                }
            },
        );
        return Ok(());
    }
    let mut bpack = crate::backend::pool::Pooled::zeroed(bl.kc * n.div_ceil(bl.nr) * bl.nr);
    for pc in (0..k).step_by(bl.kc) {
        let kc = bl.kc.min(k - pc);
        // Pack B[pc..pc+kc, :] into NR-column panels, (N/NR, kc, NR), in parallel.
        bpack.0[..kc * n.div_ceil(bl.nr) * bl.nr]
            .par_chunks_mut(kc * bl.nr)
            .enumerate()
            .for_each(|(jp, panel)| b.pack(pc, kc, jp * bl.nr, bl.nr, panel));
        let first = pc == 0 && !accumulate;
        let bpack = &bpack.0;
        (0..mb * nb)
            .into_par_iter()
            .for_each_init(Vec::new, |scratch: &mut Vec<f32>, task| {
                let (ib, jb) = (task / nb, task % nb);
                let (i0, j0) = (ib * bl.mc, jb * ncb);
                let (mc, nc) = (bl.mc.min(m - i0), ncb.min(n - j0));
                let apack = a_block(a, &bl, kb, ib, 0, mc, pc, kc, scratch);
                // SAFETY: tasks write disjoint (rows i0..i0+mc, cols j0..j0+nc) tiles of C, whose
                // extent was checked above; bpack/apack hold the packed panels sized for them.
                unsafe {
                    macro_kernel(
                        kind,
                        bl.mr,
                        apack,
                        &bpack[(j0 / bl.nr) * kc * bl.nr..],
                        cptr.get(),
                        ldc,
                        i0,
                        mc,
                        j0,
                        nc,
                        kc,
                        first,
                    );
                }
            });
    }
    Ok(())
}

/// The packed A panels of rows `ib`·MC + `i_off` .. + mc (`i_off` a multiple of MR) and the K
/// block at `pc` (kc columns): packed into `scratch` now, or found in the panels packed before.
#[allow(clippy::too_many_arguments)]
fn a_block<'r>(
    a: AOp<'r>,
    bl: &Blocking,
    kb: usize,
    ib: usize,
    i_off: usize,
    mc: usize,
    pc: usize,
    kc: usize,
    scratch: &'r mut Vec<f32>,
) -> &'r [f32] {
    match a {
        AOp::Mat(a) => {
            scratch.resize(bl.mc.div_ceil(bl.mr) * bl.mr * bl.kc, 0.0);
            pack_a(a, ib * bl.mc + i_off, mc, pc, kc, bl.mr, scratch);
            scratch
        }
        AOp::Packed(p) => {
            let blk = ib * kb + pc / bl.kc;
            &p.data[blk * p.block_len + (i_off / bl.mr) * kc * bl.mr..]
                [..mc.div_ceil(bl.mr) * kc * bl.mr]
        }
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);

impl SendPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: the pointer is only used to write disjoint tiles (see `sgemm`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

/// Packs B[pc..pc+kc, j0..j0+nr] as (kc, nr), zero-padding columns past N.
fn pack_b(b: MatRef<'_>, pc: usize, kc: usize, j0: usize, nr: usize, panel: &mut [f32]) {
    let cols = nr.min(b.cols.saturating_sub(j0));
    for p in 0..kc {
        let row = &mut panel[p * nr..(p + 1) * nr];
        let base = (pc + p) * b.rs + j0 * b.cs;
        if b.cs == 1 {
            // Rows lie b.rs apart: fetch a few rows ahead (hardware prefetch misses the stride).
            if p + 8 < kc {
                prefetch(b.data[base + 8 * b.rs..].as_ptr());
                prefetch(b.data[base + 8 * b.rs..].as_ptr().wrapping_add(cols - 1));
            }
            row[..cols].copy_from_slice(&b.data[base..base + cols]);
        } else {
            for (j, v) in row[..cols].iter_mut().enumerate() {
                *v = b.data[base + j * b.cs];
            }
        }
        row[cols..].fill(0.0);
    }
}

/// Hints the cache line holding `p` into L1 (a no-op off x86_64).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Packs A[i0..i0+mc, pc..pc+kc] into MR-row panels (mc/MR, kc, MR), zero-padding rows past mc.
fn pack_a(a: MatRef<'_>, i0: usize, mc: usize, pc: usize, kc: usize, mr: usize, out: &mut [f32]) {
    for (ip, panel) in out.chunks_mut(kc * mr).take(mc.div_ceil(mr)).enumerate() {
        let rows = mr.min(mc - ip * mr);
        if a.cs == 1 {
            // Row-major A: read each row contiguously, write it down the panel with stride MR.
            for i in 0..rows {
                let base = (i0 + ip * mr + i) * a.rs + pc;
                // A streams from memory: ask for the same row of the next panel ahead of time.
                if ip * mr + i + mr < mc {
                    let ahead = a.data[base + mr * a.rs..][..kc].as_ptr();
                    for q in (0..kc).step_by(16) {
                        prefetch(ahead.wrapping_add(q));
                    }
                }
                for (p, &v) in a.data[base..base + kc].iter().enumerate() {
                    panel[p * mr + i] = v;
                }
            }
            for p in 0..kc {
                panel[p * mr + rows..(p + 1) * mr].fill(0.0);
            }
            continue;
        }
        for p in 0..kc {
            let col = &mut panel[p * mr..(p + 1) * mr];
            let base = (i0 + ip * mr) * a.rs + (pc + p) * a.cs;
            for (i, v) in col[..rows].iter_mut().enumerate() {
                *v = a.data[base + i * a.rs];
            }
            col[rows..].fill(0.0);
        }
    }
}

crate::isa_dispatch! {
    /// The MC × NC block of C at (i0, j0) from packed panels (`bpack` starts with the panel of
    /// column j0).
    fn macro_kernel_dispatch(mr: usize, apack: &[f32], bpack: &[f32], c: SendPtr, ldc: usize, i0: usize, mc: usize, j0: usize, nc: usize, kc: usize, first: bool) -> () => macro_kernel_generic
}

/// # Safety
/// `c` must be valid for the (i0..i0+mc, j0..j0+nc) tile with row stride `ldc`, written by no
/// other thread meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel(
    kind: IsaKind,
    mr: usize,
    apack: &[f32],
    bpack: &[f32],
    c: *mut f32,
    ldc: usize,
    i0: usize,
    mc: usize,
    j0: usize,
    nc: usize,
    kc: usize,
    first: bool,
) {
    macro_kernel_dispatch(
        kind,
        mr,
        apack,
        bpack,
        SendPtr(c),
        ldc,
        i0,
        mc,
        j0,
        nc,
        kc,
        first,
    )
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel_generic<I: Isa>(
    mr: usize,
    apack: &[f32],
    bpack: &[f32],
    c: SendPtr,
    ldc: usize,
    i0: usize,
    mc: usize,
    j0: usize,
    nc: usize,
    kc: usize,
    first: bool,
) {
    // SAFETY: forwarded from `macro_kernel`.
    unsafe {
        match I::LANES {
            16 if mr == MR512_SHORT => macro_tiles::<I, MR512_SHORT, NV512>(
                apack, bpack, c.0, ldc, i0, mc, j0, nc, kc, first,
            ),
            16 => macro_tiles::<I, MR512, NV512>(apack, bpack, c.0, ldc, i0, mc, j0, nc, kc, first),
            8 => macro_tiles::<I, 6, 2>(apack, bpack, c.0, ldc, i0, mc, j0, nc, kc, first),
            _ => macro_tiles::<I, 4, 2>(apack, bpack, c.0, ldc, i0, mc, j0, nc, kc, first),
        }
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn macro_tiles<I: Isa, const MR: usize, const NV: usize>(
    apack: &[f32],
    bpack: &[f32],
    c: *mut f32,
    ldc: usize,
    i0: usize,
    mc: usize,
    j0: usize,
    nc: usize,
    kc: usize,
    first: bool,
) {
    let nr = NV * I::LANES;
    let mut edge = [0.0f32; 512];
    for jr in (0..nc).step_by(nr) {
        let bpanel = &bpack[(jr / nr) * kc * nr..][..kc * nr];
        let ncols = nr.min(nc - jr);
        for ir in (0..mc).step_by(MR) {
            let apanel = &apack[(ir / MR) * kc * MR..][..kc * MR];
            let nrows = MR.min(mc - ir);
            // SAFETY: the tile (i0+ir.., j0+jr..) lies inside the caller's block; edge tiles go
            // through `edge` (MR × nr ≤ 12 × 32).
            unsafe {
                let cij = c.add((i0 + ir) * ldc + j0 + jr);
                if nrows == MR && ncols == nr {
                    micro_kernel::<I, MR, NV>(apanel, bpanel, kc, cij, ldc, first);
                } else {
                    for i in 0..nrows {
                        for j in 0..ncols {
                            edge[i * nr + j] = if first { 0.0 } else { *cij.add(i * ldc + j) };
                        }
                    }
                    micro_kernel::<I, MR, NV>(apanel, bpanel, kc, edge.as_mut_ptr(), nr, false);
                    for i in 0..nrows {
                        for j in 0..ncols {
                            *cij.add(i * ldc + j) = edge[i * nr + j];
                        }
                    }
                }
            }
        }
    }
}

/// The MR × (NV·LANES) tile: acc[i][v] += a[p][i] · b[p][v·LANES..], p = 0..kc, then C (+)= acc.
#[inline(always)]
unsafe fn micro_kernel<I: Isa, const MR: usize, const NV: usize>(
    a: &[f32],
    b: &[f32],
    kc: usize,
    c: *mut f32,
    ldc: usize,
    first: bool,
) {
    let l = I::LANES;
    // SAFETY: `a` holds kc·MR and `b` kc·NV·L packed values; `c` is valid for MR rows of NV·L.
    unsafe {
        if !first {
            // The C tile is read only after the K loop: start fetching its rows now.
            for i in 0..MR {
                for v in 0..NV {
                    prefetch(c.add(i * ldc + v * l));
                }
            }
        }
        let mut acc = [[I::splat(0.0); NV]; MR];
        let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
        for _ in 0..kc {
            let mut bv = [I::splat(0.0); NV];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = I::load(pb.add(v * l));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = I::splat(*pa.add(i));
                for (v, r) in row.iter_mut().enumerate() {
                    *r = I::fma(ai, bv[v], *r);
                }
            }
            pa = pa.add(MR);
            pb = pb.add(NV * l);
        }
        for (i, row) in acc.iter().enumerate() {
            let ci = c.add(i * ldc);
            for (v, r) in row.iter().enumerate() {
                let p = ci.add(v * l);
                if first {
                    I::store(p, *r);
                } else {
                    I::store(p, I::add(I::load(p), *r));
                }
            }
        }
    }
}

crate::isa_dispatch! {
    /// Runs `iters` × 24 independent fused multiply-adds on 2·LANES-lane registers (no memory
    /// traffic) and returns the FLOPs done: with one call per core, flops / seconds is the
    /// machine's measured FP32 FMA peak, the yardstick of GEMM efficiency.
    pub fn fma_peak_probe(iters: usize) -> f64 => fma_peak_kernel
}

#[inline(always)]
unsafe fn fma_peak_kernel<I: Isa>(iters: usize) -> f64 {
    // SAFETY: register-only arithmetic on an available ISA.
    unsafe {
        let mut acc = [I::splat(0.0); 24];
        let (x, y) = (I::splat(1.000_000_1), I::splat(1e-7));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = I::fma(*a, x, y);
            }
        }
        let mut out = [0.0f32; 16];
        let mut s = I::splat(0.0);
        for a in acc {
            s = I::add(s, a);
        }
        I::store(out.as_mut_ptr(), s);
        // Keep the result observable so the loop is not removed.
        std::hint::black_box(out);
        (iters * 24 * I::LANES * 2) as f64
    }
}
