//! The bodies of the forward, backward and step calls: the pointer checks, the handle's
//! workspaces, and the crate's only calls into the Rust layer's passes (`Layer::forward`,
//! `Layer::backward`, `Layer::workspace`).

use std::ffi::c_int;

use fused_rnn::{
    Batch, Direction, Error, FinalState, GradMode, InitialState, InputGrads, Layer, Mode, Upstream,
    Workspace,
};

use super::FrnnLayer;
use crate::ffi::{
    CErr, FRNN_ERR_STATE, Span, check_length, check_overlap, check_ptr, err, in_slice, out_slice,
};

/// Runs `pass` on the workspace in `slot` if `fits` accepts it, else on a new one from `make`
/// that takes the slot's place only once `pass` succeeds. So a refused call changes nothing in
/// the handle: the Rust layer leaves a workspace's saved state alone when it refuses a call,
/// and a workspace made for a call that is refused is dropped, the old one (and the backward
/// pending in it) kept. While a new workspace runs, the old one is still allocated.
fn with_slot<W>(
    slot: &mut Option<W>,
    fits: impl Fn(&W) -> bool,
    make: impl FnOnce() -> Result<W, Error>,
    pass: impl FnOnce(&mut W) -> Result<(), Error>,
) -> Result<(), CErr> {
    match slot {
        Some(w) if fits(w) => pass(w)?,
        _ => {
            let mut w = make()?;
            pass(&mut w)?;
            *slot = Some(w);
        }
    }
    Ok(())
}

/// Runs `pass` on a workspace for `(seq_len, batch, mode)` from `slot`, made anew only when
/// they change ([`with_slot`]).
fn with_workspace(
    layer: &Layer<f32>,
    slot: &mut Option<Workspace<f32>>,
    (seq_len, batch, mode): (usize, Batch<'_>, Mode),
    pass: impl FnOnce(&mut Workspace<f32>) -> Result<(), Error>,
) -> Result<(), CErr> {
    let (rows, lengths) = match batch {
        Batch::Fixed(b) => (b, None),
        Batch::Padded(l) => (l.len(), Some(l)),
    };
    let dims = layer.dims(seq_len, rows);
    with_slot(
        slot,
        |w| w.dims() == dims && w.lengths() == lengths && w.mode() == mode,
        || layer.workspace(seq_len, batch, mode),
        pass,
    )
}

/// Which training forward a backward call follows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Pass {
    Fixed,
    Padded,
}

/// The body of [`frnn_forward`](super::frnn_forward) and
/// [`frnn_forward_padded`](super::frnn_forward_padded): each buffer a pointer and its
/// length; `s` the spans of buffers checked before (`lengths`), for the overlap check.
///
/// # Safety
/// Each non-NULL buffer valid for its stated length (reads for inputs, writes for outputs).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn forward_impl(
    l: &mut FrnnLayer,
    seq_len: usize,
    batch: Batch<'_>,
    mut s: Vec<Span>,
    training: c_int,
    (x, x_len): (*const f32, usize),
    (h0, h0_len): (*const f32, usize),
    (c0, c0_len): (*const f32, usize),
    (y, y_len): (*mut f32, usize),
    (h_n, h_n_len): (*mut f32, usize),
    (c_n, c_n_len): (*mut f32, usize),
) -> Result<(), CErr> {
    let px = check_ptr("x", x, x_len, true, false, &mut s)?;
    let ph0 = check_ptr("h0", h0, h0_len, false, false, &mut s)?;
    let pc0 = check_ptr("c0", c0, c0_len, false, false, &mut s)?;
    let py = check_ptr("y", y.cast_const(), y_len, true, true, &mut s)?;
    let phn = check_ptr("h_n", h_n.cast_const(), h_n_len, false, true, &mut s)?;
    let pcn = check_ptr("c_n", c_n.cast_const(), c_n_len, false, true, &mut s)?;
    check_overlap(&s)?;
    // SAFETY: checked by check_ptr and check_overlap; lengths are the caller's contract.
    let (x, h0, c0, y, h_n, c_n) = unsafe {
        (
            in_slice(px, x, x_len).unwrap_or_default(),
            in_slice(ph0, h0, h0_len),
            in_slice(pc0, c0, c0_len),
            out_slice(py, y, y_len).unwrap_or_default(),
            out_slice(phn, h_n, h_n_len),
            out_slice(pcn, c_n, c_n_len),
        )
    };
    let mode = if training != 0 {
        Mode::Training
    } else {
        Mode::Inference
    };
    let (init, fin) = (InitialState { h0, c0 }, FinalState { h_n, c_n });
    let slot = match (batch, mode) {
        (Batch::Fixed(_), Mode::Training) => &mut l.train_ws,
        (Batch::Fixed(_), Mode::Inference) => &mut l.infer_ws,
        (Batch::Padded(_), Mode::Training) => &mut l.padded_train,
        (Batch::Padded(_), Mode::Inference) => &mut l.padded_infer,
    };
    with_workspace(&l.layer, slot, (seq_len, batch, mode), |ws| {
        l.layer.forward(ws, Direction::Forward, x, init, y, fin)
    })?;
    Ok(())
}

/// The body of [`frnn_backward`](super::frnn_backward) and
/// [`frnn_backward_padded`](super::frnn_backward_padded): `up` is `dy`, `dh_n`, `dc_n`;
/// `inputs` `dx`, `dh0`, `dc0`; `grads` `dw_ih`, `dw_hh`, `db_ih`, `db_hh`.
///
/// # Safety
/// Each non-NULL buffer valid for its stated length (reads for inputs, reads and writes for
/// the gradient outputs).
pub(super) unsafe fn backward_impl(
    l: &mut FrnnLayer,
    pass: Pass,
    (x, x_len): (*const f32, usize),
    up: [(*const f32, usize); 3],
    inputs: [(*mut f32, usize); 3],
    grads: [(*mut f32, usize); 4],
    accumulate: c_int,
) -> Result<(), CErr> {
    let [(dy, dy_len), (dh_n, dh_n_len), (dc_n, dc_n_len)] = up;
    let [(dx, dx_len), (dh0, dh0_len), (dc0, dc0_len)] = inputs;
    let [
        (dw_ih, dw_ih_len),
        (dw_hh, dw_hh_len),
        (db_ih, db_ih_len),
        (db_hh, db_hh_len),
    ] = grads;
    let mut s = Vec::new();
    let px = check_ptr("x", x, x_len, true, false, &mut s)?;
    let pdy = check_ptr("dy", dy, dy_len, false, false, &mut s)?;
    let pdhn = check_ptr("dh_n", dh_n, dh_n_len, false, false, &mut s)?;
    let pdcn = check_ptr("dc_n", dc_n, dc_n_len, false, false, &mut s)?;
    let pdx = check_ptr("dx", dx.cast_const(), dx_len, false, true, &mut s)?;
    let pdh0 = check_ptr("dh0", dh0.cast_const(), dh0_len, false, true, &mut s)?;
    let pdc0 = check_ptr("dc0", dc0.cast_const(), dc0_len, false, true, &mut s)?;
    let grads_ptrs = [
        ("dw_ih", dw_ih, dw_ih_len),
        ("dw_hh", dw_hh, dw_hh_len),
        ("db_ih", db_ih, db_ih_len),
        ("db_hh", db_hh, db_hh_len),
    ];
    let mut present = [false; 4];
    for (k, (what, p, n)) in grads_ptrs.iter().enumerate() {
        present[k] = check_ptr(what, p.cast_const(), *n, false, true, &mut s)?;
    }
    check_overlap(&s)?;
    // Weight-gradient buffers must match the layer exactly when given.
    let own = &mut l.grads;
    let own_bufs: [&mut Vec<f32>; 4] = [
        &mut own.weight_ih,
        &mut own.weight_hh,
        &mut own.bias_ih,
        &mut own.bias_hh,
    ];
    let what_len = [
        "dw_ih [G*H, I]",
        "dw_hh [G*H, H]",
        "db_ih [G*H]",
        "db_hh [G*H]",
    ];
    for k in 0..4 {
        if present[k] {
            check_length(what_len[k], grads_ptrs[k].2, own_bufs[k].len())?;
        }
    }
    let accumulate = accumulate != 0;
    // With accumulation, start from the caller's gradients (exactly GradMode::Accumulate).
    for (k, buf) in own_bufs.into_iter().enumerate() {
        if accumulate && present[k] {
            // SAFETY: checked non-NULL, aligned, non-overlapping, length equal to buf's.
            let src = unsafe { std::slice::from_raw_parts(grads_ptrs[k].1, buf.len()) };
            buf.copy_from_slice(src);
        } else {
            buf.fill(0.0);
        }
    }
    // SAFETY: checked by check_ptr and check_overlap; lengths are the caller's contract.
    let (x, dy, dh_n, dc_n, dx, dh0, dc0) = unsafe {
        (
            in_slice(px, x, x_len).unwrap_or_default(),
            in_slice(pdy, dy, dy_len),
            in_slice(pdhn, dh_n, dh_n_len),
            in_slice(pdcn, dc_n, dc_n_len),
            out_slice(pdx, dx, dx_len),
            out_slice(pdh0, dh0, dh0_len),
            out_slice(pdc0, dc0, dc0_len),
        )
    };
    let mode = if accumulate {
        GradMode::Accumulate
    } else {
        GradMode::Overwrite
    };
    let (up, inputs) = (Upstream { dy, dh_n, dc_n }, InputGrads { dx, dh0, dc0 });
    match pass {
        Pass::Fixed => {
            let ws = l.train_ws.as_mut().ok_or_else(|| {
                err(
                    FRNN_ERR_STATE,
                    "invalid call order: backward needs a training forward (training = 1) first",
                )
            })?;
            l.layer.backward(ws, x, up, &mut l.grads, inputs, mode)?;
        }
        Pass::Padded => {
            let ws = l.padded_train.as_mut().ok_or_else(|| {
                    err(
                        FRNN_ERR_STATE,
                        "invalid call order: backward_padded needs a training forward_padded (training = 1) first",
                    )
                })?;
            l.layer.backward(ws, x, up, &mut l.grads, inputs, mode)?;
        }
    }
    let own: [&Vec<f32>; 4] = [
        &l.grads.weight_ih,
        &l.grads.weight_hh,
        &l.grads.bias_ih,
        &l.grads.bias_hh,
    ];
    for (k, buf) in own.into_iter().enumerate() {
        if present[k] {
            // SAFETY: checked non-NULL, aligned, non-overlapping, length equal to buf's.
            let dst = unsafe { std::slice::from_raw_parts_mut(grads_ptrs[k].1, buf.len()) };
            dst.copy_from_slice(buf);
        }
    }
    Ok(())
}

/// The body of [`frnn_step`](super::frnn_step): `x_t`, `h` and `c`, each a pointer and its
/// length.
///
/// # Safety
/// Each non-NULL buffer valid for its stated length (reads for `x_t`, reads and writes for the
/// state).
pub(super) unsafe fn step_impl(
    l: &mut FrnnLayer,
    batch: usize,
    (x_t, x_len): (*const f32, usize),
    (h, h_len): (*mut f32, usize),
    (c, c_len): (*mut f32, usize),
) -> Result<(), CErr> {
    let lstm = l.layer.cell().has_cell_state();
    let mut s = Vec::new();
    let px = check_ptr("x_t", x_t, x_len, true, false, &mut s)?;
    check_ptr("h", h.cast_const(), h_len, true, true, &mut s)?;
    let pc = check_ptr("c", c.cast_const(), c_len, lstm, true, &mut s)?;
    if pc && !lstm {
        return Err(Error::UnexpectedBuffer {
            what: "c",
            why: "only the LSTM has a cell state",
        }
        .into());
    }
    check_overlap(&s)?;
    // SAFETY: checked by check_ptr and check_overlap; lengths are the caller's contract.
    let (x_t, h, c) = unsafe {
        (
            in_slice(px, x_t, x_len).unwrap_or_default(),
            out_slice(true, h, h_len).unwrap_or_default(),
            out_slice(pc, c, c_len),
        )
    };
    with_workspace(
        &l.layer,
        &mut l.step_ws,
        (1, Batch::Fixed(batch), Mode::Inference),
        |ws| {
            // The state is read from copies so that it can be written in place.
            l.step_h.clear();
            l.step_h.extend_from_slice(h);
            let c_prev = match c.as_deref() {
                Some(c) => {
                    l.step_c.clear();
                    l.step_c.extend_from_slice(c);
                    Some(&l.step_c[..])
                }
                None => None,
            };
            // y [1, B, H] is the new h.
            l.layer.forward(
                ws,
                Direction::Forward,
                x_t,
                InitialState {
                    h0: Some(&l.step_h),
                    c0: c_prev,
                },
                h,
                FinalState { h_n: None, c_n: c },
            )
        },
    )
}
