//! Sizes past memory, through every public constructor and pass, under an address-space limit
//! (`ulimit -v`, 1.5 GB): each call returns an error, and the process never aborts.
//!
//! The test re-runs its own binary in a shell that sets the limit (so the rest of the suite
//! runs without it); the child runs [`sweep`] and prints one line per call. An abort in the
//! child (the allocator's "memory allocation failed") fails the test with the child's output.

use std::process::Command;

use fused_rnn::bench_support::PackedStepGemm;
use fused_rnn::{
    CellKind, Dims, Direction, FinalState, InitialState, Layer, LayerGrads, LayerWeights, Mode,
    OutputLayer, RnnActivation, StreamingLayer, Workspace, reference,
};

/// The limit, in KiB: room for the test binary and its threads, far below every request.
const LIMIT_KIB: u64 = 1_500_000;
const CHILD: &str = "FUSED_RNN_OVERSIZED_CHILD";

#[test]
fn oversized_requests_under_a_memory_limit_are_errors() {
    if std::env::var_os(CHILD).is_some() {
        sweep();
        return;
    }
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: needs sh and ulimit -v");
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {LIMIT_KIB} && exec \"$0\" --exact oversized_requests_under_a_memory_limit_are_errors --nocapture --test-threads=1"
        ))
        .arg(&exe)
        .env(CHILD, "1")
        .output()
        .expect("run the child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the child failed:\n{text}");
    assert!(
        text.contains("sweep done"),
        "the sweep did not finish:\n{text}"
    );
}

/// One call of the sweep: it must return `Err`.
fn refused<T>(what: &str, r: fused_rnn::Result<T>) {
    match r {
        Err(e) => println!("{what}: {e}"),
        Ok(_) => panic!("{what}: accepted a request past memory"),
    }
}

fn sweep() {
    let lstm = CellKind::Lstm;
    let rnn = CellKind::Rnn(RnnActivation::Tanh);
    // Constructors.
    refused(
        "Layer::with_seeded_init 64 GiB",
        Layer::<f32>::with_seeded_init(lstm, 1 << 20, 1 << 12, 0),
    );
    refused(
        "Layer::with_seeded_init overflow",
        Layer::<f32>::with_seeded_init(lstm, usize::MAX / 2, 2, 0),
    );
    let big = vec![0.0f32; 1 << 27]; // 512 MiB: a layer copying it twice cannot fit.
    refused(
        "Layer::new copies past the limit",
        (0..3)
            .map(|_| {
                let w = LayerWeights {
                    weight_ih: &big,
                    weight_hh: &[0.5],
                    bias_ih: &[0.0],
                    bias_hh: &[0.0],
                };
                Layer::new(rnn, 1 << 27, 1, w)
            })
            .collect::<fused_rnn::Result<Vec<_>>>(),
    );
    drop(big);
    refused(
        "LayerGrads::zeros 64 GiB",
        LayerGrads::<f32>::zeros(lstm, 1 << 20, 1 << 12),
    );
    refused(
        "OutputLayer::with_seeded_init 4 TiB",
        OutputLayer::<f32>::with_seeded_init(1 << 40, 1, 0),
    );
    refused(
        "OutputLayer::with_seeded_init overflow",
        OutputLayer::<f32>::with_seeded_init(1 << 62, 1, 0),
    );
    refused(
        "PackedStepGemm overflow",
        PackedStepGemm::new(&[], 1 << 32, 1 << 32),
    );

    // Workspaces, threads, streams of a small layer.
    let mut small = Layer::<f32>::with_seeded_init(lstm, 8, 16, 0).unwrap();
    refused(
        "Layer::workspace T = 2^30",
        small.workspace(1 << 30, 4, Mode::Training),
    );
    refused(
        "Layer::workspace padded, lengths 2^30",
        small.workspace(1 << 30, &[1 << 30, 1 << 29], Mode::Training),
    );
    refused(
        "Layer::workspace padded T = 2^62",
        small.workspace(1 << 62, &[1, 2], Mode::Training),
    );
    let dims = Dims {
        seq_len: 1 << 28,
        batch: 8,
        input: 8,
        hidden: 16,
    };
    refused(
        "Workspace::new",
        Workspace::<f32>::new(lstm, dims, Mode::Inference),
    );
    refused("Layer::set_threads 2^40", small.set_threads(1 << 40));
    refused(
        "Layer::set_threads usize::MAX",
        small.set_threads(usize::MAX),
    );
    refused(
        "StreamingLayer::new batch 2^40",
        StreamingLayer::new(small.clone(), 1 << 40),
    );

    // A pass whose per-step bookkeeping (a slice per step and buffer) does not fit beside a
    // workspace that does: RNN, T = 2^25, B = I = H = 1.
    let tiny = Layer::<f32>::with_seeded_init(rnn, 1, 1, 0).unwrap();
    let t = 1 << 25;
    match tiny.workspace(t, 1, Mode::Training) {
        Err(e) => println!("long workspace: {e}"),
        Ok(mut ws) => {
            let x = vec![0.5f32; t];
            let mut y = vec![0.0f32; t];
            let r = tiny.forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                FinalState::default(),
            );
            // Whether this fits depends on what else the process holds; it must not abort.
            println!("long forward: {r:?}");
        }
    }

    // The reference: an LSTM with T = 2^21 and H = 2048 keeps 64 GiB of gates.
    let (rt, rh) = (1 << 21, 2048);
    let ref_layer = Layer::<f32>::with_seeded_init(lstm, 1, rh, 0).unwrap();
    let x = vec![0.0f32; rt];
    let rd = Dims {
        seq_len: rt,
        batch: 1,
        input: 1,
        hidden: rh,
    };
    refused(
        "reference::forward 64 GiB",
        reference::forward(lstm, rd, &ref_layer.weights(), &x, None, None),
    );
    println!("sweep done");
}
