//! Our side of `benches/peers/`: the shapes of `peers.py`, timed the same way (median
//! of repeated calls after two warm-up calls), so that one `run.sh` measures us and the peers
//! in one session. `cargo run --release --example peer_shapes -- [threads]`.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, GruVariant, InitialState, InputGrads, Layer, Mode,
    RnnActivation, StreamingLayer, Upstream,
};
use std::time::Instant;

/// Median and fastest milliseconds of `reps` calls of `f`, after two warm-up calls.
fn median_ms(reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    f();
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0])
}

/// A layer of `cell` on `threads` threads with fixed weights, and a fixed input `x [T, B, I]`.
fn layer_and_input(
    cell: CellKind,
    (t, b, i, h): (usize, usize, usize, usize),
    threads: usize,
) -> Result<(Layer<f32>, Vec<f32>), fused_rnn::Error> {
    let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 1)?;
    layer.set_threads(threads)?;
    let x = (0..t * b * i)
        .map(|k| ((k % 17) as f32 - 8.0) / 8.0)
        .collect();
    Ok((layer, x))
}

/// One forward pass from the zero state.
fn forward(layer: &Layer<f32>, ws: &mut fused_rnn::Workspace<f32>, x: &[f32], y: &mut [f32]) {
    let (init, fin) = (InitialState::default(), FinalState::default());
    layer
        .forward(ws, Direction::Forward, x, init, y, fin)
        .expect("forward");
}

fn main() -> Result<(), fused_rnn::Error> {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let lstm = CellKind::Lstm;
    let gru = CellKind::Gru(GruVariant::ResetAfter);
    println!("fused-rnn, {threads} threads (median ms, as peers.py)\n");
    println!("| shape | mode | ours ms | ours GFLOP/s | ours best ms |");
    println!("|---|---|---|---|---|");
    // Training, forward + backward with input and weight gradients (as peers.py's PyTorch case:
    // the loss is the sum of y, so dy is all ones).
    for cell in [lstm, gru, CellKind::Rnn(RnnActivation::Tanh)] {
        let (t, b, i, h) = (128, 32, 512, 512);
        let (layer, x) = layer_and_input(cell, (t, b, i, h), threads)?;
        let dy = vec![1.0f32; t * b * h];
        let mut ws = layer.workspace(t, b, Mode::Training)?;
        let mut y = vec![0.0f32; t * b * h];
        let mut dx = vec![0.0f32; t * b * i];
        let mut grads = layer.zero_grads().unwrap();
        let flops = 3.0 * 2.0 * (t * b * cell.gates() * h * (i + h)) as f64;
        let reps = if flops > 5e10 { 5 } else { 21 };
        let (ms, best) = median_ms(reps, || {
            forward(&layer, &mut ws, &x, &mut y);
            let up = Upstream {
                dy: Some(&dy),
                ..Default::default()
            };
            let inputs = InputGrads {
                dx: Some(&mut dx),
                ..Default::default()
            };
            layer
                .backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)
                .expect("backward");
        });
        println!(
            "| {} T={t} B={b} I={i} H={h} | fwd+bwd | {ms:.3} | {:.1} | {best:.3} |",
            cell.name(),
            flops / ms / 1e6
        );
    }
    // (cell, T, B, I, H): the inference shapes of peers.py.
    let shapes = [
        (lstm, 64, 32, 512, 512),
        (gru, 64, 32, 512, 512),
        (lstm, 128, 1, 256, 256),
        (gru, 128, 1, 256, 256),
        (lstm, 1, 1, 256, 256),
        (lstm, 100, 16, 64, 64),
    ];
    for (cell, t, b, i, h) in shapes {
        let (layer, x) = layer_and_input(cell, (t, b, i, h), threads)?;
        let reps = if t * b * h >= 1 << 18 { 21 } else { 200 };
        let (ms, best) = if t == 1 {
            // One streaming step, state carried (as a session would use it).
            let mut s = StreamingLayer::new(layer, b)?;
            median_ms(2000, || {
                s.step(&x).expect("step");
            })
        } else {
            let mut ws = layer.workspace(t, b, Mode::Inference)?;
            let mut y = vec![0.0f32; t * b * h];
            median_ms(reps, || forward(&layer, &mut ws, &x, &mut y))
        };
        let flops = 2.0 * (t * b * cell.gates() * h * (i + h)) as f64;
        println!(
            "| {} T={t} B={b} I={i} H={h} | fwd | {ms:.4} | {:.1} | {best:.4} |",
            cell.name(),
            flops / ms / 1e6
        );
    }
    Ok(())
}
