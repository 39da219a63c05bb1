//! The layer handle (`frnn_layer`): creating, loading, sizing and freeing it, its thread
//! count, and the forward, backward and step entry points, whose bodies are in [`pass`].

mod pass;

use std::ffi::c_int;

use fused_rnn::interop::Direction;
use fused_rnn::interop::pytorch;
use fused_rnn::{Batch, Layer, LayerGrads, LayerWeights, Workspace};

use crate::ffi::{
    CErr, cell_from_c, cell_to_c, check_out_handle, check_ptr, free_handle, guard, live, live_ref,
    store_handle,
};
use pass::{Pass, backward_impl, forward_impl, step_impl};

/// The opaque layer handle (`frnn_layer` in C): the layer plus the workspaces and buffers its
/// calls reuse.
pub struct FrnnLayer {
    pub(crate) layer: Layer<f32>,
    /// Kept from a training forward for the backward that follows.
    train_ws: Option<Workspace<f32>>,
    infer_ws: Option<Workspace<f32>>,
    /// `T = 1` inference workspace for `frnn_step`.
    step_ws: Option<Workspace<f32>>,
    step_h: Vec<f32>,
    step_c: Vec<f32>,
    /// Kept from a training `frnn_forward_padded` for the `frnn_backward_padded` that follows.
    padded_train: Option<Workspace<f32>>,
    padded_infer: Option<Workspace<f32>>,
    grads: LayerGrads<f32>,
}

impl FrnnLayer {
    fn new(layer: Layer<f32>) -> Result<Self, CErr> {
        let grads = layer.zero_grads()?;
        Ok(FrnnLayer {
            layer,
            train_ws: None,
            infer_ws: None,
            step_ws: None,
            step_h: Vec::new(),
            step_c: Vec::new(),
            padded_train: None,
            padded_infer: None,
            grads,
        })
    }
}

/// # Safety
/// `layer` is NULL or a handle from `frnn_layer_create*` not yet freed, used by one thread at a
/// time.
unsafe fn handle<'a>(layer: *mut FrnnLayer) -> Result<&'a mut FrnnLayer, CErr> {
    // SAFETY: the caller's contract above.
    unsafe { live(layer, "layer is NULL") }
}

/// Creates a layer from parameters in PyTorch's layout (copied). See `fused_rnn.h`.
///
/// # Safety
/// Each non-NULL pointer must be valid for reads of its stated length; `out` valid for one
/// pointer write.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn frnn_layer_create(
    cell: c_int,
    input_size: usize,
    hidden_size: usize,
    w_ih: *const f32,
    w_ih_len: usize,
    w_hh: *const f32,
    w_hh_len: usize,
    b_ih: *const f32,
    b_ih_len: usize,
    b_hh: *const f32,
    b_hh_len: usize,
    out: *mut *mut FrnnLayer,
) -> c_int {
    guard(|| {
        check_out_handle(out)?;
        let cell = cell_from_c(cell)?;
        let mut s = Vec::new();
        check_ptr("w_ih", w_ih, w_ih_len, true, false, &mut s)?;
        check_ptr("w_hh", w_hh, w_hh_len, true, false, &mut s)?;
        check_ptr("b_ih", b_ih, b_ih_len, true, false, &mut s)?;
        check_ptr("b_hh", b_hh, b_hh_len, true, false, &mut s)?;
        // SAFETY: checked non-NULL and aligned; the C caller guarantees the lengths.
        let w = unsafe {
            LayerWeights {
                weight_ih: std::slice::from_raw_parts(w_ih, w_ih_len),
                weight_hh: std::slice::from_raw_parts(w_hh, w_hh_len),
                bias_ih: std::slice::from_raw_parts(b_ih, b_ih_len),
                bias_hh: std::slice::from_raw_parts(b_hh, b_hh_len),
            }
        };
        let layer = Layer::new(cell, input_size, hidden_size, w)?;
        store_handle(out, FrnnLayer::new(layer)?);
        Ok(())
    })
}

/// Creates a layer from a PyTorch `state_dict` in safetensors format (f32 or f64 tensors; f64
/// is rounded to f32). See `fused_rnn.h`.
///
/// # Safety
/// `bytes` valid for reads of `len` bytes; `out` valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_layer_from_safetensors(
    bytes: *const u8,
    len: usize,
    cell: c_int,
    layer_index: usize,
    reverse: c_int,
    out: *mut *mut FrnnLayer,
) -> c_int {
    guard(|| {
        check_out_handle(out)?;
        let cell = cell_from_c(cell)?;
        let mut s = Vec::new();
        check_ptr("bytes", bytes, len, true, false, &mut s)?;
        // SAFETY: checked non-NULL; the C caller guarantees the length.
        let data = unsafe { std::slice::from_raw_parts(bytes, len) };
        let dir = if reverse != 0 {
            Direction::Reverse
        } else {
            Direction::Forward
        };
        let layer = pytorch::load_layer_converting::<f32>(data, cell, layer_index, dir)?;
        store_handle(out, FrnnLayer::new(layer)?);
        Ok(())
    })
}

/// Frees a layer and joins its threads; NULL is a no-op.
///
/// # Safety
/// `layer` is NULL or a handle from `frnn_layer_create*` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_layer_free(layer: *mut FrnnLayer) {
    // SAFETY: the contract above.
    unsafe { free_handle(layer) }
}

/// Reports a layer's cell (`FRNN_CELL_*`), input width and hidden width; NULL outputs are
/// skipped.
///
/// # Safety
/// `layer` a live handle; each non-NULL output valid for one write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_layer_sizes(
    layer: *const FrnnLayer,
    cell: *mut c_int,
    input_size: *mut usize,
    hidden_size: *mut usize,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract above NULL or a live handle; only read.
        let l = unsafe { live_ref(layer, "layer is NULL")? };
        let mut s = Vec::new();
        // One element each when given; a NULL output is absent (length 0), not an error.
        let one = |p: bool| usize::from(!p);
        let has_c = check_ptr("cell", cell, one(cell.is_null()), false, true, &mut s)?;
        let has_i = check_ptr(
            "input_size",
            input_size,
            one(input_size.is_null()),
            false,
            true,
            &mut s,
        )?;
        let has_h = check_ptr(
            "hidden_size",
            hidden_size,
            one(hidden_size.is_null()),
            false,
            true,
            &mut s,
        )?;
        // SAFETY: each written pointer was checked non-NULL and aligned.
        unsafe {
            if has_c {
                cell.write(cell_to_c(l.layer.cell()));
            }
            if has_i {
                input_size.write(l.layer.input_size());
            }
            if has_h {
                hidden_size.write(l.layer.hidden_size());
            }
        }
        Ok(())
    })
}

/// Forward over `x [T, B, I]`. See `fused_rnn.h`.
///
/// # Safety
/// `layer` a live handle; each non-NULL buffer valid for its stated length (reads for inputs,
/// writes for outputs).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn frnn_forward(
    layer: *mut FrnnLayer,
    seq_len: usize,
    batch: usize,
    training: c_int,
    x: *const f32,
    x_len: usize,
    h0: *const f32,
    h0_len: usize,
    c0: *const f32,
    c0_len: usize,
    y: *mut f32,
    y_len: usize,
    h_n: *mut f32,
    h_n_len: usize,
    c_n: *mut f32,
    c_n_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let l = unsafe { handle(layer)? };
        // SAFETY: the contract above, passed on.
        unsafe {
            forward_impl(
                l,
                seq_len,
                Batch::Fixed(batch),
                Vec::new(),
                training,
                (x, x_len),
                (h0, h0_len),
                (c0, c0_len),
                (y, y_len),
                (h_n, h_n_len),
                (c_n, c_n_len),
            )
        }
    })
}

/// Forward over a padded batch (rows of different lengths). See `fused_rnn.h`.
///
/// # Safety
/// As [`frnn_forward`]; `lengths` valid for reads of `lengths_len` elements.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn frnn_forward_padded(
    layer: *mut FrnnLayer,
    seq_len: usize,
    lengths: *const usize,
    lengths_len: usize,
    training: c_int,
    x: *const f32,
    x_len: usize,
    h0: *const f32,
    h0_len: usize,
    c0: *const f32,
    c0_len: usize,
    y: *mut f32,
    y_len: usize,
    h_n: *mut f32,
    h_n_len: usize,
    c_n: *mut f32,
    c_n_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let l = unsafe { handle(layer)? };
        // `lengths` joins the overlap check of the buffers (forward_impl): it must not share
        // memory with an output.
        let mut spans = Vec::new();
        check_ptr("lengths", lengths, lengths_len, true, false, &mut spans)?;
        // SAFETY: checked non-NULL and aligned; the C caller guarantees the length. Only read;
        // no output is made a slice unless the overlap check passes.
        let lengths = unsafe { std::slice::from_raw_parts(lengths, lengths_len) };
        // SAFETY: the contract above, passed on.
        unsafe {
            forward_impl(
                l,
                seq_len,
                Batch::Padded(lengths),
                spans,
                training,
                (x, x_len),
                (h0, h0_len),
                (c0, c0_len),
                (y, y_len),
                (h_n, h_n_len),
                (c_n, c_n_len),
            )
        }
    })
}

/// Backward over the last training forward. See `fused_rnn.h`.
///
/// # Safety
/// `layer` a live handle; each non-NULL buffer valid for its stated length (reads for inputs,
/// reads and writes for the gradient outputs).
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn frnn_backward(
    layer: *mut FrnnLayer,
    x: *const f32,
    x_len: usize,
    dy: *const f32,
    dy_len: usize,
    dh_n: *const f32,
    dh_n_len: usize,
    dc_n: *const f32,
    dc_n_len: usize,
    dx: *mut f32,
    dx_len: usize,
    dh0: *mut f32,
    dh0_len: usize,
    dc0: *mut f32,
    dc0_len: usize,
    dw_ih: *mut f32,
    dw_ih_len: usize,
    dw_hh: *mut f32,
    dw_hh_len: usize,
    db_ih: *mut f32,
    db_ih_len: usize,
    db_hh: *mut f32,
    db_hh_len: usize,
    accumulate: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let l = unsafe { handle(layer)? };
        // SAFETY: the contract above, passed on.
        unsafe {
            backward_impl(
                l,
                Pass::Fixed,
                (x, x_len),
                [(dy, dy_len), (dh_n, dh_n_len), (dc_n, dc_n_len)],
                [(dx, dx_len), (dh0, dh0_len), (dc0, dc0_len)],
                [
                    (dw_ih, dw_ih_len),
                    (dw_hh, dw_hh_len),
                    (db_ih, db_ih_len),
                    (db_hh, db_hh_len),
                ],
                accumulate,
            )
        }
    })
}

/// Backward over the last training [`frnn_forward_padded`]. See `fused_rnn.h`.
///
/// # Safety
/// As [`frnn_backward`].
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn frnn_backward_padded(
    layer: *mut FrnnLayer,
    x: *const f32,
    x_len: usize,
    dy: *const f32,
    dy_len: usize,
    dh_n: *const f32,
    dh_n_len: usize,
    dc_n: *const f32,
    dc_n_len: usize,
    dx: *mut f32,
    dx_len: usize,
    dh0: *mut f32,
    dh0_len: usize,
    dc0: *mut f32,
    dc0_len: usize,
    dw_ih: *mut f32,
    dw_ih_len: usize,
    dw_hh: *mut f32,
    dw_hh_len: usize,
    db_ih: *mut f32,
    db_ih_len: usize,
    db_hh: *mut f32,
    db_hh_len: usize,
    accumulate: c_int,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let l = unsafe { handle(layer)? };
        // SAFETY: the contract above, passed on.
        unsafe {
            backward_impl(
                l,
                Pass::Padded,
                (x, x_len),
                [(dy, dy_len), (dh_n, dh_n_len), (dc_n, dc_n_len)],
                [(dx, dx_len), (dh0, dh0_len), (dc0, dc0_len)],
                [
                    (dw_ih, dw_ih_len),
                    (dw_hh, dw_hh_len),
                    (db_ih, db_ih_len),
                    (db_hh, db_hh_len),
                ],
                accumulate,
            )
        }
    })
}

/// One streaming step: `h` (and `c`) in, the next state out. See `fused_rnn.h`.
///
/// # Safety
/// `layer` a live handle; each non-NULL buffer valid for its stated length.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn frnn_step(
    layer: *mut FrnnLayer,
    batch: usize,
    x_t: *const f32,
    x_len: usize,
    h: *mut f32,
    h_len: usize,
    c: *mut f32,
    c_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let l = unsafe { handle(layer)? };
        // SAFETY: the contract above, passed on.
        unsafe { step_impl(l, batch, (x_t, x_len), (h, h_len), (c, c_len)) }
    })
}

/// Sets how many threads the layer's calls use (1, the default: the calling thread only). See
/// `fused_rnn.h`.
///
/// # Safety
/// `layer` a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_layer_set_threads(layer: *mut FrnnLayer, threads: usize) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let l = unsafe { handle(layer)? };
        l.layer.set_threads(threads)?;
        Ok(())
    })
}
