//! One time step of a cell, forward and backward, shared by every driver (the sequence
//! passes, the hidden-unit split and the streaming layer): the recurrent GEMM for all gates
//! (two for the reset-before GRU) and the fused post-GEMM kernel.

use crate::float::Float;
use crate::kernels::isa::IsaToken;
use crate::kernels::postgemm::StepShape;
use crate::kernels::step_gemm::{Accumulate, Operand, PackedLayout, PackedRef, PanelOrder};
use crate::shape::{CellKind, GruVariant};

/// What every forward step of one call shares: the cell, the kernels' ISA, the shapes, the
/// packed `W_hhᵀ [H, G*H]` and the biases as the post-GEMM kernels take them.
pub(crate) struct Prepared<'a, F> {
    pub cell: CellKind,
    pub isa: IsaToken,
    /// Hidden units `H` (the batch rows come from the step's slices).
    pub hidden: usize,
    /// `W_hhᵀ` packed with [`forward_packing`](crate::packing::forward_packing).
    pub w_hh_t: PackedRef<'a, F>,
    /// `b_ih + b_hh`, except the reset-after GRU's candidate block: `b_in` alone.
    pub bias: &'a [F],
    /// The reset-after GRU's `b_hn [H]` (unused by other cells).
    pub b_hn: &'a [F],
}

/// The buffers of one forward step (`[B, ·]` each). `c_prev`/`c_out` are empty except for the
/// LSTM, `grid` except for the GRU (`W_hn h + b_hn` or `r * h_{t-1}`).
pub(crate) struct StepState<'s, F> {
    /// In: the step's input projection `[B, G*H]`; out: activated gates.
    pub gates: &'s mut [F],
    /// Scratch for the recurrent GEMM, `[B, G*H]`.
    pub acc: &'s mut [F],
    pub h_prev: &'s [F],
    pub h_out: &'s mut [F],
    pub c_prev: &'s [F],
    pub c_out: &'s mut [F],
    pub grid: &'s mut [F],
    /// The order the recurrent GEMM walks `W_hhᵀ` (alternated by step; see [`PanelOrder`]).
    pub order: PanelOrder,
}

/// One forward step: the recurrent GEMM for all gates (two for the reset-before GRU), then
/// the fused post-GEMM kernel.
pub(crate) fn forward_step<F: Float>(prep: &Prepared<'_, F>, st: StepState<'_, F>) {
    let (isa, w) = (prep.isa, prep.w_hh_t);
    let h = prep.hidden;
    let b = st.h_prev.len() / h;
    let sh = StepShape {
        batch: b,
        hidden: h,
    };
    let gh = prep.cell.gates() * h;
    let h_prev = Operand {
        data: st.h_prev,
        ld: h,
    };
    let all = PackedRef {
        order: st.order,
        ..PackedRef::all(w.data, w.layout)
    };
    match prep.cell {
        CellKind::Rnn(act) => {
            F::step_gemm(isa, b, h, h_prev, all, st.acc, gh, Accumulate::No);
            F::rnn_forward(isa, sh, act, st.gates, st.acc, prep.bias, st.h_out);
        }
        CellKind::Lstm => {
            F::step_gemm(isa, b, h, h_prev, all, st.acc, gh, Accumulate::No);
            F::lstm_forward(
                isa, sh, st.gates, st.acc, prep.bias, st.c_prev, st.c_out, st.h_out,
            );
        }
        CellKind::Gru(GruVariant::ResetAfter) => {
            F::step_gemm(isa, b, h, h_prev, all, st.acc, gh, Accumulate::No);
            F::gru_reset_after_forward(
                isa, sh, st.gates, st.acc, prep.bias, prep.b_hn, st.h_prev, st.h_out, st.grid,
            );
        }
        CellKind::Gru(GruVariant::ResetBefore) => {
            let (acc_rz, acc_n) = st.acc.split_at_mut(2 * b * h);
            let rz = PackedRef {
                order: st.order,
                ..PackedRef::gates(w.data, w.layout, 0, 2)
            };
            F::step_gemm(isa, b, h, h_prev, rz, acc_rz, 2 * h, Accumulate::No);
            let rh = st.grid;
            F::gru_reset_before_forward_gates(
                isa,
                sh,
                st.gates,
                acc_rz,
                &prep.bias[..2 * h],
                st.h_prev,
                rh,
            );
            let n = PackedRef {
                order: st.order,
                ..PackedRef::gates(w.data, w.layout, 2, 1)
            };
            F::step_gemm(
                isa,
                b,
                h,
                Operand { data: &*rh, ld: h },
                n,
                acc_n,
                h,
                Accumulate::No,
            );
            F::gru_reset_before_forward_state(
                isa,
                sh,
                st.gates,
                &acc_n[..b * h],
                &prep.bias[2 * h..],
                st.h_prev,
                st.h_out,
            );
        }
    }
}

/// What every backward step shares.
pub(crate) struct BackwardPrep<'a, F> {
    pub cell: CellKind,
    pub isa: IsaToken,
    pub hidden: usize,
    /// `W_hh [G*H, H]` packed with [`backward_packing`](crate::packing::backward_packing).
    pub w_hh: &'a [F],
    pub layout: PackedLayout,
}

/// The buffers of one backward step (`[B, ·]` each; empty where the cell has no use for one).
pub(crate) struct BackwardState<'s, F> {
    /// In: activated gates; out: pre-activation gate gradients.
    pub gates: &'s mut [F],
    /// GRU: in `W_hn h + b_hn` or `r * h_{t-1}`; reset-after out: `dn * r`.
    pub grid: &'s mut [F],
    pub h_prev: &'s [F],
    pub h: &'s [F],
    pub c_prev: &'s [F],
    pub c: &'s [F],
    /// Upstream `dy_t`, if any.
    pub dy: Option<&'s [F]>,
    /// In: gradient reaching `h_t` from later steps (`dy_t` is added here).
    pub dh: &'s mut [F],
    /// Out: `dh_{t-1}`.
    pub dh_prev: &'s mut [F],
    /// LSTM: in `dc_t`, out `dc_{t-1}`.
    pub dc: &'s mut [F],
    /// Reset-before GRU scratch: `d(r * h_{t-1})`.
    pub drh: &'s mut [F],
}

/// One backward step over the step's rows: add `dy_t`, the fused gate-gradient kernel, then
/// `dh_{t-1} = dG · W_hh` (+ the direct paths through `z`).
pub(crate) fn backward_step<F: Float>(prep: &BackwardPrep<'_, F>, st: BackwardState<'_, F>) {
    let (isa, h) = (prep.isa, prep.hidden);
    let b = st.dh.len() / h;
    let gh = prep.cell.gates() * h;
    let sh = StepShape {
        batch: b,
        hidden: h,
    };
    let w = |g: usize| PackedRef::rows_from(prep.w_hh, prep.layout, g * h);
    if let Some(dy) = st.dy {
        for (a, v) in st.dh.iter_mut().zip(dy) {
            *a += *v;
        }
    }
    let (gates, dh, dh_next) = (st.gates, &*st.dh, st.dh_prev);
    match prep.cell {
        CellKind::Rnn(act) => {
            F::rnn_backward(isa, sh, act, st.h, dh, gates);
            F::step_gemm(
                isa,
                b,
                h,
                Operand {
                    data: &*gates,
                    ld: h,
                },
                w(0),
                dh_next,
                h,
                Accumulate::No,
            );
        }
        CellKind::Lstm => {
            F::lstm_backward(isa, sh, gates, st.c_prev, st.c, dh, st.dc);
            F::step_gemm(
                isa,
                b,
                gh,
                Operand {
                    data: &*gates,
                    ld: gh,
                },
                w(0),
                dh_next,
                h,
                Accumulate::No,
            );
        }
        CellKind::Gru(GruVariant::ResetAfter) => {
            F::gru_reset_after_backward(isa, sh, gates, st.grid, st.h_prev, dh, dh_next);
            // dh_{t-1} += [dr, dz] · W_h{r,z} + (dn * r) · W_hn
            F::step_gemm(
                isa,
                b,
                2 * h,
                Operand {
                    data: &*gates,
                    ld: gh,
                },
                w(0),
                dh_next,
                h,
                Accumulate::Yes,
            );
            F::step_gemm(
                isa,
                b,
                h,
                Operand {
                    data: &*st.grid,
                    ld: h,
                },
                w(2),
                dh_next,
                h,
                Accumulate::Yes,
            );
        }
        CellKind::Gru(GruVariant::ResetBefore) => {
            F::gru_reset_before_backward_candidate(isa, sh, gates, st.h_prev, dh, dh_next);
            // d(r*h) = dn · W_hn, needed before the reset gradient.
            let dn = Operand {
                data: &gates[2 * h..],
                ld: gh,
            };
            F::step_gemm(isa, b, h, dn, w(2), st.drh, h, Accumulate::No);
            F::gru_reset_before_backward_reset(isa, sh, gates, st.h_prev, st.drh, dh_next);
            F::step_gemm(
                isa,
                b,
                2 * h,
                Operand {
                    data: &*gates,
                    ld: gh,
                },
                w(0),
                dh_next,
                h,
                Accumulate::Yes,
            );
        }
    }
}

/// The biases as the post-GEMM kernels take them (see [`Prepared::bias`]).
pub(crate) fn fused_bias<F: Float>(cell: CellKind, b_ih: &[F], b_hh: &[F], out: &mut [F]) {
    for ((o, a), c) in out.iter_mut().zip(b_ih).zip(b_hh) {
        *o = *a + *c;
    }
    if cell == CellKind::Gru(GruVariant::ResetAfter) {
        // b_hn sits inside r * (W_hn h + b_hn); only b_in is added outside.
        let h = b_ih.len() / 3;
        out[2 * h..].copy_from_slice(&b_ih[2 * h..]);
    }
}
