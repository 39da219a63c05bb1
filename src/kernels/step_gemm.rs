//! The per-step GEMM `C (+)= A · W` of the recurrent loop, over weights packed once into
//! column panels, written once over [`SimdOps`].
//!
//! Inside the time loop M (the batch) is small and the same weights are used every step;
//! matrixmultiply would re-pack W and allocate a packing buffer on every call. Here W is packed
//! once per weight update (the [`Layer`](crate::Layer) keeps the packed copy) into panels of `NR =
//! 2·LANES` columns, each panel `K × NR` contiguous, and each gate block padded to whole
//! panels, so that any gate range is a panel range. The kernel walks panels outermost: one
//! panel (32 KiB at K = 512) stays in L1 while every row block of A passes over it. The
//! micro-kernel is `MR` rows × `NP` panels (2 vectors each): `6 × 1` (12 accumulators) for full
//! row blocks (one `4 × 1` where 4 or 5 rows are left), and
//! for the 1-3 leftover rows (all of them at batch 1) two or four panels at once, so that there
//! are always at least six independent multiply-add chains to hide the FMA latency.
//!
//! `step_gemm_avx512.rs` reads the same panels as one 512-bit vector each, in `6 × 4`-panel
//! tiles; both share [`PanelWalk`] (operand checks, panel addressing, walk order). Packed
//! buffers are [`AlignedBuf`]s, so that every panel row starts on a cache line.

use super::simd::{MAX_LANES, SimdOps, array_from};
use crate::error::{Error, Result, try_zeroed};

/// A row-major matrix operand: element `(r, c)` at `data[r * ld + c]`. (The other form of A
/// the kernel reads is [`OperandTiles`].)
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a, E> {
    /// The elements.
    pub data: &'a [E],
    /// Row stride.
    pub ld: usize,
}

/// Rows of A per group of an [`OperandTiles`]: the full micro-tile's height.
pub(crate) const TILE_ROWS: usize = 6;

/// A packed in groups of [`TILE_ROWS`] rows, each group `k`-major: element `(r, p)` at
/// `data[(r / 6) * 6 * k + p * 6 + r % 6]`, so a micro-tile reads one contiguous run. Every
/// micro-tile [`step_gemm`] forms lies inside one group (full tiles start at multiples of 6;
/// the 4-row tile starts there too, and the 1-3 rows after it stay in its group).
#[derive(Debug, Clone, Copy)]
pub struct OperandTiles<'a, E> {
    /// The groups, the last padded to 6 rows.
    pub data: &'a [E],
    /// Columns of A (`k`), the run length of a group.
    pub k: usize,
}

/// How the micro-kernel reads A.
pub(crate) trait AOperand<E: Copy>: Copy {
    /// Panics unless elements `(r, p)`, `r < m`, `p < k`, are in bounds.
    fn check(&self, m: usize, k: usize);
    /// A function of `p < k` giving `A[i0 + r, p]` for `r < MR` (in bounds after `check`).
    fn tile<const MR: usize>(self, i0: usize, k: usize) -> impl Fn(usize) -> [E; MR];
}

impl<E: Copy> AOperand<E> for Operand<'_, E> {
    fn check(&self, m: usize, k: usize) {
        assert!(
            self.data.len() >= (m - 1) * self.ld + k,
            "step_gemm: A too short"
        );
    }
    #[inline(always)]
    fn tile<const MR: usize>(self, i0: usize, k: usize) -> impl Fn(usize) -> [E; MR] {
        // Each row sliced to exactly `k`, so that `p < k` needs no further bounds check.
        let rows: [&[E]; MR] = array_from(
            &[],
            #[inline(always)]
            |r| &self.data[(i0 + r) * self.ld..][..k],
        );
        #[inline(always)]
        move |p| {
            array_from(
                rows[0][p],
                #[inline(always)]
                |r| rows[r][p],
            )
        }
    }
}

impl<E: Copy> AOperand<E> for OperandTiles<'_, E> {
    fn check(&self, m: usize, k: usize) {
        assert!(k <= self.k, "step_gemm: A too narrow");
        assert!(
            self.data.len() >= m.div_ceil(TILE_ROWS) * TILE_ROWS * self.k,
            "step_gemm: A too short"
        );
    }
    #[inline(always)]
    fn tile<const MR: usize>(self, i0: usize, k: usize) -> impl Fn(usize) -> [E; MR] {
        let (g, r0) = (i0 / TILE_ROWS, i0 % TILE_ROWS);
        assert!(
            r0 + MR <= TILE_ROWS,
            "step_gemm: a micro-tile crosses a row group"
        );
        let run = &self.data[g * TILE_ROWS * self.k..][..k * TILE_ROWS];
        #[inline(always)]
        move |p| {
            let col: &[E; MR] = run[p * TILE_ROWS + r0..][..MR]
                .try_into()
                .expect("MR elements");
            *col
        }
    }
}

/// Whether the GEMM adds to C or overwrites it (C is then not read, so it may hold NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// `C = A · W`.
    No,
    /// `C += A · W`.
    Yes,
}

/// A zero-initialised buffer of `len` elements whose first element sits on a 64-byte boundary
/// (a cache line). Packed weights live in these: a panel row of 16 f32 is then exactly one line,
/// and a 512-bit load of it never splits across two lines (a `Vec`'s heap block here starts 16
/// bytes past a line, which splits every such load). Measured on the AVX-512 batch-1 GEMV,
/// 1×256×1024: 51 GFLOP/s aligned against 48 at 16 bytes past a line. A clone is aligned anew.
#[derive(Debug)]
pub(crate) struct AlignedBuf<E> {
    buf: Vec<E>,
    start: usize,
    len: usize,
}

impl<E: Copy + Default> AlignedBuf<E> {
    /// `len` zeros (`E::default()`), the first on a line boundary; [`Error::SizeOverflow`]
    /// if `len` elements (and a line of padding) do not fit in `isize::MAX` bytes,
    /// [`Error::AllocationFailed`] if the allocator refuses them. `what` names the buffer in
    /// the error, e.g. `"packed weights"`.
    ///
    /// [`Error::SizeOverflow`]: crate::Error::SizeOverflow
    /// [`Error::AllocationFailed`]: crate::Error::AllocationFailed
    pub(crate) fn try_zeroed(what: &'static str, len: usize) -> Result<Self> {
        let padded = len
            .checked_add(LINE / size_of::<E>().max(1))
            .ok_or(Error::SizeOverflow { what })?;
        let buf = try_zeroed(what, padded)?;
        let start = line_start(&buf);
        Ok(AlignedBuf { buf, start, len })
    }
}

/// Bytes per cache line.
const LINE: usize = 64;

/// The index of the first element of `buf` that sits on a line boundary. (`Vec` aligns to the
/// element's alignment, a divisor of 64 for f32 and f64, so the distance to the next boundary
/// is a whole number of elements; `buf` has a line's worth of spare elements.)
fn line_start<E>(buf: &[E]) -> usize {
    (LINE - buf.as_ptr().addr() % LINE) % LINE / size_of::<E>().max(1)
}

impl<E> core::ops::Deref for AlignedBuf<E> {
    type Target = [E];
    fn deref(&self) -> &[E] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl<E> core::ops::DerefMut for AlignedBuf<E> {
    fn deref_mut(&mut self) -> &mut [E] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

impl<E: Clone> Clone for AlignedBuf<E> {
    fn clone(&self) -> Self {
        let mut buf = self.buf.clone();
        // The copy has an alignment of its own: rotate the elements onto its line boundary
        // (what rotates out of the window is padding).
        let start = line_start(&buf);
        if start >= self.start {
            buf.rotate_right(start - self.start);
        } else {
            buf.rotate_left(self.start - start);
        }
        AlignedBuf {
            buf,
            start,
            len: self.len,
        }
    }
}

/// Layout of a packed matrix `W [K, N]` whose `N = groups · group_width` columns come in
/// gate blocks ("groups"), each padded to whole panels of `nr` columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    /// Rows `K`.
    pub k: usize,
    /// Gate blocks.
    pub groups: usize,
    /// Columns per gate block (`H`).
    pub group_width: usize,
    /// Columns per panel.
    pub nr: usize,
}

impl PackedLayout {
    /// Panels per gate block.
    pub fn panels_per_group(&self) -> usize {
        self.group_width.div_ceil(self.nr)
    }
    /// Elements of the packed buffer.
    pub fn len(&self) -> usize {
        self.groups * self.panels_per_group() * self.k * self.nr
    }
    /// [`len`](Self::len), or `None` if it overflows `usize` (for layouts sized by user
    /// input, before the buffer is allocated).
    pub fn checked_len(&self) -> Option<usize> {
        self.groups
            .checked_mul(self.panels_per_group())?
            .checked_mul(self.k)?
            .checked_mul(self.nr)
    }
    /// Packs `W [K, N]`, element `(p, n)` given by `get(p, n)`, into `out`.
    pub fn pack<E: Copy + Default>(&self, out: &mut [E], get: impl Fn(usize, usize) -> E) {
        let ppg = self.panels_per_group();
        let mut at = 0;
        for g in 0..self.groups {
            for q in 0..ppg {
                for p in 0..self.k {
                    for c in 0..self.nr {
                        let off = q * self.nr + c;
                        out[at] = if off < self.group_width {
                            get(p, g * self.group_width + off)
                        } else {
                            E::default()
                        };
                        at += 1;
                    }
                }
            }
        }
    }
}

/// A view of a packed matrix restricted to gate blocks `g0..g0 + groups`, rows `k0..k0 + k`
/// and, within every gate block, columns (hidden units) `u0..u1`: C then has
/// `groups · (u1 - u0)` columns, gate block by gate block.
#[derive(Debug, Clone, Copy)]
pub struct PackedRef<'a, E> {
    /// The whole packed buffer.
    pub data: &'a [E],
    /// Its layout.
    pub layout: PackedLayout,
    /// First gate block used.
    pub g0: usize,
    /// Gate blocks used.
    pub groups: usize,
    /// First row used.
    pub k0: usize,
    /// First column used within each gate block (a multiple of the panel width).
    pub u0: usize,
    /// One past the last column used within each gate block.
    pub u1: usize,
    /// The order the panels are walked in.
    pub order: PanelOrder,
}

/// The order [`step_gemm`] walks the panels in. It changes no result (every C element comes
/// from one panel, summed over `k` in order), only which weights are read first: a
/// recurrence whose weights barely overflow the cache alternates the order every step, so
/// that each step starts on the panels the previous one read last, still cached (a cyclic
/// walk over more than the cache would miss on every line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanelOrder {
    /// First panel first.
    Forward,
    /// Last panel first.
    Backward,
}

impl PanelOrder {
    /// `Forward` for even `t`, `Backward` for odd.
    pub fn alternating(t: usize) -> Self {
        if t.is_multiple_of(2) {
            PanelOrder::Forward
        } else {
            PanelOrder::Backward
        }
    }
}

impl<'a, E> PackedRef<'a, E> {
    /// The whole matrix.
    pub fn all(data: &'a [E], layout: PackedLayout) -> Self {
        PackedRef {
            data,
            layout,
            g0: 0,
            groups: layout.groups,
            k0: 0,
            u0: 0,
            u1: layout.group_width,
            order: PanelOrder::Forward,
        }
    }
    /// Columns `u0..u1` of every gate block (`u0` a multiple of the panel width), all rows.
    pub fn columns(data: &'a [E], layout: PackedLayout, u0: usize, u1: usize) -> Self {
        PackedRef {
            u0,
            u1,
            ..Self::all(data, layout)
        }
    }
    /// Gate blocks `g0..g0 + groups`, all rows.
    pub fn gates(data: &'a [E], layout: PackedLayout, g0: usize, groups: usize) -> Self {
        PackedRef {
            data,
            layout,
            g0,
            groups,
            ..Self::all(data, layout)
        }
    }
    /// Rows `k0..`, all columns.
    pub fn rows_from(data: &'a [E], layout: PackedLayout, k0: usize) -> Self {
        PackedRef {
            data,
            layout,
            k0,
            ..Self::all(data, layout)
        }
    }
}

/// `C[m, n] (+)= A[m, k] · W[k0..k0+k, columns of the selected gate blocks]`, `n = groups ·
/// group_width`, C row-major with row stride `ldc`.
///
/// Panics (a bug in the caller, never user input) if the panel width is not `2·LANES` or an
/// operand is too short for its shape.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_gemm<S: SimdOps, A: AOperand<S::Elem>>(
    s: S,
    m: usize,
    k: usize,
    a: A,
    w: PackedRef<'_, S::Elem>,
    c: &mut [S::Elem],
    ldc: usize,
    acc: Accumulate,
) {
    assert_eq!(
        w.layout.nr,
        2 * S::LANES,
        "step_gemm: panel width must be two vectors"
    );
    let Some(walk) = PanelWalk::new(m, k, &a, w, c, ldc) else {
        return;
    };
    let panels = walk.panels;
    // Up to four panels at a time (one 4-row tile over a panel is 8 accumulators; fewer rows
    // take more panels so that there are still 6-8 independent multiply-add chains: with one
    // row and one panel the loop would wait on the FMA latency, 4 cycles per k). Every C
    // element is still the sum over k in order, whatever the tile shape: results do not
    // depend on how the rows are tiled or split across threads.
    for j0 in walk.chunks(4) {
        let np = (panels - j0).min(4);
        let ps: [PanelRef<'_, S::Elem>; 4] = array_from(
            walk.panel(j0),
            #[inline(always)]
            |i| walk.panel(j0 + i.min(np - 1)),
        );
        // Full blocks of 6 rows (then one of 4 if 4 or 5 rows are left), panel by panel: the
        // panel stays in L1 while the rows pass.
        let six = m - m % 6;
        let full = if m - six >= 4 { six + 4 } else { six };
        for p in &ps[..np] {
            let p = core::slice::from_ref(p);
            for i0 in (0..six).step_by(6) {
                prefetch_c_rows(i0 + 6..m.min(i0 + 12), p, c, ldc);
                micro::<S, A, 6, 1>(s, i0, k, a, p, c, ldc, acc);
            }
            if full > six {
                micro::<S, A, 4, 1>(s, six, k, a, p, c, ldc, acc);
            }
        }
        // The 1-3 leftover rows, over several panels at once.
        let (i0, mr) = (full, m - full);
        match (mr, np) {
            (0, _) => {}
            (1, 4) => micro::<S, A, 1, 4>(s, i0, k, a, &ps, c, ldc, acc),
            (_, 1) => match mr {
                3 => micro::<S, A, 3, 1>(s, i0, k, a, &ps[..1], c, ldc, acc),
                2 => micro::<S, A, 2, 1>(s, i0, k, a, &ps[..1], c, ldc, acc),
                _ => micro::<S, A, 1, 1>(s, i0, k, a, &ps[..1], c, ldc, acc),
            },
            _ => {
                for pair in [&ps[..2], &ps[2..np]] {
                    match (mr, pair.len()) {
                        (_, 0) => {}
                        (3, 2) => micro::<S, A, 3, 2>(s, i0, k, a, pair, c, ldc, acc),
                        (2, 2) => micro::<S, A, 2, 2>(s, i0, k, a, pair, c, ldc, acc),
                        (1, 2) => micro::<S, A, 1, 2>(s, i0, k, a, pair, c, ldc, acc),
                        (3, _) => micro::<S, A, 3, 1>(s, i0, k, a, pair, c, ldc, acc),
                        (2, _) => micro::<S, A, 2, 1>(s, i0, k, a, pair, c, ldc, acc),
                        _ => micro::<S, A, 1, 1>(s, i0, k, a, pair, c, ldc, acc),
                    }
                }
            }
        }
    }
}

/// Asks for the C lines of `rows` over the panels `ps` (the next tile's) to come into L2
/// while the current tile computes. A tile that adds to C otherwise starts with loads that
/// miss to L3: the weight gradients pass over C once per `k` chunk, and C (megabytes) does
/// not stay in L2 between passes. Measured on the AVX-512 path (GRU backward at T=128 B=32
/// I=H=512, 2 threads): weight gradients 70.6-73.5 → 68.1-71.0 ms.
#[inline(always)]
pub(crate) fn prefetch_c_rows<E>(
    rows: core::ops::Range<usize>,
    ps: &[PanelRef<'_, E>],
    c: &[E],
    ldc: usize,
) {
    for r in rows {
        for pj in ps {
            let row = &c[r * ldc + pj.col0..][..pj.width];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: SSE is part of x86_64; a prefetch only hints (it never faults), and both
            // addresses are inside `row`.
            unsafe {
                use core::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
                _mm_prefetch::<_MM_HINT_T1>(row.as_ptr().cast());
                _mm_prefetch::<_MM_HINT_T1>(row[pj.width - 1..].as_ptr().cast());
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = row;
        }
    }
}

/// One packed panel (`k × NR`, row-major) and where its columns go in C: columns
/// `col0..col0 + width` (`width ≤ NR`; the rest of the panel is zero padding).
#[derive(Clone, Copy)]
pub(crate) struct PanelRef<'a, E> {
    /// The panel's packed rows `k0..k0 + k`.
    pub(crate) data: &'a [E],
    /// Its first column in C.
    pub(crate) col0: usize,
    /// Its columns that exist (the rest are padding).
    pub(crate) width: usize,
}

/// The panels a GEMM over a [`PackedRef`] walks, once its operands are checked: the part of
/// the kernel every instruction-set path shares.
pub(crate) struct PanelWalk<'a, E> {
    w: PackedRef<'a, E>,
    k: usize,
    /// Columns per gate block in C, and the first panel and panel count per block.
    gw: usize,
    q0: usize,
    qn: usize,
    /// The selected panels, all gate blocks.
    pub(crate) panels: usize,
}

impl<'a, E> PanelWalk<'a, E> {
    /// Checks the operands of `C[m, ..] (+)= A[m, k] · w` and returns the walk, or `None` if
    /// there is nothing to compute.
    ///
    /// Panics (a bug in the caller, never user input) if an operand is too short for its shape.
    #[inline(always)]
    pub(crate) fn new<A: AOperand<E>>(
        m: usize,
        k: usize,
        a: &A,
        w: PackedRef<'a, E>,
        c: &[E],
        ldc: usize,
    ) -> Option<Self>
    where
        E: Copy,
    {
        let lay = w.layout;
        assert!(
            w.k0 + k <= lay.k && w.g0 + w.groups <= lay.groups,
            "step_gemm: W range"
        );
        assert!(w.data.len() >= lay.len(), "step_gemm: W too short");
        assert!(
            w.u0.is_multiple_of(lay.nr) && w.u0 <= w.u1 && w.u1 <= lay.group_width,
            "step_gemm: column range"
        );
        let gw = w.u1 - w.u0;
        let (q0, qn) = (w.u0 / lay.nr, gw.div_ceil(lay.nr));
        let n = w.groups * gw;
        if m == 0 || n == 0 {
            return None;
        }
        a.check(m, k);
        assert!(c.len() >= (m - 1) * ldc + n, "step_gemm: C too short");
        Some(PanelWalk {
            w,
            k,
            gw,
            q0,
            qn,
            panels: w.groups * qn,
        })
    }

    /// Panel `j` of the selected ones: its packed rows `k0..k0 + k`, and where its columns go
    /// in C.
    #[inline(always)]
    pub(crate) fn panel(&self, j: usize) -> PanelRef<'a, E> {
        let (w, lay) = (&self.w, self.w.layout);
        let (gi, q) = (j / self.qn, j % self.qn);
        let panel_len = lay.k * lay.nr;
        let start =
            ((w.g0 + gi) * lay.panels_per_group() + self.q0 + q) * panel_len + w.k0 * lay.nr;
        PanelRef {
            data: &w.data[start..start + self.k * lay.nr],
            col0: gi * self.gw + q * lay.nr,
            width: (self.gw - q * lay.nr).min(lay.nr),
        }
    }

    /// The first panels of the chunks of `size` panels, in the walk's [`PanelOrder`].
    #[inline(always)]
    pub(crate) fn chunks(&self, size: usize) -> impl Iterator<Item = usize> + use<E> {
        let chunks = self.panels.div_ceil(size);
        let order = self.w.order;
        (0..chunks).map(move |i| match order {
            PanelOrder::Forward => i * size,
            PanelOrder::Backward => (chunks - 1 - i) * size,
        })
    }
}

/// Rows `i0..i0 + MR` of C over the first `NP` panels of `panels`: per `k`, `2·NP` panel
/// loads and `MR` broadcasts feed `2·MR·NP` independent multiply-add chains.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn micro<S: SimdOps, A: AOperand<S::Elem>, const MR: usize, const NP: usize>(
    s: S,
    i0: usize,
    k: usize,
    a: A,
    panels: &[PanelRef<'_, S::Elem>],
    c: &mut [S::Elem],
    ldc: usize,
    acc: Accumulate,
) {
    let l = S::LANES;
    let nr = 2 * l;
    let panels: &[PanelRef<'_, S::Elem>; NP] = panels[..NP].try_into().expect("NP panels");
    let a_at = a.tile::<MR>(i0, k);
    let wps: [&[S::Elem]; NP] = array_from(
        &[],
        #[inline(always)]
        |j| &panels[j].data[..k * nr],
    );
    let zero = s.splat(S::Elem::default());
    let mut v: [[[S::V; 2]; NP]; MR] = [[[zero; 2]; NP]; MR];
    if acc == Accumulate::Yes {
        for (r, vr) in v.iter_mut().enumerate() {
            for (vj, pj) in vr.iter_mut().zip(panels) {
                let row = &c[(i0 + r) * ldc + pj.col0..][..pj.width];
                *vj = if pj.width == nr {
                    [s.load(&row[..l]), s.load(&row[l..])]
                } else {
                    // A partial panel: through a zero-padded copy (a short copy is a call
                    // to memmove, so full panels load directly).
                    let mut buf = [S::Elem::default(); 2 * MAX_LANES];
                    buf[..pj.width].copy_from_slice(row);
                    [s.load(&buf[..l]), s.load(&buf[l..nr])]
                };
            }
        }
    }
    for p in 0..k {
        let w: [[S::V; 2]; NP] = array_from(
            [zero; 2],
            #[inline(always)]
            |j| {
                let wp = &wps[j][p * nr..][..nr];
                [s.load(&wp[..l]), s.load(&wp[l..])]
            },
        );
        for (vr, ar) in v.iter_mut().zip(a_at(p)) {
            let x = s.splat(ar);
            for (vj, wj) in vr.iter_mut().zip(&w) {
                vj[0] = s.mul_add(x, wj[0], vj[0]);
                vj[1] = s.mul_add(x, wj[1], vj[1]);
            }
        }
    }
    for (r, vr) in v.iter().enumerate() {
        for (vj, pj) in vr.iter().zip(panels) {
            let row = &mut c[(i0 + r) * ldc + pj.col0..][..pj.width];
            if pj.width == nr {
                s.store(&mut row[..l], vj[0]);
                s.store(&mut row[l..], vj[1]);
            } else {
                let mut buf = [S::Elem::default(); 2 * MAX_LANES];
                s.store(&mut buf[..l], vj[0]);
                s.store(&mut buf[l..nr], vj[1]);
                row.copy_from_slice(&buf[..pj.width]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuf;

    fn check<E: Copy + Default + PartialEq + core::fmt::Debug>(fill: impl Fn(usize) -> E) {
        for len in [0, 1, 15, 16, 17, 1000] {
            let mut a = AlignedBuf::<E>::try_zeroed("test", len).unwrap();
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|v| *v == E::default()));
            assert_eq!(a.as_ptr().addr() % 64, 0, "len {len}");
            for (k, v) in a.iter_mut().enumerate() {
                *v = fill(k);
            }
            // Clones land wherever the allocator puts them; keep several alive so that they
            // start at different offsets from a line.
            let clones: Vec<AlignedBuf<E>> = (0..8).map(|_| a.clone()).collect();
            for c in &clones {
                assert_eq!(c.as_ptr().addr() % 64, 0, "clone, len {len}");
                assert_eq!(&c[..], &a[..]);
            }
        }
    }

    #[test]
    fn aligned_buffers_start_on_a_line_and_clone_exactly() {
        check(|k| k as f32 + 0.5);
        check(|k| -(k as f64));
    }

    /// Lengths whose bytes overflow are `SizeOverflow`; 2^59 f64 (2^62 bytes, past every
    /// 64-bit address space) are refused by the allocator whatever the overcommit policy.
    #[test]
    fn fallible_aligned_buffers_report_sizes_they_cannot_have() {
        use crate::Error;
        for len in [usize::MAX, usize::MAX - 3, 1 << 62] {
            let r = AlignedBuf::<f32>::try_zeroed("test buffer", len).map(|b| b.len());
            assert_eq!(
                r,
                Err(Error::SizeOverflow {
                    what: "test buffer"
                }),
                "{len}"
            );
        }
        let r = AlignedBuf::<f64>::try_zeroed("test buffer", 1 << 59).map(|b| b.len());
        assert!(
            matches!(
                r,
                Err(Error::AllocationFailed {
                    what: "test buffer",
                    ..
                })
            ),
            "{r:?}"
        );
        let a = AlignedBuf::<f32>::try_zeroed("test buffer", 17).unwrap();
        assert_eq!(a.len(), 17);
        assert!(a.iter().all(|v| *v == 0.0));
        assert_eq!(a.as_ptr().addr() % 64, 0);
    }
}
