//! Peak extra memory of a training forward + backward, against the workspace size the crate
//! reports: `cargo run --release --example memory -- [lstm|gru|rnn] [T]` (Linux: reads VmRSS and
//! VmHWM from /proc/self/status). Default shape: B=32, I=H=512, T=512.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, GruVariant, InitialState, InputGrads, Layer, Mode,
    RnnActivation, Upstream, Workspace,
};

fn status_kib(key: &str) -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), fused_rnn::Error> {
    let cell = match std::env::args().nth(1).as_deref() {
        Some("gru") => CellKind::Gru(GruVariant::ResetAfter),
        Some("rnn") => CellKind::Rnn(RnnActivation::Tanh),
        _ => CellKind::Lstm,
    };
    let t: usize = std::env::args()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let (b, i, h) = (32, 512, 512);
    let layer = Layer::<f32>::with_seeded_init(cell, i, h, 1)?;
    // The caller's own buffers: inputs, outputs, upstream and input gradients, weight grads.
    let x = vec![0.1f32; t * b * i];
    let mut y = vec![0.0f32; t * b * h];
    let dy = vec![0.01f32; t * b * h];
    let mut dx = vec![0.0f32; t * b * i];
    let mut grads = layer.zero_grads().unwrap();
    // Touch every page of the caller's buffers (zeroed allocations are not resident yet).
    y.fill(1.0);
    dx.fill(1.0);
    let baseline = status_kib("VmRSS:");
    let dims = layer.dims(t, b);
    let ws_bytes = Workspace::<f32>::required_len(cell, dims, Mode::Training)? * 4;
    let mut ws = layer.workspace(t, b, Mode::Training)?;
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
    let inputs = InputGrads {
        dx: Some(&mut dx),
        ..Default::default()
    };
    layer.backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)?;
    let peak = status_kib("VmHWM:");
    let tbh = (t * b * h) as f64;
    println!(
        "{} T={t} B={b} I={i} H={h}: workspace {:.1} MB ({:.2} bytes per T*B*H), peak extra RSS over the caller's buffers {:.1} MB",
        cell.name(),
        ws_bytes as f64 / 1e6,
        ws_bytes as f64 / tbh,
        (peak.saturating_sub(baseline)) as f64 * 1024.0 / 1e6
    );
    Ok(())
}
