//! Interoperability with other frameworks' parameter layouts.
//!
//! - [`pytorch`]: load and save `nn.RNN` / `nn.LSTM` / `nn.GRU` `state_dict`s stored as
//!   safetensors (f32 or f64), losslessly.
//! - [`onnx`]: convert to and from the `W`, `R`, `B` tensors of ONNX's `RNN`, `LSTM` and `GRU`
//!   operators (gate orders, bias layout and the GRU's `linear_before_reset`).

pub mod onnx;
pub mod pytorch;

pub use crate::shape::Direction;
