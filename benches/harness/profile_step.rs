//! A fixed workload for profilers (perf, callgrind): LSTM/GRU forward+backward at B=32,
//! I=H=512, T=32, repeated. `cargo run --release --example profile_step -- [lstm|gru] [reps] [threads]`.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, GruVariant, InitialState, InputGrads, Layer, Mode, Upstream,
};

fn main() -> Result<(), fused_rnn::Error> {
    let cell = match std::env::args().nth(1).as_deref() {
        Some("gru") => CellKind::Gru(GruVariant::ResetAfter),
        _ => CellKind::Lstm,
    };
    let reps: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let threads: usize = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (t, b, i, h) = (32, 32, 512, 512);
    let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 1)?;
    layer.set_threads(threads)?;
    let mut ws = layer.workspace(t, b, Mode::Training)?;
    let x = vec![0.1f32; t * b * i];
    let dy = vec![0.01f32; t * b * h];
    let mut y = vec![0.0f32; t * b * h];
    let mut grads = layer.zero_grads().unwrap();
    let start = std::time::Instant::now();
    for _ in 0..reps {
        layer.forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )?;
        let up = Upstream {
            dy: Some(&dy),
            ..Default::default()
        };
        layer.backward(
            &mut ws,
            &x,
            up,
            &mut grads,
            InputGrads::default(),
            GradMode::Overwrite,
        )?;
    }
    let secs = start.elapsed().as_secs_f64();
    let flops = 3.0 * 2.0 * (t * b * cell.gates() * h * (i + h)) as f64 * reps as f64;
    println!(
        "{}: {:.1} GFLOP/s forward+backward",
        cell.name(),
        flops / secs / 1e9
    );
    Ok(())
}
