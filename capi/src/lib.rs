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
//!
//! Modules: `ffi` (status codes, errors, the panic guard, pointer and handle checks), `layer`
//! (the `frnn_layer` handle and its calls) and `stream` (the `frnn_stream` handle). Every
//! public item is re-exported here, at the crate root.
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

mod ffi;
mod layer;
mod stream;

pub use ffi::{
    FRNN_ERR_ARGUMENT, FRNN_ERR_FORMAT, FRNN_ERR_LENGTH, FRNN_ERR_NULL, FRNN_ERR_PANIC,
    FRNN_ERR_STATE, FRNN_OK, cell_to_c, frnn_last_error_message,
};
pub use layer::{
    FrnnLayer, frnn_backward, frnn_backward_padded, frnn_forward, frnn_forward_padded,
    frnn_layer_create, frnn_layer_free, frnn_layer_from_safetensors, frnn_layer_set_threads,
    frnn_layer_sizes, frnn_step,
};
pub use stream::{
    FrnnStream, frnn_stream_create, frnn_stream_free, frnn_stream_get_state, frnn_stream_reset,
    frnn_stream_set_spin_window, frnn_stream_set_state, frnn_stream_step,
};
