//! The boundary itself: status codes, errors on their way to C and the thread's last message,
//! the `catch_unwind` guard around every body, and the checks that turn C pointers and lengths
//! into slices and handles.

use std::cell::RefCell;
use std::ffi::{CString, c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use fused_rnn::{CellKind, Error, GruVariant, RnnActivation};

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
pub(crate) struct CErr {
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

pub(crate) fn err(code: c_int, msg: impl Into<String>) -> CErr {
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
pub(crate) fn guard(f: impl FnOnce() -> Result<(), CErr>) -> c_int {
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

/// The address range of a buffer, for overlap checks.
#[derive(Clone, Copy)]
pub(crate) struct Span {
    what: &'static str,
    start: usize,
    end: usize,
    writes: bool,
}

/// Fails if any two buffers overlap where at least one is written.
pub(crate) fn check_overlap(spans: &[Span]) -> Result<(), CErr> {
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
pub(crate) fn check_ptr<T>(
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
pub(crate) fn check_length(what: &'static str, len: usize, expected: usize) -> Result<(), CErr> {
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
pub(crate) unsafe fn in_slice<'a, T>(present: bool, ptr: *const T, len: usize) -> Option<&'a [T]> {
    // SAFETY: the caller's contract above.
    present.then(|| unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// As [`in_slice`], for writes; and the buffer overlaps no other buffer of the call
/// ([`check_overlap`]).
pub(crate) unsafe fn out_slice<'a, T>(
    present: bool,
    ptr: *mut T,
    len: usize,
) -> Option<&'a mut [T]> {
    // SAFETY: the caller's contract above.
    present.then(|| unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// The object behind a handle, or `FRNN_ERR_NULL` with `null_msg`.
///
/// # Safety
/// `ptr` is NULL or a live handle of its type (made by `Box::into_raw`, not yet freed), used by
/// one thread at a time.
pub(crate) unsafe fn live<'a, T>(ptr: *mut T, null_msg: &'static str) -> Result<&'a mut T, CErr> {
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
pub(crate) unsafe fn live_ref<'a, T>(ptr: *const T, null_msg: &'static str) -> Result<&'a T, CErr> {
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
pub(crate) unsafe fn free_handle<T>(ptr: *mut T) {
    if ptr.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: by the contract, a live handle made by Box::into_raw, freed once.
        drop(unsafe { Box::from_raw(ptr) });
    }));
}

pub(crate) fn cell_from_c(cell: c_int) -> Result<CellKind, CErr> {
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

pub(crate) fn store_handle<T>(out: *mut *mut T, object: T) {
    let h = Box::into_raw(Box::new(object));
    // SAFETY: `out` was checked non-NULL and aligned by the caller of this function, and the C
    // contract makes it valid for one pointer write.
    unsafe { out.write(h) };
}

pub(crate) fn check_out_handle<T>(out: *mut *mut T) -> Result<(), CErr> {
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
