//! The per-step GEMM of [`step_gemm`](super::step_gemm::step_gemm) on AVX-512F, for f32: the
//! same packed panels of 16 columns, each now one 512-bit register instead of two 256-bit ones.
//!
//! Why, when Zen 4 runs a 512-bit multiply-add as two 256-bit halves and the peak is the same
//! (measured here: 116 GFLOP/s per core with either width): the 32 vector registers hold a
//! `6 × 4`-panel tile (24 accumulators, 4 panel loads and 6 broadcasts per 24 multiply-adds)
//! where AVX2's 16 registers hold `6 × 1` (12 accumulators, 2 loads and 6 broadcasts per 12),
//! and one load fetches a whole cache line of the panel. Measured against the AVX2 kernel on
//! the same packed weights, one thread: 32×512×2048 116-117 against 109-112 GFLOP/s; the
//! batch-1 GEMV 1×256×1024 (weights from L2) 50 against 45.
//!
//! Every C element is the same chain of fused multiply-adds over `k` in order as on the AVX2
//! path (and from the same start: zero, or C): results are bit for bit those of
//! [`Isa::Avx2Fma`](crate::Isa::Avx2Fma), whatever the tile shape.

use core::arch::x86_64::*;

use super::isa::Avx512Token;
use super::simd::array_from;
use super::step_gemm::{AOperand, Accumulate, PackedRef, PanelRef, PanelWalk, prefetch_c_rows};

/// Columns per panel: one 512-bit vector of f32.
pub(crate) const NR: usize = 16;

/// Rows per full tile, the row-group height of [`OperandTiles`](super::step_gemm::OperandTiles)
/// (a tile must not cross a group).
const MR: usize = super::step_gemm::TILE_ROWS;

/// `C[m, n] (+)= A[m, k] · W`, as [`step_gemm`](super::step_gemm::step_gemm).
///
/// Must be inlined into a `#[target_feature(enable = "avx512f")]` function (the dispatch
/// entry), which `t` makes sound to call.
///
/// Panics (a bug in the caller, never user input) if the panels are not 16 columns wide or an
/// operand is too short for its shape.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_gemm<A: AOperand<f32>>(
    t: Avx512Token,
    m: usize,
    k: usize,
    a: A,
    w: PackedRef<'_, f32>,
    c: &mut [f32],
    ldc: usize,
    acc: Accumulate,
) {
    assert_eq!(w.layout.nr, NR, "step_gemm: panel width must be 16");
    let Some(walk) = PanelWalk::new(m, k, &a, w, c, ldc) else {
        return;
    };
    // Four panels at a time (128 KiB at k = 512: from L2, one line per load), every row block
    // of A over them.
    for j0 in walk.chunks(4) {
        match walk.panels - j0 {
            1 => panel_rows::<A, 1>(t, m, k, a, &walk, j0, c, ldc, acc),
            2 => panel_rows::<A, 2>(t, m, k, a, &walk, j0, c, ldc, acc),
            3 => panel_rows::<A, 3>(t, m, k, a, &walk, j0, c, ldc, acc),
            _ => panel_rows::<A, 4>(t, m, k, a, &walk, j0, c, ldc, acc),
        }
    }
}

/// [`step_gemm`] with A packed in row groups: the same kernel.
pub(crate) use step_gemm as step_gemm_tiles;

/// All rows of C over panels `j0..j0 + NP`, in tiles of up to [`MR`] rows starting at
/// multiples of `MR`. (With fewer rows, as at batch 1, the `NP` panels still give `NP` to
/// `5·NP` independent multiply-add chains.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn panel_rows<A: AOperand<f32>, const NP: usize>(
    t: Avx512Token,
    m: usize,
    k: usize,
    a: A,
    walk: &PanelWalk<'_, f32>,
    j0: usize,
    c: &mut [f32],
    ldc: usize,
    acc: Accumulate,
) {
    let ps: [PanelRef<'_, f32>; NP] = array_from(
        walk.panel(j0),
        #[inline(always)]
        |j| walk.panel(j0 + j),
    );
    for i0 in (0..m).step_by(MR) {
        prefetch_c_rows(i0 + MR..m.min(i0 + 2 * MR), &ps, c, ldc);
        match (m - i0).min(MR) {
            1 => micro::<A, 1, NP>(t, i0, k, a, &ps, c, ldc, acc),
            2 => micro::<A, 2, NP>(t, i0, k, a, &ps, c, ldc, acc),
            3 => micro::<A, 3, NP>(t, i0, k, a, &ps, c, ldc, acc),
            4 => micro::<A, 4, NP>(t, i0, k, a, &ps, c, ldc, acc),
            5 => micro::<A, 5, NP>(t, i0, k, a, &ps, c, ldc, acc),
            _ => micro::<A, MR, NP>(t, i0, k, a, &ps, c, ldc, acc),
        }
    }
}

/// The lanes of a panel that are real columns (the rest are zero padding, never stored).
#[inline(always)]
pub(crate) fn width_mask(width: usize) -> __mmask16 {
    debug_assert!((1..=NR).contains(&width));
    (u32::MAX >> (32 - width)) as __mmask16
}

/// Rows `i0..i0 + R` of C over the `NP` panels: per `k`, `NP` panel loads and `R` broadcasts
/// feed `R·NP` independent multiply-add chains.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn micro<A: AOperand<f32>, const R: usize, const NP: usize>(
    _t: Avx512Token,
    i0: usize,
    k: usize,
    a: A,
    ps: &[PanelRef<'_, f32>; NP],
    c: &mut [f32],
    ldc: usize,
    acc: Accumulate,
) {
    let a_at = a.tile::<R>(i0, k);
    let wps: [&[f32]; NP] = array_from(
        &[],
        #[inline(always)]
        |j| &ps[j].data[..k * NR],
    );
    // SAFETY: for every intrinsic below, `_t` proves the CPU has AVX-512F, and this function is
    // inlined into the `#[target_feature(enable = "avx512f")]` dispatch entry. Memory access
    // goes through pointers of slices bounds-checked to at least the 16 elements read, or, for
    // the masked C accesses, to the `width` elements the mask selects (masked-off lanes are
    // neither read nor written, and raise no fault).
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut v = [[zero; NP]; R];
        if acc == Accumulate::Yes {
            for (r, vr) in v.iter_mut().enumerate() {
                for (vj, pj) in vr.iter_mut().zip(ps) {
                    let row = &c[(i0 + r) * ldc + pj.col0..][..pj.width];
                    *vj = _mm512_maskz_loadu_ps(width_mask(pj.width), row.as_ptr());
                }
            }
        }
        for p in 0..k {
            let w: [__m512; NP] = array_from(
                zero,
                #[inline(always)]
                |j| _mm512_loadu_ps(wps[j][p * NR..][..NR].as_ptr()),
            );
            let x = a_at(p);
            for (vr, &xr) in v.iter_mut().zip(&x) {
                let b = _mm512_set1_ps(xr);
                for (vj, &wj) in vr.iter_mut().zip(&w) {
                    *vj = _mm512_fmadd_ps(b, wj, *vj);
                }
            }
        }
        for (r, vr) in v.iter().enumerate() {
            for (&vj, pj) in vr.iter().zip(ps) {
                let row = &mut c[(i0 + r) * ldc + pj.col0..][..pj.width];
                _mm512_mask_storeu_ps(row.as_mut_ptr(), width_mask(pj.width), vj);
            }
        }
    }
}
