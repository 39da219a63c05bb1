//! A stack's workspace: the layers' workspaces, the outputs kept between layers, the
//! directions' scratch and the dropout masks.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{Result, mul_len, try_zeroed};
use crate::float::Float;
use crate::shape::{Batch, CellKind, Mode};
use crate::stack::{Directions, Stack};
use crate::workspace::Workspace;

/// The buffers of a stack's passes over one batch: a [`Workspace`] per `(layer, direction)`,
/// the output of every layer but the last (the next layer's input, kept for backward), and
/// scratch for one direction's outputs and gradients.
#[derive(Debug)]
pub struct StackWorkspace<F> {
    /// The stack it was made for: cell, input, hidden, layers, directions.
    pub(super) shape: (CellKind, usize, usize, usize, Directions),
    pub(super) seq_len: usize,
    pub(super) batch: usize,
    pub(super) mode: Mode,
    /// `layer·D + direction`.
    pub(super) passes: Vec<Workspace<F>>,
    /// Layer `k`'s output `[T, B, D·H]` for `k < L - 1`.
    pub(super) outputs: Vec<Vec<F>>,
    /// Each direction's `y` or `dy`, `[T, B, H]` (a bidirectional stack's).
    pub(super) halves: [Vec<F>; 2],
    /// Per direction, the gradient of a layer's input, `[T, B, max(I, D·H)]`.
    pub(super) dx: Vec<Vec<F>>,
    /// The gradient reaching layer `k`'s output, `[T, B, D·H]` (two, read one, write the other).
    pub(super) dy: [Vec<F>; 2],
    /// Dropout between layers (training with `p > 0`): per layer boundary `k` (`k < L - 1`),
    /// the mask as factors (`0` or `1 / (1 - p)`) and layer `k + 1`'s input, `[T, B, D·H]`.
    pub(super) masks: Vec<Vec<F>>,
    pub(super) dropped: Vec<Vec<F>>,
    /// The probability the buffers above were made for (0: none).
    pub(super) dropout: f64,
    /// Whether the last training forward applied dropout (its backward applies the masks).
    pub(super) masked: bool,
    pub(super) rng: StdRng,
}

impl<F: Float> StackWorkspace<F> {
    /// `T` (padded) steps.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }
    /// `B` rows.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The mode this workspace serves.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The dropout factors (`0` or `1 / (1 - p)`) the last training forward applied to layer
    /// `boundary`'s output (`boundary < L - 1`), `[T, B, D·H]`; `None` where it applied none.
    pub fn dropout_mask(&self, boundary: usize) -> Option<&[F]> {
        self.masked
            .then(|| self.masks.get(boundary).map(Vec::as_slice))
            .flatten()
    }

    /// Restarts the dropout masks' generator from `seed`: the next training forwards draw the
    /// masks they drew after a workspace was made with this seed.
    pub fn reseed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// Size in bytes.
    pub fn bytes(&self) -> usize {
        let own: usize = self
            .outputs
            .iter()
            .chain(&self.dx)
            .chain(&self.dy)
            .chain(&self.masks)
            .chain(&self.dropped)
            .map(Vec::len)
            .sum();
        (own + self.halves.iter().map(Vec::len).sum::<usize>()) * core::mem::size_of::<F>()
            + self.passes.iter().map(Workspace::bytes).sum::<usize>()
    }
}

impl<F: Float> Stack<F> {
    /// A workspace for passes over `seq_len` steps of `batch` (fixed or padded, as
    /// [`Layer::workspace`](crate::Layer::workspace)).
    pub fn workspace<'b>(
        &self,
        seq_len: usize,
        batch: impl Into<Batch<'b>>,
        mode: Mode,
    ) -> Result<StackWorkspace<F>> {
        let batch = batch.into();
        let b = match batch {
            Batch::Fixed(b) => b,
            Batch::Padded(l) => l.len(),
        };
        let passes = self
            .layers
            .iter()
            .map(|l| l.workspace(seq_len, batch, mode))
            .collect::<Result<Vec<_>>>()?;
        let tb = mul_len("stack buffers", seq_len, b)?;
        let wide = mul_len("stack buffers", tb, self.output_size())?;
        let half = mul_len("stack buffers", tb, self.hidden)?;
        let training = mode == Mode::Training;
        let widest_in = mul_len("stack buffers", tb, self.input.max(self.output_size()))?;
        let d = self.directions.count();
        let boundaries = if training && self.dropout > 0.0 {
            self.num_layers - 1
        } else {
            0
        };
        let boundary_buf = || try_zeroed("stack dropout buffer", wide);
        Ok(StackWorkspace {
            shape: self.shape(),
            masks: (0..boundaries)
                .map(|_| boundary_buf())
                .collect::<Result<_>>()?,
            dropped: (0..boundaries)
                .map(|_| boundary_buf())
                .collect::<Result<_>>()?,
            dropout: if boundaries > 0 { self.dropout } else { 0.0 },
            masked: false,
            rng: StdRng::seed_from_u64(self.dropout_seed),
            seq_len,
            batch: b,
            mode,
            passes,
            outputs: (0..self.num_layers - 1)
                .map(|_| try_zeroed("stack layer output", wide))
                .collect::<Result<_>>()?,
            halves: if d == 2 {
                [
                    try_zeroed("stack direction buffer", half)?,
                    try_zeroed("stack direction buffer", half)?,
                ]
            } else {
                [Vec::new(), Vec::new()]
            },
            dx: (0..if training { d } else { 0 })
                .map(|_| try_zeroed("stack input gradient", widest_in))
                .collect::<Result<_>>()?,
            dy: if training {
                [
                    try_zeroed("stack output gradient", wide)?,
                    try_zeroed("stack output gradient", wide)?,
                ]
            } else {
                [Vec::new(), Vec::new()]
            },
        })
    }
}

/// Fills `mask` with dropout factors: each `0` with probability `p`, else `1 / (1 - p)`.
pub(super) fn draw_mask<F: Float>(rng: &mut StdRng, p: f64, mask: &mut [F]) {
    let keep = if p < 1.0 {
        F::from_f64(1.0 / (1.0 - p))
    } else {
        F::ZERO
    };
    for m in mask {
        *m = if rng.random_bool(p) { F::ZERO } else { keep };
    }
}
