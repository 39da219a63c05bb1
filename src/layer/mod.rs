//! One recurrent layer: its parameters in PyTorch's layout, their packed copies, its threads,
//! and the entry points of a pass (validation, then the [`sequence`] drivers).

mod buffers;

pub use buffers::{FinalState, InitialState, InputGrads, Upstream};

use crate::error::{Error, Result, try_to_vec, try_zeroed};
use crate::exec::plan;
use crate::exec::pool::{JoinedPool, check_threads};
use crate::float::Float;
use crate::kernels::isa::Isa;
use crate::kernels::step_gemm::{AlignedBuf, PackedLayout};
use crate::packing::{backward_packing, forward_packing, pack_forward, pack_rows};
use crate::sequence;
use crate::sequence::backward::backward_scratch_len;
use crate::sequence::padded::Segments;
use crate::shape::{Batch, CellKind, Dims, Direction, GradMode, Mode};
use crate::weights::{LayerGrads, LayerWeights};
use crate::workspace::{BatchBuffers, Buffers, Status, WeightsVersion, Workspace};

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
    /// Which values the weights hold (a training forward records it, backward checks it).
    version: WeightsVersion,
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
            weight_ih: try_to_vec("weight_ih", w.weight_ih)?,
            weight_hh: try_to_vec("weight_hh", w.weight_hh)?,
            bias_ih: try_to_vec("bias_ih", w.bias_ih)?,
            bias_hh: try_to_vec("bias_hh", w.bias_hh)?,
            isa: Isa::detect(),
            version: WeightsVersion::fresh(),
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
            version: WeightsVersion::fresh(),
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
    /// are dropped and rebuilt on the next pass. A training forward run before this call can no
    /// longer be backpropagated with this layer: its saved gates belong to the old weights, so
    /// [`Layer::backward`] refuses it ([`Error::InvalidState`]); run forward again.
    pub fn weights_mut(&mut self) -> LayerWeightsMut<'_, F> {
        self.drop_packed();
        self.version = WeightsVersion::fresh();
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

    /// Which values the weights hold.
    pub(crate) fn version(&self) -> WeightsVersion {
        self.version
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
    /// Makes the packed copies of the weights a pass needs (forward's, and with `backward`
    /// backward's too) if they are not made yet: once per weight update, with fallible
    /// allocations, before the pass runs. Every entry point calls it first; the accessors
    /// below only read what it made.
    pub(crate) fn prepare_packed(&self, backward: bool) -> Result<()> {
        let (i, h) = (self.input_size, self.hidden_size);
        try_init(&self.packed_forward, || {
            Ok(pack_forward(self.cell, &self.weight_hh, h, h, (0, h))?.0)
        })?;
        try_init(&self.packed_input, || {
            Ok(pack_forward(self.cell, &self.weight_ih, i, h, (0, h))?.0)
        })?;
        if backward {
            try_init(&self.packed_backward, || {
                pack_rows(&self.weight_hh, backward_packing::<F>(self.cell, h))
            })?;
            try_init(&self.packed_input_backward, || {
                pack_rows(&self.weight_ih, self.input_backward_packing())
            })?;
        }
        Ok(())
    }

    /// `W_hhᵀ` packed for the forward step GEMM.
    pub(crate) fn packed_forward(&self) -> &[F] {
        packed(&self.packed_forward)
    }

    /// `W_ihᵀ` packed for the input projection, laid out by [`Layer::input_packing`].
    pub(crate) fn packed_input(&self) -> &[F] {
        packed(&self.packed_input)
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

    /// `W_hh` packed for backward's `dh_{t-1} = dG · W_hh`.
    pub(crate) fn packed_backward(&self) -> &[F] {
        packed(&self.packed_backward)
    }

    /// `W_ih` packed for backward's `dX = dG · W_ih`, laid out by
    /// [`Layer::input_backward_packing`].
    pub(crate) fn packed_input_backward(&self) -> &[F] {
        packed(&self.packed_input_backward)
    }

    /// The layout of [`Layer::packed_input_backward`]: `W_ih [G*H, I]` as `K = G*H` rows of
    /// `I` columns.
    pub(crate) fn input_backward_packing(&self) -> PackedLayout {
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

    /// Runs passes on `n` threads, 1 to [`MAX_THREADS`](crate::MAX_THREADS) (a rayon pool owned by the layer; 1 = the calling thread
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
        check_threads(n)?;
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

    /// Hidden-unit slices of one streaming step of `batch` rows (see
    /// [`StreamingLayer`](crate::StreamingLayer)).
    pub(crate) fn stream_slices(&self, batch: usize) -> usize {
        plan::stream_slices(
            self.threads(),
            self.cell,
            self.input_size,
            self.hidden_size,
            batch,
        )
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
    /// A workspace for calls over `seq_len` steps of a batch: `B` rows of `seq_len` steps
    /// (`Batch::Fixed(B)`, or just `B`) or rows of their own lengths padded to `seq_len`
    /// (`Batch::Padded(&lengths)`, row `b` valid for its first `lengths[b]` steps; 0 allowed:
    /// the row keeps its initial state). The workspace is made for those lengths: a batch
    /// with other lengths needs its own.
    ///
    /// Errors: [`Error::ZeroDim`] for `seq_len` 0 or no rows, [`Error::InvalidArgument`] for a
    /// length past `seq_len`, [`Error::SizeOverflow`] / [`Error::AllocationFailed`] for sizes
    /// that do not fit.
    pub fn workspace<'b>(
        &self,
        seq_len: usize,
        batch: impl Into<Batch<'b>>,
        mode: Mode,
    ) -> Result<Workspace<F>> {
        let batch = match batch.into() {
            Batch::Fixed(b) => {
                BatchBuffers::Fixed(Buffers::new(self.cell, self.dims(seq_len, b), mode)?)
            }
            Batch::Padded(lengths) => {
                BatchBuffers::Padded(Segments::new(self, lengths, seq_len, mode)?)
            }
        };
        Ok(Workspace {
            batch,
            direction: Direction::Forward,
        })
    }
    /// Zero gradients shaped like this layer's parameters.
    pub fn zero_grads(&self) -> Result<LayerGrads<F>> {
        LayerGrads::zeros(self.cell, self.input_size, self.hidden_size)
    }

    /// Runs the layer over `x [T, B, I]` (time-major) in `direction`, writing `y [T, B, H]`
    /// and, if asked, the final state. `T` and the batch come from the workspace; a
    /// [`Mode::Training`] workspace also keeps what [`Layer::backward`] needs.
    ///
    /// [`Direction::Reverse`] runs each row from its last step back to the first (a padded
    /// row from its own last valid step): `y[t]` is then the state after reading
    /// `x[t], x[t+1], ...`, and the final state is the one after step 0, as in the reverse
    /// half of PyTorch's bidirectional layers.
    ///
    /// Over a padded batch ([`Batch::Padded`]), `y` is zero at the
    /// padding, the padding of `x` is never read, and the final state of a row is its state
    /// after its own last step (its initial state for a row of length 0); see
    /// [`sequence::padded`].
    ///
    /// NaN or infinity in inputs or weights propagate to the outputs (never a panic); check
    /// outputs with `is_finite` where that matters. A call refused by validation changes
    /// nothing.
    pub fn forward(
        &self,
        ws: &mut Workspace<F>,
        direction: Direction,
        x: &[F],
        init: InitialState<'_, F>,
        y: &mut [F],
        fin: FinalState<'_, F>,
    ) -> Result<()> {
        match &mut ws.batch {
            BatchBuffers::Fixed(b) => self.forward_buffers(b, direction, x, init, y, fin)?,
            BatchBuffers::Padded(s) => {
                sequence::padded::forward(self, s, direction, x, init, y, fin)?
            }
        }
        ws.direction = direction;
        Ok(())
    }

    /// Backpropagation through time over the last training [`Layer::forward`] run with `ws`,
    /// in the direction that forward ran, by this layer with the same weights (a workspace
    /// filled by another layer, or before [`Layer::weights_mut`], is refused with
    /// [`Error::InvalidState`]).
    ///
    /// `x` must be the input that forward saw. Weight gradients go to `grads`, added or
    /// overwritten by `mode`; input gradients go to `inputs` (overwritten). Over a padded batch
    /// `dy` at the padding is not read, `dx` there is zero, and `dh_n`/`dc_n` of a row enter at
    /// its last step. Backward consumes the workspace's saved gates: a second backward needs a
    /// new forward ([`Error::InvalidState`] otherwise).
    pub fn backward(
        &self,
        ws: &mut Workspace<F>,
        x: &[F],
        up: Upstream<'_, F>,
        grads: &mut LayerGrads<F>,
        inputs: InputGrads<'_, F>,
        mode: GradMode,
    ) -> Result<()> {
        let direction = ws.direction;
        match &mut ws.batch {
            BatchBuffers::Fixed(b) => {
                self.backward_buffers(b, direction, x, up, grads, inputs, mode)
            }
            BatchBuffers::Padded(s) => {
                sequence::padded::backward(self, s, direction, x, up, grads, inputs, mode)
            }
        }
    }

    /// [`Layer::forward`] over one fixed batch's buffers.
    pub(crate) fn forward_buffers(
        &self,
        ws: &mut Buffers<F>,
        direction: Direction,
        x: &[F],
        init: InitialState<'_, F>,
        y: &mut [F],
        fin: FinalState<'_, F>,
    ) -> Result<()> {
        ws.check(self.cell, self.input_size, self.hidden_size, None)?;
        let d = ws.dims();
        self.check_forward_buffers(&d, x, &init, y, &fin)?;
        self.prepare_packed(false)?;
        ws.status = Status::Fresh;
        let training = ws.mode() == Mode::Training;
        let isa = self.isa.resolve();
        let plan = plan::forward_plan::<F>(self.threads(), isa, self.cell, &d, direction, training);
        self.in_pool(plan.threads(), || {
            sequence::forward::forward(self, isa, plan, direction, ws, training, x, init, y, fin)
        })?;
        ws.status = if training {
            Status::Forwarded(self.version)
        } else {
            Status::Fresh
        };
        Ok(())
    }

    /// [`Layer::backward`] over one fixed batch's buffers.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_buffers(
        &self,
        ws: &mut Buffers<F>,
        direction: Direction,
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
        ws.status.check_forwarded(self.version)?;
        let d = ws.dims();
        self.check_backward_buffers(&d, x, &up, grads, &inputs)?;
        self.prepare_packed(true)?;
        let shards = plan::row_shards(self.threads(), self.cell, &d);
        let scratch = backward_scratch_len::<F>(self.cell, &d)
            .checked_mul(shards)
            .ok_or(Error::SizeOverflow {
                what: "weight-gradient scratch",
            })?;
        ws.reserve_grad_scratch(scratch)?;
        ws.status = Status::Consumed;
        let isa = self.isa.resolve();
        self.in_pool(shards, || {
            sequence::backward::backward(
                self, isa, shards, direction, ws, x, up, grads, inputs, mode,
            )
        })
    }
}

/// Fills `cell` with `make()` unless it holds a value (a value another thread set first wins:
/// both are the same packing of the same weights).
fn try_init<T>(cell: &std::sync::OnceLock<T>, make: impl FnOnce() -> Result<T>) -> Result<()> {
    if cell.get().is_none() {
        let _ = cell.set(make()?);
    }
    Ok(())
}

/// The packed copy in `cell`, made by [`Layer::prepare_packed`] before any pass reads it.
fn packed<F>(cell: &std::sync::OnceLock<AlignedBuf<F>>) -> &[F] {
    cell.get()
        .expect("Layer::prepare_packed runs before every pass")
}
