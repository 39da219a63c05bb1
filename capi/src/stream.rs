//! The stream handle (`frnn_stream`): a `StreamingLayer` that keeps the state of its
//! sequences and runs one step at a time.

use std::ffi::c_int;
use std::time::Duration;

use fused_rnn::{Error, StreamingLayer};

use crate::ffi::{
    CErr, check_length, check_out_handle, check_overlap, check_ptr, free_handle, guard, in_slice,
    live, live_ref, out_slice, store_handle,
};
use crate::layer::FrnnLayer;

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
