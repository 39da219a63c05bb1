//! The synchronisation of a pass split by hidden units, and the one `unsafe` outside
//! `kernels/`: [`StepClaims`] hands each `(slice, step)` pair to exactly one thread, in step
//! order, and [`StepOutputs`] lets the holder of a pair write its slice's columns of its step
//! and read every earlier step whole, with no lock. The safety argument is here, beside the
//! code; `columns.rs` and its callers use these types without `unsafe`.

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a thread waits for a slice's own thread to claim it before computing it itself.
/// A slice normally takes a few microseconds; this is long enough that slices stay with their
/// thread (and their weights in that core's cache) and short enough that a preempted thread
/// costs little.
pub(crate) const PATIENCE: Duration = Duration::from_micros(30);

/// Per-slice state handed out exclusively by [`StepClaims::work`].
pub(crate) struct Slots<T>(Vec<UnsafeCell<T>>);

// SAFETY: a slot is only reached through `StepClaims::work`, which gives `&mut` access to slot
// `c` only to the single thread that claimed `(c, t)`, after every earlier holder of the slot
// has finished (see `work`); `T: Send` because the slot moves between threads that way.
unsafe impl<T: Send> Sync for Slots<T> {}

impl<T> Slots<T> {
    /// One slot per slice.
    pub(crate) fn new(slots: Vec<T>) -> Self {
        Slots(slots.into_iter().map(UnsafeCell::new).collect())
    }
    /// The slots back, after the pass.
    pub(crate) fn into_inner(self) -> Vec<T> {
        self.0.into_iter().map(UnsafeCell::into_inner).collect()
    }
}

/// Who computes which `(slice, step)`, and when a step is complete.
pub(crate) struct StepClaims {
    /// Per slice: the next step to be claimed.
    next: Vec<AtomicUsize>,
    /// `(slice, step)` pairs finished so far.
    done: AtomicUsize,
    /// Set when a pair's work panicked: the waiting threads then stop instead of waiting
    /// forever for a pair that will never finish, and the panic reaches the caller.
    poisoned: AtomicBool,
    steps: usize,
}

/// Sets `poisoned` if dropped while its thread unwinds from a panic.
struct PoisonOnPanic<'a>(&'a AtomicBool);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
}

impl StepClaims {
    /// `slices × steps` pairs, none claimed.
    pub(crate) fn new(slices: usize, steps: usize) -> Self {
        StepClaims {
            next: (0..slices).map(|_| AtomicUsize::new(0)).collect(),
            done: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
            steps,
        }
    }

    fn slices(&self) -> usize {
        self.next.len()
    }

    /// Tries to claim `(c, t)`; on success runs `f` on slot `c`, counts it done and returns
    /// true.
    fn try_run<T>(
        &self,
        slots: &Slots<T>,
        c: usize,
        t: usize,
        f: &impl Fn(&mut T, &Turn<'_>),
    ) -> bool {
        if self.next[c]
            .compare_exchange(t, t + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: the exchange above succeeds for exactly one thread per `(c, t)`, so this
            // thread is the only one with access to slot `c` until it counts `(c, t)` done.
            // The previous holder of the slot, `(c, t - 1)`, finished and released its writes
            // (the `Release` below) before `done` reached `t · slices`, which every caller of
            // `try_run` for step `t` has observed with `Acquire` (see `wait_for_step`).
            let slot = unsafe { &mut *slots.0[c].get() };
            let guard = PoisonOnPanic(&self.poisoned);
            f(
                slot,
                &Turn {
                    claims: self,
                    slice: c,
                    step: t,
                },
            );
            drop(guard);
            self.done.fetch_add(1, Ordering::Release);
            true
        } else {
            false
        }
    }

    /// Waits until every slice of steps `< t` is done, computing unclaimed slices of step
    /// `t - 1` itself once they have waited [`PATIENCE`] for their own thread, or at once if
    /// `impatient` (this thread took a slice over at the previous step: its thread is likely
    /// still away, e.g. preempted). Leaves `impatient` saying whether it took one over now.
    /// Returns false (without waiting further) if another thread's work panicked.
    fn wait_for_step<T>(
        &self,
        slots: &Slots<T>,
        t: usize,
        f: &impl Fn(&mut T, &Turn<'_>),
        impatient: &mut bool,
    ) -> bool {
        let patience = if *impatient { Duration::ZERO } else { PATIENCE };
        let mut took_over = false;
        let need = t * self.slices();
        let mut since: Option<Instant> = None;
        let mut spins = 0u32;
        // A pair of step `t` (or later) can only be claimed once `done >= t · slices`, so
        // `done` reaching `need` means exactly that every pair of the earlier steps finished.
        while self.done.load(Ordering::Acquire) < need {
            core::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) {
                continue;
            }
            if self.poisoned.load(Ordering::Acquire) {
                return false;
            }
            let start = *since.get_or_insert_with(Instant::now);
            if start.elapsed() >= patience {
                for c in 0..self.slices() {
                    took_over |= self.try_run(slots, c, t - 1, f);
                }
            }
        }
        *impatient = took_over;
        true
    }

    /// Runs as worker `me`: for each step, waits for the previous one, then claims its own
    /// slice (`me % slices`). `f(slot, slice, step)` runs exactly once per pair over all
    /// workers, and for a given step only after every slice of the earlier steps finished
    /// (their writes visible). `f` learns which pair it runs from its [`Turn`]. Returns when every pair is done, so a single worker completes
    /// the pass alone if no other ever starts; or early, if another worker's `f` panicked
    /// (that panic then reaches the caller through the scope that runs the workers).
    pub(crate) fn work<T>(&self, me: usize, slots: &Slots<T>, f: &impl Fn(&mut T, &Turn<'_>)) {
        let own = me % self.slices();
        let mut impatient = false;
        for t in 0..self.steps {
            if t > 0 && !self.wait_for_step(slots, t, f, &mut impatient) {
                return;
            }
            self.try_run(slots, own, t, f);
        }
        self.wait_for_step(slots, self.steps, f, &mut impatient);
    }
}

/// The pair `(slice, step)` a thread holds while [`StepClaims::work`] runs its work on it.
/// Made only by the claims, lent to the work for the duration of the call: holding one proves
/// that no other thread holds the same pair and that every pair of the earlier steps is done.
pub(crate) struct Turn<'c> {
    claims: &'c StepClaims,
    slice: usize,
    step: usize,
}

impl Turn<'_> {
    /// The slice this turn computes.
    #[cfg(test)]
    pub(crate) fn slice(&self) -> usize {
        self.slice
    }
    /// The step this turn computes.
    pub(crate) fn step(&self) -> usize {
        self.step
    }
}

/// A `[steps, rows, width]` output of a pass split by hidden units: slice `c` owns columns
/// `columns[c]` of every row; the holder of a [`Turn`] writes its slice's columns of its step
/// and reads any earlier step whole.
pub(crate) struct StepOutputs<'a, 'c, F> {
    buf: SharedBuf<'a, F>,
    claims: &'c StepClaims,
    rows: usize,
    width: usize,
    columns: Vec<(usize, usize)>,
}

impl<'a, 'c, F: Copy> StepOutputs<'a, 'c, F> {
    /// `buf [steps, rows, width]` shared by the slices of `claims`, slice `c` owning columns
    /// `columns[c]`. Panics (a bug of the caller, never of input) unless there is one range per
    /// slice, the ranges are disjoint and within `width`, and `buf` holds `claims`' steps.
    pub(crate) fn new(
        claims: &'c StepClaims,
        buf: &'a mut [F],
        rows: usize,
        width: usize,
        columns: Vec<(usize, usize)>,
    ) -> Self {
        assert_eq!(columns.len(), claims.slices(), "one column range per slice");
        assert_eq!(
            buf.len(),
            claims.steps * rows * width,
            "[steps, rows, width]"
        );
        let mut sorted = columns.clone();
        sorted.sort_unstable();
        let mut end = 0;
        for &(u0, u1) in &sorted {
            assert!(
                end <= u0 && u0 <= u1 && u1 <= width,
                "disjoint ranges within width"
            );
            end = u1;
        }
        StepOutputs {
            buf: SharedBuf::new(buf),
            claims,
            rows,
            width,
            columns,
        }
    }

    /// Step `t [rows, width]`, complete: `t` must be before the turn's step.
    pub(crate) fn completed(&self, turn: &Turn<'_>, t: usize) -> &[F] {
        assert!(
            core::ptr::eq(turn.claims, self.claims),
            "a turn of these claims"
        );
        assert!(t < turn.step, "only an earlier step is complete");
        let n = self.rows * self.width;
        // SAFETY: the turn proves every pair of steps before `turn.step` is done, with its
        // writes visible (`try_run` releases, `wait_for_step` acquires), and writes go only to
        // the writer's own step (`put`), so nothing writes step `t` any more.
        unsafe { self.buf.get(t * n, n) }
    }

    /// Writes `src [rows, u1 - u0]` into the turn's slice's columns `u0..u1` of its step.
    pub(crate) fn put(&self, turn: &Turn<'_>, src: &[F]) {
        assert!(
            core::ptr::eq(turn.claims, self.claims),
            "a turn of these claims"
        );
        let (u0, u1) = self.columns[turn.slice];
        let w = u1 - u0;
        assert_eq!(src.len(), self.rows * w, "[rows, u1 - u0]");
        for (r, s) in src.chunks_exact(w.max(1)).take(self.rows).enumerate() {
            let at = (turn.step * self.rows + r) * self.width + u0;
            // SAFETY: only the holder of `(slice, step)` (one thread, the claims guarantee)
            // writes these columns of this step (the ranges are disjoint, checked in `new`),
            // and nobody reads this step before it is complete (`completed` takes earlier
            // steps only).
            unsafe { self.buf.get_mut(at, w) }.copy_from_slice(s);
        }
    }
}

/// A buffer that slices write in disjoint parts and read whole once a step is complete.
struct SharedBuf<'a, F> {
    ptr: *mut F,
    len: usize,
    _borrow: PhantomData<&'a mut [F]>,
}

// SAFETY: `SharedBuf` is a `&mut [F]` split between threads; its unsafe accessors put the
// absence of conflicting accesses on their callers.
unsafe impl<F: Send + Sync> Sync for SharedBuf<'_, F> {}

impl<'a, F> SharedBuf<'a, F> {
    /// Shares `buf` for the duration of its borrow.
    fn new(buf: &'a mut [F]) -> Self {
        SharedBuf {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _borrow: PhantomData,
        }
    }

    /// Elements `at..at + n` to read.
    ///
    /// # Safety
    /// No thread may write these elements while the returned slice lives.
    unsafe fn get(&self, at: usize, n: usize) -> &[F] {
        assert!(
            at <= self.len && n <= self.len - at,
            "SharedBuf::get out of bounds"
        );
        // SAFETY: in bounds (checked above) of the borrowed buffer; no concurrent writer (the
        // caller's promise).
        unsafe { core::slice::from_raw_parts(self.ptr.add(at), n) }
    }

    /// Elements `at..at + n` to write.
    ///
    /// # Safety
    /// No other thread may read or write these elements while the returned slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get_mut(&self, at: usize, n: usize) -> &mut [F] {
        assert!(
            at <= self.len && n <= self.len - at,
            "SharedBuf::get_mut out of bounds"
        );
        // SAFETY: in bounds (checked above); exclusive (the caller's promise).
        unsafe { core::slice::from_raw_parts_mut(self.ptr.add(at), n) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in one worker's work reaches the caller instead of leaving the others waiting
    /// for a step that never completes.
    #[test]
    fn a_panicking_slice_does_not_hang_the_others() {
        let (tx, rx) = std::sync::mpsc::channel();
        // Detached, so that a hang fails the test (by the timeout below) instead of blocking it.
        std::thread::spawn(move || {
            let (slices, steps) = (2, 20);
            let claims = StepClaims::new(slices, steps);
            let slots = Slots::new(vec![(); slices]);
            let f = |_: &mut (), turn: &Turn<'_>| {
                assert!(!(turn.slice() == 1 && turn.step() == 7), "injected failure");
            };
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                std::thread::scope(|s| {
                    let (claims, slots, f) = (&claims, &slots, &f);
                    s.spawn(move || claims.work(1, slots, f));
                    claims.work(0, slots, f);
                });
            }));
            let _ = tx.send(r.is_err());
        });
        let panicked = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("the workers hung after a panic");
        assert!(panicked, "the injected panic must reach the caller");
    }

    /// Every pair runs once, in step order per slice, after all of the previous step; with
    /// one worker only, or several.
    #[test]
    fn claims_run_every_pair_once_in_order() {
        for workers in [1, 2, 3] {
            let (slices, steps) = (3, 50);
            let claims = StepClaims::new(slices, steps);
            let finished = AtomicUsize::new(0);
            let slots = Slots::new(vec![Vec::<usize>::new(); slices]);
            let f = |log: &mut Vec<usize>, turn: &Turn<'_>| {
                let t = turn.step();
                // Every slice of the steps before t is finished.
                assert!(finished.load(Ordering::SeqCst) >= t * slices);
                log.push(t);
                finished.fetch_add(1, Ordering::SeqCst);
            };
            std::thread::scope(|s| {
                for me in 1..workers {
                    let (claims, slots, f) = (&claims, &slots, &f);
                    s.spawn(move || claims.work(me, slots, f));
                }
                claims.work(0, &slots, &f);
            });
            for log in slots.into_inner() {
                assert_eq!(log, (0..steps).collect::<Vec<_>>());
            }
        }
    }

    /// A turn writes its slice's columns of its step and reads earlier steps whole: three
    /// slices on three threads build `[steps, rows, width]` where element `(t, r, u)` is the
    /// sum of row `r` of step `t - 1` plus `u`, exactly as one thread computes it.
    #[test]
    fn step_outputs_see_every_earlier_step_whole() {
        let (steps, rows, width) = (40, 3, 10);
        let columns = vec![(0, 4), (4, 7), (7, 10)];
        let expected = {
            let mut y = vec![0u64; steps * rows * width];
            for t in 0..steps {
                for r in 0..rows {
                    let prev: u64 = if t == 0 {
                        1
                    } else {
                        y[((t - 1) * rows + r) * width..][..width]
                            .iter()
                            .sum::<u64>()
                            % 1000
                    };
                    for u in 0..width {
                        y[(t * rows + r) * width + u] = prev + u as u64;
                    }
                }
            }
            y
        };
        for workers in [1, 3] {
            let claims = StepClaims::new(columns.len(), steps);
            let mut y = vec![0u64; steps * rows * width];
            let out = StepOutputs::new(&claims, &mut y, rows, width, columns.clone());
            let slots = Slots::new(columns.clone());
            let f = |&mut (u0, u1): &mut (usize, usize), turn: &Turn<'_>| {
                let t = turn.step();
                let mut mine = Vec::new();
                for r in 0..rows {
                    let prev: u64 = if t == 0 {
                        1
                    } else {
                        out.completed(turn, t - 1)[r * width..][..width]
                            .iter()
                            .sum::<u64>()
                            % 1000
                    };
                    mine.extend((u0..u1).map(|u| prev + u as u64));
                }
                out.put(turn, &mine);
            };
            std::thread::scope(|s| {
                for me in 1..workers {
                    let (claims, slots, f) = (&claims, &slots, &f);
                    s.spawn(move || claims.work(me, slots, f));
                }
                claims.work(0, &slots, &f);
            });
            drop(out);
            assert_eq!(y, expected, "{workers} workers");
        }
    }

    /// A turn cannot read its own step or a later one.
    #[test]
    #[should_panic(expected = "only an earlier step is complete")]
    fn a_turn_cannot_read_its_own_step() {
        let claims = StepClaims::new(1, 2);
        let mut y = vec![0u8; 2];
        let out = StepOutputs::new(&claims, &mut y, 1, 1, vec![(0, 1)]);
        let slots = Slots::new(vec![()]);
        claims.work(0, &slots, &|_: &mut (), turn: &Turn<'_>| {
            let _ = out.completed(turn, turn.step());
        });
    }
}
