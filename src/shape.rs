//! Cell kinds, their variants and the dimensions of a layer call.

use crate::error::{Error, Result, mul_len};

/// Activation of the vanilla RNN cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RnnActivation {
    /// `h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)` (PyTorch `nonlinearity='tanh'`).
    Tanh,
    /// `h_t = max(0, W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)` (PyTorch `nonlinearity='relu'`).
    Relu,
}

/// Where the GRU applies its reset gate, and with it which way its update gate `z` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GruVariant {
    /// PyTorch's and cuDNN's GRU ("linear before reset", ONNX `linear_before_reset = 1`):
    /// `n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`, `h_t = (1 - z) * n + z * h_{t-1}`.
    /// Here `z` weights the **old state**.
    ResetAfter,
    /// The classic GRU (Cho et al. 2014; ONNX `linear_before_reset = 0`):
    /// `h~ = tanh(W_in x + b_in + W_hn (r * h_{t-1}) + b_hn)`, `h_t = (1 - z) * h_{t-1} + z * h~`.
    /// Here `z` weights the **new candidate**, the opposite of [`GruVariant::ResetAfter`].
    ResetBefore,
}

/// The kind of recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CellKind {
    /// Vanilla RNN, one gate.
    Rnn(RnnActivation),
    /// LSTM, four gates in the order `i, f, g, o`.
    Lstm,
    /// GRU, three gates in the order `r, z, n`.
    Gru(GruVariant),
}

impl CellKind {
    /// Number of gate blocks `G` stacked in the weight rows: 1 (RNN), 4 (LSTM), 3 (GRU).
    pub const fn gates(self) -> usize {
        match self {
            CellKind::Rnn(_) => 1,
            CellKind::Lstm => 4,
            CellKind::Gru(_) => 3,
        }
    }

    /// Whether the cell carries a cell state `c` beside `h` (LSTM only).
    pub const fn has_cell_state(self) -> bool {
        matches!(self, CellKind::Lstm)
    }

    /// Every cell kind, for tests and benchmarks that sweep them all.
    pub const ALL: [CellKind; 5] = [
        CellKind::Rnn(RnnActivation::Tanh),
        CellKind::Rnn(RnnActivation::Relu),
        CellKind::Lstm,
        CellKind::Gru(GruVariant::ResetAfter),
        CellKind::Gru(GruVariant::ResetBefore),
    ];

    /// A short name: `rnn_tanh`, `rnn_relu`, `lstm`, `gru`, `gru_reset_before`.
    pub const fn name(self) -> &'static str {
        match self {
            CellKind::Rnn(RnnActivation::Tanh) => "rnn_tanh",
            CellKind::Rnn(RnnActivation::Relu) => "rnn_relu",
            CellKind::Lstm => "lstm",
            CellKind::Gru(GruVariant::ResetAfter) => "gru",
            CellKind::Gru(GruVariant::ResetBefore) => "gru_reset_before",
        }
    }
}

/// Dimensions of one layer call: sequence length `T`, batch `B`, input width `I`, hidden
/// width `H`. Sequences are time-major: `x [T, B, I]`, `y [T, B, H]`, states `[B, H]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    /// Number of time steps `T`.
    pub seq_len: usize,
    /// Number of sequences `B`.
    pub batch: usize,
    /// Input features per step `I`.
    pub input: usize,
    /// Hidden units `H`.
    pub hidden: usize,
}

impl Dims {
    /// Checks that every dimension is at least one and that every buffer length these
    /// dimensions imply for `cell` fits in `usize`.
    pub fn validate(&self, cell: CellKind) -> Result<()> {
        for (what, v) in [
            ("seq_len", self.seq_len),
            ("batch", self.batch),
            ("input", self.input),
            ("hidden", self.hidden),
        ] {
            if v == 0 {
                return Err(Error::ZeroDim { what });
            }
        }
        // The largest buffers: gates [T+1, B, G*H], x [T, B, I], weights [G*H, max(I, H)].
        let gh = mul_len("gates", cell.gates(), self.hidden)?;
        let t1 = self
            .seq_len
            .checked_add(1)
            .ok_or(Error::SizeOverflow { what: "seq_len" })?;
        let tb = mul_len("T*B", t1, self.batch)?;
        mul_len("gates", tb, gh)?;
        mul_len("x", tb, self.input)?;
        mul_len("weight_ih", gh, self.input.max(self.hidden))?;
        Ok(())
    }

    /// `T * B * I`, the length of `x` (saturating: for dimensions that pass
    /// [`Dims::validate`] this is exact).
    pub fn x_len(&self) -> usize {
        self.seq_len
            .saturating_mul(self.batch)
            .saturating_mul(self.input)
    }

    /// `T * B * H`, the length of `y` (saturating, as [`Dims::x_len`]).
    pub fn y_len(&self) -> usize {
        self.seq_len
            .saturating_mul(self.batch)
            .saturating_mul(self.hidden)
    }

    /// `B * H`, the length of one state (saturating, as [`Dims::x_len`]).
    pub fn state_len(&self) -> usize {
        self.batch.saturating_mul(self.hidden)
    }
}

/// What a forward pass is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Outputs only; the workspace keeps nothing for backward.
    Inference,
    /// Outputs plus everything backward needs (activated gates, states for every step).
    Training,
}

/// Whether a backward pass adds its weight gradients to the ones already in the gradient
/// buffers or replaces them. Input gradients (`dx`, `dh0`, `dc0`) are always overwritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GradMode {
    /// `grad = new`.
    Overwrite,
    /// `grad += new`, for gradient accumulation across calls (truncated BPTT windows, micro-batches).
    Accumulate,
}

/// The rows of a batch: all as long as the sequence, or each of its own length.
///
/// `usize` converts to [`Batch::Fixed`]; `&[usize]`, `&[usize; N]` and `&Vec<usize>` to
/// [`Batch::Padded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch<'a> {
    /// `B` rows of `T` steps each.
    Fixed(usize),
    /// `lengths.len()` rows, row `b` valid for its first `lengths[b] <= T` steps; the steps
    /// after are padding, never read and never reaching state, output or gradients.
    Padded(&'a [usize]),
}

impl From<usize> for Batch<'_> {
    fn from(rows: usize) -> Self {
        Batch::Fixed(rows)
    }
}

impl<'a> From<&'a [usize]> for Batch<'a> {
    fn from(lengths: &'a [usize]) -> Self {
        Batch::Padded(lengths)
    }
}

impl<'a, const N: usize> From<&'a [usize; N]> for Batch<'a> {
    fn from(lengths: &'a [usize; N]) -> Self {
        Batch::Padded(lengths)
    }
}

impl<'a> From<&'a Vec<usize>> for Batch<'a> {
    fn from(lengths: &'a Vec<usize>) -> Self {
        Batch::Padded(lengths)
    }
}

/// The direction a layer runs over time.
///
/// PyTorch names the reverse direction's parameters with the suffix `_reverse`
/// (`weight_ih_l0_reverse`); ONNX stores it at index 1 of the leading `num_directions` axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Runs over `t = 0, 1, ..., T-1`; PyTorch names without suffix, ONNX index 0.
    Forward,
    /// Runs over `t = T-1, ..., 0` (a padded row from its own last valid step); PyTorch suffix
    /// `_reverse`, ONNX index 1.
    Reverse,
}

impl Direction {
    /// Both directions, forward first (PyTorch's order of a bidirectional layer's halves).
    pub const BOTH: [Direction; 2] = [Direction::Forward, Direction::Reverse];

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
