//! fused-rnn: explicit-SIMD CPU kernels for RNN, LSTM and GRU layers.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod error;
mod float;
pub mod interop;
mod kernels;
pub mod reference;
pub mod shape;

pub use error::{Error, Result};
pub use float::Float;
pub use kernels::isa::Isa;
pub use shape::{CellKind, Dims, GradMode, GruVariant, Mode, RnnActivation};
pub mod weights;
pub use weights::{LayerGrads, LayerWeights};
mod gemm;
pub mod layer;
pub mod workspace;
pub use layer::{FinalState, InitialState, InputGrads, Layer, LayerWeightsMut, Upstream};
pub use workspace::Workspace;
