//! How a pass is split over the layer's threads, decided once per call from the shapes: by
//! batch rows ([`rows`](super::rows)), by hidden units ([`columns`](super::columns)), or, at
//! batch 1, by hidden units with the input projection folded into the steps.

use crate::exec::columns::{cell_splits_by_units, folds_projection};
use crate::float::Float;
use crate::kernels::isa::IsaToken;
use crate::shape::{CellKind, Dims, Direction};

/// Least multiply-adds per step (`B·G·H·max(I, H)`) with 8 or more rows for a pass to split
/// by rows: below it a parallel region costs more than the second core gains.
const ROW_SPLIT_MIN_WORK: usize = 1 << 18;

/// Least multiply-adds per step (`B·G·H·H`) for an inference pass to split by hidden units:
/// below it one synchronisation per step costs more than the second core gains.
const UNIT_SPLIT_MIN_WORK: usize = 1 << 16;

/// Least multiply-adds (`B·G·H·(I+H)`) for one streaming step to split by hidden units over
/// the stream's worker threads (see [`stream_workers`](super::stream_workers)); the
/// break-even point of one thread against two at B = 1 (BENCHMARKS.md, streaming).
const STREAM_SPLIT_MIN_WORK: usize = 3 << 15;

/// How a forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForwardPlan {
    /// The recurrence split by batch rows into this many blocks (1: the calling thread).
    Rows(usize),
    /// Inference split by hidden units into this many slices (1 for a pass that only folds
    /// its input projection into the steps).
    Columns(usize),
}

impl ForwardPlan {
    /// Threads the pass uses (whether it enters the pool).
    pub(crate) fn threads(self) -> usize {
        match self {
            ForwardPlan::Rows(n) | ForwardPlan::Columns(n) => n,
        }
    }
}

/// Row blocks per step of a pass over `d` on `threads` threads: all of them where a step has
/// enough work, else 1.
pub(crate) fn row_shards(threads: usize, cell: CellKind, d: &Dims) -> usize {
    let per_step = d.batch * cell.gates() * d.hidden * d.hidden.max(d.input);
    if d.batch >= 8 && per_step >= ROW_SPLIT_MIN_WORK {
        threads
    } else {
        1
    }
}

/// The plan of a forward pass over `d`: rows where the batch is large enough; inference with
/// fewer than 8 rows by hidden units, where the cell can and a step has enough work (the
/// threads then meet once per step); batch-1 inference folds its input projection where the
/// kernel exists.
pub(crate) fn forward_plan<F: Float>(
    threads: usize,
    isa: IsaToken,
    cell: CellKind,
    d: &Dims,
    direction: Direction,
    training: bool,
) -> ForwardPlan {
    let shards = row_shards(threads, cell, d);
    let per_step = d.batch * cell.gates() * d.hidden * d.hidden;
    let units = if !training
        && shards == 1
        && cell_splits_by_units(cell)
        && per_step >= UNIT_SPLIT_MIN_WORK
    {
        threads
    } else {
        1
    };
    // The fold projects the rows of later steps during earlier ones: forward only.
    let folds = !training
        && direction == Direction::Forward
        && folds_projection::<F>(isa, cell, d.seq_len, d.batch, d.input, d.hidden);
    if units > 1 || folds {
        ForwardPlan::Columns(units)
    } else {
        ForwardPlan::Rows(shards)
    }
}

/// Hidden-unit slices of one streaming step of `batch` rows: the thread count for a step
/// (both GEMMs, `x_t · W_ihᵀ` and `h · W_hhᵀ`) of at least [`STREAM_SPLIT_MIN_WORK`]
/// multiply-adds with fewer than 8 rows, else 1.
pub(crate) fn stream_slices(
    threads: usize,
    cell: CellKind,
    i: usize,
    h: usize,
    batch: usize,
) -> usize {
    let per_step = batch * cell.gates() * h * (i + h);
    if batch < 8 && cell_splits_by_units(cell) && per_step >= STREAM_SPLIT_MIN_WORK {
        threads
    } else {
        1
    }
}
