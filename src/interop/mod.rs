//! Interoperability with other frameworks' parameter layouts.
//!
//! - [`pytorch`]: load and save `nn.RNN` / `nn.LSTM` / `nn.GRU` `state_dict`s stored as
//!   safetensors (f32 or f64), losslessly.
//! - [`onnx`]: convert to and from the `W`, `R`, `B` tensors of ONNX's `RNN`, `LSTM` and `GRU`
//!   operators (gate orders, bias layout and the GRU's `linear_before_reset`).

pub mod onnx;
pub mod pytorch;

/// The direction of a layer in a (possibly bidirectional) stack.
///
/// PyTorch names the reverse direction's parameters with the suffix `_reverse`
/// (`weight_ih_l0_reverse`); ONNX stores it at index 1 of the leading `num_directions` axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Runs over `t = 0, 1, ..., T-1`; PyTorch names without suffix, ONNX index 0.
    Forward,
    /// Runs over `t = T-1, ..., 0`; PyTorch suffix `_reverse`, ONNX index 1.
    Reverse,
}

impl Direction {
    /// The PyTorch parameter-name suffix: `""` or `"_reverse"`.
    pub const fn suffix(self) -> &'static str {
        match self {
            Direction::Forward => "",
            Direction::Reverse => "_reverse",
        }
    }

    /// The index along ONNX's `num_directions` axis: 0 or 1.
    pub const fn index(self) -> usize {
        match self {
            Direction::Forward => 0,
            Direction::Reverse => 1,
        }
    }
}
