//! Inference at small batch across threads by hidden-unit slices ("column split").
//!
//! At batch 1 a step is a matrix-vector product over all of `W_hh` (1 MiB for an LSTM at
//! H = 256), too little work to split by batch rows and too much to leave on one core. Here the
//! hidden units are cut into one slice per thread (whole packed panels), and each slice owns
//! the gate columns of its units in every gate, so the recurrent GEMM *and* the fused
//! post-GEMM update of a slice need nothing from the other slices: the only exchange is `h_t`,
//! which every slice reads whole at step `t + 1`. That is one synchronisation per step, and
//! each thread streams only its part of `W_hh` (which then fits in its core's L2).
//!
//! The synchronisation is [`StepClaims`](crate::exec::claims::StepClaims): each `(slice, step)` pair is claimed by exactly one
//! thread (its own thread first; another thread takes it over only if it is still unclaimed
//! after [`PATIENCE`](crate::exec::claims::PATIENCE), so a descheduled or never-started worker cannot stall the pass, and a
//! pass whose workers never start at all completes on the calling thread). A thread that took
//! a slice over takes the next one over without waiting, until a step where the slice's own
//! thread was there: a preempted worker then costs one patience, not one per step. Whoever computes a
//! slice runs the same kernels on the same data, so results are bit-identical to the
//! single-threaded pass (each GEMM element is the sum over `k` in order whatever the tiling;
//! each post-GEMM element depends only on its own inputs).
//!
//! At batch 1, where the kernel exists, the input projection is folded into the steps' GEMVs
//! ([`FoldPlan`], `gemv_fold_avx512.rs`); such a pass comes here on one thread too, as one
//! slice run by the calling thread.

use crate::error::{Result, try_zeroed};
use crate::exec::claims::{Slots, StepClaims, StepOutputs, Turn};
use crate::float::Float;
use crate::gemm::input_projection;
use crate::kernels::dispatch::{FOLD_ROWS, FoldPiece};
use crate::kernels::isa::{IsaToken, l3_cache_bytes};
use crate::kernels::postgemm::StepShape;
use crate::kernels::step_gemm::{Accumulate, Operand, PackedLayout, PackedRef, PanelOrder};
use crate::layer::Layer;
use crate::packing::forward_packing;
use crate::sequence::{TimeAxis, reverse_steps};
use crate::shape::{CellKind, GruVariant};

/// Hidden-unit ranges `[u0, u1)`, one per slice: `n` slices (fewer if `h` has fewer panels)
/// of whole panels of `nr` units, as equal as panels allow.
pub(crate) fn column_slices(h: usize, nr: usize, n: usize) -> Vec<(usize, usize)> {
    let panels = h.div_ceil(nr.max(1));
    let n = n.clamp(1, panels.max(1));
    (0..n)
        .map(|k| {
            let u0 = (panels * k / n * nr).min(h);
            let u1 = (panels * (k + 1) / n * nr).min(h);
            (u0, u1)
        })
        .filter(|(u0, u1)| u1 > u0)
        .collect()
}

/// Whether a cell can run split by hidden units: all but the reset-before GRU, whose
/// candidate GEMM reads `r * h_{t-1}` of every unit (a second exchange per step).
pub(crate) fn cell_splits_by_units(cell: CellKind) -> bool {
    cell != CellKind::Gru(GruVariant::ResetBefore)
}

/// What every slice of an inference pass reads.
pub(crate) struct ColumnPass<'a, F> {
    pub cell: CellKind,
    pub isa: IsaToken,
    pub batch: usize,
    pub hidden: usize,
    /// `W_hhᵀ` packed with `forward_packing`, and its layout: all hidden units, or (a
    /// streaming worker's) only units `w_origin..w_origin + layout.group_width`.
    pub w_hh_t: &'a [F],
    pub layout: PackedLayout,
    /// The first hidden unit the packed weights hold (`W_hh`'s here, and `W_ih`'s passed to
    /// [`step_slice`]): 0 for whole matrices.
    pub w_origin: usize,
    /// `[G*H]`, as the post-GEMM kernels take it (see `fused_bias`). Read by
    /// [`SliceState::new`] only (a slice keeps its own part).
    pub bias: &'a [F],
    /// The reset-after GRU's `b_hn [H]` (empty otherwise); read as `bias`.
    pub b_hn: &'a [F],
}

impl<'a, F: Float> ColumnPass<'a, F> {
    /// What every slice of a pass of `layer` over `batch` rows reads, with the fused `bias`
    /// (see `fused_bias`).
    pub(crate) fn new(layer: &'a Layer<F>, batch: usize, bias: &'a [F]) -> Self {
        let (cell, h) = (layer.cell(), layer.hidden_size());
        ColumnPass {
            cell,
            isa: layer.isa().resolve(),
            batch,
            hidden: h,
            w_hh_t: layer.packed_forward(),
            layout: forward_packing::<F>(cell, h, h),
            w_origin: 0,
            bias,
            b_hn: layer.gru_b_hn(),
        }
    }

    /// Where hidden units `u0..u1` are within the packed weights' columns.
    pub(crate) fn weight_columns(&self, u0: usize, u1: usize) -> (usize, usize) {
        (u0 - self.w_origin, u1 - self.w_origin)
    }
}

/// One slice's units `u0..u1` and its buffers (`hc = u1 - u0` units, `B` rows).
#[derive(Debug, Clone)]
pub(crate) struct SliceState<F> {
    u0: usize,
    u1: usize,
    /// `[G*hc]` and `[hc]`: the slice's biases.
    bias: Vec<F>,
    b_hn: Vec<F>,
    /// `[B, G*hc]`: the recurrent GEMM's result.
    acc: Vec<F>,
    /// LSTM: `c` of the slice, `[B, hc]`, double-buffered by step parity.
    c: [Vec<F>; 2],
    /// GRU: the slice's `h_{t-1}` and `W_hn h + b_hn`, `[B, hc]`.
    h_prev: Vec<F>,
    grid: Vec<F>,
    /// `h_t` of the slice, `[B, hc]`.
    h: Vec<F>,
}

impl<F: Float> SliceState<F> {
    /// Buffers for units `u0..u1` of `B = batch` rows of a `cell` with `hidden` units, with the
    /// slice's biases (from the fused `bias [G*H]` and `b_hn [H]`, empty if unused) and `c_0`
    /// (zeros if `None`) in place. Allocates (once per pass or stream, never per step).
    pub(crate) fn new(
        pass: &ColumnPass<'_, F>,
        (u0, u1): (usize, usize),
        c0: Option<&[F]>,
    ) -> Result<Self> {
        let (b, h, g) = (pass.batch, pass.hidden, pass.cell.gates());
        let hc = u1 - u0;
        let state = |what| try_zeroed::<F>(what, b * hc);
        let mut bias = try_zeroed("slice bias", g * hc)?;
        for (gi, dst) in bias.chunks_exact_mut(hc).enumerate() {
            dst.copy_from_slice(&pass.bias[gi * h + u0..gi * h + u1]);
        }
        let b_hn = if pass.b_hn.is_empty() {
            Vec::new()
        } else {
            pass.b_hn[u0..u1].to_vec()
        };
        let mut c = [state("slice c")?, state("slice c")?];
        if let Some(c0) = c0 {
            gather_columns(&mut c[0], c0, h, u0, u1);
        }
        Ok(SliceState {
            u0,
            u1,
            bias,
            b_hn,
            acc: try_zeroed("slice gates", b * g * hc)?,
            c,
            h_prev: state("slice h")?,
            grid: state("slice grid")?,
            h: state("slice h")?,
        })
    }

    /// The slice's units `u0..u1`.
    pub(crate) fn units(&self) -> (usize, usize) {
        (self.u0, self.u1)
    }

    /// After [`step_slice`]: the slice's `h_t` and (LSTM; empty otherwise) `c_t`, `[B, hc]`
    /// each.
    pub(crate) fn outputs(&self, lstm: bool) -> (&[F], &[F]) {
        (&self.h, if lstm { &self.c[1] } else { &[] })
    }

    /// The fused post-GEMM update of the slice: `gates [B, G*hc]` (input projection in,
    /// activated gates out) and `acc` (`h_{t-1} · W_hhᵀ`) in, `h` out; the LSTM reads
    /// `c[parity]` and writes the other.
    fn update(&mut self, pass: &ColumnPass<'_, F>, gates: &mut [F], h_prev: &[F], parity: usize) {
        let (u0, u1) = (self.u0, self.u1);
        let sh = StepShape {
            batch: pass.batch,
            hidden: u1 - u0,
        };
        match pass.cell {
            CellKind::Rnn(act) => {
                F::rnn_forward(pass.isa, sh, act, gates, &self.acc, &self.bias, &mut self.h)
            }
            CellKind::Lstm => {
                let [c0, c1] = &mut self.c;
                let (c_prev, c_out) = if parity == 0 { (c0, c1) } else { (c1, c0) };
                F::lstm_forward(
                    pass.isa,
                    sh,
                    gates,
                    &self.acc,
                    &self.bias,
                    c_prev,
                    c_out,
                    &mut self.h,
                );
            }
            CellKind::Gru(_) => {
                gather_columns(&mut self.h_prev, h_prev, pass.hidden, u0, u1);
                F::gru_reset_after_forward(
                    pass.isa,
                    sh,
                    gates,
                    &self.acc,
                    &self.bias,
                    &self.b_hn,
                    &self.h_prev,
                    &mut self.h,
                    &mut self.grid,
                );
            }
        }
    }
}

/// Columns `u0..u1` of `dst [B, h]` = `src [B, u1 - u0]`.
pub(crate) fn put_columns<F: Copy>(dst: &mut [F], src: &[F], h: usize, u0: usize, u1: usize) {
    for (bi, s) in src.chunks_exact(u1 - u0).enumerate() {
        dst[bi * h + u0..bi * h + u1].copy_from_slice(s);
    }
}

/// `dst [B, u1 - u0]` = columns `u0..u1` of `src [B, h]`.
fn gather_columns<F: Copy>(dst: &mut [F], src: &[F], h: usize, u0: usize, u1: usize) {
    for (bi, d) in dst.chunks_exact_mut(u1 - u0).enumerate() {
        d.copy_from_slice(&src[bi * h + u0..bi * h + u1]);
    }
}

/// Where the recurrent half `h_{t-1} · W_hhᵀ` of a slice's streaming step comes from.
pub(crate) enum Recurrent<'a, F> {
    /// Computed in the step.
    Compute,
    /// Already in the slice's accumulator: [`recurrent_columns`] ran on the same `h_{t-1}`
    /// (and the same packed weights' bits) before the step.
    Precomputed,
    /// Being computed by another thread: after the input GEMM, the step calls this with the
    /// slice's accumulator `[B, G*hc]`; it fills it and returns true, or returns false and the
    /// step computes it.
    Fetch(&'a mut dyn FnMut(&mut [F]) -> bool),
}

/// `out [B, G*hc]` = `h_prev [B, H] · W_hhᵀ` for hidden units `u0..u1`, from `pass.w_hh_t`
/// walked in `order`: the recurrent half of a slice's step, which needs nothing but
/// `h_{t-1}`, so a streaming worker computes it between steps (see `stream_workers`). Each
/// element is the sum over `k` in order whatever the tiling, so it has the bits
/// [`step_slice`] would compute.
pub(crate) fn recurrent_columns<F: Float>(
    pass: &ColumnPass<'_, F>,
    order: PanelOrder,
    (u0, u1): (usize, usize),
    h_prev: &[F],
    out: &mut [F],
) {
    let (b, h, g) = (pass.batch, pass.hidden, pass.cell.gates());
    let (w0, w1) = pass.weight_columns(u0, u1);
    let w_hh = PackedRef {
        order,
        ..PackedRef::columns(pass.w_hh_t, pass.layout, w0, w1)
    };
    let hp = Operand {
        data: h_prev,
        ld: h,
    };
    F::step_gemm(pass.isa, b, h, hp, w_hh, out, g * (u1 - u0), Accumulate::No);
}

impl<F: Float> SliceState<F> {
    /// [`recurrent_columns`] of the slice's units into its accumulator: in the step, or
    /// before it for a step that then takes [`Recurrent::Precomputed`].
    pub(crate) fn compute_recurrent(
        &mut self,
        pass: &ColumnPass<'_, F>,
        order: PanelOrder,
        h_prev: &[F],
    ) {
        recurrent_columns(pass, order, (self.u0, self.u1), h_prev, &mut self.acc);
    }
}

/// One slice's part of a streaming step: its columns of `x_t · W_ihᵀ` (`w_ih_t` packed by
/// `ih_layout`, holding the units `pass.w_hh_t` holds) and of `h_prev · W_hhᵀ` (both walked in
/// `order`; the latter from `recurrent`), and its part of the update, from `c_prev [B, H]`
/// (LSTM) to the slice's `h` and `c[1]` (see [`SliceState::outputs`]). `gates` is the slice's
/// `[B, G*hc]` buffer for the input projection. Slices need nothing from each other within a
/// step.
#[allow(clippy::too_many_arguments)]
pub(crate) fn step_slice<F: Float>(
    pass: &ColumnPass<'_, F>,
    order: PanelOrder,
    w_ih_t: &[F],
    ih_layout: PackedLayout,
    x_t: &[F],
    h_prev: &[F],
    c_prev: &[F],
    sl: &mut SliceState<F>,
    gates: &mut [F],
    recurrent: Recurrent<'_, F>,
) {
    let (b, h, g) = (pass.batch, pass.hidden, pass.cell.gates());
    let (u0, u1) = (sl.u0, sl.u1);
    let ldc = g * (u1 - u0);
    let i = ih_layout.k;
    let (w0, w1) = pass.weight_columns(u0, u1);
    let w_ih = PackedRef {
        order,
        ..PackedRef::columns(w_ih_t, ih_layout, w0, w1)
    };
    let x = Operand { data: x_t, ld: i };
    match recurrent {
        Recurrent::Compute => {
            // The two GEMMs are independent. Walked backward, `W_hh` goes first, so that a
            // step always starts on the weights the previous one read last, `W_ih`'s then
            // `W_hh`'s panels forward, `W_hh`'s then `W_ih`'s backward: one walk back and forth
            // over both, which a cache barely too small for them keeps mostly (a slice's share
            // at B = 1, H = I = 256 on two threads is 1 MiB, Zen 4's whole L2).
            if order == PanelOrder::Backward {
                sl.compute_recurrent(pass, order, h_prev);
            }
            F::step_gemm(pass.isa, b, i, x, w_ih, gates, ldc, Accumulate::No);
            if order == PanelOrder::Forward {
                sl.compute_recurrent(pass, order, h_prev);
            }
        }
        Recurrent::Precomputed => {
            F::step_gemm(pass.isa, b, i, x, w_ih, gates, ldc, Accumulate::No);
        }
        Recurrent::Fetch(fetch) => {
            F::step_gemm(pass.isa, b, i, x, w_ih, gates, ldc, Accumulate::No);
            if !fetch(&mut sl.acc) {
                sl.compute_recurrent(pass, order, h_prev);
            }
        }
    }
    if pass.cell.has_cell_state() {
        gather_columns(&mut sl.c[0], c_prev, h, u0, u1);
    }
    sl.update(pass, gates, h_prev, 0);
}

/// The most weight bytes (`W_ih` and `W_hh`, all slices) for which a batch-1 pass folds its
/// projection into the steps, given the L3 size: half of it, or [`FOLD_MAX_WEIGHT_BYTES`]
/// where the CPU does not say. Folded, `W_ih` is read once per block of steps instead of once
/// per pass, beside `W_hh` once per step; once the two no longer fit in the L3 together,
/// `W_hh` is pushed out to memory. Measured on a 32 MiB L3 (2 threads, T = 128, old/new
/// alternating, best of 4), folded against not: H = 128-640 8-12% faster for both cells,
/// LSTM H = 768 (18 MiB) 4% faster, GRU H = 768 (13.5 MiB) 10% faster, GRU H = 1024 (24 MiB)
/// 7% slower, LSTM H = 1024 (32 MiB) 15% slower: the fold won up to 56% of the L3 and lost
/// from 75%; half is the margin kept.
fn fold_max_weight_bytes(l3_bytes: Option<usize>) -> usize {
    l3_bytes.map_or(FOLD_MAX_WEIGHT_BYTES, |l3| l3 / 2)
}

/// The fold's weight cap where the L3 size is unknown: half of the 32 MiB it was measured on.
const FOLD_MAX_WEIGHT_BYTES: usize = 16 << 20;

/// Whether an inference pass of `steps` steps of `batch` rows of a `cell` with `i` inputs and
/// `h` hidden units folds its input projection into the steps (see [`FoldPlan`]): batch 1,
/// a cell that splits by units, a type and ISA with the kernel, weights within half the L3
/// ([`fold_max_weight_bytes`]), and at least two blocks of steps. Such a pass runs through
/// [`forward_columns`] even on one thread.
pub(crate) fn folds_projection<F: Float>(
    isa: IsaToken,
    cell: CellKind,
    steps: usize,
    batch: usize,
    i: usize,
    h: usize,
) -> bool {
    let weight_bytes = cell.gates() * h * (i + h) * core::mem::size_of::<F>();
    batch == 1
        && cell_splits_by_units(cell)
        && F::folds(isa)
        && weight_bytes <= fold_max_weight_bytes(l3_cache_bytes())
        && steps >= 2 * FOLD_ROWS
}

/// Which piece of the input projection folds into which GEMV chunk of a batch-1 pass, where
/// the kernel can (`gemv_fold_avx512.rs`). The steps go in blocks of [`FOLD_ROWS`]: the rows
/// of a block (one row per step at batch 1) are projected during the block before it, tile by
/// tile (the block's rows by a pair of panels), each tile cut along `k` into pieces spread
/// evenly over the block's GEMV chunks, so that a step's row is complete before the step
/// starts. The first block and the rows after the last full one are projected before the
/// loop.
#[derive(Debug, Clone, Copy)]
struct FoldPlan {
    /// Full blocks of `FOLD_ROWS` steps.
    blocks: usize,
    /// GEMV chunks (of four panels) per step, panels per slice, and their pairs (the last
    /// one a single panel if the count is odd).
    chunks: usize,
    panels: usize,
    pairs: usize,
    /// Input columns (`I`), the terms per piece, and pieces per tile.
    i: usize,
    kp: usize,
    k_pieces: usize,
}

impl FoldPlan {
    /// The plan for a slice of `panels` panels over `steps` steps of `i` inputs, or `None`
    /// where there is nothing to fold (fewer than two full blocks).
    fn new(steps: usize, panels: usize, i: usize) -> Option<Self> {
        let blocks = steps / FOLD_ROWS;
        if blocks < 2 || panels == 0 || i == 0 {
            return None;
        }
        let chunks = panels.div_ceil(4);
        let pairs = panels.div_ceil(2);
        // A block has `FOLD_ROWS · chunks` chunks to carry its `pairs` tiles (at least four
        // per tile), so each tile is cut into that many pieces (at most one term each).
        let want = (FOLD_ROWS * chunks / pairs).clamp(1, i);
        let kp = i.div_ceil(want);
        Some(FoldPlan {
            blocks,
            chunks,
            panels,
            pairs,
            i,
            kp,
            k_pieces: i.div_ceil(kp),
        })
    }

    /// The rows to project before the loop: the first block, and those after the last full
    /// block.
    fn rows_before(&self, steps: usize) -> [core::ops::Range<usize>; 2] {
        [0..FOLD_ROWS, self.blocks * FOLD_ROWS..steps]
    }

    /// The piece to fold into the chunk at walk position `pos` of step `t`, if any: pieces of
    /// the next block's tiles in order, each tile's `k` pieces in order.
    fn piece(&self, t: usize, pos: usize) -> Option<FoldPiece> {
        let block = t / FOLD_ROWS;
        if block + 1 >= self.blocks || pos >= self.chunks {
            return None;
        }
        let slot = (t % FOLD_ROWS) * self.chunks + pos;
        let (pair, ki) = (slot / self.k_pieces, slot % self.k_pieces);
        if pair >= self.pairs {
            return None;
        }
        let k0 = ki * self.kp;
        Some(FoldPiece {
            r0: (block + 1) * FOLD_ROWS,
            j: 2 * pair,
            np: (self.panels - 2 * pair).min(2),
            k0,
            kp: self.kp.min(self.i - k0),
            acc: if ki == 0 {
                Accumulate::No
            } else {
                Accumulate::Yes
            },
        })
    }
}

/// A slice of an inference pass as its steps use it: its state, its part of the projection
/// (`[T, B, G*hc]`), and its fold plan (`None`: the projection is all done before the loop).
type SliceWork<'a, F> = (SliceState<F>, &'a mut [F], Option<FoldPlan>);

/// Runs `run` on every slice, halving the list with `rayon::join` (whose jobs live on the
/// stack: no allocation per step, unlike `rayon::scope`'s spawned tasks).
fn run_split<T: Send>(slices: &mut [T], run: &(impl Fn(&mut T) + Sync)) {
    match slices {
        [] => {}
        [one] => run(one),
        _ => {
            let (lo, hi) = slices.split_at_mut(slices.len() / 2);
            rayon::join(|| run_split(lo, run), || run_split(hi, run));
        }
    }
}

/// Runs an inference pass over `slices` (one per thread of the current rayon pool, `threads`
/// of them) from `h0 [B, H]`: first each slice's input projection, `x [T, B, I]` times its
/// columns of `w_ih_t`, into its own part of `proj` (slice-major, `[T, B, G*hc]` per slice, so
/// a step's gates are contiguous for the post-GEMM kernel: no gathering per step), then the
/// recurrence. Writes `h_t` into `y [T, B, H]` and, for the LSTM, `c_T` into `c_n`. Must be
/// called inside the pool (one parallel region for the whole pass).
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_columns<F: Float>(
    pass: &ColumnPass<'_, F>,
    slices: Vec<SliceState<F>>,
    threads: usize,
    axis: TimeAxis,
    x: &[F],
    w_ih_t: PackedRef<'_, F>,
    proj: &mut [F],
    h0: &[F],
    y: &mut [F],
    c_n: Option<&mut [F]>,
) {
    let (b, h, g) = (pass.batch, pass.hidden, pass.cell.gates());
    let steps = y.len() / (b * h).max(1);
    let i = w_ih_t.layout.k;
    // At batch 1, where the kernel exists, most of the projection is folded into the steps'
    // GEMVs instead (see `FoldPlan`); each slice's plan depends on its panel count.
    let folds = !axis.reversed() && folds_projection::<F>(pass.isa, pass.cell, steps, b, i, h);
    // Each slice's part of `proj`, its fold plan, and its projection (the same per-element
    // sums as the row-major projection of the unsplit pass).
    let mut rest = proj;
    let mut slices: Vec<SliceWork<'_, F>> = slices
        .into_iter()
        .map(|sl| {
            let len = steps * b * g * (sl.u1 - sl.u0);
            let (mine, tail) = core::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            let panels = g * (sl.u1 - sl.u0).div_ceil(pass.layout.nr);
            let plan = folds.then(|| FoldPlan::new(steps, panels, i)).flatten();
            (sl, mine, plan)
        })
        .collect();
    run_split(&mut slices, &|(sl, mine, plan): &mut SliceWork<'_, F>| {
        let (w0, w1) = pass.weight_columns(sl.u0, sl.u1);
        let w = PackedRef::columns(w_ih_t.data, w_ih_t.layout, w0, w1);
        match plan {
            None => input_projection(pass.isa, 1, x, i, w, mine),
            Some(plan) => {
                let ldp = g * (sl.u1 - sl.u0);
                for rows in plan.rows_before(steps) {
                    let xr = &x[rows.start * i..rows.end * i];
                    input_projection(
                        pass.isa,
                        1,
                        xr,
                        i,
                        w,
                        &mut mine[rows.start * ldp..rows.end * ldp],
                    );
                }
            }
        }
    });
    let claims = StepClaims::new(slices.len(), steps);
    let columns = slices.iter().map(|(sl, _, _)| (sl.u0, sl.u1)).collect();
    // The slices write y in the order they run the steps (the claims' order); a reverse pass
    // puts its steps back in time order at the end.
    let y_run = StepOutputs::new(&claims, &mut *y, b, h, columns);
    let step = |(sl, mine, plan): &mut SliceWork<'_, F>, turn: &Turn<'_>| {
        let tau = turn.step();
        let t = axis.at(tau);
        let (u0, u1) = (sl.u0, sl.u1);
        let hc = u1 - u0;
        let h_prev = if tau == 0 {
            h0
        } else {
            y_run.completed(turn, tau - 1)
        };
        let (w0, w1) = pass.weight_columns(u0, u1);
        let w = PackedRef {
            order: PanelOrder::alternating(tau),
            ..PackedRef::columns(pass.w_hh_t, pass.layout, w0, w1)
        };
        let a = Operand {
            data: h_prev,
            ld: h,
        };
        match plan {
            None => F::step_gemm(pass.isa, b, h, a, w, &mut sl.acc, g * hc, Accumulate::No),
            Some(plan) => {
                let x = Operand { data: x, ld: i };
                let w_ih = PackedRef::columns(w_ih_t.data, w_ih_t.layout, w0, w1);
                let pieces = |pos| plan.piece(t, pos);
                F::gemv_fold(
                    pass.isa,
                    h,
                    h_prev,
                    w,
                    &mut sl.acc,
                    x,
                    w_ih,
                    mine,
                    g * hc,
                    &pieces,
                );
            }
        }
        let gates = &mut mine[t * b * g * hc..][..b * g * hc];
        sl.update(pass, gates, h_prev, tau % 2);
        y_run.put(turn, &sl.h);
    };
    let slots = Slots::new(slices);
    if threads > 1 {
        rayon::scope(|s| {
            for me in 1..threads {
                let (claims, slots, step) = (&claims, &slots, &step);
                s.spawn(move |_| claims.work(me, slots, step));
            }
            claims.work(0, &slots, &step);
        });
    } else {
        // One slice on the calling thread (a folded pass on one thread): no pool to enter.
        claims.work(0, &slots, &step);
    }
    if let Some(c_n) = c_n {
        for (sl, _, _) in slots.into_inner() {
            let hc = sl.u1 - sl.u0;
            for (bi, src) in sl.c[steps % 2].chunks_exact(hc).enumerate() {
                c_n[bi * h + sl.u0..bi * h + sl.u1].copy_from_slice(src);
            }
        }
    }
    if axis.reversed() {
        reverse_steps(y, b * h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fold's weight cap is half the L3, 16 MiB where the L3 is unknown, and the L3 read
    /// from CPUID is the one Linux lists.
    #[test]
    fn the_fold_cap_is_half_the_l3_or_16_mib_where_unknown() {
        assert_eq!(fold_max_weight_bytes(None), 16 << 20);
        assert_eq!(fold_max_weight_bytes(Some(32 << 20)), 16 << 20);
        assert_eq!(fold_max_weight_bytes(Some(8 << 20)), 4 << 20);
        // Where Linux lists the caches, CPUID's L3 is the kernel's (which reads the same
        // leaves with its own code).
        let sysfs = std::fs::read_to_string("/sys/devices/system/cpu/cpu0/cache/index3/size");
        if let Some(kib) = sysfs
            .ok()
            .and_then(|s| s.trim().strip_suffix('K')?.parse::<usize>().ok())
        {
            assert_eq!(l3_cache_bytes(), Some(kib * 1024));
        }
    }

    /// Every folded tile (a block's rows by a panel pair) gets its `k` terms exactly once, in
    /// order, the first piece starting from zero, all during the block before its rows are
    /// used; the first block and the rows after the last full one are left to the projection
    /// before the loop; no piece goes to a chunk a step does not have.
    #[test]
    fn fold_plan_covers_every_later_row_once_in_order_and_in_time() {
        for steps in [0, 15, 16, 17, 47, 128, 130] {
            for panels in [1, 2, 3, 5, 8, 24, 32, 33] {
                for i in [1, 2, 7, 37, 256, 600] {
                    let Some(plan) = FoldPlan::new(steps, panels, i) else {
                        assert!(steps < 2 * FOLD_ROWS, "T={steps} P={panels} I={i}: no plan");
                        continue;
                    };
                    let [first, last] = plan.rows_before(steps);
                    assert_eq!(first, 0..FOLD_ROWS);
                    assert_eq!(last.end, steps);
                    assert!(last.start + FOLD_ROWS > steps && last.start % FOLD_ROWS == 0);
                    // (block, pair) -> next term expected.
                    let mut next = std::collections::HashMap::new();
                    let chunks = panels.div_ceil(4);
                    for t in 0..steps {
                        assert_eq!(plan.piece(t, chunks), None);
                        for pos in 0..chunks {
                            let Some(p) = plan.piece(t, pos) else {
                                continue;
                            };
                            let block = p.r0 / FOLD_ROWS;
                            assert_eq!(p.r0 % FOLD_ROWS, 0);
                            assert_eq!(block, t / FOLD_ROWS + 1, "T={steps} P={panels} I={i}");
                            assert!(p.r0 + FOLD_ROWS <= last.start);
                            assert!(p.j % 2 == 0 && p.j + p.np <= panels && p.np >= 1);
                            assert!(p.np == 2 || p.j + 1 == panels);
                            let k = next.entry((block, p.j)).or_insert(0);
                            assert_eq!(p.k0, *k, "T={steps} P={panels} I={i}: k order");
                            let fresh = if p.k0 == 0 {
                                Accumulate::No
                            } else {
                                Accumulate::Yes
                            };
                            assert_eq!(p.acc, fresh);
                            assert!(p.kp >= 1);
                            *k += p.kp;
                        }
                    }
                    for block in 1..last.start / FOLD_ROWS {
                        for j in (0..panels).step_by(2) {
                            assert_eq!(
                                next.get(&(block, j)),
                                Some(&i),
                                "T={steps} P={panels} I={i}"
                            );
                        }
                    }
                    assert_eq!(
                        next.len(),
                        (last.start / FOLD_ROWS - 1) * panels.div_ceil(2)
                    );
                }
            }
        }
    }

    #[test]
    fn slices_cover_h_in_whole_panels() {
        assert_eq!(column_slices(256, 16, 2), vec![(0, 128), (128, 256)]);
        assert_eq!(
            column_slices(128, 16, 3),
            vec![(0, 32), (32, 80), (80, 128)]
        );
        assert_eq!(column_slices(20, 16, 2), vec![(0, 16), (16, 20)]);
        assert_eq!(column_slices(10, 16, 4), vec![(0, 10)]);
        for h in 1..200 {
            for n in 1..5 {
                let s = column_slices(h, 16, n);
                assert_eq!(s[0].0, 0);
                assert_eq!(s.last().unwrap().1, h);
                for w in s.windows(2) {
                    assert_eq!(w[0].1, w[1].0);
                    assert_eq!(w[0].0 % 16, 0);
                }
            }
        }
    }
}
