//! One recurrent layer: PyTorch-layout parameters plus the fused forward and BPTT backward.

use crate::column_split::{
    ColumnPass, SliceState, cell_splits_by_units, column_slices, folds_projection, forward_columns,
};
use crate::dense::{self, GradTerm, gemm_packed_rows, weight_grad};
use crate::error::{Error, Result, check_len, check_opt_len, try_zeroed};
use crate::float::Float;
use crate::kernels::isa::{Isa, IsaToken};
use crate::kernels::postgemm::StepShape;
use crate::kernels::step_gemm::{
    Accumulate, AlignedBuf, Operand, PackedLayout, PackedRef, PanelOrder,
};
use crate::shape::{CellKind, Dims, GradMode, GruVariant, Mode};
use crate::weights::{LayerGrads, LayerWeights};
use crate::workspace::{Status, Workspace};

/// Least multiply-adds per step (`B·G·H·H`) for an inference pass to split by hidden units:
/// below it one synchronisation per step costs more than the second core gains.
const UNIT_SPLIT_MIN_WORK: usize = 1 << 16;

/// Least multiply-adds (`B·G·H·(I+H)`) for one streaming step to split by hidden units over
/// the stream's worker threads (see `step_workers`). Measured at B = 1, I = H, medians, one
/// thread against two: LSTM H = 256 (524k) 26.9 → 14.0 µs, H = 128 (131k) 5.9 → 3.5 µs; GRU
/// H = 128 (98k) 4.4 → 3.3 µs; below, LSTM H = 96 (74k) 3.3 → 3.7 µs and GRU H = 96 2.5 → 5.8
/// µs lose.
const STREAM_SPLIT_MIN_WORK: usize = 3 << 15;

/// Initial state of a forward pass. `None` means zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct InitialState<'a, F> {
    /// `h_0 [B, H]`.
    pub h0: Option<&'a [F]>,
    /// `c_0 [B, H]` (LSTM only).
    pub c0: Option<&'a [F]>,
}

/// Where a forward pass writes the final state, if wanted.
#[derive(Debug, Default)]
pub struct FinalState<'a, F> {
    /// `h_T [B, H]`.
    pub h_n: Option<&'a mut [F]>,
    /// `c_T [B, H]` (LSTM only).
    pub c_n: Option<&'a mut [F]>,
}

/// Gradients arriving from above for a backward pass. `None` means zeros.
#[derive(Debug, Clone, Copy, Default)]
pub struct Upstream<'a, F> {
    /// `dL/dy [T, B, H]`.
    pub dy: Option<&'a [F]>,
    /// `dL/dh_T [B, H]`.
    pub dh_n: Option<&'a [F]>,
    /// `dL/dc_T [B, H]` (LSTM only).
    pub dc_n: Option<&'a [F]>,
}

/// Where a backward pass writes the gradients of its inputs, if wanted (always overwritten).
#[derive(Debug, Default)]
pub struct InputGrads<'a, F> {
    /// `dL/dx [T, B, I]`.
    pub dx: Option<&'a mut [F]>,
    /// `dL/dh_0 [B, H]`.
    pub dh0: Option<&'a mut [F]>,
    /// `dL/dc_0 [B, H]` (LSTM only).
    pub dc0: Option<&'a mut [F]>,
}

/// One recurrent layer (one direction) with its parameters in PyTorch's layout.
///
/// Forward: one GEMM projects the inputs of every step (`P = X · W_ihᵀ`), then each step runs
/// one GEMM for all gates (`h_{t-1} · W_hhᵀ`; the reset-before GRU needs a second one for its
/// candidate, because `r` must be known before `(r * h_{t-1}) · W_hnᵀ` can start) and one fused
/// vectorized pass for biases, activations and the state update.
///
/// Backward (BPTT): per step one fused pass for the gate gradients and one GEMM for
/// `dh_{t-1}` (two for the reset-before GRU, whose reset gradient needs `dn · W_hn` first);
/// after the loop `dW_ih`, `dW_hh` and `dX` are GEMMs over all `T·B` rows (the GRU's candidate
/// block of `dW_hh` is a GEMM of its own, since its operand is `r * h` or carries `r`).
#[derive(Debug, Clone)]
pub struct Layer<F> {
    cell: CellKind,
    input_size: usize,
    hidden_size: usize,
    weight_ih: Vec<F>,
    weight_hh: Vec<F>,
    bias_ih: Vec<F>,
    bias_hh: Vec<F>,
    isa: Isa,
    /// The rayon pool a pass runs in, `None` for the calling thread only.
    pool: Option<std::sync::Arc<JoinedPool>>,
    /// `W_hhᵀ` packed for the forward step GEMM, made on first use after a weight change.
    packed_forward: std::sync::OnceLock<AlignedBuf<F>>,
    /// `W_ihᵀ` packed for the input projection, made on first use after a weight change.
    packed_input: std::sync::OnceLock<AlignedBuf<F>>,
    /// `W_hh` packed for backward's `dG · W_hh`, made on first use after a weight change.
    packed_backward: std::sync::OnceLock<AlignedBuf<F>>,
    /// `W_ih` packed for backward's `dX = dG · W_ih`, made on first use after a weight change.
    packed_input_backward: std::sync::OnceLock<AlignedBuf<F>>,
}

/// Mutable view of a layer's parameters (for optimisers). Lengths are fixed.
#[derive(Debug)]
pub struct LayerWeightsMut<'a, F> {
    /// `[G*H, I]`.
    pub weight_ih: &'a mut [F],
    /// `[G*H, H]`.
    pub weight_hh: &'a mut [F],
    /// `[G*H]`.
    pub bias_ih: &'a mut [F],
    /// `[G*H]`.
    pub bias_hh: &'a mut [F],
}

/// A rayon pool whose threads are joined when the last layer sharing it is dropped.
///
/// Dropping a `rayon::ThreadPool` only tells its threads to exit; they finish later, on their
/// own (rayon-rs/rayon#903). A program that made and dropped layers with threads then briefly
/// had more threads than it asked for, and LeakSanitizer, run while the process goes on (as
/// libFuzzer does), could catch a thread mid-exit and report its deque as leaked. Here the
/// pool's threads are spawned by this struct (rayon's `spawn_handler`), which keeps their
/// handles and joins them after dropping the pool.
#[derive(Debug)]
pub(crate) struct JoinedPool {
    /// `Some` until dropped.
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl JoinedPool {
    /// A pool of `n` threads named `fused-rnn-{index}`.
    fn new(n: usize) -> core::result::Result<Self, rayon::ThreadPoolBuildError> {
        let mut threads = Vec::with_capacity(n);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .spawn_handler(|thread| {
                let handle = std::thread::Builder::new()
                    .name(format!("fused-rnn-{}", thread.index()))
                    .spawn(move || thread.run())?;
                threads.push(handle);
                Ok(())
            })
            .build()?;
        Ok(JoinedPool {
            pool: Some(pool),
            threads,
        })
    }
}

impl core::ops::Deref for JoinedPool {
    type Target = rayon::ThreadPool;

    fn deref(&self) -> &rayon::ThreadPool {
        // Taken only in `drop`.
        self.pool.as_ref().expect("pool present until drop")
    }
}

impl Drop for JoinedPool {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        // A pool thread cannot join itself (a layer dropped inside a job of its own pool):
        // then the threads exit on their own, as a plain rayon pool's do.
        let inside = pool.current_thread_index().is_some();
        drop(pool);
        if !inside {
            for t in self.threads.drain(..) {
                // A pool thread that panicked has already reported it; nothing to add.
                let _ = t.join();
            }
        }
    }
}

impl<F: Float> Layer<F> {
    /// A layer from parameters in PyTorch's layout (copied), using the fastest ISA available.
    pub fn new(
        cell: CellKind,
        input_size: usize,
        hidden_size: usize,
        w: LayerWeights<'_, F>,
    ) -> Result<Self> {
        let dims = Dims {
            seq_len: 1,
            batch: 1,
            input: input_size,
            hidden: hidden_size,
        };
        w.validate(cell, &dims)?;
        Ok(Layer {
            cell,
            input_size,
            hidden_size,
            weight_ih: w.weight_ih.to_vec(),
            weight_hh: w.weight_hh.to_vec(),
            bias_ih: w.bias_ih.to_vec(),
            bias_hh: w.bias_hh.to_vec(),
            isa: Isa::detect(),
            pool: None,
            packed_forward: std::sync::OnceLock::new(),
            packed_input: std::sync::OnceLock::new(),
            packed_backward: std::sync::OnceLock::new(),
            packed_input_backward: std::sync::OnceLock::new(),
        })
    }

    /// A layer initialised as PyTorch does, every parameter from `U(-1/sqrt(H), 1/sqrt(H))`,
    /// from a seeded generator (same seed, same weights).
    pub fn with_seeded_init(
        cell: CellKind,
        input_size: usize,
        hidden_size: usize,
        seed: u64,
    ) -> Result<Self> {
        use rand::{RngExt, SeedableRng};
        Dims {
            seq_len: 1,
            batch: 1,
            input: input_size,
            hidden: hidden_size,
        }
        .validate(cell)?;
        let gh = cell.gates() * hidden_size;
        let k = 1.0 / (hidden_size as f64).sqrt();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut draw = |n: usize| -> Result<Vec<F>> {
            let mut v: Vec<F> = try_zeroed("weights", n)?;
            v.iter_mut()
                .for_each(|w| *w = F::from_f64(rng.random_range(-k..k)));
            Ok(v)
        };
        let weight_ih = draw(gh * input_size)?;
        let weight_hh = draw(gh * hidden_size)?;
        let bias_ih = draw(gh)?;
        let bias_hh = draw(gh)?;
        Ok(Layer {
            cell,
            input_size,
            hidden_size,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            isa: Isa::detect(),
            pool: None,
            packed_forward: std::sync::OnceLock::new(),
            packed_input: std::sync::OnceLock::new(),
            packed_backward: std::sync::OnceLock::new(),
            packed_input_backward: std::sync::OnceLock::new(),
        })
    }

    /// The cell kind.
    pub fn cell(&self) -> CellKind {
        self.cell
    }
    /// Input features `I`.
    pub fn input_size(&self) -> usize {
        self.input_size
    }
    /// Hidden units `H`.
    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }
    /// The parameters, PyTorch layout.
    pub fn weights(&self) -> LayerWeights<'_, F> {
        LayerWeights {
            weight_ih: &self.weight_ih,
            weight_hh: &self.weight_hh,
            bias_ih: &self.bias_ih,
            bias_hh: &self.bias_hh,
        }
    }
    /// The parameters, mutable (e.g. for an optimiser step). The packed copies the kernels use
    /// are dropped and rebuilt on the next pass.
    pub fn weights_mut(&mut self) -> LayerWeightsMut<'_, F> {
        self.drop_packed();
        LayerWeightsMut {
            weight_ih: &mut self.weight_ih,
            weight_hh: &mut self.weight_hh,
            bias_ih: &mut self.bias_ih,
            bias_hh: &mut self.bias_hh,
        }
    }

    /// Drops the packed copies of the weights (they are rebuilt on first use).
    fn drop_packed(&mut self) {
        self.packed_forward = std::sync::OnceLock::new();
        self.packed_input = std::sync::OnceLock::new();
        self.packed_backward = std::sync::OnceLock::new();
        self.packed_input_backward = std::sync::OnceLock::new();
    }

    /// The instruction-set path the f32 kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// Chooses the f32 instruction-set path; `Err` if this CPU lacks it.
    pub fn set_isa(&mut self, isa: Isa) -> Result<()> {
        self.isa = isa.checked()?;
        Ok(())
    }
    /// `W_hhᵀ` packed for the forward step GEMM (packed once per weight update).
    pub(crate) fn packed_forward(&self) -> &[F] {
        self.packed_forward.get_or_init(|| {
            let h = self.hidden_size;
            pack_forward(self.cell, &self.weight_hh, h, h, (0, h)).0
        })
    }

    /// `W_ihᵀ` packed for the input projection (packed once per weight update), laid out by
    /// [`Layer::input_packing`].
    pub(crate) fn packed_input(&self) -> &[F] {
        self.packed_input.get_or_init(|| {
            let (i, h) = (self.input_size, self.hidden_size);
            pack_forward(self.cell, &self.weight_ih, i, h, (0, h)).0
        })
    }

    /// The GRU's `b_hn [H]` (the part of `b_hh` that sits inside `r * (W_hn h + b_hn)` in the
    /// reset-after variant), empty for other cells.
    pub(crate) fn gru_b_hn(&self) -> &[F] {
        match self.cell {
            CellKind::Gru(_) => &self.bias_hh[2 * self.hidden_size..],
            _ => &[],
        }
    }

    /// The layout of [`Layer::packed_input`].
    pub(crate) fn input_packing(&self) -> PackedLayout {
        forward_packing::<F>(self.cell, self.input_size, self.hidden_size)
    }

    /// `W_hh` packed for backward's `dh_{t-1} = dG · W_hh` (packed once per weight update).
    fn packed_backward(&self) -> &[F] {
        self.packed_backward.get_or_init(|| {
            let h = self.hidden_size;
            let layout = backward_packing::<F>(self.cell, h);
            let mut v = AlignedBuf::zeroed(layout.len());
            layout.pack(&mut v, |r, c| self.weight_hh[r * h + c]);
            v
        })
    }

    /// `W_ih` packed for backward's `dX = dG · W_ih` (packed once per weight update), laid
    /// out by [`Layer::input_backward_packing`].
    fn packed_input_backward(&self) -> &[F] {
        self.packed_input_backward.get_or_init(|| {
            let i = self.input_size;
            let layout = self.input_backward_packing();
            let mut v = AlignedBuf::zeroed(layout.len());
            layout.pack(&mut v, |r, c| self.weight_ih[r * i + c]);
            v
        })
    }

    /// The layout of [`Layer::packed_input_backward`]: `W_ih [G*H, I]` as `K = G*H` rows of
    /// `I` columns.
    fn input_backward_packing(&self) -> PackedLayout {
        PackedLayout {
            k: self.cell.gates() * self.hidden_size,
            groups: 1,
            group_width: self.input_size,
            nr: F::PANEL_WIDTH,
        }
    }

    /// Number of threads a forward or backward pass uses (1 unless [`Layer::set_threads`]).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// Runs passes on `n` threads (a rayon pool owned by the layer; 1 = the calling thread
    /// only, the default). Work is split by batch rows (each thread runs its rows through the
    /// whole sequence, no synchronisation per step) and by rows in the large GEMMs. Inference
    /// with fewer than 8 batch rows is split by hidden units instead, one slice of `W_hh` per
    /// thread and one synchronisation per step (all cells but the reset-before GRU, once a
    /// step has at least 2^16 multiply-adds); the threads spin at that synchronisation, so
    /// this pays where the pool's threads have cores of their own (a thread whose partner is
    /// preempted takes its slices over after 30 µs, so a busy machine costs about what one
    /// thread would, not a stall per step). Every element is
    /// computed exactly as on one thread, so results are bit-identical for every thread
    /// count. Steps too small to pay for a parallel region (under ~2^18 multiply-adds per
    /// step with 8 or more rows, training with fewer than 8 rows) run on one thread.
    ///
    /// Returns once every thread of the pool has run (one empty job each), so that their
    /// start-up work does not fall into later passes. Clones share the pool; its threads have
    /// exited by the time the last layer sharing it is dropped or set to another count (the
    /// drop joins them).
    pub fn set_threads(&mut self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(Error::InvalidArgument {
                what: "threads",
                why: "must be at least 1".into(),
            });
        }
        self.pool = if n == 1 {
            None
        } else {
            let pool = JoinedPool::new(n).map_err(|e| Error::InvalidArgument {
                what: "threads",
                why: format!("could not start a pool of {n} threads: {e}"),
            })?;
            // `build` returns before its threads have started; they then allocate (6 times
            // for two threads, counted) whenever the OS runs them, on a loaded machine during
            // a later pass or streaming step. One job on every thread waits for that: no
            // allocation came from the pool's threads afterwards in 80 of 80 trials (even
            // after every thread had run the pool's start handler, 1-2 still came later).
            pool.broadcast(|_| ());
            Some(std::sync::Arc::new(pool))
        };
        Ok(())
    }

    /// Row blocks per step for `dims`: the thread count where a step has enough work.
    fn shards(&self, d: &Dims) -> usize {
        let per_step = d.batch * self.cell.gates() * d.hidden * d.hidden.max(d.input);
        if d.batch >= 8 && per_step >= 1 << 18 {
            self.threads()
        } else {
            1
        }
    }

    /// Hidden-unit slices per step of an inference pass over `dims` (see
    /// [`column_split`](crate::column_split)): the thread count where the batch is too small
    /// to split by rows but a step has enough work to pay for one synchronisation; else 1.
    fn unit_slices(&self, d: &Dims, training: bool) -> usize {
        let per_step = d.batch * self.cell.gates() * d.hidden * d.hidden;
        if !training
            && self.shards(d) == 1
            && cell_splits_by_units(self.cell)
            && per_step >= UNIT_SPLIT_MIN_WORK
        {
            self.threads()
        } else {
            1
        }
    }

    /// Hidden-unit slices of one streaming step of `batch` rows (see
    /// [`StreamingLayer`](crate::StreamingLayer)): the thread count for a step (both GEMMs,
    /// `x_t · W_ihᵀ` and `h · W_hhᵀ`) of at least [`STREAM_SPLIT_MIN_WORK`] multiply-adds.
    pub(crate) fn stream_slices(&self, batch: usize) -> usize {
        let (i, h) = (self.input_size, self.hidden_size);
        let per_step = batch * self.cell.gates() * h * (i + h);
        if batch < 8 && cell_splits_by_units(self.cell) && per_step >= STREAM_SPLIT_MIN_WORK {
            self.threads()
        } else {
            1
        }
    }

    /// Runs `f` inside the layer's pool (one region for the whole pass), or directly when the
    /// pass will not split (entering a pool costs tens of microseconds when its threads sleep).
    pub(crate) fn in_pool<R: Send>(&self, shards: usize, f: impl FnOnce() -> R + Send) -> R {
        match &self.pool {
            Some(pool) if shards > 1 => pool.install(f),
            _ => f(),
        }
    }

    /// The dimensions of a call over `seq_len` steps of `batch` sequences.
    pub fn dims(&self, seq_len: usize, batch: usize) -> Dims {
        Dims {
            seq_len,
            batch,
            input: self.input_size,
            hidden: self.hidden_size,
        }
    }
    /// A workspace for calls over `seq_len` steps of `batch` sequences.
    pub fn workspace(&self, seq_len: usize, batch: usize, mode: Mode) -> Result<Workspace<F>> {
        Workspace::new(self.cell, self.dims(seq_len, batch), mode)
    }
    /// Zero gradients shaped like this layer's parameters.
    pub fn zero_grads(&self) -> LayerGrads<F> {
        LayerGrads::zeros(self.cell, self.input_size, self.hidden_size)
    }

    /// Checks the buffers of a forward over `d.seq_len` steps of `d.batch` rows: every length,
    /// then no cell state for a cell without one.
    pub(crate) fn check_forward_buffers(
        &self,
        d: &Dims,
        x: &[F],
        init: &InitialState<'_, F>,
        y: &[F],
        fin: &FinalState<'_, F>,
    ) -> Result<()> {
        check_len("x [T, B, I]", x, d.x_len())?;
        check_len("y [T, B, H]", y, d.y_len())?;
        check_opt_len("h0 [B, H]", init.h0, d.state_len())?;
        check_opt_len("c0 [B, H]", init.c0, d.state_len())?;
        check_opt_len("h_n [B, H]", fin.h_n.as_deref(), d.state_len())?;
        check_opt_len("c_n [B, H]", fin.c_n.as_deref(), d.state_len())?;
        self.check_lstm_only("c0", init.c0)?;
        self.check_lstm_only("c_n", fin.c_n.as_ref())
    }

    /// Checks the buffers of a backward over `d.seq_len` steps of `d.batch` rows, as
    /// [`Layer::check_forward_buffers`], then the weight gradients' lengths.
    pub(crate) fn check_backward_buffers(
        &self,
        d: &Dims,
        x: &[F],
        up: &Upstream<'_, F>,
        grads: &LayerGrads<F>,
        inputs: &InputGrads<'_, F>,
    ) -> Result<()> {
        let gh = self.cell.gates() * d.hidden;
        check_len("x [T, B, I]", x, d.x_len())?;
        check_opt_len("dy [T, B, H]", up.dy, d.y_len())?;
        check_opt_len("dh_n [B, H]", up.dh_n, d.state_len())?;
        check_opt_len("dc_n [B, H]", up.dc_n, d.state_len())?;
        check_opt_len("dx [T, B, I]", inputs.dx.as_deref(), d.x_len())?;
        check_opt_len("dh0 [B, H]", inputs.dh0.as_deref(), d.state_len())?;
        check_opt_len("dc0 [B, H]", inputs.dc0.as_deref(), d.state_len())?;
        self.check_lstm_only("dc_n", up.dc_n)?;
        self.check_lstm_only("dc0", inputs.dc0.as_ref())?;
        check_len("grads.weight_ih [G*H, I]", &grads.weight_ih, gh * d.input)?;
        check_len("grads.weight_hh [G*H, H]", &grads.weight_hh, gh * d.hidden)?;
        check_len("grads.bias_ih [G*H]", &grads.bias_ih, gh)?;
        check_len("grads.bias_hh [G*H]", &grads.bias_hh, gh)
    }

    fn check_lstm_only<T>(&self, what: &'static str, buf: Option<T>) -> Result<()> {
        if buf.is_some() && !self.cell.has_cell_state() {
            return Err(Error::UnexpectedBuffer {
                what,
                why: "only the LSTM has a cell state",
            });
        }
        Ok(())
    }

    /// Runs the layer over `x [T, B, I]` (time-major), writing `y [T, B, H]` and, if asked,
    /// the final state. `T` and `B` come from the workspace; a [`Mode::Training`] workspace
    /// also keeps what [`Layer::backward`] needs.
    ///
    /// NaN or infinity in inputs or weights propagate to the outputs (never a panic); check
    /// outputs with `is_finite` where that matters.
    pub fn forward(
        &self,
        ws: &mut Workspace<F>,
        x: &[F],
        init: InitialState<'_, F>,
        y: &mut [F],
        fin: FinalState<'_, F>,
    ) -> Result<()> {
        ws.check(self.cell, self.input_size, self.hidden_size, None)?;
        let d = ws.dims();
        self.check_forward_buffers(&d, x, &init, y, &fin)?;
        ws.status = Status::Fresh;
        let training = ws.mode() == Mode::Training;
        let isa = self.isa.resolve();
        let shards = self.shards(&d);
        let units = self.unit_slices(&d, training);
        self.in_pool(shards.max(units), || {
            forward_impl(self, isa, shards, units, ws, training, x, init, y, fin)
        })?;
        ws.status = if training {
            Status::Forwarded
        } else {
            Status::Fresh
        };
        Ok(())
    }

    /// Backpropagation through time over the last training [`Layer::forward`] run with `ws`.
    ///
    /// `x` must be the input that forward saw. Weight gradients go to `grads`, added or
    /// overwritten by `mode`; input gradients go to `inputs` (overwritten). Backward consumes
    /// the workspace's saved gates: a second backward needs a new forward
    /// ([`Error::InvalidState`] otherwise).
    pub fn backward(
        &self,
        ws: &mut Workspace<F>,
        x: &[F],
        up: Upstream<'_, F>,
        grads: &mut LayerGrads<F>,
        inputs: InputGrads<'_, F>,
        mode: GradMode,
    ) -> Result<()> {
        ws.check(
            self.cell,
            self.input_size,
            self.hidden_size,
            Some(Mode::Training),
        )?;
        ws.status.check_forwarded()?;
        let d = ws.dims();
        self.check_backward_buffers(&d, x, &up, grads, &inputs)?;
        let shards = self.shards(&d);
        let scratch = backward_scratch_len::<F>(self.cell, &d)
            .checked_mul(shards)
            .ok_or(Error::SizeOverflow {
                what: "weight-gradient scratch",
            })?;
        ws.reserve_grad_scratch(scratch)?;
        ws.status = Status::Consumed;
        let isa = self.isa.resolve();
        self.in_pool(shards, || {
            backward_impl(self, isa, shards, ws, x, up, grads, inputs, mode)
        });
        Ok(())
    }
}

/// The forward pass proper; every buffer was validated by [`Layer::forward`]. The recurrence
/// runs split by batch rows into `shards`, or (inference only) by hidden units into `units`
/// slices; the only error is a failed allocation of the slices' buffers.
#[allow(clippy::too_many_arguments)]
fn forward_impl<F: Float>(
    layer: &Layer<F>,
    isa: IsaToken,
    shards: usize,
    units: usize,
    ws: &mut Workspace<F>,
    training: bool,
    x: &[F],
    init: InitialState<'_, F>,
    y: &mut [F],
    fin: FinalState<'_, F>,
) -> Result<()> {
    let d = ws.dims();
    let (t_len, b, i_sz, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let cell = layer.cell;
    let gh = cell.gates() * h;
    let bh = b * h;
    let p = ws.parts();

    fused_bias(cell, &layer.bias_ih, &layer.bias_hh, p.bias);
    // W_hhᵀ [H, G*H] in panels, so the per-step GEMM streams contiguous rows of all gates.
    let fwd_layout = forward_packing::<F>(cell, h, h);
    let packed_forward = layer.packed_forward();

    let w_ih_t = PackedRef::all(layer.packed_input(), layer.input_packing());

    // Initial states.
    let h_init = &mut p.h_all[..bh];
    match init.h0 {
        Some(h0) => h_init.copy_from_slice(h0),
        None => h_init.fill(F::ZERO),
    }
    if cell.has_cell_state() {
        let c_init = &mut p.c_all[..bh];
        match init.c0 {
            Some(c0) => c_init.copy_from_slice(c0),
            None => c_init.fill(F::ZERO),
        }
    }

    if units > 1 || (!training && folds_projection::<F>(isa, cell, t_len, b, i_sz, h)) {
        let pass = ColumnPass::new(layer, b, &*p.bias);
        let slices = column_slices(h, fwd_layout.nr, units.max(1))
            .into_iter()
            .map(|range| SliceState::new(&pass, range, init.c0))
            .collect::<Result<Vec<_>>>()?;
        let (h0, proj) = (&p.h_all[..bh], &mut *p.gates);
        forward_columns(&pass, slices, units, x, w_ih_t, proj, h0, y, fin.c_n);
        if let Some(h_n) = fin.h_n {
            h_n.copy_from_slice(&y[(t_len - 1) * bh..]);
        }
        return Ok(());
    }

    // The input projection of every step at once: P[T*B, G*H] = X[T*B, I] · W_ihᵀ.
    input_projection(isa, shards, x, i_sz, w_ih_t, p.gates);
    let w_t = PackedRef::all(packed_forward, fwd_layout);
    let prep = Prepared {
        cell,
        isa,
        hidden: h,
        w_hh_t: w_t,
        bias: &*p.bias,
        b_hn: layer.gru_b_hn(),
    };
    // The recurrence, split by batch rows into shards that each run the whole sequence: rows
    // are independent, so there is no synchronisation per step and every row is computed
    // exactly as on one thread. Each shard gets its rows of every step as a list of slices.
    let ranges = row_ranges(b, shards);
    let lstm = cell.has_cell_state();
    let gru = matches!(cell, CellKind::Gru(_));
    let gates = row_pieces(&mut *p.gates, t_len, gh, &ranges);
    let acc = row_pieces(&mut *p.acc, 1, gh, &ranges);
    let (h_all, h_len) = if training {
        (&mut *p.h_all, t_len + 1)
    } else {
        (&mut p.h_all[..bh], 1)
    };
    let h_states = row_pieces(h_all, h_len, h, &ranges);
    let y_rows = row_pieces(y, t_len, h, &ranges);
    let c_len = match (lstm, training) {
        (false, _) => 0,
        (true, true) => t_len + 1,
        (true, false) => 2,
    };
    let c_states = row_pieces(&mut p.c_all[..c_len * bh], c_len, h, &ranges);
    let g_len = match (gru, training) {
        (false, _) => 0,
        (true, true) => t_len,
        (true, false) => 1,
    };
    let grids = row_pieces(&mut p.grid[..g_len * bh], g_len, h, &ranges);
    type Shard<'a, F> = (
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
    );
    let jobs: Vec<Shard<'_, F>> = gates
        .into_iter()
        .zip(acc)
        .zip(h_states)
        .zip(y_rows)
        .zip(c_states)
        .zip(grids)
        .map(|(((((g, a), hs), ys), cs), gr)| (g, a, hs, ys, cs, gr))
        .collect();
    run_parallel(jobs, &|(
        mut gates,
        mut acc,
        mut h_states,
        mut y_rows,
        mut c_states,
        mut grids,
    ): Shard<'_, F>| {
        for t in 0..t_len {
            // h_{t-1} and the slot for h_t: training keeps every state in the workspace;
            // inference reads h_{t-1} from y (or the initial state) and writes h_t into y.
            let (h_prev, h_out): (&[F], &mut [F]) = if training {
                let (before, after) = h_states.split_at_mut(t + 1);
                (&*before[t], &mut *after[0])
            } else if t == 0 {
                (&*h_states[0], &mut *y_rows[0])
            } else {
                let (before, after) = y_rows.split_at_mut(t);
                (&*before[t - 1], &mut *after[0])
            };
            let (c_prev, c_out): (&[F], &mut [F]) = if !lstm {
                (&[], &mut [])
            } else if training {
                let (before, after) = c_states.split_at_mut(t + 1);
                (&*before[t], &mut *after[0])
            } else {
                let (s0, s1) = c_states.split_at_mut(1);
                if t % 2 == 0 {
                    (&*s0[0], &mut *s1[0])
                } else {
                    (&*s1[0], &mut *s0[0])
                }
            };
            let grid: &mut [F] = match (gru, training) {
                (true, true) => &mut *grids[t],
                (true, false) => &mut *grids[0],
                _ => &mut [],
            };
            let st = StepState {
                gates: &mut *gates[t],
                acc: &mut *acc[0],
                h_prev,
                h_out,
                c_prev,
                c_out,
                grid,
                order: PanelOrder::alternating(t),
            };
            forward_step(&prep, st);
            if training {
                y_rows[t].copy_from_slice(&*h_states[t + 1]);
            }
        }
    });

    if let Some(h_n) = fin.h_n {
        h_n.copy_from_slice(&y[(t_len - 1) * bh..]);
    }
    if let Some(c_n) = fin.c_n {
        let last = if training {
            &p.c_all[t_len * bh..]
        } else if t_len % 2 == 1 {
            // Step t writes slot (t + 1) % 2.
            &p.c_all[bh..]
        } else {
            &p.c_all[..bh]
        };
        c_n.copy_from_slice(&last[..bh]);
    }
    Ok(())
}

/// What every forward step of one call shares: the cell, the kernels' ISA, the shapes, the
/// packed `W_hhᵀ [H, G*H]` and the biases as the post-GEMM kernels take them.
pub(crate) struct Prepared<'a, F> {
    pub cell: CellKind,
    pub isa: IsaToken,
    /// Hidden units `H` (the batch rows come from the step's slices).
    pub hidden: usize,
    /// `W_hhᵀ` packed with [`forward_packing`].
    pub w_hh_t: PackedRef<'a, F>,
    /// `b_ih + b_hh`, except the reset-after GRU's candidate block: `b_in` alone.
    pub bias: &'a [F],
    /// The reset-after GRU's `b_hn [H]` (unused by other cells).
    pub b_hn: &'a [F],
}

/// The buffers of one forward step (`[B, ·]` each). `c_prev`/`c_out` are empty except for the
/// LSTM, `grid` except for the GRU (`W_hn h + b_hn` or `r * h_{t-1}`).
pub(crate) struct StepState<'s, F> {
    /// In: the step's input projection `[B, G*H]`; out: activated gates.
    pub gates: &'s mut [F],
    /// Scratch for the recurrent GEMM, `[B, G*H]`.
    pub acc: &'s mut [F],
    pub h_prev: &'s [F],
    pub h_out: &'s mut [F],
    pub c_prev: &'s [F],
    pub c_out: &'s mut [F],
    pub grid: &'s mut [F],
    /// The order the recurrent GEMM walks `W_hhᵀ` (alternated by step; see [`PanelOrder`]).
    pub order: PanelOrder,
}

/// One forward step: the recurrent GEMM for all gates (two for the reset-before GRU), then
/// the fused post-GEMM kernel. Shared by [`Layer::forward`] and the streaming layer.
pub(crate) fn forward_step<F: Float>(prep: &Prepared<'_, F>, st: StepState<'_, F>) {
    let (isa, w) = (prep.isa, prep.w_hh_t);
    let h = prep.hidden;
    let b = st.h_prev.len() / h;
    let sh = StepShape {
        batch: b,
        hidden: h,
    };
    let gh = prep.cell.gates() * h;
    let h_prev = Operand {
        data: st.h_prev,
        ld: h,
    };
    let all = PackedRef {
        order: st.order,
        ..PackedRef::all(w.data, w.layout)
    };
    match prep.cell {
        CellKind::Rnn(act) => {
            F::step_gemm(isa, b, h, h_prev, all, st.acc, gh, Accumulate::No);
            F::rnn_forward(isa, sh, act, st.gates, st.acc, prep.bias, st.h_out);
        }
        CellKind::Lstm => {
            F::step_gemm(isa, b, h, h_prev, all, st.acc, gh, Accumulate::No);
            F::lstm_forward(
                isa, sh, st.gates, st.acc, prep.bias, st.c_prev, st.c_out, st.h_out,
            );
        }
        CellKind::Gru(GruVariant::ResetAfter) => {
            F::step_gemm(isa, b, h, h_prev, all, st.acc, gh, Accumulate::No);
            F::gru_reset_after_forward(
                isa, sh, st.gates, st.acc, prep.bias, prep.b_hn, st.h_prev, st.h_out, st.grid,
            );
        }
        CellKind::Gru(GruVariant::ResetBefore) => {
            let (acc_rz, acc_n) = st.acc.split_at_mut(2 * b * h);
            let rz = PackedRef {
                order: st.order,
                ..PackedRef::gates(w.data, w.layout, 0, 2)
            };
            F::step_gemm(isa, b, h, h_prev, rz, acc_rz, 2 * h, Accumulate::No);
            let rh = st.grid;
            F::gru_reset_before_forward_gates(
                isa,
                sh,
                st.gates,
                acc_rz,
                &prep.bias[..2 * h],
                st.h_prev,
                rh,
            );
            let n = PackedRef {
                order: st.order,
                ..PackedRef::gates(w.data, w.layout, 2, 1)
            };
            F::step_gemm(
                isa,
                b,
                h,
                Operand { data: &*rh, ld: h },
                n,
                acc_n,
                h,
                Accumulate::No,
            );
            F::gru_reset_before_forward_state(
                isa,
                sh,
                st.gates,
                &acc_n[..b * h],
                &prep.bias[2 * h..],
                st.h_prev,
                st.h_out,
            );
        }
    }
}

/// What every backward step shares.
pub(crate) struct BackwardPrep<'a, F> {
    pub cell: CellKind,
    pub isa: IsaToken,
    pub hidden: usize,
    /// `W_hh [G*H, H]` packed with [`backward_packing`].
    pub w_hh: &'a [F],
    pub layout: PackedLayout,
}

/// The buffers of one backward step (`[B, ·]` each; empty where the cell has no use for one).
pub(crate) struct BackwardState<'s, F> {
    /// In: activated gates; out: pre-activation gate gradients.
    pub gates: &'s mut [F],
    /// GRU: in `W_hn h + b_hn` or `r * h_{t-1}`; reset-after out: `dn * r`.
    pub grid: &'s mut [F],
    pub h_prev: &'s [F],
    pub h: &'s [F],
    pub c_prev: &'s [F],
    pub c: &'s [F],
    /// Upstream `dy_t`, if any.
    pub dy: Option<&'s [F]>,
    /// In: gradient reaching `h_t` from later steps (`dy_t` is added here).
    pub dh: &'s mut [F],
    /// Out: `dh_{t-1}`.
    pub dh_prev: &'s mut [F],
    /// LSTM: in `dc_t`, out `dc_{t-1}`.
    pub dc: &'s mut [F],
    /// Reset-before GRU scratch: `d(r * h_{t-1})`.
    pub drh: &'s mut [F],
}

/// One backward step over the step's rows: add `dy_t`, the fused gate-gradient kernel, then
/// `dh_{t-1} = dG · W_hh` (+ the direct paths through `z`).
pub(crate) fn backward_step<F: Float>(prep: &BackwardPrep<'_, F>, st: BackwardState<'_, F>) {
    let (isa, h) = (prep.isa, prep.hidden);
    let b = st.dh.len() / h;
    let gh = prep.cell.gates() * h;
    let sh = StepShape {
        batch: b,
        hidden: h,
    };
    let w = |g: usize| PackedRef::rows_from(prep.w_hh, prep.layout, g * h);
    if let Some(dy) = st.dy {
        for (a, v) in st.dh.iter_mut().zip(dy) {
            *a += *v;
        }
    }
    let (gates, dh, dh_next) = (st.gates, &*st.dh, st.dh_prev);
    match prep.cell {
        CellKind::Rnn(act) => {
            F::rnn_backward(isa, sh, act, st.h, dh, gates);
            F::step_gemm(
                isa,
                b,
                h,
                Operand {
                    data: &*gates,
                    ld: h,
                },
                w(0),
                dh_next,
                h,
                Accumulate::No,
            );
        }
        CellKind::Lstm => {
            F::lstm_backward(isa, sh, gates, st.c_prev, st.c, dh, st.dc);
            F::step_gemm(
                isa,
                b,
                gh,
                Operand {
                    data: &*gates,
                    ld: gh,
                },
                w(0),
                dh_next,
                h,
                Accumulate::No,
            );
        }
        CellKind::Gru(GruVariant::ResetAfter) => {
            F::gru_reset_after_backward(isa, sh, gates, st.grid, st.h_prev, dh, dh_next);
            // dh_{t-1} += [dr, dz] · W_h{r,z} + (dn * r) · W_hn
            F::step_gemm(
                isa,
                b,
                2 * h,
                Operand {
                    data: &*gates,
                    ld: gh,
                },
                w(0),
                dh_next,
                h,
                Accumulate::Yes,
            );
            F::step_gemm(
                isa,
                b,
                h,
                Operand {
                    data: &*st.grid,
                    ld: h,
                },
                w(2),
                dh_next,
                h,
                Accumulate::Yes,
            );
        }
        CellKind::Gru(GruVariant::ResetBefore) => {
            F::gru_reset_before_backward_candidate(isa, sh, gates, st.h_prev, dh, dh_next);
            // d(r*h) = dn · W_hn, needed before the reset gradient.
            let dn = Operand {
                data: &gates[2 * h..],
                ld: gh,
            };
            F::step_gemm(isa, b, h, dn, w(2), st.drh, h, Accumulate::No);
            F::gru_reset_before_backward_reset(isa, sh, gates, st.h_prev, st.drh, dh_next);
            F::step_gemm(
                isa,
                b,
                2 * h,
                Operand {
                    data: &*gates,
                    ld: gh,
                },
                w(0),
                dh_next,
                h,
                Accumulate::Yes,
            );
        }
    }
}

/// Layout of `W_hhᵀ [H, G*H]` (or `W_ihᵀ [I, G*H]` with `k = I`) packed for the forward step
/// GEMM: one gate block per group.
pub(crate) fn forward_packing<F: Float>(cell: CellKind, k: usize, hidden: usize) -> PackedLayout {
    PackedLayout {
        k,
        groups: cell.gates(),
        group_width: hidden,
        nr: F::PANEL_WIDTH,
    }
}

/// Layout of `W_hh [G*H, H]` packed for the backward `dh_{t-1} = dG · W_hh`.
pub(crate) fn backward_packing<F: Float>(cell: CellKind, hidden: usize) -> PackedLayout {
    PackedLayout {
        k: cell.gates() * hidden,
        groups: 1,
        group_width: hidden,
        nr: F::PANEL_WIDTH,
    }
}

/// Hidden units `u0..u1` of every gate block of `W [G*H, K]` (a PyTorch weight, row-major,
/// `hidden = H`), transposed and packed with [`forward_packing`] for `u1 - u0` units: all of
/// `W` for `0..H` (the layer's packed weights), or a streaming worker's columns, in the same
/// panels as the whole packing (so the same bits), `u0` being a multiple of the panel width
/// and `u1` one or `H`.
pub(crate) fn pack_forward<F: Float>(
    cell: CellKind,
    w: &[F],
    k: usize,
    hidden: usize,
    (u0, u1): (usize, usize),
) -> (AlignedBuf<F>, PackedLayout) {
    let hc = u1 - u0;
    let layout = forward_packing::<F>(cell, k, hc);
    let mut packed = AlignedBuf::zeroed(layout.len());
    layout.pack(&mut packed, |p, n| {
        let (g, off) = (n / hc, n % hc);
        w[(g * hidden + u0 + off) * k + p]
    });
    (packed, layout)
}

/// `P[rows, G*H] = X[rows, I] · W_ihᵀ` on the packed step GEMM (measured faster than
/// matrixmultiply on this shape: 108 vs 93 GFLOP/s at 2048×512×2048, one thread), the row
/// blocks spread over the current pool when `shards > 1`. Each element is the sum over `k` in
/// order, whatever the blocking, so the streaming step (the same GEMM on one row) computes
/// the same bits.
pub(crate) fn input_projection<F: Float>(
    isa: IsaToken,
    shards: usize,
    x: &[F],
    i: usize,
    w: PackedRef<'_, F>,
    p: &mut [F],
) {
    let rows = x.len() / i.max(1);
    gemm_packed_rows(isa, shards, rows, x, i, i, w, p);
}

/// The biases as the post-GEMM kernels take them (see [`Prepared::bias`]).
pub(crate) fn fused_bias<F: Float>(cell: CellKind, b_ih: &[F], b_hh: &[F], out: &mut [F]) {
    for ((o, a), c) in out.iter_mut().zip(b_ih).zip(b_hh) {
        *o = *a + *c;
    }
    if cell == CellKind::Gru(GruVariant::ResetAfter) {
        // b_hn sits inside r * (W_hn h + b_hn); only b_in is added outside.
        let h = b_ih.len() / 3;
        out[2 * h..].copy_from_slice(&b_ih[2 * h..]);
    }
}

/// Scratch elements per thread for backward's weight gradients: B's packed chunks for the
/// widest call (`[I, H]` operands; the reset-before GRU's three, `[I, H, H]`).
fn backward_scratch_len<F: Float>(cell: CellKind, d: &Dims) -> usize {
    let widths: &[usize] = match cell {
        CellKind::Gru(GruVariant::ResetBefore) => &[d.input, d.hidden, d.hidden],
        _ => &[d.input, d.hidden],
    };
    dense::weight_grad_scratch_len::<F>(d.seq_len * d.batch, widths)
}

/// Row ranges `[start, end)` of `b` rows in up to `shards` blocks (multiples of four rows,
/// the GEMM micro-tile, where possible).
fn row_ranges(b: usize, shards: usize) -> Vec<(usize, usize)> {
    let shards = shards.clamp(1, b.max(1));
    let mut out = Vec::with_capacity(shards);
    let mut start = 0;
    for k in 0..shards {
        let mut end = b * (k + 1) / shards;
        if k + 1 < shards && end - start >= 4 {
            end -= (end - start) % 4;
        }
        if end > start {
            out.push((start, end));
        }
        start = end;
    }
    out
}

/// `buf` holds `steps` blocks of `B` rows of `row_len`; returns, per row range, that range's
/// rows of every step as separate slices (`[shard][step]`). The slices are disjoint, so the
/// shards can run on different threads.
fn row_pieces<'a, F>(
    buf: &'a mut [F],
    steps: usize,
    row_len: usize,
    ranges: &[(usize, usize)],
) -> Vec<Vec<&'a mut [F]>> {
    let mut out: Vec<Vec<&'a mut [F]>> = ranges.iter().map(|_| Vec::with_capacity(steps)).collect();
    if steps == 0 {
        return out;
    }
    let b = ranges.last().map_or(0, |r| r.1);
    for step in buf.chunks_exact_mut(b * row_len).take(steps) {
        let mut rest = step;
        for (k, &(s, e)) in ranges.iter().enumerate() {
            let (piece, tail) = rest.split_at_mut((e - s) * row_len);
            out[k].push(piece);
            rest = tail;
        }
    }
    out
}

/// Read-only [`row_pieces`].
fn row_pieces_ref<'a, F>(
    buf: &'a [F],
    steps: usize,
    row_len: usize,
    ranges: &[(usize, usize)],
) -> Vec<Vec<&'a [F]>> {
    let mut out: Vec<Vec<&'a [F]>> = ranges.iter().map(|_| Vec::with_capacity(steps)).collect();
    if steps == 0 {
        return out;
    }
    let b = ranges.last().map_or(0, |r| r.1);
    for step in buf.chunks_exact(b * row_len).take(steps) {
        let mut rest = step;
        for (k, &(s, e)) in ranges.iter().enumerate() {
            let (piece, tail) = rest.split_at((e - s) * row_len);
            out[k].push(piece);
            rest = tail;
        }
    }
    out
}

/// Runs `f` on every job, the first on the calling thread and the others as tasks of the
/// current rayon pool (one parallel region per pass, no per-step synchronisation).
fn run_parallel<J: Send>(mut jobs: Vec<J>, f: &(dyn Fn(J) + Sync)) {
    let Some(first) = (!jobs.is_empty()).then(|| jobs.remove(0)) else {
        return;
    };
    if jobs.is_empty() {
        f(first);
        return;
    }
    rayon::scope(|s| {
        for job in jobs {
            s.spawn(move |_| f(job));
        }
        f(first);
    });
}

/// Column sums of a `[rows, cols]` row-major matrix into `out`, overwriting or adding.
/// Rows are summed in blocks so the f32 rounding error grows with the block count, not the row
/// count, far less than a running sum over `T*B` rows. Each block's rows are read whole (the
/// partial sums of up to [`COLUMN_STRIP`] columns stay in L1), so the matrix streams through
/// once in memory order; every column's sum is the same sequence of additions whatever the
/// strip width.
///
/// The columns are split over `threads` (each column's sum is the same chain on any thread).
/// One thread took 1.3-1.9 ms of a GRU backward at T=128 B=32 H=512 while the other waited.
fn column_sums<F: Float>(
    threads: usize,
    m: &[F],
    rows: usize,
    cols: usize,
    ld: usize,
    out: &mut [F],
    mode: GradMode,
) {
    // Halves at a multiple of 16 columns (whole lines of f32), down to 64 columns a thread.
    if threads > 1 && cols >= 128 {
        let half = (cols / 2).next_multiple_of(16);
        let (lo, hi) = out[..cols].split_at_mut(half);
        let (t_lo, t_hi) = (threads / 2, threads - threads / 2);
        rayon::join(
            || column_sums(t_lo, m, rows, half, ld, lo, mode),
            || column_sums(t_hi, &m[half..], rows, cols - half, ld, hi, mode),
        );
        return;
    }
    const BLOCK: usize = 64;
    if mode == GradMode::Overwrite {
        out.fill(F::ZERO);
    }
    let mut part = [F::ZERO; COLUMN_STRIP];
    for c0 in (0..cols).step_by(COLUMN_STRIP) {
        let w = (cols - c0).min(COLUMN_STRIP);
        let part = &mut part[..w];
        for r0 in (0..rows).step_by(BLOCK) {
            part.fill(F::ZERO);
            for r in r0..(r0 + BLOCK).min(rows) {
                for (acc, v) in part.iter_mut().zip(&m[r * ld + c0..r * ld + c0 + w]) {
                    *acc += *v;
                }
            }
            for (o, v) in out[c0..c0 + w].iter_mut().zip(part.iter()) {
                *o += *v;
            }
        }
    }
}

/// Columns [`column_sums`] sums at once: 8 KiB of f32 partial sums (16 KiB of f64), in L1
/// beside the rows being read; `4·H` for H = 512.
const COLUMN_STRIP: usize = 2048;

/// The backward pass proper; every buffer was validated by [`Layer::backward`].
#[allow(clippy::too_many_arguments)]
fn backward_impl<F: Float>(
    layer: &Layer<F>,
    isa: IsaToken,
    shards: usize,
    ws: &mut Workspace<F>,
    x: &[F],
    up: Upstream<'_, F>,
    grads: &mut LayerGrads<F>,
    inputs: InputGrads<'_, F>,
    mode: GradMode,
) {
    let d = ws.dims();
    let (t_len, b, i_sz, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let cell = layer.cell;
    let gh = cell.gates() * h;
    let bh = b * h;
    let tb = t_len * b;
    let p = ws.parts();
    // W_hh [G*H, H] packed for dG · W_hh; `w(g)` is its rows from gate block `g` on.
    let bwd_layout = backward_packing::<F>(cell, h);
    let packed = layer.packed_backward();

    let (mut dh, mut dh_next) = (p.dh_a, p.dh_b);
    match up.dh_n {
        Some(v) => dh.copy_from_slice(v),
        None => dh.fill(F::ZERO),
    }
    if cell.has_cell_state() {
        match up.dc_n {
            Some(v) => p.dc.copy_from_slice(v),
            None => p.dc.fill(F::ZERO),
        }
    }

    let bprep = BackwardPrep {
        cell,
        isa,
        hidden: h,
        w_hh: packed,
        layout: bwd_layout,
    };
    // The reverse recurrence, split by batch rows into shards that each run the whole
    // sequence (rows are independent; see the forward).
    let lstm = cell.has_cell_state();
    let gru = matches!(cell, CellKind::Gru(_));
    let ranges = row_ranges(b, shards);
    let g_len = if gru { t_len } else { 0 };
    let c_len = if lstm { t_len + 1 } else { 0 };
    let drh_len = if p.drh.is_empty() { 0 } else { 1 };
    type Shard<'a, F> = (
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a [F]>,
        Vec<&'a [F]>,
        Vec<&'a [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
        Vec<&'a mut [F]>,
    );
    let dy_len = if up.dy.is_some() { t_len } else { 0 };
    let jobs: Vec<Shard<'_, F>> = row_pieces(&mut *p.gates, t_len, gh, &ranges)
        .into_iter()
        .zip(row_pieces(&mut p.grid[..g_len * bh], g_len, h, &ranges))
        .zip(row_pieces_ref(&*p.h_all, t_len + 1, h, &ranges))
        .zip(row_pieces_ref(&p.c_all[..c_len * bh], c_len, h, &ranges))
        .zip(row_pieces_ref(up.dy.unwrap_or(&[]), dy_len, h, &ranges))
        .zip(row_pieces(&mut *dh, 1, h, &ranges))
        .zip(row_pieces(&mut *dh_next, 1, h, &ranges))
        .zip(row_pieces(
            &mut p.dc[..if lstm { bh } else { 0 }],
            usize::from(lstm),
            h,
            &ranges,
        ))
        .zip(row_pieces(&mut *p.drh, drh_len, h, &ranges))
        .map(|((((((((g, gr), hs), cs), dy), d0), d1), dc), drh)| {
            (g, gr, hs, cs, dy, d0, d1, dc, drh)
        })
        .collect();
    run_parallel(jobs, &|(
        mut gates,
        mut grids,
        hs,
        cs,
        dys,
        mut d0,
        mut d1,
        mut dc,
        mut drh,
    ): Shard<'_, F>| {
        let (mut dh, mut dh_next) = (d0.pop().expect("one piece"), d1.pop().expect("one piece"));
        let mut dc = dc.pop().unwrap_or(&mut []);
        let mut drh = drh.pop().unwrap_or(&mut []);
        for t in (0..t_len).rev() {
            let st = BackwardState {
                gates: &mut *gates[t],
                grid: if gru { &mut *grids[t] } else { &mut [] },
                h_prev: hs[t],
                h: hs[t + 1],
                c_prev: if lstm { cs[t] } else { &[] },
                c: if lstm { cs[t + 1] } else { &[] },
                dy: dys.get(t).copied(),
                dh: &mut *dh,
                dh_prev: &mut *dh_next,
                dc: &mut *dc,
                drh: &mut *drh,
            };
            backward_step(&bprep, st);
            core::mem::swap(&mut dh, &mut dh_next);
        }
        let _ = (&mut dc, &mut drh);
    });
    // Each step swaps the two dh buffers: after T steps dh_{0} is in `dh` for even T.
    if t_len % 2 == 1 {
        core::mem::swap(&mut dh, &mut dh_next);
    }

    if let Some(dh0) = inputs.dh0 {
        dh0.copy_from_slice(dh);
    }
    if let Some(dc0) = inputs.dc0 {
        dc0.copy_from_slice(p.dc);
    }

    // After the loop, over all T*B rows at once. dG [T*B, G*H] now sits where the gates were.
    let dg: &[F] = p.gates;
    if let Some(dx) = inputs.dx {
        let w = PackedRef::all(
            layer.packed_input_backward(),
            layer.input_backward_packing(),
        );
        gemm_packed_rows(isa, shards, tb, dg, gh, gh, w, dx);
    }
    let acc = match mode {
        GradMode::Overwrite => Accumulate::No,
        GradMode::Accumulate => Accumulate::Yes,
    };
    let h_prev_all = &p.h_all[..tb * h];
    // dW_ih = dGᵀ X, and dW_hh = dGᵀ H_{t-1} for the gate blocks whose recurrent input is
    // h_{t-1} itself: one pass over dG for both.
    let term = GradTerm::new;
    column_sums(shards, p.gates, tb, gh, gh, &mut grads.bias_ih, mode);
    // b_hh's gradient is b_ih's for every gate block where both biases enter the same
    // pre-activation: all but the reset-after GRU's n block (there b_hn sits inside
    // `r * (W_hn h + b_hn)`; its sums are over `grid`). Started from zero, they are the same
    // bits, so overwriting copies them.
    let shared = match cell {
        CellKind::Gru(GruVariant::ResetAfter) => 2 * h,
        _ => gh,
    };
    match mode {
        GradMode::Overwrite => {
            grads.bias_hh[..shared].copy_from_slice(&grads.bias_ih[..shared]);
        }
        GradMode::Accumulate => {
            let db = &mut grads.bias_hh[..shared];
            column_sums(shards, p.gates, tb, shared, gh, db, mode);
        }
    }
    match cell {
        CellKind::Rnn(_) | CellKind::Lstm => {
            let terms = vec![
                term(x, i_sz, 0, gh, &mut grads.weight_ih),
                term(h_prev_all, h, 0, gh, &mut grads.weight_hh),
            ];
            weight_grad(isa, shards, dg, gh, tb, terms, acc, &mut *p.grad_scratch);
        }
        CellKind::Gru(variant) => {
            let (dw_rz, dw_n) = grads.weight_hh.split_at_mut(2 * h * h);
            let grid: &[F] = &p.grid[..tb * h];
            match variant {
                GruVariant::ResetAfter => {
                    let terms = vec![
                        term(x, i_sz, 0, gh, &mut grads.weight_ih),
                        term(h_prev_all, h, 0, 2 * h, dw_rz),
                    ];
                    weight_grad(isa, shards, dg, gh, tb, terms, acc, &mut *p.grad_scratch);
                    // n block: dG_hh = dn * r (in grid), operand h_{t-1}.
                    let terms = vec![term(h_prev_all, h, 0, h, dw_n)];
                    weight_grad(isa, shards, grid, h, tb, terms, acc, &mut *p.grad_scratch);
                    let db_n = &mut grads.bias_hh[2 * h..];
                    column_sums(shards, grid, tb, h, h, db_n, mode);
                }
                GruVariant::ResetBefore => {
                    // n block: dG = dn, operand r * h_{t-1} (in grid).
                    let terms = vec![
                        term(x, i_sz, 0, gh, &mut grads.weight_ih),
                        term(h_prev_all, h, 0, 2 * h, dw_rz),
                        term(grid, h, 2 * h, gh, dw_n),
                    ];
                    weight_grad(isa, shards, dg, gh, tb, terms, acc, &mut *p.grad_scratch);
                }
            }
        }
    }
}
