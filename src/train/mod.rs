//! Training: the output layer on the hidden states, and gradient clipping.

pub mod clip;
pub mod output;

pub use clip::{clip_grad_norm, clip_grad_value};
pub use output::{OutputGrads, OutputLayer};
