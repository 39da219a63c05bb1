//! No allocation per step on the threaded paths: a process-wide allocation count (the other
//! allocation tests count per thread, which would miss what the pool's threads allocate), so
//! this binary holds a single test.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use fused_rnn::Direction;
use fused_rnn::{CellKind, FinalState, InitialState, Layer, Mode, StreamingLayer};

struct Counting;

static COUNT: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; the counter is a side
// effect that allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = COUNT.load(Ordering::SeqCst);
    f();
    COUNT.load(Ordering::SeqCst) - before
}

#[test]
fn threaded_paths_allocate_nothing_per_step() {
    // A streaming step split by hidden units (>= 3·2^15 multiply-adds, 2 threads: one worker
    // thread besides the caller): nothing, on either thread.
    let (i, h) = (256, 256);
    let mut layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, i, h, 5).unwrap();
    layer.set_threads(2).unwrap();
    // `set_threads` returns once the pool's threads have started: nothing of their start-up
    // (6 allocations for two rayon threads) is left to happen later, e.g. during a step.
    let n = allocations(|| std::thread::sleep(std::time::Duration::from_millis(20)));
    assert_eq!(
        n, 0,
        "the pool's threads allocated {n} times after set_threads returned"
    );
    let mut s = StreamingLayer::new(layer.clone(), 1).unwrap();
    let x = vec![0.1f32; i];
    s.step(&x).unwrap();
    let n = allocations(|| {
        for _ in 0..20 {
            s.step(&x).unwrap();
        }
    });
    assert_eq!(n, 0, "20 threaded streaming steps allocated {n} times");
    // Steps 100 µs apart (within the workers' spin window): in each pause the worker computes
    // the next step's recurrent halves and reads its input weights back into its cache.
    // Nothing either.
    // (A hundred of them: a worker that loses its core for a while, as on a loaded machine,
    // skips the pauses it misses.)
    let n = allocations(|| {
        for _ in 0..100 {
            let pause = std::time::Instant::now();
            while pause.elapsed() < std::time::Duration::from_micros(100) {
                std::hint::spin_loop();
            }
            s.step(&x).unwrap();
        }
    });
    assert_eq!(
        n, 0,
        "100 spaced threaded streaming steps allocated {n} times"
    );

    // A batch-1 inference pass split by hidden units: what it allocates does not grow with T.
    let mut per_pass = Vec::new();
    for t in [2, 40] {
        let mut ws = layer.workspace(t, 1, Mode::Inference).unwrap();
        let xs = vec![0.1f32; t * i];
        let mut y = vec![0.0f32; t * h];
        let mut run = || {
            let fin = FinalState::default();
            layer
                .forward(
                    &mut ws,
                    Direction::Forward,
                    &xs,
                    InitialState::default(),
                    &mut y,
                    fin,
                )
                .unwrap()
        };
        run();
        per_pass.push(allocations(run));
    }
    assert_eq!(
        per_pass[0], per_pass[1],
        "allocations per pass grow with T: {per_pass:?}"
    );
}
