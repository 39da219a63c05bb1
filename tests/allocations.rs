//! Forward and backward allocate nothing inside the time loop: counted through a global
//! allocator. Outside the loop a pass makes a fixed number of small allocations (the
//! per-thread job lists; the weight gradients' packing scratch is in the workspace, grown by
//! its first backward), so the proof is that the count does not grow with `T`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, InitialState, InputGrads, Isa, Layer, Mode, Upstream,
};

struct Counting;

thread_local! {
    // Per thread, so tests running in parallel do not count each other.
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    let before = COUNT.with(|c| c.get());
    f();
    COUNT.with(|c| c.get()) - before
}

/// Allocations of one training forward + backward over `t` steps of `b` rows, and of one
/// inference forward.
fn count_rows<F: fused_rnn::Float>(cell: CellKind, isa: Isa, t: usize, b: usize) -> (usize, usize) {
    let (i, h) = (5, 9);
    let mut layer = Layer::<F>::with_seeded_init(cell, i, h, 7).unwrap();
    layer.set_isa(isa).unwrap();
    let x = vec![F::from_f64(0.25); t * b * i];
    let dy = vec![F::from_f64(0.5); t * b * h];
    let mut y = vec![F::ZERO; t * b * h];
    let mut dx = vec![F::ZERO; t * b * i];
    let mut dh0 = vec![F::ZERO; b * h];
    let mut grads = layer.zero_grads().unwrap();
    let mut ws = layer.workspace(t, b, Mode::Training).unwrap();
    let mut ws_inf = layer.workspace(t, b, Mode::Inference).unwrap();
    let train = allocations(|| {
        layer
            .forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                FinalState::default(),
            )
            .unwrap();
        let up = Upstream {
            dy: Some(&dy),
            ..Default::default()
        };
        let inputs = InputGrads {
            dx: Some(&mut dx),
            dh0: Some(&mut dh0),
            dc0: None,
        };
        layer
            .backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)
            .unwrap();
    });
    let infer = allocations(|| {
        layer
            .forward(
                &mut ws_inf,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                FinalState::default(),
            )
            .unwrap();
    });
    (train, infer)
}

/// [`count_rows`] at `B = 3`.
fn count<F: fused_rnn::Float>(cell: CellKind, isa: Isa, t: usize) -> (usize, usize) {
    count_rows::<F>(cell, isa, t, 3)
}

/// Batch-1 inference from 16 steps folds the projection into the steps on AVX-512 (through
/// the hidden-unit pass, on one thread too): its buffers are per pass, none per step.
#[test]
fn no_allocation_per_time_step_at_batch_one() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            let short = count_rows::<f32>(cell, isa, 16, 1).1;
            let long = count_rows::<f32>(cell, isa, 80, 1).1;
            assert_eq!(
                short,
                long,
                "{} f32 {isa:?} B=1: allocations grow with T",
                cell.name()
            );
        }
    }
}

#[test]
fn no_allocation_per_time_step() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            let short32 = count::<f32>(cell, isa, 2);
            let long32 = count::<f32>(cell, isa, 40);
            assert_eq!(
                short32,
                long32,
                "{} f32 {isa:?}: allocations grow with T",
                cell.name()
            );
            let short64 = count::<f64>(cell, isa, 2);
            let long64 = count::<f64>(cell, isa, 40);
            assert_eq!(
                short64,
                long64,
                "{} f64: allocations grow with T",
                cell.name()
            );
            println!(
                "{:>18} {:>8}: f32 train {} / infer {} allocations per pass, f64 {} / {} (T = 2 and T = 40 alike)",
                cell.name(),
                isa.name(),
                long32.0,
                long32.1,
                long64.0,
                long64.1
            );
        }
    }
}

/// Allocations of one padded training forward + backward (the second one on its workspace:
/// the first backward grows the weight-gradient scratch) over `lengths` scaled by `scale`.
fn count_padded(cell: CellKind, scale: usize) -> usize {
    let (i, h) = (5, 9);
    let lengths: Vec<usize> = [4, 0, 2, 4, 1].iter().map(|l| l * scale).collect();
    let (t, b) = (4 * scale, lengths.len());
    let layer = Layer::<f32>::with_seeded_init(cell, i, h, 7).unwrap();
    let x = vec![0.25f32; t * b * i];
    let dy = vec![0.5f32; t * b * h];
    let mut y = vec![0.0f32; t * b * h];
    let mut dx = vec![0.0f32; t * b * i];
    let mut dh0 = vec![0.0f32; b * h];
    let mut grads = layer.zero_grads().unwrap();
    let mut ws = layer.workspace(t, &lengths, Mode::Training).unwrap();
    let mut pass = || {
        layer
            .forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                FinalState::default(),
            )
            .unwrap();
        layer
            .backward(
                &mut ws,
                &x,
                Upstream {
                    dy: Some(&dy),
                    ..Upstream::default()
                },
                &mut grads,
                InputGrads {
                    dx: Some(&mut dx),
                    dh0: Some(&mut dh0),
                    dc0: None,
                },
                GradMode::Overwrite,
            )
            .unwrap();
    };
    pass();
    allocations(pass)
}

/// A padded pass runs one ordinary pass per segment (here 4: lengths 1, 2, 4 and the zero
/// row's none): its allocations do not grow with `T` either, and the workspace's buffers and
/// its one shared weight-gradient scratch are reused.
#[test]
fn no_allocation_per_time_step_in_a_padded_batch() {
    for cell in CellKind::ALL {
        let short = count_padded(cell, 1);
        let long = count_padded(cell, 10);
        assert_eq!(
            short,
            long,
            "{} padded: allocations grow with T",
            cell.name()
        );
        println!(
            "{:>18}: {short} allocations per padded training pass",
            cell.name()
        );
    }
}

#[test]
fn streaming_step_allocates_nothing() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            let mut layer = Layer::<f32>::with_seeded_init(cell, 6, 17, 3).unwrap();
            layer.set_isa(isa).unwrap();
            let mut s = fused_rnn::StreamingLayer::new(layer, 2).unwrap();
            let x = vec![0.3f32; 2 * 6];
            s.step(&x).unwrap();
            let n = allocations(|| {
                for _ in 0..50 {
                    s.step(&x).unwrap();
                }
            });
            assert_eq!(n, 0, "{} {isa:?}: streaming steps allocated", cell.name());
        }
    }
}
