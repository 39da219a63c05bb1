//! Batches of sequences of different lengths: padding that never touches the state, the
//! output or the gradients.
//!
//! A batch is time-major as everywhere else, `x [T, B, I]`, with `lengths[b] <= T` valid steps
//! for row `b`; its steps `t >= lengths[b]` are padding. Over a workspace made for
//! [`Batch::Padded`](crate::Batch::Padded):
//!
//! - [`Layer::forward`] runs each row for its own length only: `y [T, B, H]` is zero at
//!   the padding, the final state of row `b` is its state after its last step (its initial
//!   state if the length is 0), and the padding of `x` is never read (NaN there changes
//!   nothing). [`Direction::Reverse`] runs each row from its own last valid step
//!   `lengths[b] - 1` back to 0, as PyTorch's packed sequences do in a bidirectional layer.
//! - [`Layer::backward`] is the gradient of the same function: `dy` at the padding is
//!   never read (padding does not reach the loss), `dh_n` and `dc_n` of row `b` enter at its
//!   last step, `dx` is zero at the padding.
//!
//! This is what PyTorch's `pack_padded_sequence` gives, without sorting by the caller.
//!
//! # How
//!
//! The rows are ordered by length, longest first. Between two consecutive distinct lengths
//! the set of live rows does not change, so the time axis is cut there into segments, and
//! each segment runs as one ordinary [`Layer::forward`] over its live rows only (a contiguous
//! prefix of the ordered rows), from the state the previous segment ended in. Backward runs
//! the segments in reverse, each an ordinary backward that adds its weight
//! gradients to the ones before. A reverse pass runs the same segments over each row's steps
//! gathered from its last valid one back. So every kernel, thread split and bit of the fixed-length
//! path is reused, and padded steps are not computed. The price is one pass per segment: each
//! distinct length adds a pass's set-up, and the short segments of few rows run less
//! efficiently than the full batch (BENCHMARKS.md, padded).
//!
//! A row's values are those of the same row run alone: each element of every product is a
//! sum over `k` in a fixed order, independent of the batch (`tests/padded.rs` compares bit
//! for bit).
//!
//! The workspace holds one fixed batch's buffers per segment (together the size of one for the valid
//! steps only, no padding), a gather buffer for the largest segment's `x` and `y` (and `dx`
//! in training), and the state of every row. It is made for one `lengths` and allocates
//! everything then: forward and backward allocate nothing.

use crate::error::{Error, Result, mul_len, try_zeroed};
use crate::float::Float;
use crate::layer::{FinalState, InitialState, InputGrads, Layer, Upstream};
use crate::shape::{CellKind, Dims, Direction, GradMode, Mode};
use crate::weights::LayerGrads;
use crate::workspace::{Buffers, Status, check_serves};

/// One stretch of time over which the same rows are live.
#[derive(Debug)]
struct Segment<F> {
    /// Steps `t0..t1`.
    t0: usize,
    t1: usize,
    /// Live rows: the first `rows` of the length order.
    rows: usize,
    ws: Buffers<F>,
}

/// The buffers of a padded batch for one set of `lengths` (see the [module docs](self)): one
/// fixed batch's buffers per segment, gather buffers and every row's state.
#[derive(Debug)]
pub(crate) struct Segments<F> {
    cell: CellKind,
    input: usize,
    hidden: usize,
    seq_len: usize,
    mode: Mode,
    lengths: Vec<usize>,
    /// Rows by length, longest first (equal lengths in row order).
    order: Vec<usize>,
    segments: Vec<Segment<F>>,
    /// Fresh, Forwarded (backward may run once) or Consumed, for the whole batch.
    status: Status,
    /// Gathered `x` (and `dx`) of a segment: its steps, its live rows.
    x_buf: Vec<F>,
    dx_buf: Vec<F>,
    /// Gathered `y` (forward) or `dy` (backward) of a segment.
    y_buf: Vec<F>,
    /// Every row's state (or its gradient), in length order, `[B, H]`: the current one and
    /// the next one (a segment's call cannot read and write the same buffer).
    h: [Vec<F>; 2],
    c: [Vec<F>; 2],
    /// Weight-gradient scratch, lent to each segment's workspace in turn.
    grad_scratch: Vec<F>,
}

impl<F: Float> Segments<F> {
    /// Each row's number of valid steps.
    pub(crate) fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// `B`, the number of rows.
    pub(crate) fn batch(&self) -> usize {
        self.lengths.len()
    }

    /// The mode this workspace serves.
    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    /// The padded batch's dimensions: `T` padded steps of `B` rows.
    pub(crate) fn dims(&self) -> Dims {
        Dims {
            seq_len: self.seq_len,
            batch: self.batch(),
            input: self.input,
            hidden: self.hidden,
        }
    }

    /// The cell kind served.
    pub(crate) fn cell(&self) -> CellKind {
        self.cell
    }

    /// Size in bytes, including the weight-gradient scratch once a backward has run.
    pub(crate) fn bytes(&self) -> usize {
        let own = self.x_buf.len()
            + self.dx_buf.len()
            + self.y_buf.len()
            + self.h.iter().chain(&self.c).map(Vec::len).sum::<usize>()
            + self.grad_scratch.len();
        own * core::mem::size_of::<F>() + self.segments.iter().map(|s| s.ws.bytes()).sum::<usize>()
    }

    /// Fails unless this workspace serves `layer` (cell and widths) in `mode` (any if `None`).
    /// Where the batch is in its forward/backward cycle.
    pub(crate) fn status(&self) -> Status {
        self.status
    }

    pub(crate) fn check(&self, layer: &Layer<F>, mode: Option<Mode>) -> Result<()> {
        check_serves(
            (self.cell, self.input, self.hidden, self.mode),
            (layer.cell(), layer.input_size(), layer.hidden_size(), mode),
        )
    }
}

/// Which rows a segment gathers, and from where in time: rows `order[..rows]` of its steps
/// `t0..t1`, counted from each row's first step (forward) or from its last valid step back
/// (reverse).
#[derive(Clone, Copy)]
struct Span<'a> {
    t0: usize,
    t1: usize,
    rows: usize,
    order: &'a [usize],
    lengths: &'a [usize],
    direction: Direction,
}

impl Span<'_> {
    /// The time step of row `r` that the segment runs as its step `t`.
    fn time(&self, r: usize, t: usize) -> usize {
        match self.direction {
            Direction::Forward => t,
            Direction::Reverse => self.lengths[r] - 1 - t,
        }
    }
}

/// Copies the span's rows and steps of `src [T, B, w]` into `dst [t1 - t0, rows, w]`.
fn gather<F: Copy>(src: &[F], dst: &mut [F], b: usize, w: usize, span: Span<'_>) {
    for t in span.t0..span.t1 {
        for (j, &r) in span.order[..span.rows].iter().enumerate() {
            let d = ((t - span.t0) * span.rows + j) * w;
            let s = (span.time(r, t) * b + r) * w;
            dst[d..d + w].copy_from_slice(&src[s..s + w]);
        }
    }
}

/// The inverse of [`gather`]: rows of `src [t1 - t0, rows, w]` into `dst [T, B, w]`.
fn scatter<F: Copy>(src: &[F], dst: &mut [F], b: usize, w: usize, span: Span<'_>) {
    for t in span.t0..span.t1 {
        for (j, &r) in span.order[..span.rows].iter().enumerate() {
            let s = ((t - span.t0) * span.rows + j) * w;
            let d = (span.time(r, t) * b + r) * w;
            dst[d..d + w].copy_from_slice(&src[s..s + w]);
        }
    }
}

/// Zeroes the padding of `m [T, B, w]`: step `t` of row `r` for `t >= lengths[r]`.
fn zero_padding<F: Float>(m: &mut [F], lengths: &[usize], w: usize) {
    for (t, step) in m.chunks_exact_mut(lengths.len() * w).enumerate() {
        for (r, &len) in lengths.iter().enumerate() {
            if t >= len {
                step[r * w..(r + 1) * w].fill(F::ZERO);
            }
        }
    }
}

/// Row `r` of `m [B, w]`.
fn row<F>(m: &[F], r: usize, w: usize) -> &[F] {
    &m[r * w..(r + 1) * w]
}

/// Row `r` of `m [B, w]`, to write.
fn row_mut<F>(m: &mut [F], r: usize, w: usize) -> &mut [F] {
    &mut m[r * w..(r + 1) * w]
}

impl<F: Float> Segments<F> {
    /// A workspace for batches of `lengths.len()` rows padded to `seq_len` steps, row `b`
    /// valid for its first `lengths[b]` steps (0 allowed: the row keeps its initial state).
    ///
    /// Errors: [`Error::ZeroDim`] for `seq_len` 0 or no rows, [`Error::InvalidArgument`] for a
    /// length past `seq_len`, [`Error::SizeOverflow`] / [`Error::AllocationFailed`] for sizes
    /// that do not fit.
    pub(crate) fn new(
        layer: &Layer<F>,
        lengths: &[usize],
        seq_len: usize,
        mode: Mode,
    ) -> Result<Segments<F>> {
        if seq_len == 0 {
            return Err(Error::ZeroDim { what: "seq_len" });
        }
        if lengths.is_empty() {
            return Err(Error::ZeroDim {
                what: "batch (lengths)",
            });
        }
        // The caller's buffers span all T steps of all B rows: their lengths must fit.
        layer.dims(seq_len, lengths.len()).validate(layer.cell())?;
        if let Some((b, &len)) = lengths.iter().enumerate().find(|(_, l)| **l > seq_len) {
            return Err(Error::InvalidArgument {
                what: "lengths",
                why: format!("row {b} has length {len}, past seq_len = {seq_len}"),
            });
        }
        let (i, h, batch) = (layer.input_size(), layer.hidden_size(), lengths.len());
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&r| core::cmp::Reverse(lengths[r]));
        let mut ends: Vec<usize> = lengths.iter().copied().filter(|&l| l > 0).collect();
        ends.sort_unstable();
        ends.dedup();
        let mut segments = Vec::with_capacity(ends.len());
        let (mut t0, mut most) = (0, 0);
        for &t1 in &ends {
            let rows = lengths.iter().filter(|&&l| l >= t1).count();
            most = most.max(mul_len("padded segment", t1 - t0, rows)?);
            segments.push(Segment {
                t0,
                t1,
                rows,
                ws: Buffers::new(layer.cell(), layer.dims(t1 - t0, rows), mode)?,
            });
            t0 = t1;
        }
        let training = mode == Mode::Training;
        let state = mul_len("padded state", batch, h)?;
        let lstm = layer.cell().has_cell_state();
        let c_len = if lstm { state } else { 0 };
        Ok(Segments {
            cell: layer.cell(),
            input: i,
            hidden: h,
            seq_len,
            mode,
            lengths: lengths.to_vec(),
            order,
            segments,
            status: Status::Fresh,
            x_buf: try_zeroed("padded x", mul_len("padded x", most, i)?)?,
            dx_buf: try_zeroed(
                "padded dx",
                if training {
                    mul_len("padded dx", most, i)?
                } else {
                    0
                },
            )?,
            y_buf: try_zeroed("padded y", mul_len("padded y", most, h)?)?,
            h: [
                try_zeroed("padded h", state)?,
                try_zeroed("padded h", state)?,
            ],
            c: [
                try_zeroed("padded c", c_len)?,
                try_zeroed("padded c", c_len)?,
            ],
            grad_scratch: Vec::new(),
        })
    }
}

/// [`Layer::forward`] over a padded batch: `x [T, B, I]` in, `y [T, B, H]` out (zero at the
/// padding), each row's final state after its own last step (see the
/// [module docs](crate::sequence::padded)). A [`Mode::Training`] workspace keeps what
/// [`backward`] needs. Each segment runs forward; a reverse pass gathers its rows backwards.
///
/// Errors as [`Layer::forward`]'s, for the padded batch's `T` and `B`.
pub(crate) fn forward<F: Float>(
    layer: &Layer<F>,
    ws: &mut Segments<F>,
    direction: Direction,
    x: &[F],
    init: InitialState<'_, F>,
    y: &mut [F],
    mut fin: FinalState<'_, F>,
) -> Result<()> {
    ws.check(layer, None)?;
    let (b, i, h) = (ws.batch(), layer.input_size(), layer.hidden_size());
    let lstm = layer.cell().has_cell_state();
    layer.check_forward_buffers(&ws.dims(), x, &init, y, &fin)?;
    ws.status = Status::Fresh;
    let Segments {
        lengths,
        order,
        segments,
        x_buf,
        y_buf,
        h: [h_cur, h_next],
        c: [c_cur, c_next],
        ..
    } = ws;
    // Every row's initial state, in length order.
    for (j, &r) in order.iter().enumerate() {
        let dst = row_mut(h_cur, j, h);
        match init.h0 {
            Some(h0) => dst.copy_from_slice(row(h0, r, h)),
            None => dst.fill(F::ZERO),
        }
        if lstm {
            let dst = row_mut(c_cur, j, h);
            match init.c0 {
                Some(c0) => dst.copy_from_slice(row(c0, r, h)),
                None => dst.fill(F::ZERO),
            }
        }
    }
    // Every valid step of y is written by exactly one segment below; the padding is zeroed.
    zero_padding(y, lengths, h);
    for seg in segments.iter_mut() {
        let (rows, tk) = (seg.rows, seg.t1 - seg.t0);
        let span = Span {
            t0: seg.t0,
            t1: seg.t1,
            rows,
            order,
            lengths,
            direction,
        };
        let (xs, ys) = (&mut x_buf[..tk * rows * i], &mut y_buf[..tk * rows * h]);
        gather(x, xs, b, i, span);
        let n = rows * h;
        layer.forward_buffers(
            &mut seg.ws,
            Direction::Forward,
            xs,
            InitialState {
                h0: Some(&h_cur[..n]),
                c0: lstm.then(|| &c_cur[..n]),
            },
            ys,
            FinalState {
                h_n: Some(&mut h_next[..n]),
                c_n: lstm.then(|| &mut c_next[..n]),
            },
        )?;
        scatter(ys, y, b, h, span);
        h_cur[..n].copy_from_slice(&h_next[..n]);
        if lstm {
            c_cur[..n].copy_from_slice(&c_next[..n]);
        }
    }
    for (j, &r) in order.iter().enumerate() {
        if let Some(h_n) = fin.h_n.as_deref_mut() {
            row_mut(h_n, r, h).copy_from_slice(row(h_cur, j, h));
        }
        if let Some(c_n) = fin.c_n.as_deref_mut() {
            row_mut(c_n, r, h).copy_from_slice(row(c_cur, j, h));
        }
    }
    if ws.mode == Mode::Training {
        ws.status = Status::Forwarded(layer.version());
    }
    Ok(())
}

/// [`Layer::backward`] over the last training [`forward`] with `ws`: `x` must
/// be the input that forward saw. `dy` at the padding is not read, `dx` there is zero,
/// `dh_n`/`dc_n` of a row enter at its last valid step (see the
/// [module docs](crate::sequence::padded)). Weight gradients go to `grads`, added or overwritten by
/// `mode`. Consumes the forward's state: a second backward needs a new forward.
///
/// Errors as [`Layer::backward`]'s; every buffer is checked before anything is computed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<F: Float>(
    layer: &Layer<F>,
    ws: &mut Segments<F>,
    direction: Direction,
    x: &[F],
    up: Upstream<'_, F>,
    grads: &mut LayerGrads<F>,
    inputs: InputGrads<'_, F>,
    mode: GradMode,
) -> Result<()> {
    ws.check(layer, Some(Mode::Training))?;
    ws.status.check_forwarded(layer.version())?;
    let (b, i, h) = (ws.batch(), layer.input_size(), layer.hidden_size());
    let lstm = layer.cell().has_cell_state();
    layer.check_backward_buffers(&ws.dims(), x, &up, grads, &inputs)?;
    ws.status = Status::Consumed;
    let Segments {
        lengths,
        order,
        segments,
        x_buf,
        dx_buf,
        y_buf,
        h: [dh_cur, dh_next],
        c: [dc_cur, dc_next],
        grad_scratch,
        ..
    } = ws;
    let InputGrads {
        mut dx,
        mut dh0,
        mut dc0,
    } = inputs;
    // A row's dh_n enters at its last step: where its segment ends, or at once for a row of
    // length 0 (its final state is its initial one).
    let enter_final = |dh: &mut [F], dc: &mut [F], j: usize| {
        let r = order[j];
        match up.dh_n {
            Some(d) => row_mut(dh, j, h).copy_from_slice(row(d, r, h)),
            None => row_mut(dh, j, h).fill(F::ZERO),
        }
        if lstm {
            match up.dc_n {
                Some(d) => row_mut(dc, j, h).copy_from_slice(row(d, r, h)),
                None => row_mut(dc, j, h).fill(F::ZERO),
            }
        }
    };
    for j in 0..b {
        if lengths[order[j]] == 0 {
            enter_final(dh_cur, dc_cur, j);
        }
    }
    // Every valid step of dx is written by exactly one segment below.
    if let Some(dx) = dx.as_deref_mut() {
        zero_padding(dx, lengths, i);
    }
    if segments.is_empty() && mode == GradMode::Overwrite {
        // Every row has length 0: nothing flows into the weights.
        for g in [
            &mut grads.weight_ih,
            &mut grads.weight_hh,
            &mut grads.bias_ih,
            &mut grads.bias_hh,
        ] {
            g.fill(F::ZERO);
        }
    }
    let last = segments.len().saturating_sub(1);
    for (k, seg) in segments.iter_mut().enumerate().rev() {
        let (rows, tk) = (seg.rows, seg.t1 - seg.t0);
        let span = Span {
            t0: seg.t0,
            t1: seg.t1,
            rows,
            order,
            lengths,
            direction,
        };
        for j in 0..rows {
            if lengths[order[j]] == seg.t1 {
                enter_final(dh_cur, dc_cur, j);
            }
        }
        let n = rows * h;
        let xs = &mut x_buf[..tk * rows * i];
        gather(x, xs, b, i, span);
        let dys = match up.dy {
            Some(dy) => {
                let d = &mut y_buf[..tk * rows * h];
                gather(dy, d, b, h, span);
                Some(&d[..])
            }
            None => None,
        };
        let dxs = &mut dx_buf[..tk * rows * i];
        // The last segment (the first run here) takes the caller's mode; the ones before it
        // add to what it left.
        let seg_mode = if k == last {
            mode
        } else {
            GradMode::Accumulate
        };
        seg.ws.swap_grad_scratch(grad_scratch);
        let result = layer.backward_buffers(
            &mut seg.ws,
            Direction::Forward,
            xs,
            Upstream {
                dy: dys,
                dh_n: Some(&dh_cur[..n]),
                dc_n: lstm.then(|| &dc_cur[..n]),
            },
            grads,
            InputGrads {
                dx: dx.is_some().then_some(&mut dxs[..]),
                dh0: Some(&mut dh_next[..n]),
                dc0: lstm.then(|| &mut dc_next[..n]),
            },
            seg_mode,
        );
        seg.ws.swap_grad_scratch(grad_scratch);
        result?;
        if let Some(dx) = dx.as_deref_mut() {
            scatter(dxs, dx, b, i, span);
        }
        dh_cur[..n].copy_from_slice(&dh_next[..n]);
        if lstm {
            dc_cur[..n].copy_from_slice(&dc_next[..n]);
        }
    }
    for (j, &r) in order.iter().enumerate() {
        if let Some(d) = dh0.as_deref_mut() {
            row_mut(d, r, h).copy_from_slice(row(dh_cur, j, h));
        }
        if let Some(d) = dc0.as_deref_mut() {
            row_mut(d, r, h).copy_from_slice(row(dc_cur, j, h));
        }
    }
    Ok(())
}
