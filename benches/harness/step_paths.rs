//! One inference step two ways, LSTM I = H = 256, B = 1, on one and on two threads:
//! `Layer::forward` with T = 1 and the state passed in and out (what the C API's stateless
//! `frnn_step` runs), against `StreamingLayer::step` (the state kept, the C API's
//! `frnn_stream_step`). Prints the fastest and the median step of `steps` back-to-back steps.
//!
//! `cargo run --release --example step_paths -- [steps=3000]`

use fused_rnn::Direction;
use fused_rnn::{CellKind, FinalState, InitialState, Layer, Mode, StreamingLayer};
use std::time::Instant;

/// The fastest and the median of `times` (µs), sorted in place.
fn fastest_and_median(times: &mut [f64]) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    (times[0], times[times.len() / 2])
}

fn main() -> Result<(), fused_rnn::Error> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000)
        .max(1);
    let (i, h) = (256, 256);
    let x: Vec<f32> = (0..i).map(|k| ((k % 17) as f32 - 8.0) / 8.0).collect();
    for threads in [1, 2] {
        let mut layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, i, h, 1)?;
        layer.set_threads(threads)?;
        let mut ws = layer.workspace(1, 1, Mode::Inference)?;
        let (mut h_t, mut c_t) = (vec![0.0f32; h], vec![0.0f32; h]);
        let (mut h_prev, mut c_prev) = (vec![0.0f32; h], vec![0.0f32; h]);
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            h_prev.copy_from_slice(&h_t);
            c_prev.copy_from_slice(&c_t);
            let t0 = Instant::now();
            let init = InitialState {
                h0: Some(&h_prev),
                c0: Some(&c_prev),
            };
            let fin = FinalState {
                h_n: None,
                c_n: Some(&mut c_t),
            };
            layer.forward(&mut ws, Direction::Forward, &x, init, &mut h_t, fin)?;
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        let (fastest, median) = fastest_and_median(&mut times);
        println!(
            "Layer::forward T=1, {threads} thread(s): fastest {fastest:.1}, median {median:.1} us"
        );
        let mut stream = StreamingLayer::new(layer, 1)?;
        times.clear();
        for _ in 0..steps {
            let t0 = Instant::now();
            stream.step(&x)?;
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        let (fastest, median) = fastest_and_median(&mut times);
        println!(
            "StreamingLayer::step, {threads} thread(s): fastest {fastest:.1}, median {median:.1} us"
        );
    }
    Ok(())
}
