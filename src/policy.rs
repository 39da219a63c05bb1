//! # Bad-input policy
//!
//! What every public entry point does with input it cannot use, in one place. In short: a
//! call that *cannot* run (wrong shapes, zero or overflowing sizes, a workspace for something
//! else, a call out of order, an unavailable instruction set) returns an [`Error`] and leaves
//! its outputs, the workspace's saved state and a stream's state as they were; a call that
//! *can* run on non-finite numbers runs and lets them propagate. No public function panics on
//! user input, none aborts on an oversized allocation, and none hangs on any value.
//!
//! ## Errors, and when each happens
//!
//! | variant | when |
//! |---|---|
//! | [`Error::BufferLength`] | a slice's length does not match the dimensions: `x`, `y`, states, upstream and input gradients, gradient buffers, weights at [`Layer::new`](crate::Layer::new); [`StreamingLayer::step`](crate::StreamingLayer::step) with `x_t` not `B·I` long, [`StreamingLayer::run`](crate::StreamingLayer::run) with an empty `x` or one that is no multiple of `B·I`, [`StreamingLayer::set_state`](crate::StreamingLayer::set_state) with a wrong `h` or `c`; [`activation`](crate::activation) with `output` not as long as `input` |
//! | [`Error::ZeroDim`] | `T`, `B`, `I` or `H` is zero ([`Dims::validate`](crate::Dims::validate), workspaces, layers, streams, the reference). **A zero-length problem is an error, not an empty result.** |
//! | [`Error::SizeOverflow`] | the dimensions imply a buffer whose length or byte size does not fit `usize`/`isize` |
//! | [`Error::AllocationFailed`] | the size fits, but the allocator refused it (reported through `try_reserve`, never an abort) |
//! | [`Error::WorkspaceMismatch`] | the workspace was made for another cell kind, input or hidden size, or, for [`Layer::backward`](crate::Layer::backward), not in [`Mode::Training`](crate::Mode::Training) |
//! | [`Error::UnexpectedBuffer`] | a cell-state buffer (`c0`, `c_n`, `dc_n`, `dc0`, a stream's `c`) given to a cell without a cell state |
//! | [`Error::InvalidState`] | `backward` with a workspace that saw no training `forward`, whose forward was already consumed by a `backward`, or whose forward ran with other weights: [`Layer::weights_mut`](crate::Layer::weights_mut) was called since, or another layer (not a clone with the same weights) ran it (run `forward` again) |
//! | [`Error::IsaUnavailable`] | an [`Isa`](crate::Isa) this CPU cannot run, passed to [`Layer::set_isa`](crate::Layer::set_isa) or the [`activation`](crate::activation) functions |
//! | [`Error::InvalidArgument`] | an option out of range: a thread count of 0 or past [`MAX_THREADS`](crate::MAX_THREADS) (refused before anything is sized for it), a padded length past `T`, a non-positive or non-finite clipping norm, a NaN or infinite gradient in [`clip_grad_norm`](crate::clip_grad_norm) (gradients left unscaled), a negative or non-finite clip value in [`clip_grad_value`](crate::clip_grad_value), an LSTM stream state set without `c`, inconsistent interop options |
//! | [`Error::Format`] | a serialized tensor file (safetensors, ONNX) lacks a tensor, has the wrong dtype or shape (zero-size tensors, `H` or `I` of 0, included), or cannot be parsed |
//!
//! Lengths are checked before anything is written: a refused call changes nothing
//! (`tests/layer_bad_input.rs`, `tests/streaming.rs`, and the `api_misuse` and
//! `stream_vs_sequence` fuzz targets check this).
//!
//! ## State after a refused call
//!
//! A call refused by validation (every error above but [`Error::AllocationFailed`]) changes
//! nothing: not the caller's buffers, not the layer, not the workspace (a training forward's
//! saved state stays there for its backward), not a stream's state. A pass that fails to
//! allocate (its packed weights or per-step bookkeeping, before any arithmetic) leaves the
//! caller's buffers as they were but may leave the workspace without a pending forward: run
//! the forward again. The C API keeps the same contract per handle (`fused_rnn.h`).
//!
//! ## Sizes past memory
//!
//! Every allocation a caller's sizes drive goes through `try_reserve` and reports
//! [`Error::SizeOverflow`] or [`Error::AllocationFailed`]: layers and their copies of the
//! weights, the packed copies (padded to whole 16-column panels, so up to 16 times the weights
//! at small `H`), workspaces, the per-step bookkeeping of a pass, gradients, streams, the
//! output layer and the reference. `tests/oversized.rs` and `capi/tests/c_test.rs` run a sweep
//! of such requests under `ulimit -v` (1.5 GB) and check that each returns an error and the
//! process lives on.
//!
//! ## NaN and infinity propagate
//!
//! The layers do not scan their data: NaN or ±inf in inputs, states, weights or upstream
//! gradients go through the arithmetic like any other value, the call returns `Ok`, and the
//! non-finite values show up in the outputs. Check outputs with [`all_finite`](crate::all_finite)
//! (or `is_finite`) where that matters. What `tests/nan_propagation.rs` pins down, for every
//! cell kind, f32 and f64, on every ISA path:
//!
//! - rows (sequences of the batch) are independent: a NaN in one element of `x` at step `t0`
//!   of row `r` leaves every other row's outputs, and row `r`'s outputs before `t0`, bit for
//!   bit as without it; from `t0` on every output of row `r` is NaN (every cell but the ReLU
//!   RNN: `max(0, NaN)` may be 0 or NaN, and a ReLU unit can clear it);
//! - NaN in any weight or bias spreads through the recurrence to every unit: in the tested
//!   5-step sequences every output of the last step is NaN, and `dW_hh` is not finite
//!   (non-ReLU cells); ±inf in a weight or bias may saturate gates to finite values or give
//!   NaN (`inf - inf`, `0 · inf`); either way forward and backward return `Ok` without
//!   panicking or hanging;
//! - a NaN in one element of `dy` at `(t0, r, u)` makes the gradients of every gate of unit
//!   `u` at step `t0` NaN, and for `t0 > 0` all of `dh_{t0-1}` of row `r` (through `W_hh`),
//!   hence: the weight and bias gradient rows of unit `u`'s gates are NaN, for `t0 > 0` every
//!   weight and bias gradient is; `dx` of row `r` at steps `<= t0` and `dh0` of row `r` are
//!   NaN, `dc0` of row `r` for `t0 > 0` (for `t0 = 0` only at unit `u`: `dc0 = dc_0 * f` is
//!   elementwise); `dx` at later steps and every other row's input gradients are bit for bit
//!   as without it (non-ReLU cells).
//!
//! Which non-finite value appears may differ from the [`reference`](crate::reference)
//! implementation (e.g. with an infinite `h0` the fused GRU update `h + z (n - h)` gives NaN
//! where the reference's `(1 - z) n + z h` gives ±inf); only finiteness is specified.
//! [`clip_grad_norm`](crate::clip_grad_norm) is the one function that refuses non-finite data:
//! it returns [`Error::InvalidArgument`] and leaves the gradients untouched. Finite gradients
//! always have a norm there, however large or small (it is computed with scaling, in f64); one
//! past `F`'s largest finite value is returned as `F::MAX` and the gradients are still clipped.
//! [`clip_grad_value`](crate::clip_grad_value) leaves NaN as NaN and clamps ±inf to the clip
//! value.
//!
//! The f32 activation kernels ([`activation`](crate::activation)) map NaN to NaN and ±inf to
//! their limits exactly; see that module's table of special values.
//!
//! [`Error`]: crate::Error
//! [`Error::BufferLength`]: crate::Error::BufferLength
//! [`Error::ZeroDim`]: crate::Error::ZeroDim
//! [`Error::SizeOverflow`]: crate::Error::SizeOverflow
//! [`Error::AllocationFailed`]: crate::Error::AllocationFailed
//! [`Error::WorkspaceMismatch`]: crate::Error::WorkspaceMismatch
//! [`Error::UnexpectedBuffer`]: crate::Error::UnexpectedBuffer
//! [`Error::InvalidState`]: crate::Error::InvalidState
//! [`Error::IsaUnavailable`]: crate::Error::IsaUnavailable
//! [`Error::InvalidArgument`]: crate::Error::InvalidArgument
//! [`Error::Format`]: crate::Error::Format
