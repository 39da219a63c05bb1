//! Our side of `benches/peers/stack_peers.py`: the stack shapes of issue #17 timed as the
//! peers are (median and fastest of repeated calls after two warm-up calls), so that one run
//! measures us and PyTorch / ONNX Runtime together.
//! `cargo run --release --example stack_shapes -- [threads]`

use std::time::Instant;

use fused_rnn::{
    CellKind, Directions, FinalState, GradMode, InitialState, InputGrads, Mode, Stack, Upstream,
};

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2);
    println!("fused-rnn, {threads} threads (median ms, fastest in brackets)\n");
    println!("| shape | mode | ours ms |");
    println!("|---|---|---|");
    // (layers, B, I = H, T, training, padded)
    let cases = [
        (1, 1, 256, 128, false, false),
        (1, 4, 256, 128, false, false),
        (1, 32, 256, 128, false, false),
        (2, 32, 512, 64, false, false),
        (2, 32, 512, 64, true, false),
        (2, 32, 512, 64, false, true),
        (2, 32, 512, 64, true, true),
    ];
    for (layers, b, ih, t, train, padded) in cases {
        let mut stack =
            Stack::<f32>::with_seeded_init(CellKind::Lstm, ih, ih, layers, Directions::Both, 1)
                .unwrap();
        stack.set_threads(threads).unwrap();
        // Lengths spread over [T/2, T], as stack_peers.py draws them.
        let lengths: Vec<usize> = (0..b).map(|r| t - r * (t / 2) / b).collect();
        let mode = if train {
            Mode::Training
        } else {
            Mode::Inference
        };
        let mut ws = if padded {
            stack.workspace(t, &lengths, mode).unwrap()
        } else {
            stack.workspace(t, b, mode).unwrap()
        };
        let x = vec![0.1f32; t * b * ih];
        let dy = vec![1.0f32; t * b * 2 * ih];
        let mut y = vec![0.0f32; t * b * 2 * ih];
        let mut dx = vec![0.0f32; t * b * ih];
        let mut grads = stack.zero_grads().unwrap();
        let reps = if layers == 2 { 5 } else { 21 };
        let mut times = Vec::new();
        for call in 0..reps + 2 {
            let t0 = Instant::now();
            stack
                .forward(
                    &mut ws,
                    &x,
                    InitialState::default(),
                    &mut y,
                    FinalState::default(),
                )
                .unwrap();
            if train {
                let up = Upstream {
                    dy: Some(&dy),
                    ..Default::default()
                };
                let inputs = InputGrads {
                    dx: Some(&mut dx),
                    ..Default::default()
                };
                stack
                    .backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)
                    .unwrap();
            }
            if call >= 2 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "| lstm L{layers} bi T={t} B={b} I=H={ih}{} | {} | {:.3} ({:.3}) |",
            if padded { " packed" } else { "" },
            if train { "fwd+bwd" } else { "fwd" },
            times[times.len() / 2],
            times[0]
        );
    }
}
