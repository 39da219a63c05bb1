//! The forward pass over a fixed batch: the input projection of every step as one GEMM,
//! then the recurrence, split as the plan says.

use crate::cell::{Prepared, StepState, forward_step, fused_bias};
use crate::error::Result;
use crate::exec::columns::{ColumnPass, SliceState, column_slices, forward_columns};
use crate::exec::plan::ForwardPlan;
use crate::exec::rows::{row_pieces, row_ranges, run_parallel};
use crate::float::Float;
use crate::gemm::input_projection;
use crate::kernels::isa::IsaToken;
use crate::kernels::step_gemm::{PackedRef, PanelOrder};
use crate::layer::{FinalState, InitialState, Layer};
use crate::packing::forward_packing;
use crate::sequence::{TimeAxis, read_write};
use crate::shape::{CellKind, Direction};
use crate::workspace::Buffers;

/// The forward pass over a fixed batch; every buffer was validated by [`Layer::forward`]. The
/// recurrence runs as `plan` says: split by batch rows, or (inference only) by hidden units;
/// the only error is a failed allocation of the slices' buffers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<F: Float>(
    layer: &Layer<F>,
    isa: IsaToken,
    plan: ForwardPlan,
    direction: Direction,
    ws: &mut Buffers<F>,
    training: bool,
    x: &[F],
    init: InitialState<'_, F>,
    y: &mut [F],
    fin: FinalState<'_, F>,
) -> Result<()> {
    let d = ws.dims();
    let (t_len, b, i_sz, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let cell = layer.cell();
    let gh = cell.gates() * h;
    let bh = b * h;
    let p = ws.parts();

    let params = layer.weights();
    fused_bias(cell, params.bias_ih, params.bias_hh, p.bias);
    // W_hhᵀ [H, G*H] in panels, so the per-step GEMM streams contiguous rows of all gates.
    let fwd_layout = forward_packing::<F>(cell, h, h);
    let packed_forward = layer.packed_forward();

    let w_ih_t = PackedRef::all(layer.packed_input(), layer.input_packing());

    // Initial states: in the slot the first step reads (training keeps every state in
    // order of time; inference only the initial one, and the LSTM's cell state in a ring).
    let axis = TimeAxis::new(t_len, direction);
    let first = if training { axis.first_slot() } else { 0 };
    let h_init = &mut p.h_all[first * bh..][..bh];
    match init.h0 {
        Some(h0) => h_init.copy_from_slice(h0),
        None => h_init.fill(F::ZERO),
    }
    if cell.has_cell_state() {
        let c_init = &mut p.c_all[first * bh..][..bh];
        match init.c0 {
            Some(c0) => c_init.copy_from_slice(c0),
            None => c_init.fill(F::ZERO),
        }
    }

    let shards = match plan {
        ForwardPlan::Rows(shards) => shards,
        ForwardPlan::Columns(units) => {
            let pass = ColumnPass::new(layer, b, &*p.bias);
            let slices = column_slices(h, fwd_layout.nr, units)
                .into_iter()
                .map(|range| SliceState::new(&pass, range, init.c0))
                .collect::<Result<Vec<_>>>()?;
            let (h0, proj) = (&p.h_all[..bh], &mut *p.gates);
            forward_columns(&pass, slices, units, axis, x, w_ih_t, proj, h0, y, fin.c_n);
            if let Some(h_n) = fin.h_n {
                h_n.copy_from_slice(&y[axis.last_step() * bh..][..bh]);
            }
            return Ok(());
        }
    };

    // The input projection of every step at once: P[T*B, G*H] = X[T*B, I] · W_ihᵀ.
    input_projection(isa, shards, x, i_sz, w_ih_t, p.gates);
    let w_t = PackedRef::all(packed_forward, fwd_layout);
    let prep = Prepared {
        cell,
        isa,
        hidden: h,
        w_hh_t: w_t,
        bias: &*p.bias,
        b_hn: layer.gru_b_hn(),
    };
    // The recurrence, split by batch rows into shards that each run the whole sequence: rows
    // are independent, so there is no synchronisation per step and every row is computed
    // exactly as on one thread. Each shard gets its rows of every step as a list of slices.
    let ranges = row_ranges(b, shards);
    let lstm = cell.has_cell_state();
    let gru = matches!(cell, CellKind::Gru(_));
    let gates = row_pieces(&mut *p.gates, t_len, gh, &ranges)?;
    let acc = row_pieces(&mut *p.acc, 1, gh, &ranges)?;
    let (h_all, h_len) = if training {
        (&mut *p.h_all, t_len + 1)
    } else {
        (&mut p.h_all[..bh], 1)
    };
    let h_states = row_pieces(h_all, h_len, h, &ranges)?;
    let y_rows = row_pieces(y, t_len, h, &ranges)?;
    let c_len = match (lstm, training) {
        (false, _) => 0,
        (true, true) => t_len + 1,
        (true, false) => 2,
    };
    let c_states = row_pieces(&mut p.c_all[..c_len * bh], c_len, h, &ranges)?;
    let g_len = match (gru, training) {
        (false, _) => 0,
        (true, true) => t_len,
        (true, false) => 1,
    };
    let grids = row_pieces(&mut p.grid[..g_len * bh], g_len, h, &ranges)?;
    type Shard<'a, F> = (
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
    );
    let jobs: Vec<Shard<'_, F>> = gates
        .into_iter()
        .zip(acc)
        .zip(h_states)
        .zip(y_rows)
        .zip(c_states)
        .zip(grids)
        .map(|(((((g, a), hs), ys), cs), gr)| (g, a, hs, ys, cs, gr))
        .collect();
    run_parallel(jobs, &|(
        mut gates,
        mut acc,
        mut h_states,
        mut y_rows,
        mut c_states,
        mut grids,
    ): Shard<'_, F>| {
        for tau in 0..t_len {
            let t = axis.at(tau);
            // The previous state and the slot for this step's: training keeps every state in
            // the workspace; inference reads the previous state from y (or the initial state)
            // and writes the new one into y.
            let (h_prev, h_out): (&[F], &mut [F]) = if training {
                read_write(&mut h_states, axis.prev_slot(t), axis.out_slot(t))
            } else if tau == 0 {
                (&*h_states[0], &mut *y_rows[t])
            } else {
                read_write(&mut y_rows, axis.at(tau - 1), t)
            };
            let (c_prev, c_out): (&[F], &mut [F]) = if !lstm {
                (&[], &mut [])
            } else if training {
                read_write(&mut c_states, axis.prev_slot(t), axis.out_slot(t))
            } else {
                // A two-slot ring: step tau reads slot tau % 2 and writes the other.
                read_write(&mut c_states, tau % 2, (tau + 1) % 2)
            };
            let grid: &mut [F] = match (gru, training) {
                (true, true) => &mut *grids[t],
                (true, false) => &mut *grids[0],
                _ => &mut [],
            };
            let st = StepState {
                gates: &mut *gates[t],
                acc: &mut *acc[0],
                h_prev,
                h_out,
                c_prev,
                c_out,
                grid,
                order: PanelOrder::alternating(tau),
            };
            forward_step(&prep, st);
            if training {
                y_rows[t].copy_from_slice(&*h_states[axis.out_slot(t)]);
            }
        }
    });

    if let Some(h_n) = fin.h_n {
        h_n.copy_from_slice(&y[axis.last_step() * bh..][..bh]);
    }
    if let Some(c_n) = fin.c_n {
        let last = if training {
            axis.last_slot()
        } else {
            // Step tau writes ring slot (tau + 1) % 2.
            t_len % 2
        };
        c_n.copy_from_slice(&p.c_all[last * bh..][..bh]);
    }
    Ok(())
}
