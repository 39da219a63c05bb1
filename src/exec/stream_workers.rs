//! Dedicated worker threads for the streaming step split by hidden units.
//!
//! A streaming step is short (12-30 µs at H = 256), too short to enter a rayon pool from
//! outside: the caller then sleeps on a latch and waking it costs more than the second core
//! gains (measured 38-45 µs against 31 µs on one thread). Here each extra slice has its own
//! thread, which keeps its own packed copy of its units' columns of the weights (its panels
//! are its own and stay in its core's cache; it holds `1/threads` of the packed layer and none
//! of the unpacked weights) and spins for a while after each step waiting for the next
//! ([`SPIN_WINDOW`] unless the stream sets another), then parks. A step is handed over through
//! atomics and mutexes, no system call while the worker spins:
//!
//! 0. A worker that parked is not handed a step that comes more than the spin window after
//!    the previous one: waking it would cost the caller a system call (measured about 10 µs
//!    here, most of a slice: with steps 1 ms apart a step took 38-42 µs on two threads against
//!    28-29 µs on one) and it would be parked again by the next step; the caller computes its
//!    slice. A step that comes sooner (steps resuming at a rate the worker can follow) wakes
//!    it.
//! 1. The caller copies `x_t`, `h_{t-1}`, `c_{t-1}` into the worker's `input`, opens step `s`
//!    for claiming (`pending = s`) and unparks the worker if it went to sleep.
//! 2. The worker claims the step (`pending: s → 0`), computes its slice, puts `h_t`, `c_t` of
//!    its units into its `output` and sets `done = s`.
//! 3. The caller computes its own slice meanwhile. Then, per worker: if the step is still
//!    unclaimed (the worker is asleep or descheduled) it claims and computes the slice itself;
//!    else it waits for `done` and gathers the output. If the worker has not finished by the
//!    time the caller's own slice took plus [`LAG_SLACK`] (it lost its core mid-slice), the
//!    caller computes the slice too and stops handing that worker steps until it has
//!    finished, so a busy machine costs at most one wait, not one per step.
//! 4. Between steps, the recurrent halves `h_t · W_hhᵀ` of step `t + 1`, which need nothing
//!    but `h_t`, are computed before `x_{t+1}` comes. After a step that came at least
//!    [`PRECOMPUTE_MIN_PAUSE`] after the previous one ended (back to back there is no time
//!    for it, and publishing would cost the caller copies), the caller publishes its `h_t` to
//!    each worker that is awake (`next_h`; a parked one is not woken) and opens its own slice's
//!    half for claiming by the first worker (`caller_pending = t + 1`). A worker that sees it
//!    while it waits computes its own slice's half into its accumulator, then the first worker
//!    claims the caller's half and computes it from its own packed copy of the caller's
//!    columns of `W_hhᵀ` (into `caller_acc`, then `caller_done = t + 1`; that copy is the
//!    first worker's only weights beyond its own slice's). Then the worker reads its `W_ih`
//!    columns back into its L2, which the halves pushed out.
//! 5. At step `t + 1` the caller claims its half first. If the worker claimed it before, the
//!    caller runs its input GEMM and then takes the worker's result, or computes the half
//!    itself if the worker has not finished [`LAG_SLACK`] later. Each side uses a precomputed
//!    half only if it was computed from the very bits of this step's `h_{t-1}` (`set_state`
//!    and `run` replace the state between steps). A step after a pause then reads only its
//!    `W_ih` columns: an LSTM at I = H = 256, B = 1, steps 20-100 µs apart, 6.7-7.0 µs per
//!    step (medians) against 11.8-12.2 µs without.
//!
//! The claim makes each handed-over slice run on one thread; a slice computed twice (the lag
//! case) comes out the same bits both times, as every path runs the same kernels on the same
//! packed weights, and a precomputed half has the bits the step would compute (the same
//! kernel on the same `h_{t-1}` and weights; every element the sum over `k` in order). The
//! caller writes `input` and reads `output` only while the worker holds no claim, so those
//! mutexes are never contended; the worker holds `next_h` only to copy `h_t` out, and
//! `caller_acc` while it computes the caller's half, which the caller reads only after
//! `caller_done` says it is finished. The mutexes make all of it memory-safe without `unsafe`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Error, Result, try_zeroed};
use crate::exec::columns::{
    ColumnPass, Recurrent, SliceState, put_columns, recurrent_columns, step_slice,
};
use crate::float::Float;
use crate::kernels::isa::IsaToken;
use crate::kernels::step_gemm::{AlignedBuf, PackedLayout, PanelOrder};
use crate::layer::Layer;
use crate::packing::pack_forward;
use crate::shape::CellKind;

/// How long a worker spins for the next step before it parks, by default (see
/// [`StreamingLayer::set_spin_window`](crate::StreamingLayer::set_spin_window)). Steps that
/// come back to back (a stream fed as fast as it runs) find it awake; after a pause longer
/// than the window, steps run the worker's slice on the caller without waking it, until one
/// comes within the window of the step before (see the module doc).
pub(crate) const SPIN_WINDOW: Duration = Duration::from_micros(200);

/// `d` in nanoseconds, saturated to what an `AtomicU64` holds (584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The shortest pause between two steps after which the caller publishes `h_t` for the
/// workers to compute the next step's recurrent halves before it comes. Steps that come back to
/// back leave them no time for it, and publishing costs the caller a copy of `h_t` per worker.
pub(crate) const PRECOMPUTE_MIN_PAUSE: Duration = Duration::from_micros(1);

/// How much longer than its own slice the caller waits for a worker's before computing it too.
pub(crate) const LAG_SLACK: Duration = Duration::from_micros(20);

/// What the caller and one worker share.
struct Shared<F> {
    /// The last step handed to the worker (it wakes on a change).
    step: AtomicUsize,
    /// The step open for claiming, 0 once claimed (by the worker or the caller).
    pending: AtomicUsize,
    /// The last step the worker finished.
    done: AtomicUsize,
    /// The worker is parked (or about to): a step after a pause runs its slice on the caller,
    /// one that resumes a run of steps unparks it after publishing.
    sleeping: AtomicBool,
    /// How long the worker spins after a step before it parks, in nanoseconds (read at the
    /// start of each wait).
    spin_nanos: AtomicU64,
    /// Set on drop: the worker exits.
    stop: AtomicBool,
    /// Set if the worker panicked (a bug): the caller reports it instead of waiting forever.
    dead: AtomicBool,
    /// Tests: the worker panics in its next slice.
    #[cfg(test)]
    inject_panic: AtomicBool,
    /// Tests: how many times a step woke the worker.
    #[cfg(test)]
    wakes: AtomicUsize,
    /// Tests: how many steps the worker ran on its own precomputed recurrent half, and how
    /// many the caller ran on the half the worker computed for it.
    #[cfg(test)]
    precomputed: AtomicUsize,
    #[cfg(test)]
    caller_fetched: AtomicUsize,
    /// `x_t [B, I]`, then `h_{t-1} [B, H]`, then `c_{t-1} [B, H]` (LSTM).
    input: Mutex<Vec<F>>,
    /// The `h [B, H]` the caller published at the end of a step, and the step it is
    /// `h_{t-1}` of: the worker computes the recurrent halves of that step from it (see the
    /// module doc).
    next_h: Mutex<(usize, Vec<F>)>,
    /// The step of the last `next_h` published (the worker looks for a change; it is never
    /// woken for one).
    next_h_step: AtomicUsize,
    /// The first worker only: the step whose recurrent half of the caller's slice is open for
    /// claiming, 0 once claimed (by the worker or the caller).
    caller_pending: AtomicUsize,
    /// The last step whose recurrent half of the caller's slice the worker finished.
    caller_done: AtomicUsize,
    /// That half, `[B, G*hc]` of the caller's units (empty for the other workers).
    caller_acc: Mutex<Vec<F>>,
    /// The worker's `h_t`, then `c_t` (LSTM), `[B, hc]` each.
    output: Mutex<Vec<F>>,
}

/// Locks `m`, ignoring poisoning (a worker that panicked is reported through `dead`; the data
/// is overwritten every step).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One worker thread and its slice.
struct Worker<F> {
    shared: Arc<Shared<F>>,
    handle: Option<JoinHandle<()>>,
    /// The worker's units.
    units: (usize, usize),
    /// A step the worker claimed but had not finished when the caller stopped waiting: it is
    /// handed no step until `done` reaches it.
    owes: Option<usize>,
    /// Whether the current step was handed to the worker.
    handed: bool,
}

/// The worker threads of a [`StreamingLayer`](crate::StreamingLayer), one per slice after the
/// first (the caller's).
pub(crate) struct StepWorkers<F> {
    workers: Vec<Worker<F>>,
    /// Steps published so far.
    step: usize,
    /// When the last step started and ended, and how long the workers spin after a step.
    last_step: Option<Instant>,
    last_end: Option<Instant>,
    spin_window: Duration,
    /// Whether the caller may compute a worker's slice.
    takeover: Takeover,
    /// The `h` last published to the first worker for the caller's recurrent half, and the
    /// step it is `h_{t-1}` of (0: none).
    published: Vec<F>,
    published_for: usize,
}

/// Whether the caller may compute a worker's slice (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takeover {
    /// When the worker has not claimed it, or lags: the production setting.
    WhenFaster,
    /// Never: the caller always waits for the worker (tests, to cover the worker's path).
    #[cfg_attr(not(test), allow(dead_code))]
    Never,
}

impl<F> core::fmt::Debug for StepWorkers<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StepWorkers")
            .field("threads", &self.workers.len())
            .field("step", &self.step)
            .finish()
    }
}

/// The slice a worker computes, with the weights and buffers it computes it from: only its
/// own units' columns of `W_ihᵀ` and `W_hhᵀ`, packed (a `1/threads` share of the layer's
/// packed weights, and no copy of the unpacked ones).
struct WorkerSlice<F> {
    weights: SliceWeights<F>,
    slice: SliceState<F>,
    gates: Vec<F>,
    /// The step whose recurrent half the slice's accumulator holds (0: none), and the
    /// `h_{t-1}` it was computed from.
    pre_step: usize,
    pre_h: Vec<F>,
    /// The first worker only: the caller's units and their columns of `W_hhᵀ`, packed.
    caller: Option<CallerColumns<F>>,
}

/// What a worker's slice reads: the shape and its units' columns of the weights.
struct SliceWeights<F> {
    cell: CellKind,
    isa: IsaToken,
    batch: usize,
    input: usize,
    hidden: usize,
    /// The slice's first unit.
    origin: usize,
    /// The slice's columns of `W_ihᵀ` and `W_hhᵀ`, packed, and their layouts.
    w_ih: AlignedBuf<F>,
    ih_layout: PackedLayout,
    w_hh: AlignedBuf<F>,
    hh_layout: PackedLayout,
}

impl<F: Float> SliceWeights<F> {
    /// What the slice's GEMMs read: its own packed columns.
    fn pass(&self) -> ColumnPass<'_, F> {
        ColumnPass {
            cell: self.cell,
            isa: self.isa,
            batch: self.batch,
            hidden: self.hidden,
            w_hh_t: &self.w_hh,
            layout: self.hh_layout,
            w_origin: self.origin,
            // Read by `SliceState::new` only; the slice holds its part.
            bias: &[],
            b_hn: &[],
        }
    }
}

/// The caller's slice's columns of `W_hhᵀ`, packed (a copy held by the first worker, which
/// computes their recurrent half between steps).
struct CallerColumns<F> {
    units: (usize, usize),
    w_hh: AlignedBuf<F>,
    layout: PackedLayout,
}

/// Whether `a` and `b` hold the same bits (`==` would take `-0.0` for `0.0`).
fn same_bits<F: Float>(a: &[F], b: &[F]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits())
}

impl<F: Float> WorkerSlice<F> {
    /// Between steps: the recurrent half of step `p` from the published `h_{p-1}`, for the
    /// slice's own units, then (the first worker) for the caller's if the caller has not
    /// claimed it.
    fn precompute(&mut self, shared: &Shared<F>, p: usize) {
        {
            let next = lock(&shared.next_h);
            if next.0 != p {
                // A newer one was published meanwhile: the wait loop sees it next.
                return;
            }
            self.pre_h.copy_from_slice(&next.1);
        }
        let order = PanelOrder::alternating(p);
        let pass = self.weights.pass();
        self.slice.compute_recurrent(&pass, order, &self.pre_h);
        self.pre_step = p;
        let Some(cc) = &self.caller else {
            return;
        };
        if shared
            .caller_pending
            .compare_exchange(p, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // The caller's step p began: it computes its half itself.
            return;
        }
        {
            let pass = ColumnPass {
                w_hh_t: &cc.w_hh,
                layout: cc.layout,
                w_origin: cc.units.0,
                ..pass
            };
            let mut acc = lock(&shared.caller_acc);
            recurrent_columns(&pass, order, cc.units, &self.pre_h, &mut acc);
        }
        shared.caller_done.store(p, Ordering::Release);
    }

    /// After [`precompute`](Self::precompute): reads the slice's packed `W_ihᵀ` columns, one
    /// element per cache line, so that the step finds them in this core's L2 again (the
    /// halves just computed read 1 MiB at I = H = 256 on two threads, and pushed them out to
    /// the L3; measured with steps 20-100 µs apart: 6.7-7.0 µs per step with this, 7.7-8.0
    /// without). Stops as soon as `step_came` says a step is waiting.
    fn warm_input_weights(&self, step_came: impl Fn() -> bool) {
        let mut sum = F::ZERO;
        // 16 KiB (f32) between looks at `step_came`: about 0.2 µs from the L3.
        for chunk in self.weights.w_ih[..].chunks(4096) {
            if step_came() {
                break;
            }
            for v in chunk.iter().step_by(64 / core::mem::size_of::<F>()) {
                sum += *v;
            }
        }
        std::hint::black_box(sum);
    }

    /// Computes the slice for step `s` from `input` into `output`, on the recurrent half
    /// computed before the step if that was from the same `h_{t-1}`. Returns whether it was.
    fn run(&mut self, s: usize, input: &[F], output: &mut [F]) -> bool {
        let w = &self.weights;
        let (b, i, h) = (w.batch, w.input, w.hidden);
        let lstm = w.cell.has_cell_state();
        let (x_t, rest) = input.split_at(b * i);
        let (h_prev, c_prev) = rest.split_at(b * h);
        // `set_state` or `run` may have replaced the state since it was published.
        let precomputed = self.pre_step == s && same_bits(&self.pre_h, h_prev);
        self.pre_step = 0;
        step_slice(
            &w.pass(),
            PanelOrder::alternating(s),
            &w.w_ih,
            w.ih_layout,
            x_t,
            h_prev,
            c_prev,
            &mut self.slice,
            &mut self.gates,
            if precomputed {
                Recurrent::Precomputed
            } else {
                Recurrent::Compute
            },
        );
        let (hs, cs) = self.slice.outputs(lstm);
        output[..hs.len()].copy_from_slice(hs);
        output[hs.len()..hs.len() + cs.len()].copy_from_slice(cs);
        precomputed
    }
}

/// Sets `dead` if the worker unwinds.
struct DeathFlag<'a>(&'a AtomicBool);

impl Drop for DeathFlag<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

fn worker_loop<F: Float>(shared: &Shared<F>, mut ws: WorkerSlice<F>) {
    let _flag = DeathFlag(&shared.dead);
    // Steps count from 1; the caller may publish the first before this thread gets here, so
    // start from "none seen", not from a load.
    let mut seen = 0;
    let mut seen_h = 0;
    loop {
        // Wait for a new step: spin, then park. Meanwhile, compute the next step's recurrent
        // halves as soon as the caller publishes its `h_{t-1}`.
        let window = Duration::from_nanos(shared.spin_nanos.load(Ordering::Relaxed));
        let mut since = Instant::now();
        let s = loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let s = shared.step.load(Ordering::Acquire);
            if s != seen {
                break s;
            }
            let p = shared.next_h_step.load(Ordering::Acquire);
            if p != seen_h {
                seen_h = p;
                ws.precompute(shared, p);
                ws.warm_input_weights(|| shared.step.load(Ordering::Acquire) != seen);
                continue;
            }
            if since.elapsed() > window {
                shared.sleeping.store(true, Ordering::SeqCst);
                // Re-check after announcing sleep: the caller publishes, then reads
                // `sleeping` (both SeqCst), so either we see its step or it unparks us.
                if shared.step.load(Ordering::SeqCst) == seen && !shared.stop.load(Ordering::SeqCst)
                {
                    std::thread::park();
                }
                shared.sleeping.store(false, Ordering::SeqCst);
                since = Instant::now();
            }
            std::hint::spin_loop();
        };
        seen = s;
        if shared
            .pending
            .compare_exchange(s, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            {
                let input = lock(&shared.input);
                let mut output = lock(&shared.output);
                #[cfg(test)]
                assert!(
                    !shared.inject_panic.load(Ordering::SeqCst),
                    "injected worker panic"
                );
                let _precomputed = ws.run(s, &input, &mut output);
                #[cfg(test)]
                if _precomputed {
                    shared.precomputed.fetch_add(1, Ordering::SeqCst);
                }
            }
            shared.done.store(s, Ordering::Release);
        }
    }
}

impl<F: Float> StepWorkers<F> {
    /// Starts one worker per slice in `ranges` after the first, each with a clone of `layer`
    /// (its own packed weights, packed in the worker thread, so they are first touched by
    /// its core). `bias` is the fused bias.
    pub(crate) fn start(
        layer: &Layer<F>,
        batch: usize,
        bias: &[F],
        ranges: &[(usize, usize)],
    ) -> Result<Self> {
        let (i, h) = (layer.input_size(), layer.hidden_size());
        let cell = layer.cell();
        let lstm = cell.has_cell_state();
        let c_len = if lstm { batch * h } else { 0 };
        let mut workers = Vec::new();
        let caller_units = ranges[0];
        let caller_cols = batch * cell.gates() * (caller_units.1 - caller_units.0);
        for (k, &units) in ranges.iter().enumerate().skip(1) {
            let hc = units.1 - units.0;
            // The first worker also computes the caller's recurrent half between steps.
            let helps_caller = k == 1;
            let shared = Arc::new(Shared {
                step: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                done: AtomicUsize::new(0),
                sleeping: AtomicBool::new(false),
                spin_nanos: AtomicU64::new(nanos(SPIN_WINDOW)),
                stop: AtomicBool::new(false),
                dead: AtomicBool::new(false),
                #[cfg(test)]
                inject_panic: AtomicBool::new(false),
                #[cfg(test)]
                wakes: AtomicUsize::new(0),
                #[cfg(test)]
                precomputed: AtomicUsize::new(0),
                #[cfg(test)]
                caller_fetched: AtomicUsize::new(0),
                input: Mutex::new(try_zeroed("worker input", batch * (i + h) + c_len)?),
                next_h: Mutex::new((0, try_zeroed("worker next h", batch * h)?)),
                next_h_step: AtomicUsize::new(0),
                caller_pending: AtomicUsize::new(0),
                caller_done: AtomicUsize::new(0),
                caller_acc: Mutex::new(if helps_caller {
                    try_zeroed("worker caller gates", caller_cols)?
                } else {
                    Vec::new()
                }),
                output: Mutex::new(try_zeroed(
                    "worker output",
                    batch * hc * if lstm { 2 } else { 1 },
                )?),
            });
            let wts = layer.weights();
            let (w_ih, ih_layout) = pack_forward(cell, wts.weight_ih, i, h, units)?;
            let (w_hh, hh_layout) = pack_forward(cell, wts.weight_hh, h, h, units)?;
            let caller = if helps_caller {
                let (w_hh, layout) = pack_forward(cell, wts.weight_hh, h, h, caller_units)?;
                Some(CallerColumns {
                    units: caller_units,
                    w_hh,
                    layout,
                })
            } else {
                None
            };
            let ws = WorkerSlice {
                weights: SliceWeights {
                    cell,
                    isa: layer.isa().resolve(),
                    batch,
                    input: i,
                    hidden: h,
                    origin: units.0,
                    w_ih,
                    ih_layout,
                    w_hh,
                    hh_layout,
                },
                slice: SliceState::new(&ColumnPass::new(layer, batch, bias), units, None)?,
                gates: try_zeroed("worker gates", batch * cell.gates() * hc)?,
                pre_step: 0,
                pre_h: try_zeroed("worker h", batch * h)?,
                caller,
            };
            let theirs = Arc::clone(&shared);
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let handle = std::thread::Builder::new()
                .name("fused-rnn-stream".into())
                .spawn(move || {
                    // Ready: nothing more is allocated from here on.
                    let _ = ready_tx.send(());
                    worker_loop(&theirs, ws)
                })
                .map_err(|e| Error::InvalidArgument {
                    what: "threads",
                    why: format!("could not start a streaming worker thread: {e}"),
                })?;
            // Wait until the worker runs, so that the first steps find it spinning.
            ready_rx.recv().map_err(|_| Error::InvalidArgument {
                what: "threads",
                why: "a streaming worker thread failed to start".into(),
            })?;
            workers.push(Worker {
                shared,
                handle: Some(handle),
                units,
                owes: None,
                handed: false,
            });
        }
        Ok(StepWorkers {
            workers,
            step: 0,
            last_step: None,
            last_end: None,
            spin_window: SPIN_WINDOW,
            takeover: Takeover::WhenFaster,
            published: try_zeroed("published h", batch * h)?,
            published_for: 0,
        })
    }

    /// Sets how long the workers spin after each step before they park (from their next
    /// wait on).
    pub(crate) fn set_spin_window(&mut self, window: Duration) {
        self.spin_window = window;
        for w in &self.workers {
            w.shared.spin_nanos.store(nanos(window), Ordering::Relaxed);
        }
    }

    /// How many times steps woke a worker.
    #[cfg(test)]
    pub(crate) fn wakes(&self) -> usize {
        self.workers
            .iter()
            .map(|w| w.shared.wakes.load(Ordering::SeqCst))
            .sum()
    }

    /// How many steps ran on a recurrent half computed between steps: by the workers for
    /// their own slices, and by the first worker for the caller's.
    #[cfg(test)]
    pub(crate) fn precomputed(&self) -> (usize, usize) {
        let count = |c: fn(&Shared<F>) -> &AtomicUsize| -> usize {
            self.workers
                .iter()
                .map(|w| c(&w.shared).load(Ordering::SeqCst))
                .sum()
        };
        (count(|s| &s.precomputed), count(|s| &s.caller_fetched))
    }

    /// Whether every worker is parked (or about to park).
    #[cfg(test)]
    pub(crate) fn all_sleeping(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.shared.sleeping.load(Ordering::SeqCst))
    }

    /// Tests: waits until the first worker has computed the recurrent halves of the next step
    /// from the `h` published at the end of the last one (its own slice's, then the caller's:
    /// `caller_done` is set after both), so that a test of the precompute does not depend on
    /// the worker being scheduled during the pause. `false` if nothing was published for the
    /// next step, the worker died, or `timeout` passed.
    #[cfg(test)]
    pub(crate) fn wait_for_precompute(&self, timeout: Duration) -> bool {
        let next = self.step + 1;
        let Some(w) = self.workers.first() else {
            return false;
        };
        if self.published_for != next {
            return false;
        }
        let start = Instant::now();
        while w.shared.caller_done.load(Ordering::Acquire) != next {
            if w.shared.dead.load(Ordering::SeqCst) || start.elapsed() > timeout {
                return false;
            }
            // Sleep, not spin: on a busy machine the worker needs this core.
            std::thread::sleep(Duration::from_micros(50));
        }
        true
    }

    /// Makes the caller always wait for the workers (tests: covers the workers' path, which
    /// a loaded test machine may otherwise never take).
    #[cfg(test)]
    pub(crate) fn wait_for_workers(&mut self) {
        self.takeover = Takeover::Never;
    }

    /// Makes every worker panic in its next slice (tests: the caller must report it, not
    /// hang).
    #[cfg(test)]
    pub(crate) fn inject_worker_panic(&self) {
        for w in &self.workers {
            w.shared.inject_panic.store(true, Ordering::SeqCst);
        }
    }

    /// One step: the caller's slice (`slices[0]`) runs here, every worker's slice on its
    /// worker (or here: see the module doc). Writes `h_out [B, H]` and `c_out [B, H]` (LSTM).
    /// `slices` holds the caller's state for every slice, the workers' for computing theirs
    /// here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn step(
        &mut self,
        pass: &ColumnPass<'_, F>,
        layer: &Layer<F>,
        x_t: &[F],
        h_prev: &[F],
        c_prev: &[F],
        slices: &mut [(SliceState<F>, Vec<F>)],
        h_out: &mut [F],
        c_out: &mut [F],
    ) {
        let h = pass.hidden;
        let lstm = pass.cell.has_cell_state();
        self.step += 1;
        let s = self.step;
        // Whether a parked worker is worth waking (see the module doc).
        let now = Instant::now();
        let resuming = self
            .last_step
            .is_some_and(|t| now.duration_since(t) <= self.spin_window);
        self.last_step = Some(now);
        // Whether the caller paused before this step: then `h_t` is published at its end for
        // the workers to compute the next step's recurrent halves (see the module doc).
        let paused = self
            .last_end
            .is_some_and(|t| now.duration_since(t) >= PRECOMPUTE_MIN_PAUSE);
        // The caller's recurrent half: claim it, unless the first worker took it first to
        // compute it (or has) from the `h_{t-1}` this step reads.
        let fetch_caller_half = match self.workers.first() {
            Some(w) if self.published_for == s => {
                let claimed_here = w
                    .shared
                    .caller_pending
                    .compare_exchange(s, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                !claimed_here && same_bits(&self.published, h_prev)
            }
            _ => false,
        };
        for w in &mut self.workers {
            w.handed = false;
            let sh = &w.shared;
            if let Some(owed) = w.owes
                && sh.done.load(Ordering::Acquire) >= owed
            {
                w.owes = None;
            }
            if w.owes.is_some() {
                continue;
            }
            if !resuming
                && self.takeover == Takeover::WhenFaster
                && sh.sleeping.load(Ordering::SeqCst)
            {
                // Parked, and steps are not coming at a rate it could follow: the slice runs
                // here, without the system call that waking it would cost.
                continue;
            }
            {
                let mut input = lock(&sh.input);
                let (xi, rest) = input.split_at_mut(x_t.len());
                xi.copy_from_slice(x_t);
                let (hi, ci) = rest.split_at_mut(h_prev.len());
                hi.copy_from_slice(h_prev);
                ci.copy_from_slice(c_prev);
            }
            sh.pending.store(s, Ordering::SeqCst);
            sh.step.store(s, Ordering::SeqCst);
            if sh.sleeping.load(Ordering::SeqCst)
                && let Some(t) = &w.handle
            {
                t.thread().unpark();
                #[cfg(test)]
                sh.wakes.fetch_add(1, Ordering::SeqCst);
            }
            w.handed = true;
        }
        let order = PanelOrder::alternating(s);
        let (w_ih_t, ih_layout) = (layer.packed_input(), layer.input_packing());
        let run_here = |(sl, gates): &mut (SliceState<F>, Vec<F>),
                        h_out: &mut [F],
                        c_out: &mut [F],
                        recurrent: Recurrent<'_, F>| {
            step_slice(
                pass, order, w_ih_t, ih_layout, x_t, h_prev, c_prev, sl, gates, recurrent,
            );
            let (u0, u1) = sl.units();
            let (hs, cs) = sl.outputs(lstm);
            put_columns(h_out, hs, h, u0, u1);
            if lstm {
                put_columns(c_out, cs, h, u0, u1);
            }
        };
        let (own, others) = slices.split_first_mut().expect("one slice at least");
        let started = Instant::now();
        if fetch_caller_half {
            let sh = &self.workers[0].shared;
            let mut fetch = |acc: &mut [F]| {
                // The worker claimed it before this step began; it takes about as long as
                // the input GEMM just run here.
                let waiting = Instant::now();
                while sh.caller_done.load(Ordering::Acquire) != s {
                    if sh.dead.load(Ordering::SeqCst) || waiting.elapsed() > LAG_SLACK {
                        return false;
                    }
                    std::hint::spin_loop();
                }
                acc.copy_from_slice(&lock(&sh.caller_acc));
                #[cfg(test)]
                sh.caller_fetched.fetch_add(1, Ordering::SeqCst);
                true
            };
            run_here(own, h_out, c_out, Recurrent::Fetch(&mut fetch));
        } else {
            run_here(own, h_out, c_out, Recurrent::Compute);
        }
        let patience = started.elapsed() + LAG_SLACK;
        for (w, other) in self.workers.iter_mut().zip(others) {
            let sh = &w.shared;
            let unclaimed = || {
                sh.pending
                    .compare_exchange(s, 0, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            };
            let may_take = self.takeover == Takeover::WhenFaster;
            if !w.handed || (may_take && unclaimed()) {
                // Not handed over, or not started: computing it here costs less than waiting.
                run_here(other, h_out, c_out, Recurrent::Compute);
                continue;
            }
            let waiting = Instant::now();
            while sh.done.load(Ordering::Acquire) != s {
                assert!(
                    !sh.dead.load(Ordering::SeqCst),
                    "a streaming worker thread panicked"
                );
                if may_take && waiting.elapsed() > patience {
                    break;
                }
                std::hint::spin_loop();
            }
            if may_take && sh.done.load(Ordering::Acquire) != s {
                // The worker lost its core mid-slice: compute the slice here too.
                run_here(other, h_out, c_out, Recurrent::Compute);
                w.owes = Some(s);
                continue;
            }
            let output = lock(&sh.output);
            let (u0, u1) = w.units;
            let (hs, cs) = output.split_at(pass.batch * (u1 - u0));
            put_columns(h_out, hs, h, u0, u1);
            if lstm {
                put_columns(c_out, cs, h, u0, u1);
            }
        }
        // After a pause, publish `h_t` for the next step's recurrent halves, to the workers
        // awake (a parked one is not woken for it: see the module doc).
        let next = s + 1;
        for (k, w) in self.workers.iter().enumerate() {
            let sh = &w.shared;
            if !paused || w.owes.is_some() || sh.sleeping.load(Ordering::SeqCst) {
                continue;
            }
            {
                let mut next_h = lock(&sh.next_h);
                next_h.0 = next;
                next_h.1.copy_from_slice(h_out);
            }
            if k == 0 {
                self.published.copy_from_slice(h_out);
                self.published_for = next;
                sh.caller_pending.store(next, Ordering::Release);
            }
            sh.next_h_step.store(next, Ordering::Release);
        }
        self.last_end = Some(Instant::now());
    }
}

impl<F> Drop for StepWorkers<F> {
    fn drop(&mut self) {
        for w in &self.workers {
            w.shared.stop.store(true, Ordering::SeqCst);
            if let Some(t) = &w.handle {
                t.thread().unpark();
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.handle.take() {
                // A worker that panicked was already reported by `step`.
                let _ = t.join();
            }
        }
    }
}
