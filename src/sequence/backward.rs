//! Backpropagation through time over a fixed batch: per step the fused gate-gradient kernel
//! and one GEMM for `dh_{t-1}`, then `dX`, the weight gradients and the bias sums over all
//! `T·B` rows at once.

use crate::cell::{BackwardPrep, BackwardState, backward_step};
use crate::error::Result;
use crate::exec::rows::{row_pieces, row_pieces_ref, row_ranges, run_parallel};
use crate::float::Float;
use crate::gemm::{self, GradTerm, gemm_packed_rows, weight_grad};
use crate::kernels::isa::IsaToken;
use crate::kernels::step_gemm::{Accumulate, PackedRef};
use crate::layer::{InputGrads, Layer, Upstream};
use crate::packing::backward_packing;
use crate::sequence::TimeAxis;
use crate::shape::{CellKind, Dims, Direction, GradMode, GruVariant};
use crate::weights::LayerGrads;
use crate::workspace::Buffers;

/// Scratch elements per thread for backward's weight gradients: B's packed chunks for the
/// widest call (`[I, H]` operands; the reset-before GRU's three, `[I, H, H]`).
pub(crate) fn backward_scratch_len<F: Float>(cell: CellKind, d: &Dims) -> usize {
    let widths: &[usize] = match cell {
        CellKind::Gru(GruVariant::ResetBefore) => &[d.input, d.hidden, d.hidden],
        _ => &[d.input, d.hidden],
    };
    gemm::weight_grad_scratch_len::<F>(d.seq_len * d.batch, widths)
}

/// Column sums of a `[rows, cols]` row-major matrix into `out`, overwriting or adding.
/// Rows are summed in blocks so the f32 rounding error grows with the block count, not the row
/// count, far less than a running sum over `T*B` rows. Each block's rows are read whole (the
/// partial sums of up to [`COLUMN_STRIP`] columns stay in L1), so the matrix streams through
/// once in memory order; every column's sum is the same sequence of additions whatever the
/// strip width.
///
/// The columns are split over `threads` (each column's sum is the same chain on any thread).
/// One thread took 1.3-1.9 ms of a GRU backward at T=128 B=32 H=512 while the other waited.
fn column_sums<F: Float>(
    threads: usize,
    m: &[F],
    rows: usize,
    cols: usize,
    ld: usize,
    out: &mut [F],
    mode: GradMode,
) {
    // Halves at a multiple of 16 columns (whole lines of f32), down to 64 columns a thread.
    if threads > 1 && cols >= 128 {
        let half = (cols / 2).next_multiple_of(16);
        let (lo, hi) = out[..cols].split_at_mut(half);
        let (t_lo, t_hi) = (threads / 2, threads - threads / 2);
        rayon::join(
            || column_sums(t_lo, m, rows, half, ld, lo, mode),
            || column_sums(t_hi, &m[half..], rows, cols - half, ld, hi, mode),
        );
        return;
    }
    const BLOCK: usize = 64;
    if mode == GradMode::Overwrite {
        out.fill(F::ZERO);
    }
    let mut part = [F::ZERO; COLUMN_STRIP];
    for c0 in (0..cols).step_by(COLUMN_STRIP) {
        let w = (cols - c0).min(COLUMN_STRIP);
        let part = &mut part[..w];
        for r0 in (0..rows).step_by(BLOCK) {
            part.fill(F::ZERO);
            for r in r0..(r0 + BLOCK).min(rows) {
                for (acc, v) in part.iter_mut().zip(&m[r * ld + c0..r * ld + c0 + w]) {
                    *acc += *v;
                }
            }
            for (o, v) in out[c0..c0 + w].iter_mut().zip(part.iter()) {
                *o += *v;
            }
        }
    }
}

/// Columns [`column_sums`] sums at once: 8 KiB of f32 partial sums (16 KiB of f64), in L1
/// beside the rows being read; `4·H` for H = 512.
const COLUMN_STRIP: usize = 2048;

/// BPTT over a fixed batch; every buffer was validated by [`Layer::backward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<F: Float>(
    layer: &Layer<F>,
    isa: IsaToken,
    shards: usize,
    direction: Direction,
    ws: &mut Buffers<F>,
    x: &[F],
    up: Upstream<'_, F>,
    grads: &mut LayerGrads<F>,
    inputs: InputGrads<'_, F>,
    mode: GradMode,
) -> Result<()> {
    let d = ws.dims();
    let (t_len, b, i_sz, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let cell = layer.cell();
    let gh = cell.gates() * h;
    let bh = b * h;
    let tb = t_len * b;
    let p = ws.parts();
    let axis = TimeAxis::new(t_len, direction);
    // W_hh [G*H, H] packed for dG · W_hh; `w(g)` is its rows from gate block `g` on.
    let bwd_layout = backward_packing::<F>(cell, h);
    let packed = layer.packed_backward();

    let (mut dh, mut dh_next) = (p.dh_a, p.dh_b);
    match up.dh_n {
        Some(v) => dh.copy_from_slice(v),
        None => dh.fill(F::ZERO),
    }
    if cell.has_cell_state() {
        match up.dc_n {
            Some(v) => p.dc.copy_from_slice(v),
            None => p.dc.fill(F::ZERO),
        }
    }

    let bprep = BackwardPrep {
        cell,
        isa,
        hidden: h,
        w_hh: packed,
        layout: bwd_layout,
    };
    // The reverse recurrence, split by batch rows into shards that each run the whole
    // sequence (rows are independent; see the forward).
    let lstm = cell.has_cell_state();
    let gru = matches!(cell, CellKind::Gru(_));
    let ranges = row_ranges(b, shards);
    let g_len = if gru { t_len } else { 0 };
    let c_len = if lstm { t_len + 1 } else { 0 };
    let drh_len = if p.drh.is_empty() { 0 } else { 1 };
    type Shard<'a, F> = (
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a [F]>,
        Vec<&'a [F]>,
        Vec<&'a [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
    );
    let dy_len = if up.dy.is_some() { t_len } else { 0 };
    let gates = row_pieces(&mut *p.gates, t_len, gh, &ranges)?;
    let grids = row_pieces(&mut p.grid[..g_len * bh], g_len, h, &ranges)?;
    let hs = row_pieces_ref(&*p.h_all, t_len + 1, h, &ranges)?;
    let cs = row_pieces_ref(&p.c_all[..c_len * bh], c_len, h, &ranges)?;
    let dys = row_pieces_ref(up.dy.unwrap_or(&[]), dy_len, h, &ranges)?;
    let d0 = row_pieces(&mut *dh, 1, h, &ranges)?;
    let d1 = row_pieces(&mut *dh_next, 1, h, &ranges)?;
    let dcs = row_pieces(
        &mut p.dc[..if lstm { bh } else { 0 }],
        usize::from(lstm),
        h,
        &ranges,
    )?;
    let drhs = row_pieces(&mut *p.drh, drh_len, h, &ranges)?;
    let jobs: Vec<Shard<'_, F>> = gates
        .into_iter()
        .zip(grids)
        .zip(hs)
        .zip(cs)
        .zip(dys)
        .zip(d0)
        .zip(d1)
        .zip(dcs)
        .zip(drhs)
        .map(|((((((((g, gr), hs), cs), dy), d0), d1), dc), drh)| {
            (g, gr, hs, cs, dy, d0, d1, dc, drh)
        })
        .collect();
    run_parallel(jobs, &|(
        mut gates,
        mut grids,
        hs,
        cs,
        dys,
        mut d0,
        mut d1,
        mut dc,
        mut drh,
    ): Shard<'_, F>| {
        let (mut dh, mut dh_next) = (d0.pop().expect("one piece"), d1.pop().expect("one piece"));
        let mut dc = dc.pop().unwrap_or(&mut []);
        let mut drh = drh.pop().unwrap_or(&mut []);
        for tau in (0..t_len).rev() {
            let t = axis.at(tau);
            let (prev, out) = (axis.prev_slot(t), axis.out_slot(t));
            let st = BackwardState {
                gates: &mut *gates[t],
                grid: if gru { &mut *grids[t] } else { &mut [] },
                h_prev: hs[prev],
                h: hs[out],
                c_prev: if lstm { cs[prev] } else { &[] },
                c: if lstm { cs[out] } else { &[] },
                dy: dys.get(t).copied(),
                dh: &mut *dh,
                dh_prev: &mut *dh_next,
                dc: &mut *dc,
                drh: &mut *drh,
            };
            backward_step(&bprep, st);
            core::mem::swap(&mut dh, &mut dh_next);
        }
        let _ = (&mut dc, &mut drh);
    });
    // Each step swaps the two dh buffers: after T steps dh_{0} is in `dh` for even T.
    if t_len % 2 == 1 {
        core::mem::swap(&mut dh, &mut dh_next);
    }

    if let Some(dh0) = inputs.dh0 {
        dh0.copy_from_slice(dh);
    }
    if let Some(dc0) = inputs.dc0 {
        dc0.copy_from_slice(p.dc);
    }

    // After the loop, over all T*B rows at once. dG [T*B, G*H] now sits where the gates were.
    let dg: &[F] = p.gates;
    if let Some(dx) = inputs.dx {
        let w = PackedRef::all(
            layer.packed_input_backward(),
            layer.input_backward_packing(),
        );
        gemm_packed_rows(isa, shards, tb, dg, gh, gh, w, dx);
    }
    let acc = match mode {
        GradMode::Overwrite => Accumulate::No,
        GradMode::Accumulate => Accumulate::Yes,
    };
    // Step t's previous state, for t = 0..T: consecutive slots in either direction.
    let h_prev_all = &p.h_all[axis.prev_slot(0) * bh..][..tb * h];
    // dW_ih = dGᵀ X, and dW_hh = dGᵀ H_{t-1} for the gate blocks whose recurrent input is
    // h_{t-1} itself: one pass over dG for both.
    let term = GradTerm::new;
    column_sums(shards, p.gates, tb, gh, gh, &mut grads.bias_ih, mode);
    // b_hh's gradient is b_ih's for every gate block where both biases enter the same
    // pre-activation: all but the reset-after GRU's n block (there b_hn sits inside
    // `r * (W_hn h + b_hn)`; its sums are over `grid`). Started from zero, they are the same
    // bits, so overwriting copies them.
    let shared = match cell {
        CellKind::Gru(GruVariant::ResetAfter) => 2 * h,
        _ => gh,
    };
    match mode {
        GradMode::Overwrite => {
            grads.bias_hh[..shared].copy_from_slice(&grads.bias_ih[..shared]);
        }
        GradMode::Accumulate => {
            let db = &mut grads.bias_hh[..shared];
            column_sums(shards, p.gates, tb, shared, gh, db, mode);
        }
    }
    match cell {
        CellKind::Rnn(_) | CellKind::Lstm => {
            let terms = vec![
                term(x, i_sz, 0, gh, &mut grads.weight_ih),
                term(h_prev_all, h, 0, gh, &mut grads.weight_hh),
            ];
            weight_grad(isa, shards, dg, gh, tb, terms, acc, &mut *p.grad_scratch);
        }
        CellKind::Gru(variant) => {
            let (dw_rz, dw_n) = grads.weight_hh.split_at_mut(2 * h * h);
            let grid: &[F] = &p.grid[..tb * h];
            match variant {
                GruVariant::ResetAfter => {
                    let terms = vec![
                        term(x, i_sz, 0, gh, &mut grads.weight_ih),
                        term(h_prev_all, h, 0, 2 * h, dw_rz),
                    ];
                    weight_grad(isa, shards, dg, gh, tb, terms, acc, &mut *p.grad_scratch);
                    // n block: dG_hh = dn * r (in grid), operand h_{t-1}.
                    let terms = vec![term(h_prev_all, h, 0, h, dw_n)];
                    weight_grad(isa, shards, grid, h, tb, terms, acc, &mut *p.grad_scratch);
                    let db_n = &mut grads.bias_hh[2 * h..];
                    column_sums(shards, grid, tb, h, h, db_n, mode);
                }
                GruVariant::ResetBefore => {
                    // n block: dG = dn, operand r * h_{t-1} (in grid).
                    let terms = vec![
                        term(x, i_sz, 0, gh, &mut grads.weight_ih),
                        term(h_prev_all, h, 0, 2 * h, dw_rz),
                        term(grid, h, 2 * h, gh, dw_n),
                    ];
                    weight_grad(isa, shards, dg, gh, tb, terms, acc, &mut *p.grad_scratch);
                }
            }
        }
    }
    Ok(())
}
