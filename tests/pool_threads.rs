//! A layer's threads end with the layer: when the last layer sharing a pool is dropped, its
//! threads have exited by the time the drop returns (rayon's own pool leaves them to exit
//! later; see `JoinedPool`).
//!
//! One test in this binary on purpose: it counts the process's threads in
//! `/proc/self/task`, which other tests running at the same time would change.

#![cfg(target_os = "linux")]

use fused_rnn::Direction;
use fused_rnn::{CellKind, FinalState, GruVariant, InitialState, Layer, Mode};

/// The threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}

/// One training forward big enough to run on every thread (B = 16 rows, split by rows).
fn run(layer: &Layer<f32>) {
    let (b, i, h) = (16, layer.input_size(), layer.hidden_size());
    let mut ws = layer.workspace(4, b, Mode::Training).expect("workspace");
    let x = vec![0.25f32; 4 * b * i];
    let mut y = vec![0.0; 4 * b * h];
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .expect("forward");
}

#[test]
fn dropping_the_last_layer_of_a_pool_joins_its_threads() {
    let base = threads();
    for round in 0..20 {
        let mut layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, 64, 64, 7).expect("layer");
        layer.set_threads(3).expect("threads");
        assert_eq!(threads(), base + 3, "round {round}: a pool of 3");
        run(&layer);
        // A clone shares the pool: dropping one of the two keeps the threads.
        let clone = layer.clone();
        drop(layer);
        assert_eq!(
            threads(),
            base + 3,
            "round {round}: the clone still has them"
        );
        run(&clone);
        drop(clone);
        assert_eq!(threads(), base, "round {round}: the last drop joined them");
    }
    // Going back to one thread drops the pool the same way.
    let mut layer =
        Layer::<f32>::with_seeded_init(CellKind::Gru(GruVariant::ResetAfter), 64, 64, 7)
            .expect("layer");
    layer.set_threads(2).expect("threads");
    assert_eq!(threads(), base + 2);
    layer.set_threads(1).expect("one thread");
    assert_eq!(threads(), base, "set_threads(1) joined the pool's threads");
}
