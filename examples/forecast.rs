//! The seed chapter's exercise: predict the next value of a time series from a window of the
//! values before it, with a GRU (many-to-one) and an output layer `y = W_hy h_T + b_y`,
//! trained by BPTT with Adam and gradient clipping, validated on the later part of the series
//! (time order respected, no shuffling across the split).
//!
//! Built-in data: a seeded synthetic series (two seasonal components, a slow trend, noise).
//! Run: `cargo run --release --example forecast [-- lstm|gru|gru_reset_before|rnn]`

use std::time::Instant;

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, GruVariant, InitialState, InputGrads, Layer, Mode, OutputLayer,
    RnnActivation, Upstream, clip_grad_norm,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

const WINDOW: usize = 24;
const HIDDEN: usize = 32;
const BATCH: usize = 32;
const EPOCHS: usize = 40;
const LEARNING_RATE: f32 = 5e-3;
const MAX_GRAD_NORM: f32 = 1.0;

/// Adam over a list of parameter tensors.
struct Adam {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: i32,
}

impl Adam {
    fn new(sizes: &[usize]) -> Self {
        Adam {
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            step: 0,
        }
    }

    fn update(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]], lr: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.step += 1;
        let c1 = 1.0 - b1.powi(self.step);
        let c2 = 1.0 - b2.powi(self.step);
        for (k, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            for (j, (p, g)) in p.iter_mut().zip(g.iter()).enumerate() {
                let m = &mut self.m[k][j];
                let v = &mut self.v[k][j];
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
            }
        }
    }
}

fn series(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|t| {
            let t = t as f32;
            (2.0 * std::f32::consts::PI * t / 24.0).sin()
                + 0.5 * (2.0 * std::f32::consts::PI * t / 7.3).sin()
                + 0.002 * t
                + rng.random_range(-0.1..0.1)
        })
        .collect()
}

/// Windows starting at `starts`, as time-major `x [WINDOW, B, 1]` and targets `[B]`.
fn batch(data: &[f32], starts: &[usize]) -> (Vec<f32>, Vec<f32>) {
    let b = starts.len();
    let mut x = vec![0.0; WINDOW * b];
    for (j, &s) in starts.iter().enumerate() {
        for t in 0..WINDOW {
            x[t * b + j] = data[s + t];
        }
    }
    (x, starts.iter().map(|&s| data[s + WINDOW]).collect())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cell = match std::env::args().nth(1).as_deref() {
        None | Some("gru") => CellKind::Gru(GruVariant::ResetAfter),
        Some("gru_reset_before") => CellKind::Gru(GruVariant::ResetBefore),
        Some("lstm") => CellKind::Lstm,
        Some("rnn") => CellKind::Rnn(RnnActivation::Tanh),
        Some(other) => {
            return Err(
                format!("unknown cell {other:?}: use gru, gru_reset_before, lstm or rnn").into(),
            );
        }
    };
    let raw = series(2000, 7);
    // Normalise with statistics of the training part only.
    let split = raw.len() * 4 / 5;
    let mean = raw[..split].iter().sum::<f32>() / split as f32;
    let std = (raw[..split].iter().map(|v| (v - mean).powi(2)).sum::<f32>() / split as f32).sqrt();
    let data: Vec<f32> = raw.iter().map(|v| (v - mean) / std).collect();
    let train_starts: Vec<usize> = (0..split - WINDOW).collect();
    let val_starts: Vec<usize> = (split - WINDOW..data.len() - WINDOW).collect();

    let mut layer = Layer::<f32>::with_seeded_init(cell, 1, HIDDEN, 1)?;
    let mut head = OutputLayer::<f32>::with_seeded_init(1, HIDDEN, 2)?;
    let mut grads = layer.zero_grads()?;
    let mut head_grads = head.zero_grads()?;
    let w = layer.weights();
    let mut adam = Adam::new(&[
        w.weight_ih.len(),
        w.weight_hh.len(),
        w.bias_ih.len(),
        w.bias_hh.len(),
        head.weight().len(),
        head.bias().len(),
    ]);
    let mut ws = layer.workspace(WINDOW, BATCH, Mode::Training)?;
    let mut y = vec![0.0f32; WINDOW * BATCH * HIDDEN];
    let mut h_n = vec![0.0f32; BATCH * HIDDEN];
    let mut pred = vec![0.0f32; BATCH];
    let mut dh_n = vec![0.0f32; BATCH * HIDDEN];
    let mut rng = StdRng::seed_from_u64(3);
    println!(
        "forecast: {} H={HIDDEN}, window {WINDOW}, {} training / {} validation windows, ISA {:?}",
        cell.name(),
        train_starts.len(),
        val_starts.len(),
        layer.isa()
    );
    let started = Instant::now();
    for epoch in 0..EPOCHS {
        // Shuffle windows within the training part only.
        let mut order = train_starts.clone();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        let mut epoch_loss = 0.0f64;
        let mut batches = 0;
        for starts in order.chunks_exact(BATCH) {
            let (x, target) = batch(&data, starts);
            let fin = FinalState {
                h_n: Some(&mut h_n),
                c_n: None,
            };
            layer.forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                fin,
            )?;
            head.forward(&h_n, &mut pred)?;
            // Mean squared error and its gradient.
            let dpred: Vec<f32> = pred
                .iter()
                .zip(&target)
                .map(|(p, t)| 2.0 * (p - t) / BATCH as f32)
                .collect();
            epoch_loss += pred
                .iter()
                .zip(&target)
                .map(|(p, t)| f64::from((p - t).powi(2)))
                .sum::<f64>()
                / BATCH as f64;
            batches += 1;
            head.backward(
                &h_n,
                &dpred,
                &mut head_grads,
                Some(&mut dh_n),
                GradMode::Overwrite,
            )?;
            let up = Upstream {
                dh_n: Some(&dh_n),
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
            clip_grad_norm(
                &mut [
                    &mut grads.weight_ih[..],
                    &mut grads.weight_hh[..],
                    &mut grads.bias_ih[..],
                    &mut grads.bias_hh[..],
                    &mut head_grads.weight[..],
                    &mut head_grads.bias[..],
                ],
                MAX_GRAD_NORM,
            )?;
            let lw = layer.weights_mut();
            let (hw, hb) = head.params_mut();
            adam.update(
                &mut [lw.weight_ih, lw.weight_hh, lw.bias_ih, lw.bias_hh, hw, hb],
                &[
                    &grads.weight_ih,
                    &grads.weight_hh,
                    &grads.bias_ih,
                    &grads.bias_hh,
                    &head_grads.weight,
                    &head_grads.bias,
                ],
                LEARNING_RATE,
            );
        }
        if epoch % 10 == 9 || epoch == 0 {
            println!(
                "epoch {:>3}: training MSE {:.5}",
                epoch + 1,
                epoch_loss / batches as f64
            );
        }
    }
    let train_time = started.elapsed();

    // Validation: the model against persistence (predict the last value seen).
    let (x, target) = batch(&data, &val_starts);
    let vb = val_starts.len();
    let mut ws_val = layer.workspace(WINDOW, vb, Mode::Inference)?;
    let mut y_val = vec![0.0f32; WINDOW * vb * HIDDEN];
    let mut h_val = vec![0.0f32; vb * HIDDEN];
    let fin = FinalState {
        h_n: Some(&mut h_val),
        c_n: None,
    };
    layer.forward(
        &mut ws_val,
        Direction::Forward,
        &x,
        InitialState::default(),
        &mut y_val,
        fin,
    )?;
    let mut pred_val = vec![0.0f32; vb];
    head.forward(&h_val, &mut pred_val)?;
    let mse = |p: &[f32]| {
        p.iter()
            .zip(&target)
            .map(|(a, b)| f64::from((a - b).powi(2)))
            .sum::<f64>()
            / vb as f64
    };
    let model_mse = mse(&pred_val);
    let persistence: Vec<f32> = val_starts.iter().map(|&s| data[s + WINDOW - 1]).collect();
    let persistence_mse = mse(&persistence);
    println!(
        "validation MSE: model {model_mse:.5}, persistence baseline {persistence_mse:.5} (normalised units)"
    );
    println!(
        "model error is {:.1}% of the baseline's; training took {:.2} s",
        100.0 * model_mse / persistence_mse,
        train_time.as_secs_f64()
    );
    if model_mse.is_nan() || model_mse >= persistence_mse {
        return Err("the model did not beat the persistence baseline".into());
    }
    Ok(())
}
