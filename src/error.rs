//! The crate's error type: one variant per kind of failure, each naming what was expected and
//! what came.

use core::fmt;

/// Everything a public entry point of this crate can refuse.
///
/// No public function panics on user input: a wrong length, a zero-sized dimension, a
/// workspace made for other dimensions or a call out of order returns one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's length does not match the dimensions.
    BufferLength {
        /// Which buffer, e.g. `"x [T, B, I]"`.
        what: &'static str,
        /// The length the dimensions require.
        expected: usize,
        /// The length that was passed.
        got: usize,
    },
    /// A dimension is zero where it must be at least one.
    ZeroDim {
        /// Which dimension, e.g. `"batch"`.
        what: &'static str,
    },
    /// The dimensions are so large that a buffer length overflows `usize`.
    SizeOverflow {
        /// Which buffer's length overflowed.
        what: &'static str,
    },
    /// The allocator could not provide a buffer (the dimensions ask for more memory than the
    /// machine has).
    AllocationFailed {
        /// Which buffer.
        what: &'static str,
        /// Its size in bytes.
        bytes: usize,
    },
    /// The workspace was made for another cell kind, other dimensions or another mode.
    WorkspaceMismatch {
        /// What the layer and call need, in words.
        expected: String,
        /// What the workspace was made for.
        got: String,
    },
    /// A buffer was given that this cell kind has no use for (e.g. `c0` for a GRU).
    UnexpectedBuffer {
        /// Which buffer.
        what: &'static str,
        /// Why it does not apply.
        why: &'static str,
    },
    /// A call came out of order, e.g. `backward` without a training `forward` before it.
    InvalidState {
        /// What was wrong.
        why: &'static str,
    },
    /// The requested instruction set is not available on this CPU.
    IsaUnavailable {
        /// The instruction set's name.
        isa: &'static str,
    },
    /// An option's value is outside its valid range (e.g. a negative clipping norm).
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// Why it is invalid.
        why: String,
    },
    /// A serialized tensor file (safetensors, ONNX tensors) does not have the names, dtypes or
    /// shapes a layer needs, or cannot be parsed.
    Format {
        /// What was checked, e.g. `"tensor weight_ih_l0 shape"`.
        what: String,
        /// What a layer needs.
        expected: String,
        /// What the file holds.
        got: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BufferLength {
                what,
                expected,
                got,
            } => write!(f, "buffer {what}: expected length {expected}, got {got}"),
            Error::ZeroDim { what } => write!(f, "dimension {what} must be at least 1, got 0"),
            Error::SizeOverflow { what } => write!(f, "size of {what} overflows the address space"),
            Error::AllocationFailed { what, bytes } => {
                write!(f, "could not allocate {bytes} bytes for {what}")
            }
            Error::WorkspaceMismatch { expected, got } => {
                write!(f, "workspace mismatch: expected {expected}, got {got}")
            }
            Error::UnexpectedBuffer { what, why } => write!(f, "unexpected buffer {what}: {why}"),
            Error::InvalidState { why } => write!(f, "invalid call order: {why}"),
            Error::IsaUnavailable { isa } => {
                write!(f, "instruction set {isa} is not available on this CPU")
            }
            Error::InvalidArgument { what, why } => write!(f, "invalid argument {what}: {why}"),
            Error::Format {
                what,
                expected,
                got,
            } => write!(f, "{what}: expected {expected}, got {got}"),
        }
    }
}

impl std::error::Error for Error {}

/// Shorthand for this crate's results.
pub type Result<T> = core::result::Result<T, Error>;

/// Checks that `buf` has exactly `expected` elements.
pub(crate) fn check_len<T>(what: &'static str, buf: &[T], expected: usize) -> Result<()> {
    if buf.len() == expected {
        Ok(())
    } else {
        Err(Error::BufferLength {
            what,
            expected,
            got: buf.len(),
        })
    }
}

/// Checks an optional buffer's length (absent is always fine).
pub(crate) fn check_opt_len<T>(
    what: &'static str,
    buf: Option<&[T]>,
    expected: usize,
) -> Result<()> {
    match buf {
        Some(b) => check_len(what, b, expected),
        None => Ok(()),
    }
}

/// `a * b`, or `SizeOverflow` naming `what`.
pub(crate) fn mul_len(what: &'static str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b).ok_or(Error::SizeOverflow { what })
}

/// A zero-filled `Vec` of `n` elements, or `Err` instead of the allocator's abort: the byte
/// size must fit in `isize` ([`Error::SizeOverflow`]) and the allocation must succeed
/// ([`Error::AllocationFailed`]).
pub(crate) fn try_zeroed<T: Copy + Default>(what: &'static str, n: usize) -> Result<Vec<T>> {
    let mut v = try_with_capacity(what, n)?;
    v.resize(n, T::default());
    Ok(v)
}

/// An empty `Vec` with room for exactly `n` elements, with the errors of [`try_zeroed`]. The
/// memory is not written: reserving every buffer of a call before filling any means that a
/// refused one leaves none of the others' pages touched (Linux grants large requests as
/// untouched address space, and writing them is what costs memory).
pub(crate) fn try_with_capacity<T>(what: &'static str, n: usize) -> Result<Vec<T>> {
    let bytes = n
        .checked_mul(core::mem::size_of::<T>())
        .filter(|b| *b <= isize::MAX as usize);
    let bytes = bytes.ok_or(Error::SizeOverflow { what })?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| Error::AllocationFailed { what, bytes })?;
    Ok(v)
}

/// A copy of `src` in a new `Vec`, or [`Error::AllocationFailed`] instead of the allocator's
/// abort (`src` exists, so its byte size fits).
pub(crate) fn try_to_vec<T: Copy>(what: &'static str, src: &[T]) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(src.len())
        .map_err(|_| Error::AllocationFailed {
            what,
            bytes: core::mem::size_of_val(src),
        })?;
    v.extend_from_slice(src);
    Ok(v)
}
