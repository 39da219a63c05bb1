//! The batch-1 step GEMV `c = h · W_hh` with a piece of a *later* step's input projection
//! folded into its loop (AVX-512F, f32).
//!
//! Why: at batch 1 a step streams the slice's `W_hh` from L2 (512 KiB per thread for an
//! LSTM at H = 256 on two threads) with one multiply-add per 64 bytes loaded, so the FMA unit
//! idles half the time, while the input projection of every step (`x · W_ihᵀ`, a third of the
//! pass at T = 128) runs compute-bound before the loop. Here each chunk of the GEMV carries a
//! piece of the projection (8 rows, 1-2 panels, a run of `k`), its multiply-adds interleaved
//! with the GEMV's so that the out-of-order core runs them while the GEMV waits on L2. The
//! caller ([`columns`](crate::exec::columns)) schedules the pieces so that a step's rows
//! are complete before the step needs them.
//!
//! Measured first on a standalone model of the loop (two threads, 512 KiB of `W_hh` each,
//! 128 steps): GEMV alone 0.63 ms, then the projection 0.30 ms more; folded as here 0.82 ms.
//! In the layer (T = 128, B = 1, I = H = 256, two threads, old and new alternating): LSTM
//! 1.050 → 0.914 ms, GRU 0.802 → 0.684 ms. A Zen 4 core runs one 512-bit FMA per cycle, so the
//! GEMV and its pieces together use 80% of the cycles the L2 needs for the step's weights:
//! the fold hides most of the projection, not all.
//!
//! Results are bit for bit those of the unfolded pass: each GEMV element is the same chain of
//! fused multiply-adds over `k` in order from zero as in
//! [`step_gemm`](super::step_gemm_avx512::step_gemm) at one row, and each projection element
//! the same chain as the projection's GEMM (a piece with `k0 > 0` continues from the stored
//! partial sum, which f32 stores exactly).

use core::arch::x86_64::*;

use super::dispatch::{FOLD_ROWS, FoldPiece};
use super::isa::Avx512Token;
use super::simd::array_from;
use super::step_gemm::{Accumulate, Operand, PackedRef, PanelRef, PanelWalk};
use super::step_gemm_avx512::{NR, width_mask};

/// `c = h · W` (one row, `k = H` terms, over the panels of `w`, in its walk order) and, into
/// each chunk of up to four panels at position `pos` of the walk, the projection piece
/// `pieces(pos)` (if any): `proj[r, cols] (+)= x[r, k0..k0 + kp] · W_ih[k0..k0 + kp, cols]`,
/// `proj` row-major with stride `ldp`, columns placed as `w_ih`'s walk places them.
///
/// Must be inlined into a `#[target_feature(enable = "avx512f")]` function (the dispatch
/// entry), which `t` makes sound to call.
///
/// Panics (a bug in the caller, never user input) if the panels are not 16 columns wide, an
/// operand is too short for its shape, or a piece lies outside `x`, `w_ih` or `proj`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv_fold(
    t: Avx512Token,
    k: usize,
    h: &[f32],
    w: PackedRef<'_, f32>,
    c: &mut [f32],
    x: Operand<'_, f32>,
    w_ih: PackedRef<'_, f32>,
    proj: &mut [f32],
    ldp: usize,
    pieces: &dyn Fn(usize) -> Option<FoldPiece>,
) {
    assert_eq!(w.layout.nr, NR, "gemv_fold: panel width must be 16");
    assert_eq!(w_ih.layout.nr, NR, "gemv_fold: panel width must be 16");
    let ldc = c.len();
    let hrow = Operand { data: h, ld: k };
    let Some(walk) = PanelWalk::new(1, k, &hrow, w, c, ldc) else {
        return;
    };
    let rows = proj.len() / ldp.max(1);
    let i = w_ih.layout.k;
    // `None` only for an empty projection, which no piece may then address.
    let ih_walk = PanelWalk::new(rows, i, &x, w_ih, proj, ldp);
    let h = &h[..k];
    for (pos, j0) in walk.chunks(4).enumerate() {
        let np = (walk.panels - j0).min(4);
        let piece = pieces(pos).map(|p| {
            let ih_walk = ih_walk
                .as_ref()
                .expect("gemv_fold: a piece of an empty projection");
            assert!(
                (1..=2).contains(&p.np) && p.j + p.np <= ih_walk.panels,
                "gemv_fold: piece panels"
            );
            assert!(
                p.kp >= 1 && p.k0 + p.kp <= i && p.r0 + FOLD_ROWS <= rows,
                "gemv_fold: piece range"
            );
            let q0 = ih_walk.panel(p.j);
            (
                p,
                [
                    q0,
                    if p.np == 2 {
                        ih_walk.panel(p.j + 1)
                    } else {
                        q0
                    },
                ],
            )
        });
        macro_rules! go {
            ($np:literal) => {{
                let ps: [PanelRef<'_, f32>; $np] = array_from(
                    walk.panel(j0),
                    #[inline(always)]
                    |j| walk.panel(j0 + j),
                );
                match piece {
                    None => micro::<$np, 0>(t, h, &ps, c, None, x, proj, ldp),
                    Some((p, [q0, _])) if p.np == 1 => {
                        micro::<$np, 1>(t, h, &ps, c, Some((p, &[q0])), x, proj, ldp)
                    }
                    Some((p, q)) => micro::<$np, 2>(t, h, &ps, c, Some((p, &q)), x, proj, ldp),
                }
            }};
        }
        match np {
            1 => go!(1),
            2 => go!(2),
            3 => go!(3),
            _ => go!(4),
        }
    }
}

/// The GEMV over `NP` panels, with the projection piece over `NQ` panels (none if 0)
/// interleaved: after each run of `k / kp` GEMV terms, one term of the piece.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn micro<const NP: usize, const NQ: usize>(
    _t: Avx512Token,
    h: &[f32],
    ps: &[PanelRef<'_, f32>; NP],
    c: &mut [f32],
    piece: Option<(FoldPiece, &[PanelRef<'_, f32>; NQ])>,
    x: Operand<'_, f32>,
    proj: &mut [f32],
    ldp: usize,
) {
    let k = h.len();
    let wps: [&[f32]; NP] = array_from(
        &[],
        #[inline(always)]
        |j| &ps[j].data[..k * NR],
    );
    // SAFETY: for every intrinsic below, `_t` proves the CPU has AVX-512F, and this function is
    // inlined into the `#[target_feature(enable = "avx512f")]` dispatch entry. Memory access
    // goes through pointers of slices bounds-checked to at least the 16 elements read, or, for
    // the masked accesses, to the `width` elements the mask selects (masked-off lanes are
    // neither read nor written, and raise no fault).
    unsafe {
        let zero = _mm512_setzero_ps();
        let mut v = [zero; NP];
        // One GEMV term `p`: `NP` panel loads (from L2) and multiply-adds.
        macro_rules! gemv_term {
            ($p:expr) => {{
                let p = $p;
                let b = _mm512_set1_ps(h[p]);
                for (vj, wp) in v.iter_mut().zip(&wps) {
                    *vj = _mm512_fmadd_ps(b, _mm512_loadu_ps(wp[p * NR..][..NR].as_ptr()), *vj);
                }
            }};
        }
        match piece {
            None => {
                for p in 0..k {
                    gemv_term!(p);
                }
            }
            Some((pc, qs)) => {
                let kp = pc.kp;
                // The piece's operands, each sliced to exactly what it reads.
                let xr: [&[f32]; FOLD_ROWS] = array_from(
                    &[],
                    #[inline(always)]
                    |r| &x.data[(pc.r0 + r) * x.ld + pc.k0..][..kp],
                );
                let wq: [&[f32]; NQ] = array_from(
                    &[],
                    #[inline(always)]
                    |j| &qs[j].data[pc.k0 * NR..][..kp * NR],
                );
                let mut u = [[zero; NQ]; FOLD_ROWS];
                if pc.acc == Accumulate::Yes {
                    for (r, ur) in u.iter_mut().enumerate() {
                        for (uj, qj) in ur.iter_mut().zip(qs) {
                            let row = &proj[(pc.r0 + r) * ldp + qj.col0..][..qj.width];
                            *uj = _mm512_maskz_loadu_ps(width_mask(qj.width), row.as_ptr());
                        }
                    }
                }
                let mut p = 0;
                for q in 0..kp {
                    // (`min`: tells the compiler `p < k`, so the loads need no bounds check.)
                    let end = ((q + 1) * k / kp).min(k);
                    while p < end {
                        gemv_term!(p);
                        p += 1;
                    }
                    let wv: [__m512; NQ] = array_from(
                        zero,
                        #[inline(always)]
                        |j| _mm512_loadu_ps(wq[j][q * NR..][..NR].as_ptr()),
                    );
                    for (ur, xr) in u.iter_mut().zip(&xr) {
                        let b = _mm512_set1_ps(xr[q]);
                        for (uj, &wj) in ur.iter_mut().zip(&wv) {
                            *uj = _mm512_fmadd_ps(b, wj, *uj);
                        }
                    }
                }
                for (r, ur) in u.iter().enumerate() {
                    for (&uj, qj) in ur.iter().zip(qs) {
                        let row = &mut proj[(pc.r0 + r) * ldp + qj.col0..][..qj.width];
                        _mm512_mask_storeu_ps(row.as_mut_ptr(), width_mask(qj.width), uj);
                    }
                }
            }
        }
        for (&vj, pj) in v.iter().zip(ps) {
            let row = &mut c[pj.col0..][..pj.width];
            _mm512_mask_storeu_ps(row.as_mut_ptr(), width_mask(pj.width), vj);
        }
    }
}
