//! How the weights are packed for the step kernels: `W_hhᵀ` and `W_ihᵀ` in gate-blocked panels
//! for the forward GEMMs, `W_hh` and `W_ih` in panels for backward's `dG · W`.

use crate::error::{Error, Result};
use crate::float::Float;
use crate::kernels::step_gemm::{AlignedBuf, PackedLayout};
use crate::shape::CellKind;

/// Layout of `W_hhᵀ [H, G*H]` (or `W_ihᵀ [I, G*H]` with `k = I`) packed for the forward step
/// GEMM: one gate block per group.
pub(crate) fn forward_packing<F: Float>(cell: CellKind, k: usize, hidden: usize) -> PackedLayout {
    PackedLayout {
        k,
        groups: cell.gates(),
        group_width: hidden,
        nr: F::PANEL_WIDTH,
    }
}

/// Layout of `W_hh [G*H, H]` packed for the backward `dh_{t-1} = dG · W_hh`.
pub(crate) fn backward_packing<F: Float>(cell: CellKind, hidden: usize) -> PackedLayout {
    PackedLayout {
        k: cell.gates() * hidden,
        groups: 1,
        group_width: hidden,
        nr: F::PANEL_WIDTH,
    }
}

/// Hidden units `u0..u1` of every gate block of `W [G*H, K]` (a PyTorch weight, row-major,
/// `hidden = H`), transposed and packed with [`forward_packing`] for `u1 - u0` units: all of
/// `W` for `0..H` (the layer's packed weights), or a streaming worker's columns, in the same
/// panels as the whole packing (so the same bits), `u0` being a multiple of the panel width
/// and `u1` one or `H`.
pub(crate) fn pack_forward<F: Float>(
    cell: CellKind,
    w: &[F],
    k: usize,
    hidden: usize,
    (u0, u1): (usize, usize),
) -> Result<(AlignedBuf<F>, PackedLayout)> {
    let hc = u1 - u0;
    let layout = forward_packing::<F>(cell, k, hc);
    let mut packed = try_packed_buf(layout)?;
    layout.pack(&mut packed, |p, n| {
        let (g, off) = (n / hc, n % hc);
        w[(g * hidden + u0 + off) * k + p]
    });
    Ok((packed, layout))
}

/// `W [K, N]` (row-major, `N = layout.group_width`) packed with `layout` (one group), as
/// backward's `dG · W` reads it.
pub(crate) fn pack_rows<F: Float>(w: &[F], layout: PackedLayout) -> Result<AlignedBuf<F>> {
    let n = layout.group_width;
    let mut packed = try_packed_buf(layout)?;
    layout.pack(&mut packed, |r, c| w[r * n + c]);
    Ok(packed)
}

/// A zeroed buffer for `layout`, allocated fallibly: packed copies are padded to whole panels
/// (at `H = 1`, 16 times the weights), so their size is checked and their allocation may
/// fail with an error rather than abort.
fn try_packed_buf<F: Float>(layout: PackedLayout) -> Result<AlignedBuf<F>> {
    let len = layout.checked_len().ok_or(Error::SizeOverflow {
        what: "packed weights",
    })?;
    AlignedBuf::try_zeroed("packed weights", len)
}
