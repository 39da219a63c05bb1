//! Streaming inference: one time step at a time, with the state kept between calls.
//!
//! [`StreamingLayer`] owns a [`Layer`], its weights prepared once (`W_ihᵀ` and `W_hhᵀ`
//! packed, biases fused) and the recurrent state of `B` sequences. [`StreamingLayer::step`]
//! takes `x_t [B, I]` and returns `h_t [B, H]`; it allocates nothing and runs the same
//! kernels as [`Layer::forward`] on the same data: the input projection is the same packed
//! GEMM (the sequence forward runs it on all steps at once, the stream on one; every element
//! is the sum over `k` in order either way), then the same recurrent GEMM and post-GEMM
//! kernels. So a stream fed a sequence one step at a time equals the sequence forward bit for
//! bit (same ISA, any thread count). [`StreamingLayer::run`] over a whole sequence calls the
//! sequence forward itself.
//!
//! On a layer with several threads ([`Layer::set_threads`]), a step of fewer than 8 rows with
//! at least 98,304 multiply-adds (e.g. an LSTM with I = H = 128) is split by hidden units:
//! each thread computes its units' columns of both GEMMs and their update (nothing is
//! exchanged within a step). The extra threads are the stream's own (not the layer's rayon
//! pool, which takes tens of microseconds to enter from outside): each keeps its own copy of
//! the packed weights, spins for 200 µs after a step waiting for the next and then parks
//! ([`StreamingLayer::set_spin_window`] changes how long), and the caller computes a worker's
//! slice itself whenever the worker is parked (steps that come further apart than the window
//! run as on one thread, without a system call to wake it) or not on time, so a step never
//! waits for a thread to wake up or be scheduled. While the workers wait, they compute the
//! next step's recurrent half `h_t · W_hhᵀ` (their slices', and the first worker the
//! caller's, from its own copy of the caller's columns of `W_hh`) whenever the caller paused
//! between steps, so that such a step reads only `W_ih` once `x_{t+1}` comes. Bit-identical to
//! one thread. With the second core busy a split step costs what a one-thread step costs (step
//! times: BENCHMARKS.md).

use crate::cell::{Prepared, StepState, forward_step, fused_bias};
use crate::error::{Error, Result, check_len, try_zeroed};
use crate::exec::columns::{ColumnPass, SliceState, column_slices};
use crate::exec::stream_workers::{SPIN_WINDOW, StepWorkers};
use crate::float::Float;
use crate::kernels::step_gemm::{Accumulate, Operand, PackedLayout, PackedRef, PanelOrder};
use crate::layer::{FinalState, InitialState, Layer};
use crate::packing::forward_packing;
use crate::shape::{CellKind, Direction, Mode};
use crate::workspace::Workspace;
use std::time::Duration;

/// A layer prepared for step-by-step inference over `B` sequences, with their state.
#[derive(Debug)]
pub struct StreamingLayer<F> {
    layer: Layer<F>,
    batch: usize,
    /// Layout of the layer's packed `W_hhᵀ` (the layer owns the packed copies of `W_ihᵀ` and
    /// `W_hhᵀ`).
    hh_layout: PackedLayout,
    /// Fused biases `[G*H]`.
    bias: Vec<F>,
    h: Vec<F>,
    c: Vec<F>,
    h_next: Vec<F>,
    c_next: Vec<F>,
    gates: Vec<F>,
    acc: Vec<F>,
    grid: Vec<F>,
    /// Workspace for [`StreamingLayer::run`], made on first use for a given `T`.
    seq_ws: Option<Workspace<F>>,
    /// Hidden-unit slices of a step when it runs on several threads (empty otherwise), each
    /// with its `[B, G*hc]` buffer for the step's input projection: the first is the
    /// caller's, the others the workers' (kept here for takeovers).
    slices: Vec<(SliceState<F>, Vec<F>)>,
    /// The worker threads of a split step (`None` if the step runs on the caller alone).
    workers: Option<StepWorkers<F>>,
    /// Steps taken (mod 2): the weights are walked in alternating order (see `PanelOrder`).
    parity: usize,
    /// How long the workers spin after a step (see [`StreamingLayer::set_spin_window`]).
    spin_window: Duration,
}

impl<F: Float> StreamingLayer<F> {
    /// Prepares `layer` for `batch` sequences, state zero.
    pub fn new(layer: Layer<F>, batch: usize) -> Result<Self> {
        let dims = layer.dims(1, batch);
        dims.validate(layer.cell())?;
        let h = layer.hidden_size();
        let cell = layer.cell();
        let gh = cell.gates() * h;
        let bh = batch * h;
        let w = layer.weights();
        // The layer packs W_ihᵀ and W_hhᵀ once per weight update; do it now, not in the first
        // step.
        let hh_layout = forward_packing::<F>(cell, h, h);
        layer.prepare_packed(false)?;
        let mut bias = try_zeroed("streaming state", gh)?;
        fused_bias(cell, w.bias_ih, w.bias_hh, &mut bias);
        let c_len = if cell.has_cell_state() { bh } else { 0 };
        let grid_len = if matches!(cell, CellKind::Gru(_)) {
            bh
        } else {
            0
        };
        let (slices, workers) = match layer.stream_slices(batch) {
            1 => (Vec::new(), None),
            n => {
                let pass = ColumnPass::new(&layer, batch, &bias);
                let ranges = column_slices(h, hh_layout.nr, n);
                let slices = ranges
                    .iter()
                    .map(|&range| {
                        let gates = try_zeroed(
                            "streaming state",
                            batch * cell.gates() * (range.1 - range.0),
                        )?;
                        Ok((SliceState::new(&pass, range, None)?, gates))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let workers = StepWorkers::start(&layer, batch, &bias, &ranges)?;
                (slices, Some(workers))
            }
        };
        Ok(StreamingLayer {
            slices,
            workers,
            parity: 0,
            spin_window: SPIN_WINDOW,
            batch,
            hh_layout,
            bias,
            h: try_zeroed("streaming state", bh)?,
            c: try_zeroed("streaming state", c_len)?,
            h_next: try_zeroed("streaming state", bh)?,
            c_next: try_zeroed("streaming state", c_len)?,
            gates: try_zeroed("streaming state", batch * gh)?,
            acc: try_zeroed("streaming state", batch * gh)?,
            grid: try_zeroed("streaming state", grid_len)?,
            seq_ws: None,
            layer,
        })
    }

    /// The layer this stream runs.
    pub fn layer(&self) -> &Layer<F> {
        &self.layer
    }

    /// Number of sequences `B`.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Sets how long the stream's worker threads (if its steps are split; see the module
    /// doc) spin after each step waiting for the next before they park: 200 µs unless set.
    ///
    /// A trade of processor time for latency. A step that comes while the workers spin runs on
    /// all of them, on the recurrent halves they computed while they waited (see the module
    /// doc). Once they parked, a step that comes more than the window after the step before
    /// runs their slices on the calling thread (as fast as a one-thread stream: waking them
    /// would cost a system call); one that comes sooner wakes them and hands them their
    /// slices. So steps further apart than the window cost what one-thread steps cost, and a
    /// window longer than the gap keeps them split (figures: BENCHMARKS.md). A spinning worker keeps its core busy for the whole window after every step, so a
    /// long window suits a stream whose steps come at a steady rate on a machine with cores to
    /// spare. `Duration::ZERO` parks the workers right after each step.
    pub fn set_spin_window(&mut self, window: Duration) {
        self.spin_window = window;
        if let Some(workers) = &mut self.workers {
            workers.set_spin_window(window);
        }
    }

    /// How long the worker threads spin after a step (see
    /// [`set_spin_window`](StreamingLayer::set_spin_window)).
    pub fn spin_window(&self) -> Duration {
        self.spin_window
    }

    /// Sets every state to zero.
    pub fn reset(&mut self) {
        self.h.fill(F::ZERO);
        self.c.fill(F::ZERO);
    }

    /// Sets the state of row `row` to zero (a new sequence starts there), leaving the other
    /// rows alone; [`Error::InvalidArgument`] for a row past `B`.
    pub fn reset_row(&mut self, row: usize) -> Result<()> {
        if row >= self.batch {
            return Err(Error::InvalidArgument {
                what: "row",
                why: format!("row {row} of a stream of {} rows", self.batch),
            });
        }
        let h = self.layer.hidden_size();
        self.h[row * h..(row + 1) * h].fill(F::ZERO);
        if !self.c.is_empty() {
            self.c[row * h..(row + 1) * h].fill(F::ZERO);
        }
        Ok(())
    }

    /// The current hidden state `h [B, H]`.
    pub fn hidden_state(&self) -> &[F] {
        &self.h
    }

    /// The current cell state `c [B, H]` (LSTM), `None` for other cells.
    pub fn cell_state(&self) -> Option<&[F]> {
        self.layer.cell().has_cell_state().then_some(&self.c[..])
    }

    /// Replaces the state: `h [B, H]`, and `c [B, H]` for the LSTM (required there, refused
    /// elsewhere).
    pub fn set_state(&mut self, h: &[F], c: Option<&[F]>) -> Result<()> {
        check_len("h [B, H]", h, self.h.len())?;
        match (self.layer.cell().has_cell_state(), c) {
            (true, Some(c)) => check_len("c [B, H]", c, self.c.len())?,
            (true, None) => {
                return Err(Error::InvalidArgument {
                    what: "c",
                    why: "an LSTM state needs c [B, H] as well as h".into(),
                });
            }
            (false, Some(_)) => {
                return Err(Error::UnexpectedBuffer {
                    what: "c",
                    why: "only the LSTM has a cell state",
                });
            }
            (false, None) => {}
        }
        self.h.copy_from_slice(h);
        if let Some(c) = c {
            self.c.copy_from_slice(c);
        }
        Ok(())
    }

    /// Advances every sequence by one step on `x_t [B, I]` and returns the new `h_t [B, H]`.
    pub fn step(&mut self, x_t: &[F]) -> Result<&[F]> {
        let (i, h) = (self.layer.input_size(), self.layer.hidden_size());
        check_len("x_t [B, I]", x_t, self.batch * i)?;
        let cell = self.layer.cell();
        let gh = cell.gates() * h;
        let isa = self.layer.isa().resolve();
        let order = PanelOrder::alternating(self.parity);
        self.parity ^= 1;
        if let Some(workers) = &mut self.workers {
            let pass = ColumnPass::new(&self.layer, self.batch, &self.bias);
            workers.step(
                &pass,
                &self.layer,
                x_t,
                &self.h,
                &self.c,
                &mut self.slices,
                &mut self.h_next,
                &mut self.c_next,
            );
            core::mem::swap(&mut self.h, &mut self.h_next);
            core::mem::swap(&mut self.c, &mut self.c_next);
            return Ok(&self.h);
        }
        // The step's input projection, then the shared recurrent step.
        F::step_gemm(
            isa,
            self.batch,
            i,
            Operand { data: x_t, ld: i },
            PackedRef {
                order,
                ..PackedRef::all(self.layer.packed_input(), self.layer.input_packing())
            },
            &mut self.gates,
            gh,
            Accumulate::No,
        );
        let prep = Prepared {
            cell,
            isa,
            hidden: h,
            w_hh_t: PackedRef::all(self.layer.packed_forward(), self.hh_layout),
            bias: &self.bias,
            b_hn: self.layer.gru_b_hn(),
        };
        forward_step(
            &prep,
            StepState {
                gates: &mut self.gates,
                acc: &mut self.acc,
                h_prev: &self.h,
                h_out: &mut self.h_next,
                c_prev: &self.c,
                c_out: &mut self.c_next,
                grid: &mut self.grid,
                order,
            },
        );
        core::mem::swap(&mut self.h, &mut self.h_next);
        core::mem::swap(&mut self.c, &mut self.c_next);
        Ok(&self.h)
    }

    /// Runs `T = x.len() / (B·I)` steps on `x [T, B, I]` from the current state with the
    /// sequence forward ([`Layer::forward`], bit for bit), writes `y [T, B, H]` and keeps the
    /// final state. The first call for a given `T` allocates its workspace.
    pub fn run(&mut self, x: &[F], y: &mut [F]) -> Result<()> {
        let (i, h) = (self.layer.input_size(), self.layer.hidden_size());
        let per_step = self.batch * i;
        if x.is_empty() || !x.len().is_multiple_of(per_step) {
            return Err(Error::BufferLength {
                what: "x [T, B, I] (a positive multiple of B*I)",
                expected: per_step * (x.len() / per_step).max(1),
                got: x.len(),
            });
        }
        let t = x.len() / per_step;
        check_len("y [T, B, H]", y, t * self.batch * h)?;
        let ws = match &mut self.seq_ws {
            Some(ws) if ws.dims().seq_len == t => ws,
            slot => slot.insert(self.layer.workspace(t, self.batch, Mode::Inference)?),
        };
        let lstm = self.layer.cell().has_cell_state();
        let init = InitialState {
            h0: Some(&self.h),
            c0: lstm.then_some(&self.c[..]),
        };
        let fin = FinalState {
            h_n: Some(&mut self.h_next),
            c_n: if lstm { Some(&mut self.c_next) } else { None },
        };
        self.layer
            .forward(ws, Direction::Forward, x, init, y, fin)?;
        core::mem::swap(&mut self.h, &mut self.h_next);
        core::mem::swap(&mut self.c, &mut self.c_next);
        Ok(())
    }
}

impl<F: Float> Clone for StreamingLayer<F> {
    /// A stream over a clone of the layer with the same state (and worker threads of its own,
    /// if the step is split).
    ///
    /// Panics if the worker threads cannot be started or the state cannot be allocated, as a
    /// failed allocation in any `clone` would.
    fn clone(&self) -> Self {
        let mut s = StreamingLayer::new(self.layer.clone(), self.batch)
            .expect("StreamingLayer::clone: the original was made with the same layer");
        s.h.copy_from_slice(&self.h);
        s.c.copy_from_slice(&self.c);
        s.parity = self.parity;
        s.set_spin_window(self.spin_window);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// A one-thread stream and a `threads`-thread one of the same seeded layer (`I = 37`,
    /// `H = 350`, `B = 2`) on `isa`, the latter's caller always waiting for its workers (so
    /// that they compute their slices); `None` for the reset-before GRU, which does not split.
    fn one_and_split(
        cell: CellKind,
        isa: Isa,
        threads: usize,
        seed: u64,
    ) -> Option<(StreamingLayer<f32>, StreamingLayer<f32>)> {
        let (i, h, b) = (37, 350, 2);
        let mut one = Layer::<f32>::with_seeded_init(cell, i, h, seed).unwrap();
        one.set_isa(isa).unwrap();
        let mut split = one.clone();
        split.set_threads(threads).unwrap();
        let one = StreamingLayer::new(one, b).unwrap();
        let mut split = StreamingLayer::new(split, b).unwrap();
        let Some(workers) = &mut split.workers else {
            assert_eq!(cell, CellKind::Gru(crate::GruVariant::ResetBefore));
            return None;
        };
        workers.wait_for_workers();
        Some((one, split))
    }

    /// Every slice computed by the worker threads (the caller waits for them instead of taking
    /// any over) gives the same bits as one thread, for every cell that splits.
    #[test]
    fn worker_threads_compute_the_same_bits() {
        let (i, b) = (37, 2);
        for cell in CellKind::ALL {
            for isa in Isa::available() {
                let Some((mut s1, mut s3)) = one_and_split(cell, isa, 3, 11) else {
                    continue;
                };
                for t in 0..6 {
                    let x: Vec<f32> = (0..b * i)
                        .map(|k| ((k * 7 + t * 13) % 23) as f32 / 11.0 - 1.0)
                        .collect();
                    let want: Vec<u32> = s1.step(&x).unwrap().iter().map(|v| v.to_bits()).collect();
                    let got: Vec<u32> = s3.step(&x).unwrap().iter().map(|v| v.to_bits()).collect();
                    assert_eq!(want, got, "{} {isa:?} step {t}", cell.name());
                }
            }
        }
    }

    /// A long spin window keeps the workers awake between steps; a zero one lets them park
    /// right after a step, and then steps that come after a pause leave them parked. Either
    /// way the steps compute the same bits.
    #[test]
    fn the_spin_window_decides_whether_workers_sleep_between_steps() {
        let (i, h, b) = (37, 350, 1);
        let mut layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, i, h, 3).unwrap();
        let mut one = StreamingLayer::new(layer.clone(), b).unwrap();
        layer.set_threads(2).unwrap();
        let mut s = StreamingLayer::new(layer, b).unwrap();
        assert_eq!(s.spin_window(), SPIN_WINDOW);
        let x = vec![0.5f32; b * i];
        let mut step = |s: &mut StreamingLayer<f32>| {
            let want: Vec<u32> = one.step(&x).unwrap().iter().map(|v| v.to_bits()).collect();
            let got: Vec<u32> = s.step(&x).unwrap().iter().map(|v| v.to_bits()).collect();
            assert_eq!(want, got);
        };
        s.set_spin_window(Duration::from_secs(60));
        assert_eq!(s.spin_window(), Duration::from_secs(60));
        // The workers parked long ago (or are about to), so the first step may leave them
        // parked (its slices run here); the second comes within the window and wakes them,
        // and they read the new window when they start waiting again.
        step(&mut s);
        step(&mut s);
        let awake = |s: &StreamingLayer<f32>| !s.workers.as_ref().expect("split").all_sleeping();
        let t0 = std::time::Instant::now();
        while !awake(&s) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no worker woke in 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(awake(&s), "a worker parked within a 60 s window");
        s.set_spin_window(Duration::ZERO);
        step(&mut s);
        let t0 = std::time::Instant::now();
        while awake(&s) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no worker parked in 30 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // Parked, with steps coming slower than the (zero) window: a step runs every slice
        // here and leaves the workers parked.
        std::thread::sleep(Duration::from_millis(1));
        let wakes = s.workers.as_ref().expect("split").wakes();
        step(&mut s);
        let workers = s.workers.as_ref().expect("split");
        assert_eq!(workers.wakes(), wakes, "a step after a pause woke a worker");
        // A clone keeps the window.
        assert_eq!(s.clone().spin_window(), Duration::ZERO);
        step(&mut s);
    }

    /// Steps that come after a pause run on the recurrent halves `h_{t-1} · W_hhᵀ` that the
    /// workers computed in it (their own slices' and the caller's), with the bits of one
    /// thread; after `set_state` (between the pause and the step, so the halves computed were
    /// from the old state) the step computes them anew.
    ///
    /// The pause lasts until the worker has computed the halves (`wait_for_precompute`), not a
    /// fixed time: on a busy machine the worker may not be scheduled in 2 ms, and then no step
    /// would find a half, which says nothing about the feature. How soon the halves come in
    /// practice is a timing question for the benchmarks (`stream_latency`).
    #[test]
    fn steps_after_a_pause_use_the_recurrent_halves_computed_in_it() {
        let (i, h, b) = (37, 350, 2);
        for cell in CellKind::ALL {
            for isa in Isa::available() {
                let Some((mut s1, mut s2)) = one_and_split(cell, isa, 2, 17) else {
                    continue;
                };
                // The worker stays awake (and computes every slice handed to it).
                s2.set_spin_window(Duration::from_secs(60));
                let lstm = cell.has_cell_state();
                let precomputed =
                    |s: &StreamingLayer<f32>| s.workers.as_ref().unwrap().precomputed();
                for t in 0..12 {
                    let x: Vec<f32> = (0..b * i)
                        .map(|k| ((k * 5 + t * 11) % 19) as f32 / 9.0 - 1.0)
                        .collect();
                    std::thread::sleep(Duration::from_millis(2));
                    if t >= 2 {
                        // `h` is published at the end of every step that followed a pause,
                        // i.e. from step 1 on.
                        let workers = s2.workers.as_ref().unwrap();
                        assert!(
                            workers.wait_for_precompute(Duration::from_secs(30)),
                            "{} {isa:?} step {t}: the worker did not compute the halves in 30 s",
                            cell.name()
                        );
                    }
                    let before = precomputed(&s2);
                    if t == 8 {
                        let h0: Vec<f32> = (0..b * h).map(|k| (k % 7) as f32 / 7.0 - 0.4).collect();
                        let c0: Vec<f32> = (0..b * h).map(|k| (k % 5) as f32 / 5.0).collect();
                        let c0 = lstm.then_some(&c0[..]);
                        s1.set_state(&h0, c0).unwrap();
                        s2.set_state(&h0, c0).unwrap();
                    }
                    let want: Vec<u32> = s1.step(&x).unwrap().iter().map(|v| v.to_bits()).collect();
                    let got: Vec<u32> = s2.step(&x).unwrap().iter().map(|v| v.to_bits()).collect();
                    assert_eq!(want, got, "{} {isa:?} step {t}", cell.name());
                    if t == 8 {
                        assert_eq!(
                            precomputed(&s2),
                            before,
                            "{} {isa:?}: a step after set_state used halves of the old state",
                            cell.name()
                        );
                    }
                }
                // Steps 2 to 11 follow a published `h` and found the halves computed; step 8's
                // were the old state's: 9 steps on each side.
                let (own, caller) = precomputed(&s2);
                assert_eq!(
                    (own, caller),
                    (9, 9),
                    "{} {isa:?}: steps that used a precomputed half (worker, caller)",
                    cell.name()
                );
            }
        }
    }

    /// A worker that panics mid-slice (a bug; nothing a caller passes can cause it) makes the
    /// step panic with a message instead of leaving the caller waiting forever, and the stream
    /// can still be dropped (its threads joined).
    #[test]
    fn a_panicking_worker_is_reported_not_waited_for() {
        let (i, h, b) = (37, 350, 1);
        let mut layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, i, h, 5).unwrap();
        layer.set_threads(2).unwrap();
        let mut s = StreamingLayer::new(layer, b).unwrap();
        let x = vec![0.25f32; b * i];
        s.step(&x).unwrap();
        let workers = s.workers.as_mut().expect("the step splits");
        workers.wait_for_workers();
        workers.inject_worker_panic();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = s.step(&x);
            }));
            let message = r
                .err()
                .and_then(|e| e.downcast_ref::<&str>().map(|m| m.to_string()))
                .unwrap_or_default();
            drop(s);
            tx.send(message).unwrap();
        });
        let message = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the step neither finished nor panicked within 30 s");
        assert_eq!(message, "a streaming worker thread panicked");
    }
}
