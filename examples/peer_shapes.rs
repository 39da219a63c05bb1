//! Our side of `benches/peers/`: the inference shapes of `peers.py`, timed the same way (median
//! of repeated calls after two warm-up calls), so that one `run.sh` measures us and the peers
//! in one session. `cargo run --release --example peer_shapes -- [threads]`.

use fused_rnn::{CellKind, FinalState, GruVariant, InitialState, Layer, Mode, StreamingLayer};
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
        let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 1)?;
        layer.set_threads(threads)?;
        let x: Vec<f32> = (0..t * b * i)
            .map(|k| ((k % 17) as f32 - 8.0) / 8.0)
            .collect();
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
            median_ms(reps, || {
                layer
                    .forward(
                        &mut ws,
                        &x,
                        InitialState::default(),
                        &mut y,
                        FinalState::default(),
                    )
                    .expect("forward");
            })
        };
        let flops = 2.0 * (t * b * cell.gates() * h * (i + h)) as f64;
        println!(
            "| {} T={t} B={b} I={i} H={h} | fwd | {ms:.3} | {:.1} | {best:.3} |",
            cell.name(),
            flops / ms / 1e6
        );
    }
    Ok(())
}
