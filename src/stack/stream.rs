//! A unidirectional stack one time step at a time: each step runs through every layer's
//! [`StreamingLayer`], bit for bit what [`Stack::forward`] computes for that step.

use crate::error::{Error, Result};
use crate::float::Float;
use crate::stack::{Directions, Stack};
use crate::stream::StreamingLayer;

/// The streaming form of a [`Stack`] of `L` forward layers over `B` sequences: it owns each
/// layer's prepared weights and state; [`StreamingStack::step`] allocates nothing. (A reverse
/// direction needs the whole sequence before its first output, so a bidirectional stack
/// cannot stream.)
#[derive(Debug)]
pub struct StreamingStack<F> {
    layers: Vec<StreamingLayer<F>>,
}

impl<F: Float> StreamingStack<F> {
    /// Streams over `batch` sequences through copies of `stack`'s layers (their threads too),
    /// every state zero. [`Error::InvalidArgument`] for a bidirectional stack.
    pub fn new(stack: &Stack<F>, batch: usize) -> Result<Self> {
        if stack.directions() != Directions::Forward {
            return Err(Error::InvalidArgument {
                what: "stack",
                why: "a bidirectional stack cannot stream: its reverse direction starts at the last step".into(),
            });
        }
        let layers = stack
            .layers()
            .map(|(_, _, l)| StreamingLayer::new(l.clone(), batch))
            .collect::<Result<Vec<_>>>()?;
        Ok(StreamingStack { layers })
    }

    /// `B`.
    pub fn batch(&self) -> usize {
        self.layers[0].batch()
    }

    /// Advances every sequence by one step on `x_t [B, I]` through every layer and returns
    /// the last layer's `h_t [B, H]`. [`Error::BufferLength`] for a wrong `x_t`, with no
    /// state changed.
    pub fn step(&mut self, x_t: &[F]) -> Result<&[F]> {
        let (first, rest) = self
            .layers
            .split_first_mut()
            .expect("a stack has at least one layer");
        let mut h = first.step(x_t)?;
        for layer in rest {
            // Infallible: `h` is `[B, H]`, the next layer's input width.
            h = layer.step(h)?;
        }
        Ok(h)
    }

    /// Sets every state of every layer to zero.
    pub fn reset(&mut self) {
        self.layers.iter_mut().for_each(StreamingLayer::reset);
    }

    /// Sets row `row`'s state in every layer to zero (a new sequence starts there), leaving
    /// the other rows alone; [`Error::InvalidArgument`] for a row past `B`.
    pub fn reset_row(&mut self, row: usize) -> Result<()> {
        // Every layer has `B` rows: a bad row fails at the first, before any state changes.
        self.layers.iter_mut().try_for_each(|l| l.reset_row(row))
    }

    /// Layer `layer`'s hidden state `h [B, H]`; `None` past the last layer.
    pub fn hidden_state(&self, layer: usize) -> Option<&[F]> {
        self.layers.get(layer).map(StreamingLayer::hidden_state)
    }

    /// Layer `layer`'s cell state `c [B, H]` (LSTM); `None` for other cells or past the last
    /// layer.
    pub fn cell_state(&self, layer: usize) -> Option<&[F]> {
        self.layers.get(layer).and_then(StreamingLayer::cell_state)
    }
}
