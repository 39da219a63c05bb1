//! The workspace: every buffer a forward or backward pass needs besides the user's own, sized
//! once from the dimensions, so the time loop allocates nothing.
//!
//! Training keeps, per `(T, B, H)`: the activated gates `G·T·B·H` (overwritten in place by the
//! gate gradients during backward), the hidden states `(T+1)·B·H`, for LSTM the cell states
//! `(T+1)·B·H`, for GRU one more `T·B·H` (`W_hn h + b_hn` for reset-after, `r * h_{t-1}` for
//! reset-before). Elements: LSTM `(4 + 1 + 1)·T·B·H`, GRU `(3 + 1 + 1)·T·B·H`, RNN
//! `(1 + 1)·T·B·H`, plus `O(B·G·H)` per-step scratch. (The packed recurrent weights live in
//! the [`Layer`](crate::Layer), packed once per weight update.) The first backward adds the
//! weight gradients' packing scratch, independent of `T`: per thread, 256 time-step rows of
//! `x` and `h` in panels (`256·(I + H)` elements, the reset-before GRU `256·(I + 2H)`) and a
//! `256 × 120` block of the gate gradients. Inference keeps the input projection `G·T·B·H`
//! plus `O(B·G·H)`.

use core::ops::Range;

use crate::error::{Error, Result, mul_len, try_zeroed};
use crate::float::Float;
use crate::sequence::padded::Segments;
use crate::shape::{CellKind, Dims, Direction, GruVariant, Mode};

/// Which values a layer's weights hold: a number drawn afresh (never reused in the process)
/// whenever a layer is made or its weights are handed out mutably, kept by clones (whose
/// weights are the same until one of them changes). A training forward records it, and
/// backward refuses to run with other weights, whose gradients the saved gates would not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WeightsVersion(u64);

impl WeightsVersion {
    /// A version no other set of weights has had.
    pub(crate) fn fresh() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        WeightsVersion(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// Where a workspace is in its forward/backward cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Nothing computed yet, or the last forward was an inference one. (A call that fails
    /// validation returns before touching the workspace.)
    Fresh,
    /// A training forward ran with the weights of this [`WeightsVersion`]: backward may run
    /// once, with the same weights.
    Forwarded(WeightsVersion),
    /// Backward consumed the saved gates (they now hold gradients).
    Consumed,
}

impl Status {
    /// `Ok` if a backward with weights `weights` may run: a training forward ran with the
    /// same weights and no backward consumed it.
    pub(crate) fn check_forwarded(self, weights: WeightsVersion) -> Result<()> {
        match self {
            Status::Forwarded(v) if v == weights => Ok(()),
            Status::Forwarded(_) => Err(Error::InvalidState {
                why: "the forward in this workspace ran with other weights (changed since by weights_mut, or another layer's); run forward again",
            }),
            Status::Fresh => Err(Error::InvalidState {
                why: "backward needs a training forward with this workspace first",
            }),
            Status::Consumed => Err(Error::InvalidState {
                why: "this workspace's forward state was already consumed by a backward; run forward again",
            }),
        }
    }
}

/// Fails with [`Error::WorkspaceMismatch`] unless a workspace made for `have` (cell, input
/// width, hidden width, mode) serves a layer of `want` (the same, any mode if `None`).
pub(crate) fn check_serves(
    have: (CellKind, usize, usize, Mode),
    want: (CellKind, usize, usize, Option<Mode>),
) -> Result<()> {
    let (cell, input, hidden, mode) = want;
    let ok =
        have.0 == cell && have.1 == input && have.2 == hidden && mode.is_none_or(|m| m == have.3);
    if ok {
        return Ok(());
    }
    Err(Error::WorkspaceMismatch {
        expected: format!(
            "{} with input {input}, hidden {hidden}{}",
            cell.name(),
            mode.map(|m| format!(", mode {m:?}")).unwrap_or_default()
        ),
        got: format!(
            "{} with input {}, hidden {}, mode {:?}",
            have.0.name(),
            have.1,
            have.2,
            have.3
        ),
    })
}

/// Offsets of the workspace's regions.
#[derive(Debug, Clone)]
pub(crate) struct WsLayout {
    pub bias: Range<usize>,
    pub gates: Range<usize>,
    pub h_all: Range<usize>,
    pub c_all: Range<usize>,
    pub grid: Range<usize>,
    pub acc: Range<usize>,
    pub dh_a: Range<usize>,
    pub dh_b: Range<usize>,
    pub dc: Range<usize>,
    pub drh: Range<usize>,
    pub total: usize,
}

impl WsLayout {
    pub(crate) fn new(cell: CellKind, dims: &Dims, mode: Mode) -> Result<WsLayout> {
        dims.validate(cell)?;
        let g = cell.gates();
        let bh = mul_len("workspace", dims.batch, dims.hidden)?;
        let tbh = mul_len("workspace", dims.seq_len, bh)?;
        let t1bh = mul_len("workspace", dims.seq_len + 1, bh)?;
        let train = mode == Mode::Training;
        let lstm = cell.has_cell_state();
        let gru = matches!(cell, CellKind::Gru(_));
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<Range<usize>> {
            let start = at;
            at = at
                .checked_add(n)
                .ok_or(Error::SizeOverflow { what: "workspace" })?;
            Ok(start..at)
        };
        let bias = take(g * dims.hidden)?;
        let gates = take(mul_len("workspace", g, tbh)?)?;
        // Inference: h_all holds only the initial state (later states live in `y`); c_all
        // is a two-slot ring.
        let h_all = take(if train { t1bh } else { bh })?;
        let c_all = take(match (lstm, train) {
            (false, _) => 0,
            (true, true) => t1bh,
            (true, false) => 2 * bh,
        })?;
        let grid = take(match (gru, train) {
            (false, _) => 0,
            (true, true) => tbh,
            (true, false) => bh,
        })?;
        let acc = take(g * bh)?;
        let dh_a = take(if train { bh } else { 0 })?;
        let dh_b = take(if train { bh } else { 0 })?;
        let dc = take(if train && lstm { bh } else { 0 })?;
        let drh = take(if train && cell == CellKind::Gru(GruVariant::ResetBefore) {
            bh
        } else {
            0
        })?;
        Ok(WsLayout {
            bias,
            gates,
            h_all,
            c_all,
            grid,
            acc,
            dh_a,
            dh_b,
            dc,
            drh,
            total: at,
        })
    }
}

/// Mutable views of every region at once.
pub(crate) struct WsParts<'a, F> {
    pub bias: &'a mut [F],
    pub gates: &'a mut [F],
    pub h_all: &'a mut [F],
    pub c_all: &'a mut [F],
    pub grid: &'a mut [F],
    pub acc: &'a mut [F],
    pub dh_a: &'a mut [F],
    pub dh_b: &'a mut [F],
    pub dc: &'a mut [F],
    pub drh: &'a mut [F],
    /// Backward's weight-gradient packing scratch (see [`Buffers::reserve_grad_scratch`]).
    pub grad_scratch: &'a mut [F],
}

/// The buffers of one pass over a fixed batch (`B` rows of `T` steps): a [`Workspace`] of a
/// fixed batch holds one, a padded batch's one per segment.
#[derive(Debug, Clone)]
pub(crate) struct Buffers<F> {
    cell: CellKind,
    dims: Dims,
    mode: Mode,
    pub(crate) status: Status,
    pub(crate) layout: WsLayout,
    buf: Vec<F>,
    /// Backward's packing scratch for the weight gradients, sized by the first backward (it
    /// depends on the layer's thread count, which the workspace does not know).
    grad_scratch: Vec<F>,
}

impl<F: Float> Buffers<F> {
    /// Number of `F` elements a workspace for `cell`, `dims` and `mode` holds; `Err` if its
    /// size in bytes would not fit the address space.
    pub(crate) fn required_len(cell: CellKind, dims: Dims, mode: Mode) -> Result<usize> {
        let total = WsLayout::new(cell, &dims, mode)?.total;
        match total.checked_mul(core::mem::size_of::<F>()) {
            Some(bytes) if bytes <= isize::MAX as usize => Ok(total),
            _ => Err(Error::SizeOverflow { what: "workspace" }),
        }
    }

    /// Allocates the buffers (all but the weight gradients' packing scratch, which the first
    /// backward adds).
    pub(crate) fn new(cell: CellKind, dims: Dims, mode: Mode) -> Result<Self> {
        let layout = WsLayout::new(cell, &dims, mode)?;
        Ok(Buffers {
            cell,
            dims,
            mode,
            status: Status::Fresh,
            buf: try_zeroed("workspace", layout.total)?,
            grad_scratch: Vec::new(),
            layout,
        })
    }

    /// The cell kind this workspace serves.
    pub(crate) fn cell(&self) -> CellKind {
        self.cell
    }

    /// The dimensions this workspace serves.
    pub(crate) fn dims(&self) -> Dims {
        self.dims
    }

    /// The mode this workspace serves.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// Size in bytes, including the weight-gradient scratch that the first
    /// [`Layer::backward`](crate::Layer::backward) adds (a few MiB at most: a chunk of 256
    /// time-step rows of `x` and `h` per thread, independent of `T`).
    pub(crate) fn bytes(&self) -> usize {
        (self.buf.len() + self.grad_scratch.len()) * core::mem::size_of::<F>()
    }

    /// Grows the weight-gradient scratch to at least `len` elements (once: later backward
    /// calls with the same layer find it large enough and allocate nothing).
    pub(crate) fn reserve_grad_scratch(&mut self, len: usize) -> Result<()> {
        if self.grad_scratch.len() < len {
            self.grad_scratch = try_zeroed("weight-gradient scratch", len)?;
        }
        Ok(())
    }

    /// Exchanges the weight-gradient scratch with `other` (a padded batch lends one scratch to
    /// each of its segments' workspaces in turn, instead of one per segment).
    pub(crate) fn swap_grad_scratch(&mut self, other: &mut Vec<F>) {
        core::mem::swap(&mut self.grad_scratch, other);
    }

    /// Checks the workspace serves `cell` with `input`/`hidden` widths in `mode` (any mode if
    /// `mode` is `None`).
    pub(crate) fn check(
        &self,
        cell: CellKind,
        input: usize,
        hidden: usize,
        mode: Option<Mode>,
    ) -> Result<()> {
        check_serves(
            (self.cell, self.dims.input, self.dims.hidden, self.mode),
            (cell, input, hidden, mode),
        )
    }

    /// Splits the buffer into its regions.
    pub(crate) fn parts(&mut self) -> WsParts<'_, F> {
        let l = &self.layout;
        let (bias, rest) = self.buf.split_at_mut(l.bias.end);
        let (gates, rest) = rest.split_at_mut(l.gates.len());
        let (h_all, rest) = rest.split_at_mut(l.h_all.len());
        let (c_all, rest) = rest.split_at_mut(l.c_all.len());
        let (grid, rest) = rest.split_at_mut(l.grid.len());
        let (acc, rest) = rest.split_at_mut(l.acc.len());
        let (dh_a, rest) = rest.split_at_mut(l.dh_a.len());
        let (dh_b, rest) = rest.split_at_mut(l.dh_b.len());
        let (dc, rest) = rest.split_at_mut(l.dc.len());
        let (drh, _) = rest.split_at_mut(l.drh.len());
        WsParts {
            grad_scratch: &mut self.grad_scratch,
            bias,
            gates,
            h_all,
            c_all,
            grid,
            acc,
            dh_a,
            dh_b,
            dc,
            drh,
        }
    }
}

/// Everything a layer's forward (and backward) needs besides the caller's buffers, sized once
/// for a batch: `B` rows of `T` steps ([`Batch::Fixed`](crate::Batch::Fixed)) or rows of their own lengths padded to
/// `T` ([`Batch::Padded`](crate::Batch::Padded)). Made by [`Layer::workspace`](crate::Layer::workspace); nothing is
/// allocated per step.
///
/// A training forward fills it with what backward needs; backward then consumes it (the saved
/// gates are overwritten by gate gradients), so each backward needs its own training forward,
/// and runs in the direction that forward ran. A call refused with an error leaves the
/// workspace as it was. Passing a workspace made for another cell kind, other widths or (to
/// backward) another mode returns [`Error::WorkspaceMismatch`].
///
/// Its size: training keeps, per valid step of each row, the activated gates (`G·H`), the
/// hidden state (`H`), the LSTM's cell state (`H`) and the GRU's `H` more; inference keeps
/// the input projection (`G·H` per step) and `O(B·G·H)` scratch. [`Workspace::bytes`] counts
/// all of it.
#[derive(Debug)]
pub struct Workspace<F> {
    pub(crate) batch: BatchBuffers<F>,
    /// The direction of the last forward, which backward follows.
    pub(crate) direction: Direction,
}

/// A workspace's buffers by kind of batch.
#[derive(Debug)]
pub(crate) enum BatchBuffers<F> {
    Fixed(Buffers<F>),
    Padded(Segments<F>),
}

impl<F: Float> Workspace<F> {
    /// A workspace for `dims.batch` rows of `dims.seq_len` steps of a `cell` layer with
    /// `dims.input` inputs and `dims.hidden` units (the same as
    /// [`Layer::workspace`](crate::Layer::workspace) with [`Batch::Fixed`](crate::Batch::Fixed)).
    pub fn new(cell: CellKind, dims: Dims, mode: Mode) -> Result<Self> {
        Ok(Workspace {
            batch: BatchBuffers::Fixed(Buffers::new(cell, dims, mode)?),
            direction: Direction::Forward,
        })
    }

    /// Number of `F` elements a workspace of a fixed batch for `cell`, `dims` and `mode`
    /// holds (besides backward's packing scratch); `Err` if its size in bytes would not fit
    /// the address space.
    pub fn required_len(cell: CellKind, dims: Dims, mode: Mode) -> Result<usize> {
        Buffers::<F>::required_len(cell, dims, mode)
    }

    /// The cell kind this workspace serves.
    pub fn cell(&self) -> CellKind {
        match &self.batch {
            BatchBuffers::Fixed(b) => b.cell(),
            BatchBuffers::Padded(s) => s.cell(),
        }
    }

    /// The dimensions this workspace serves: `T` (padded) steps of `B` rows.
    pub fn dims(&self) -> Dims {
        match &self.batch {
            BatchBuffers::Fixed(b) => b.dims(),
            BatchBuffers::Padded(s) => s.dims(),
        }
    }

    /// The mode this workspace serves.
    pub fn mode(&self) -> Mode {
        match &self.batch {
            BatchBuffers::Fixed(b) => b.mode(),
            BatchBuffers::Padded(s) => s.mode(),
        }
    }

    /// `Ok` if a backward of a layer with weights `version` may run on this workspace: a
    /// training forward ran with those weights and no backward consumed it.
    pub(crate) fn check_pending(&self, version: WeightsVersion) -> Result<()> {
        match &self.batch {
            BatchBuffers::Fixed(b) => b.status.check_forwarded(version),
            BatchBuffers::Padded(s) => s.status().check_forwarded(version),
        }
    }

    /// Each row's number of valid steps for a padded batch; `None` for a fixed batch.
    pub fn lengths(&self) -> Option<&[usize]> {
        match &self.batch {
            BatchBuffers::Fixed(_) => None,
            BatchBuffers::Padded(s) => Some(s.lengths()),
        }
    }

    /// Size in bytes, including the weight-gradient scratch that the first backward adds (a
    /// few MiB at most: a chunk of 256 time-step rows of `x` and `h` per thread, independent
    /// of `T`).
    pub fn bytes(&self) -> usize {
        match &self.batch {
            BatchBuffers::Fixed(b) => b.bytes(),
            BatchBuffers::Padded(s) => s.bytes(),
        }
    }
}
