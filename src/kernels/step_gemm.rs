//! The per-step GEMM `C (+)= A · W` of the recurrent loop, over weights packed once into
//! column panels, written once over [`SimdOps`].
//!
//! Inside the time loop M (the batch) is small and the same weights are used every step;
//! matrixmultiply would re-pack W and allocate a packing buffer on every call. Here W is packed
//! once per weight update (the [`Layer`](crate::Layer) keeps the packed copy) into panels of `NR =
//! 2·LANES` columns, each panel `K × NR` contiguous, and each gate block padded to whole
//! panels, so that any gate range is a panel range. The kernel walks panels outermost: one
//! panel (32 KiB at K = 512) stays in L1 while every row block of A passes over it. The
//! micro-kernel is `MR = 4` rows × 2 vectors: per `k`, two panel loads and four broadcasts
//! feed eight multiply-adds into eight independent accumulators.

use super::simd::{MAX_LANES, SimdOps};

/// A row-major matrix operand: element `(r, c)` at `data[r * ld + c]`.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a, E> {
    /// The elements.
    pub data: &'a [E],
    /// Row stride.
    pub ld: usize,
}

/// Whether the GEMM adds to C or overwrites it (C is then not read, so it may hold NaN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// `C = A · W`.
    No,
    /// `C += A · W`.
    Yes,
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

/// A view of a packed matrix restricted to gate blocks `g0..g0 + groups` and rows
/// `k0..k0 + k`; C's column `j` is column `g0 * group_width + j` of the full matrix.
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
        }
    }
    /// Gate blocks `g0..g0 + groups`, all rows.
    pub fn gates(data: &'a [E], layout: PackedLayout, g0: usize, groups: usize) -> Self {
        PackedRef {
            data,
            layout,
            g0,
            groups,
            k0: 0,
        }
    }
    /// Rows `k0..`, all columns.
    pub fn rows_from(data: &'a [E], layout: PackedLayout, k0: usize) -> Self {
        PackedRef {
            data,
            layout,
            g0: 0,
            groups: layout.groups,
            k0,
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
pub(crate) fn step_gemm<S: SimdOps>(
    s: S,
    m: usize,
    k: usize,
    a: Operand<'_, S::Elem>,
    w: PackedRef<'_, S::Elem>,
    c: &mut [S::Elem],
    ldc: usize,
    acc: Accumulate,
) {
    let l = S::LANES;
    let lay = w.layout;
    assert_eq!(lay.nr, 2 * l, "step_gemm: panel width must be two vectors");
    assert!(
        w.k0 + k <= lay.k && w.g0 + w.groups <= lay.groups,
        "step_gemm: W range"
    );
    assert!(w.data.len() >= lay.len(), "step_gemm: W too short");
    let gw = lay.group_width;
    let n = w.groups * gw;
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.data.len() >= (m - 1) * a.ld + k, "step_gemm: A too short");
    assert!(c.len() >= (m - 1) * ldc + n, "step_gemm: C too short");
    let ppg = lay.panels_per_group();
    let panel_len = lay.k * lay.nr;
    for gi in 0..w.groups {
        for q in 0..ppg {
            let panel_index = (w.g0 + gi) * ppg + q;
            let start = panel_index * panel_len + w.k0 * lay.nr;
            let panel = &w.data[start..start + k * lay.nr];
            let col0 = gi * gw + q * lay.nr;
            let width = (gw - q * lay.nr).min(lay.nr);
            let mut i0 = 0;
            while i0 < m {
                let mr = (m - i0).min(4);
                let tile = Tile { i0, col0, width, k };
                match mr {
                    4 => micro::<S, 4>(s, tile, a, panel, c, ldc, acc),
                    3 => micro::<S, 3>(s, tile, a, panel, c, ldc, acc),
                    2 => micro::<S, 2>(s, tile, a, panel, c, ldc, acc),
                    _ => micro::<S, 1>(s, tile, a, panel, c, ldc, acc),
                }
                i0 += mr;
            }
        }
    }
}

/// Where one micro-tile sits: rows `i0..i0+MR`, C columns `col0..col0+width` (`width ≤ NR`).
#[derive(Clone, Copy)]
struct Tile {
    i0: usize,
    col0: usize,
    width: usize,
    k: usize,
}

#[inline(always)]
fn micro<S: SimdOps, const MR: usize>(
    s: S,
    t: Tile,
    a: Operand<'_, S::Elem>,
    panel: &[S::Elem],
    c: &mut [S::Elem],
    ldc: usize,
    acc: Accumulate,
) {
    let l = S::LANES;
    let nr = 2 * l;
    let a_rows: [&[S::Elem]; MR] = core::array::from_fn(
        #[inline(always)]
        |r| &a.data[(t.i0 + r) * a.ld..][..t.k],
    );
    let zero = s.splat(S::Elem::default());
    let mut v: [[S::V; 2]; MR] = [[zero; 2]; MR];
    if acc == Accumulate::Yes {
        for (r, vr) in v.iter_mut().enumerate() {
            let mut buf = [S::Elem::default(); 2 * MAX_LANES];
            let row = &c[(t.i0 + r) * ldc + t.col0..][..t.width];
            buf[..t.width].copy_from_slice(row);
            *vr = [s.load(&buf[..l]), s.load(&buf[l..nr])];
        }
    }
    for (p, wp) in panel.chunks_exact(nr).take(t.k).enumerate() {
        let w0 = s.load(&wp[..l]);
        let w1 = s.load(&wp[l..]);
        for (vr, ar) in v.iter_mut().zip(&a_rows) {
            let x = s.splat(ar[p]);
            vr[0] = s.mul_add(x, w0, vr[0]);
            vr[1] = s.mul_add(x, w1, vr[1]);
        }
    }
    for (r, vr) in v.iter().enumerate() {
        let row = &mut c[(t.i0 + r) * ldc + t.col0..][..t.width];
        if t.width == nr {
            s.store(&mut row[..l], vr[0]);
            s.store(&mut row[l..], vr[1]);
        } else {
            let mut buf = [S::Elem::default(); 2 * MAX_LANES];
            s.store(&mut buf[..l], vr[0]);
            s.store(&mut buf[l..nr], vr[1]);
            row.copy_from_slice(&buf[..t.width]);
        }
    }
}
