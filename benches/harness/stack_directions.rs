//! A bidirectional layer's two directions at once (`Stack`, 2 threads: one direction per
//! thread) against the same two directions one after the other, each on both threads (what
//! oneDNN, PyTorch and ONNX Runtime do), and against one thread; inference and training, LSTM,
//! I = H = 256, T = 128, B = 1, 4, 32. Medians and fastest of 21 calls after 3 warm-up calls,
//! the three schedules alternating call by call so that the machine's drift hits them alike.
//!
//! `cargo run --release --example stack_directions`

use std::time::Instant;

use fused_rnn::{
    CellKind, Direction, Directions, FinalState, GradMode, InitialState, InputGrads, Layer, Mode,
    Stack, Upstream,
};

const CALLS: usize = 21;

fn main() {
    let (t, i, h) = (128, 256, 256);
    println!(
        "| B | mode | directions at once (2 thr) ms | one after the other (2 thr) ms | 1 thread ms | at once / after |"
    );
    println!("|---|---|---|---|---|---|");
    for b in [1, 4, 32] {
        for mode in [Mode::Inference, Mode::Training] {
            let mut par =
                Stack::<f32>::with_seeded_init(CellKind::Lstm, i, h, 1, Directions::Both, 1)
                    .unwrap();
            par.set_threads(2).unwrap();
            let one = Stack::<f32>::with_seeded_init(CellKind::Lstm, i, h, 1, Directions::Both, 1)
                .unwrap();
            let mut seq: Vec<Layer<f32>> = one.layers().map(|(_, _, l)| l.clone()).collect();
            for l in &mut seq {
                l.set_threads(2).unwrap();
            }
            let x = vec![0.1f32; t * b * i];
            let dy = vec![0.01f32; t * b * 2 * h];
            let mut y = vec![0.0f32; t * b * 2 * h];
            let mut half = vec![0.0f32; t * b * h];
            let mut dx = vec![0.0f32; t * b * i];
            let mut dx_seq = vec![0.0f32; t * b * i];
            let mut sws_par = par.workspace(t, b, mode).unwrap();
            let mut sws_one = one.workspace(t, b, mode).unwrap();
            let mut lws: Vec<_> = seq
                .iter()
                .map(|l| l.workspace(t, b, mode).unwrap())
                .collect();
            let mut g_par = par.zero_grads().unwrap();
            let mut g_one = one.zero_grads().unwrap();
            let mut g_seq: Vec<_> = seq.iter().map(|l| l.zero_grads().unwrap()).collect();
            let training = mode == Mode::Training;
            let mut run_stack =
                |s: &Stack<f32>,
                 ws: &mut fused_rnn::StackWorkspace<f32>,
                 g: &mut fused_rnn::StackGrads<f32>| {
                    s.forward(
                        ws,
                        &x,
                        InitialState::default(),
                        &mut y,
                        FinalState::default(),
                    )
                    .unwrap();
                    if training {
                        let up = Upstream {
                            dy: Some(&dy),
                            ..Default::default()
                        };
                        let inputs = InputGrads {
                            dx: Some(&mut dx),
                            ..Default::default()
                        };
                        s.backward(ws, &x, up, g, inputs, GradMode::Overwrite)
                            .unwrap();
                    }
                };
            let mut times = [Vec::new(), Vec::new(), Vec::new()];
            for call in 0..CALLS + 3 {
                let t0 = Instant::now();
                run_stack(&par, &mut sws_par, &mut g_par);
                let t1 = Instant::now();
                for (k, (l, dir)) in seq.iter().zip(Direction::BOTH).enumerate() {
                    l.forward(
                        &mut lws[k],
                        dir,
                        &x,
                        InitialState::default(),
                        &mut half,
                        FinalState::default(),
                    )
                    .unwrap();
                    if training {
                        let dyh = &dy[..t * b * h];
                        let up = Upstream {
                            dy: Some(dyh),
                            ..Default::default()
                        };
                        let inputs = InputGrads {
                            dx: Some(&mut dx_seq),
                            ..Default::default()
                        };
                        l.backward(
                            &mut lws[k],
                            &x,
                            up,
                            &mut g_seq[k],
                            inputs,
                            GradMode::Overwrite,
                        )
                        .unwrap();
                    }
                }
                let t2 = Instant::now();
                run_stack(&one, &mut sws_one, &mut g_one);
                let t3 = Instant::now();
                if call >= 3 {
                    for (v, d) in times.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
                        v.push(d.as_secs_f64() * 1e3);
                    }
                }
            }
            let stat = |v: &mut Vec<f64>| {
                v.sort_by(f64::total_cmp);
                (v[v.len() / 2], v[0])
            };
            let [a, s, o] = &mut times;
            let (a, s, o) = (stat(a), stat(s), stat(o));
            println!(
                "| {b} | {} | {:.3} (fastest {:.3}) | {:.3} (fastest {:.3}) | {:.3} (fastest {:.3}) | {:.2} |",
                if training { "fwd+bwd" } else { "fwd" },
                a.0,
                a.1,
                s.0,
                s.1,
                o.0,
                o.1,
                a.0 / s.0
            );
        }
    }
}
