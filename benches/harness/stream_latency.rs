//! Latency of one streaming step when steps come spaced apart, as a stream fed by a sensor or
//! a network would run: an LSTM (or GRU) with I = H = 256, B = 1, one step every `gap`
//! microseconds (the caller busy-waits in between), with the workers' spin window set to
//! `spin` microseconds (see `StreamingLayer::set_spin_window`). Prints the fastest, 10th, 50th
//! and 90th percentile of the step times.
//!
//! `cargo run --release --example stream_latency -- [gap_us=1000] [spin_us=200] [threads=2] [steps=2000] [lstm|gru]`

use fused_rnn::{CellKind, GruVariant, Layer, StreamingLayer};
use std::time::{Duration, Instant};

fn main() -> Result<(), fused_rnn::Error> {
    let arg = |n: usize, default: u64| -> u64 {
        std::env::args()
            .nth(n)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (gap, spin) = (Duration::from_micros(arg(1, 1000)), arg(2, 200));
    let (threads, steps) = (arg(3, 2) as usize, arg(4, 2000) as usize);
    let cell = match std::env::args().nth(5).as_deref() {
        None | Some("lstm") => CellKind::Lstm,
        Some("gru") => CellKind::Gru(GruVariant::ResetAfter),
        Some(other) => {
            eprintln!("unknown cell {other:?}: lstm or gru");
            std::process::exit(2);
        }
    };
    let (i, h) = (256, 256);
    let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 1)?;
    layer.set_threads(threads)?;
    let mut stream = StreamingLayer::new(layer, 1)?;
    stream.set_spin_window(Duration::from_micros(spin));
    let x: Vec<f32> = (0..i).map(|k| ((k % 17) as f32 - 8.0) / 8.0).collect();
    let mut times = Vec::with_capacity(steps);
    for _ in 0..steps {
        let pause = Instant::now();
        while pause.elapsed() < gap {
            std::hint::spin_loop();
        }
        let t0 = Instant::now();
        stream.step(&x)?;
        times.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: usize| times[(times.len() - 1) * q / 100];
    println!(
        "{} I=H={h} B=1, {threads} threads, a step every {} us, spin window {spin} us: \
         fastest {:.1}, p10 {:.1}, median {:.1}, p90 {:.1} us per step",
        cell.name(),
        gap.as_micros(),
        at(0),
        at(10),
        at(50),
        at(90)
    );
    Ok(())
}
