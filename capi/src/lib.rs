//! C ABI for `fused-rnn` (f32): create a layer from PyTorch-layout weights or a safetensors
//! `state_dict`, set its threads, run forward and backward (over batches of one length or of
//! rows of their own lengths) and stateless steps, free it; and
//! streams (`frnn_stream`, a `StreamingLayer`) that keep the state and run one step at a time.
//! The declarations, with the contract of every function, are in `include/fused_rnn.h`.
//!
//! Every entry point returns an `int` status (`FRNN_OK` = 0 or an `FRNN_ERR_*` code) and leaves
//! a message for `frnn_last_error_message` on failure. No panic crosses the boundary: each body
//! runs under `catch_unwind`, and a panic becomes `FRNN_ERR_PANIC`. Pointers are checked for
//! NULL, alignment and overlap between buffers of one call, and every buffer comes with its
//! length, checked against the dimensions.
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use fused_rnn::interop::Direction;
use fused_rnn::interop::pytorch;
use fused_rnn::{
    CellKind, Error, FinalState, GradMode, GruVariant, InitialState, InputGrads, Layer, LayerGrads,
    LayerWeights, Mode, PaddedWorkspace, RnnActivation, StreamingLayer, Upstream, Workspace,
};
use std::time::Duration;

/// Success.
pub const FRNN_OK: c_int = 0;
/// A required pointer is NULL (or a NULL optional buffer has a nonzero length).
pub const FRNN_ERR_NULL: c_int = 1;
/// A buffer's length does not match the dimensions.
pub const FRNN_ERR_LENGTH: c_int = 2;
/// An invalid argument: unknown cell, zero dimension, a buffer this cell has no use for,
/// misaligned or overlapping buffers, sizes that overflow.
pub const FRNN_ERR_ARGUMENT: c_int = 3;
/// A call out of order, e.g. backward without a training forward before it.
pub const FRNN_ERR_STATE: c_int = 4;
/// A safetensors file without the expected names, dtypes or shapes.
pub const FRNN_ERR_FORMAT: c_int = 5;
/// An internal error (a Rust panic, caught at the boundary). Please report it.
pub const FRNN_ERR_PANIC: c_int = 6;

/// An error on its way to C: a status code and a message.
struct CErr {
    code: c_int,
    msg: String,
}

impl From<Error> for CErr {
    fn from(e: Error) -> Self {
        let code = match e {
            Error::BufferLength { .. } => FRNN_ERR_LENGTH,
            Error::WorkspaceMismatch { .. } | Error::InvalidState { .. } => FRNN_ERR_STATE,
            Error::Format { .. } => FRNN_ERR_FORMAT,
            _ => FRNN_ERR_ARGUMENT,
        };
        CErr {
            code,
            msg: e.to_string(),
        }
    }
}

fn err(code: c_int, msg: impl Into<String>) -> CErr {
    CErr {
        code,
        msg: msg.into(),
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
    // `try_with` fails only during thread teardown; the message is then dropped.
    let _ = LAST_ERROR.try_with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            *m = c;
        }
    });
}

/// Runs `f`, turning its error or a panic into a status code and the thread's last message.
fn guard(f: impl FnOnce() -> Result<(), CErr>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => FRNN_OK,
        Ok(Err(e)) => {
            set_last_error(&e.msg);
            e.code
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            set_last_error(&format!(
                "internal error (panic caught at the C boundary): {what}"
            ));
            FRNN_ERR_PANIC
        }
    }
}

/// The opaque layer handle (`frnn_layer` in C): the layer plus the workspaces and buffers its
/// calls reuse.
pub struct FrnnLayer {
    layer: Layer<f32>,
    /// Kept from a training forward for the backward that follows.
    train_ws: Option<Workspace<f32>>,
    infer_ws: Option<Workspace<f32>>,
    /// `T = 1` inference workspace for `frnn_step`.
    step_ws: Option<Workspace<f32>>,
    step_h: Vec<f32>,
    step_c: Vec<f32>,
    /// Kept from a training `frnn_forward_padded` for the `frnn_backward_padded` that follows.
    padded_train: Option<PaddedWorkspace<f32>>,
    padded_infer: Option<PaddedWorkspace<f32>>,
    grads: LayerGrads<f32>,
}

impl FrnnLayer {
    fn new(layer: Layer<f32>) -> Self {
        let grads = layer.zero_grads();
        FrnnLayer {
            layer,
            train_ws: None,
            infer_ws: None,
            step_ws: None,
            step_h: Vec::new(),
            step_c: Vec::new(),
            padded_train: None,
            padded_infer: None,
            grads,
        }
    }
}

/// The workspace in `slot` if `fits` accepts it, else a new one from `make` put there.
fn slot_workspace<W>(
    slot: &mut Option<W>,
    fits: impl Fn(&W) -> bool,
    make: impl FnOnce() -> Result<W, Error>,
) -> Result<&mut W, CErr> {
    if !slot.as_ref().is_some_and(fits) {
        *slot = Some(make()?);
    }
    slot.as_mut()
        .ok_or_else(|| err(FRNN_ERR_PANIC, "workspace slot unexpectedly empty"))
}

/// A workspace in `slot` for `(seq_len, batch, mode)`, made anew only when they change.
fn workspace<'a>(
    layer: &Layer<f32>,
    slot: &'a mut Option<Workspace<f32>>,
    seq_len: usize,
    batch: usize,
    mode: Mode,
) -> Result<&'a mut Workspace<f32>, CErr> {
    let dims = layer.dims(seq_len, batch);
    slot_workspace(
        slot,
        |w| w.dims() == dims && w.mode() == mode,
        || layer.workspace(seq_len, batch, mode),
    )
}

/// A padded workspace in `slot` for `(lengths, seq_len, mode)`, made anew only when they
/// change.
fn padded_workspace<'a>(
    layer: &Layer<f32>,
    slot: &'a mut Option<PaddedWorkspace<f32>>,
    lengths: &[usize],
    seq_len: usize,
    mode: Mode,
) -> Result<&'a mut PaddedWorkspace<f32>, CErr> {
    slot_workspace(
        slot,
        |w| w.lengths() == lengths && w.seq_len() == seq_len && w.mode() == mode,
        || layer.padded_workspace(lengths, seq_len, mode),
    )
}

/// The batch of a forward call: `B` rows of the full length, or rows of their own lengths.
#[derive(Clone, Copy)]
enum Batch<'a> {
    Fixed(usize),
    Padded(&'a [usize]),
}

/// Which training forward a backward call follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    Fixed,
    Padded,
}

/// The address range of a buffer, for overlap checks.
#[derive(Clone, Copy)]
struct Span {
    what: &'static str,
    start: usize,
    end: usize,
    writes: bool,
}

/// Fails if any two buffers overlap where at least one is written.
fn check_overlap(spans: &[Span]) -> Result<(), CErr> {
    for (k, a) in spans.iter().enumerate() {
        for b in &spans[k + 1..] {
            if (a.writes || b.writes) && a.start < b.end && b.start < a.end {
                return Err(err(
                    FRNN_ERR_ARGUMENT,
                    format!("buffers {} and {} overlap", a.what, b.what),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a pointer/length pair: NULL is allowed (absent) only with length 0 when optional;
/// otherwise aligned for f32 and at most `isize::MAX` bytes.
fn check_ptr<T>(
    what: &'static str,
    ptr: *const T,
    len: usize,
    required: bool,
    writes: bool,
    spans: &mut Vec<Span>,
) -> Result<bool, CErr> {
    if ptr.is_null() {
        if required {
            return Err(err(FRNN_ERR_NULL, format!("{what} is NULL")));
        }
        if len != 0 {
            return Err(err(
                FRNN_ERR_NULL,
                format!("{what} is NULL but its length is {len} (pass 0 for an absent buffer)"),
            ));
        }
        return Ok(false);
    }
    if !ptr.is_aligned() {
        return Err(err(
            FRNN_ERR_ARGUMENT,
            format!("{what} is not aligned to {} bytes", align_of::<T>()),
        ));
    }
    let bytes = len
        .checked_mul(size_of::<T>())
        .filter(|b| *b <= isize::MAX as usize)
        .ok_or_else(|| {
            err(
                FRNN_ERR_ARGUMENT,
                format!("{what}: length {len} is too large"),
            )
        })?;
    let start = ptr as usize;
    spans.push(Span {
        what,
        start,
        end: start.saturating_add(bytes),
        writes,
    });
    Ok(true)
}

/// Fails unless `len` is `expected` (the buffer's name in `what`).
fn check_length(what: &'static str, len: usize, expected: usize) -> Result<(), CErr> {
    if len == expected {
        Ok(())
    } else {
        Err(Error::BufferLength {
            what,
            expected,
            got: len,
        }
        .into())
    }
}

/// # Safety
/// `ptr` must be valid for reads of `len` elements for `'a` (the C caller's contract), and was
/// checked by [`check_ptr`] (non-NULL when `present`, aligned, size in range).
unsafe fn in_slice<'a, T>(present: bool, ptr: *const T, len: usize) -> Option<&'a [T]> {
    // SAFETY: the caller's contract above.
    present.then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// As [`in_slice`], for writes; and the buffer overlaps no other buffer of the call
/// ([`check_overlap`]).
unsafe fn out_slice<'a, T>(present: bool, ptr: *mut T, len: usize) -> Option<&'a mut [T]> {
    // SAFETY: the caller's contract above.
    present.then(|| unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// # Safety
/// `layer` is NULL or a handle from `frnn_layer_create*` not yet freed, used by one thread at a
/// time.
unsafe fn handle<'a>(layer: *mut FrnnLayer) -> Result<&'a mut FrnnLayer, CErr> {
    // SAFETY: the caller's contract above.
    unsafe { live(layer, "layer is NULL") }
}

/// The object behind a handle, or `FRNN_ERR_NULL` with `null_msg`.
///
/// # Safety
/// `ptr` is NULL or a live handle of its type (made by `Box::into_raw`, not yet freed), used by
/// one thread at a time.
unsafe fn live<'a, T>(ptr: *mut T, null_msg: &'static str) -> Result<&'a mut T, CErr> {
    if ptr.is_null() {
        return Err(err(FRNN_ERR_NULL, null_msg));
    }
    // SAFETY: non-NULL, and by the caller's contract a live, exclusively used handle.
    Ok(unsafe { &mut *ptr })
}

/// The object behind a handle that is only read, or `FRNN_ERR_NULL` with `null_msg`.
///
/// # Safety
/// `ptr` is NULL or a live handle of its type, not written by anyone meanwhile.
unsafe fn live_ref<'a, T>(ptr: *const T, null_msg: &'static str) -> Result<&'a T, CErr> {
    if ptr.is_null() {
        return Err(err(FRNN_ERR_NULL, null_msg));
    }
    // SAFETY: non-NULL, and by the caller's contract a live handle nobody writes meanwhile.
    Ok(unsafe { &*ptr })
}

/// Frees a handle made by `Box::into_raw`; NULL is a no-op; a panic in a destructor stays on
/// this side.
///
/// # Safety
/// `ptr` is NULL or a live handle of its type, not used again.
unsafe fn free_handle<T>(ptr: *mut T) {
    if ptr.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by the contract, a live handle made by Box::into_raw, freed once.
        drop(unsafe { Box::from_raw(ptr) });
    }));
}

fn cell_from_c(cell: c_int) -> Result<CellKind, CErr> {
    Ok(match cell {
        0 => CellKind::Rnn(RnnActivation::Tanh),
        1 => CellKind::Rnn(RnnActivation::Relu),
        2 => CellKind::Lstm,
        3 => CellKind::Gru(GruVariant::ResetAfter),
        4 => CellKind::Gru(GruVariant::ResetBefore),
        other => {
            return Err(err(
                FRNN_ERR_ARGUMENT,
                format!("unknown cell {other} (expected FRNN_CELL_* 0..=4)"),
            ));
        }
    })
}

/// The `FRNN_CELL_*` code of `cell` (see `fused_rnn.h`).
pub fn cell_to_c(cell: CellKind) -> c_int {
    match cell {
        CellKind::Rnn(RnnActivation::Tanh) => 0,
        CellKind::Rnn(RnnActivation::Relu) => 1,
        CellKind::Lstm => 2,
        CellKind::Gru(GruVariant::ResetAfter) => 3,
        CellKind::Gru(GruVariant::ResetBefore) => 4,
    }
}

fn store_handle<T>(out: *mut *mut T, object: T) {
    let h = Box::into_raw(Box::new(object));
    // SAFETY: `out` was checked non-NULL and aligned by the caller of this function, and the C
    // contract makes it valid for one pointer write.
    unsafe { out.write(h) };
}

fn check_out_handle<T>(out: *mut *mut T) -> Result<(), CErr> {
    if out.is_null() {
        return Err(err(FRNN_ERR_NULL, "out is NULL"));
    }
    if !out.is_aligned() {
        return Err(err(FRNN_ERR_ARGUMENT, "out is not aligned"));
    }
    Ok(())
}

/// The message of the most recent failed call on this thread (empty if none failed yet). The
/// pointer stays valid until the next failing call on this thread; never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn frnn_last_error_message() -> *const c_char {
    static EMPTY: &[u8] = b"\0";
    let r = catch_unwind(|| {
        LAST_ERROR
            .try_with(|m| m.try_borrow().map(|m| m.as_ptr()).ok())
            .ok()
            .flatten()
    });
    match r {
        Ok(Some(p)) => p,
        _ => EMPTY.as_ptr().cast(),
    }
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
        store_handle(out, FrnnLayer::new(layer));
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
        store_handle(out, FrnnLayer::new(layer));
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

/// The body of [`frnn_forward`] and [`frnn_forward_padded`]: each buffer a pointer and its
/// length; `s` the spans of buffers checked before (`lengths`), for the overlap check.
///
/// # Safety
/// Each non-NULL buffer valid for its stated length (reads for inputs, writes for outputs).
#[allow(clippy::too_many_arguments)]
unsafe fn forward_impl(
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
    match batch {
        Batch::Fixed(b) => {
            let slot = match mode {
                Mode::Training => &mut l.train_ws,
                Mode::Inference => &mut l.infer_ws,
            };
            let ws = workspace(&l.layer, slot, seq_len, b, mode)?;
            l.layer.forward(ws, x, init, y, fin)?;
        }
        Batch::Padded(lengths) => {
            let slot = match mode {
                Mode::Training => &mut l.padded_train,
                Mode::Inference => &mut l.padded_infer,
            };
            let ws = padded_workspace(&l.layer, slot, lengths, seq_len, mode)?;
            l.layer.forward_padded(ws, x, init, y, fin)?;
        }
    }
    Ok(())
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

/// The body of [`frnn_backward`] and [`frnn_backward_padded`]: `up` is `dy`, `dh_n`, `dc_n`;
/// `inputs` `dx`, `dh0`, `dc0`; `grads` `dw_ih`, `dw_hh`, `db_ih`, `db_hh`.
///
/// # Safety
/// Each non-NULL buffer valid for its stated length (reads for inputs, reads and writes for
/// the gradient outputs).
unsafe fn backward_impl(
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
            l.layer
                .backward_padded(ws, x, up, &mut l.grads, inputs, mode)?;
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
        let ws = workspace(&l.layer, &mut l.step_ws, 1, batch, Mode::Inference)?;
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
            x_t,
            InitialState {
                h0: Some(&l.step_h),
                c0: c_prev,
            },
            h,
            FinalState { h_n: None, c_n: c },
        )?;
        Ok(())
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

/// The opaque stream handle (`frnn_stream` in C): a [`StreamingLayer`] with its own copy of
/// the layer.
pub struct FrnnStream {
    stream: StreamingLayer<f32>,
}

/// # Safety
/// `stream` is NULL or a handle from `frnn_stream_create` not yet freed, used by one thread at
/// a time.
unsafe fn stream_handle<'a>(stream: *mut FrnnStream) -> Result<&'a mut FrnnStream, CErr> {
    // SAFETY: the caller's contract above.
    unsafe { live(stream, "stream is NULL") }
}

/// Creates a stream of `batch` sequences over a copy of `layer` (its parameters and thread
/// count), state zero. See `fused_rnn.h`.
///
/// # Safety
/// `layer` a live handle; `out` valid for one pointer write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_create(
    layer: *const FrnnLayer,
    batch: usize,
    out: *mut *mut FrnnStream,
) -> c_int {
    guard(|| {
        check_out_handle(out)?;
        // SAFETY: by the contract above NULL or a live handle; only read.
        let l = unsafe { live_ref(layer, "layer is NULL")? };
        let stream = StreamingLayer::new(l.layer.clone(), batch)?;
        store_handle(out, FrnnStream { stream });
        Ok(())
    })
}

/// Frees a stream (and joins its worker threads); NULL is a no-op.
///
/// # Safety
/// `stream` is NULL or a handle from `frnn_stream_create` not yet freed.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_free(stream: *mut FrnnStream) {
    // SAFETY: the contract above.
    unsafe { free_handle(stream) }
}

/// One step of every sequence on `x_t [B, I]`; the new `h [B, H]` is written to `h` unless it
/// is NULL. See `fused_rnn.h`.
///
/// # Safety
/// `stream` a live handle; each non-NULL buffer valid for its stated length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_step(
    stream: *mut FrnnStream,
    x_t: *const f32,
    x_len: usize,
    h: *mut f32,
    h_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let st = unsafe { stream_handle(stream)? };
        let mut s = Vec::new();
        check_ptr("x_t", x_t, x_len, true, false, &mut s)?;
        let ph = check_ptr("h", h.cast_const(), h_len, false, true, &mut s)?;
        check_overlap(&s)?;
        let bh = st.stream.batch() * st.stream.layer().hidden_size();
        if ph {
            check_length("h [B, H]", h_len, bh)?;
        }
        // SAFETY: checked by check_ptr and check_overlap; lengths are the caller's contract.
        let (x_t, h) = unsafe {
            (
                in_slice(true, x_t, x_len).unwrap_or_default(),
                out_slice(ph, h, h_len),
            )
        };
        let h_t = st.stream.step(x_t)?;
        if let Some(h) = h {
            h.copy_from_slice(h_t);
        }
        Ok(())
    })
}

/// Replaces the state: `h [B, H]`, and `c [B, H]` for the LSTM (required there, NULL
/// otherwise). See `fused_rnn.h`.
///
/// # Safety
/// `stream` a live handle; each non-NULL buffer valid for reads of its stated length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_set_state(
    stream: *mut FrnnStream,
    h: *const f32,
    h_len: usize,
    c: *const f32,
    c_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let st = unsafe { stream_handle(stream)? };
        let mut s = Vec::new();
        check_ptr("h", h, h_len, true, false, &mut s)?;
        let pc = check_ptr("c", c, c_len, false, false, &mut s)?;
        // SAFETY: checked by check_ptr; lengths are the caller's contract (only read).
        let (h, c) = unsafe {
            (
                in_slice(true, h, h_len).unwrap_or_default(),
                in_slice(pc, c, c_len),
            )
        };
        st.stream.set_state(h, c)?;
        Ok(())
    })
}

/// Copies the state out: `h [B, H]` and (LSTM) `c [B, H]`, each skipped when NULL. See
/// `fused_rnn.h`.
///
/// # Safety
/// `stream` a live handle; each non-NULL buffer valid for writes of its stated length.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_get_state(
    stream: *const FrnnStream,
    h: *mut f32,
    h_len: usize,
    c: *mut f32,
    c_len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: by the contract above NULL or a live handle; only read.
        let st = unsafe { live_ref(stream, "stream is NULL")? };
        let mut s = Vec::new();
        let ph = check_ptr("h", h.cast_const(), h_len, false, true, &mut s)?;
        let pc = check_ptr("c", c.cast_const(), c_len, false, true, &mut s)?;
        check_overlap(&s)?;
        let cell_state = st.stream.cell_state();
        if pc && cell_state.is_none() {
            return Err(Error::UnexpectedBuffer {
                what: "c",
                why: "only the LSTM has a cell state",
            }
            .into());
        }
        let hs = st.stream.hidden_state();
        if ph {
            check_length("h [B, H]", h_len, hs.len())?;
        }
        if let (true, Some(cs)) = (pc, cell_state) {
            check_length("c [B, H]", c_len, cs.len())?;
        }
        // SAFETY: checked by check_ptr and check_overlap; lengths checked above.
        let (h, c) = unsafe { (out_slice(ph, h, h_len), out_slice(pc, c, c_len)) };
        if let Some(h) = h {
            h.copy_from_slice(hs);
        }
        if let (Some(c), Some(cs)) = (c, cell_state) {
            c.copy_from_slice(cs);
        }
        Ok(())
    })
}

/// Sets every state of the stream to zero.
///
/// # Safety
/// `stream` a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_reset(stream: *mut FrnnStream) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let st = unsafe { stream_handle(stream)? };
        st.stream.reset();
        Ok(())
    })
}

/// Sets how long the stream's worker threads spin after a step, in microseconds (see
/// `StreamingLayer::set_spin_window` and `fused_rnn.h`).
///
/// # Safety
/// `stream` a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn frnn_stream_set_spin_window(
    stream: *mut FrnnStream,
    microseconds: u64,
) -> c_int {
    guard(|| {
        // SAFETY: the contract above.
        let st = unsafe { stream_handle(stream)? };
        st.stream
            .set_spin_window(Duration::from_micros(microseconds));
        Ok(())
    })
}
