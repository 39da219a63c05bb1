//! Results do not depend on the thread count: work is split by batch rows within a step and
//! by rows in the large GEMMs, and every row is computed exactly as on one thread, so outputs
//! and gradients are bit-identical for 1, 2 and 3 threads.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, Float, GradMode, InputGrads, Isa, Layer, Mode, StreamingLayer,
};
use testkit::oracle::{inference_forward, training_pass_in};
use testkit::random::{RandomCase, dims};

fn run<F: Float>(c: &RandomCase<F>, isa: Isa, threads: usize) -> Vec<u64> {
    let d = c.dims;
    let mut layer = Layer::new(c.cell, d.input, d.hidden, c.weights()).unwrap();
    layer.set_isa(isa).unwrap();
    layer.set_threads(threads).unwrap();
    assert_eq!(layer.threads(), threads);
    let mut ws = layer.workspace(d.seq_len, d.batch, Mode::Training).unwrap();
    let mut y = vec![F::ZERO; d.y_len()];
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &c.x,
            c.init(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
    let mut g = layer.zero_grads().unwrap();
    let mut dx = vec![F::ZERO; d.x_len()];
    let mut dh0 = vec![F::ZERO; d.state_len()];
    let inputs = InputGrads {
        dx: Some(&mut dx),
        dh0: Some(&mut dh0),
        dc0: None,
    };
    layer
        .backward(
            &mut ws,
            &c.x,
            c.upstream(),
            &mut g,
            inputs,
            GradMode::Overwrite,
        )
        .unwrap();
    [y, dx, dh0, g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh]
        .iter()
        .flatten()
        .map(|v| v.to_f64().to_bits())
        .collect()
}

#[test]
fn thread_count_does_not_change_any_bit() {
    // Enough rows and work per step that the layer really splits (B >= 8, >= 2^18 MACs),
    // with a row count that does not divide evenly; and a batch of 128 * T rows so the big
    // GEMMs split too.
    for &(t, b, i, h) in &[(4, 27, 50, 120), (6, 24, 33, 129)] {
        for (ci, &cell) in CellKind::ALL.iter().enumerate() {
            let d = dims(t, b, i, h);
            let c32 = RandomCase::<f32>::new(cell, d, 40 + ci as u64);
            let c64: RandomCase<f64> = c32.cast();
            for isa in Isa::available() {
                let one = run(&c32, isa, 1);
                for n in [2, 3] {
                    assert!(
                        one == run(&c32, isa, n),
                        "{} f32 {isa:?}: {n} threads differ",
                        cell.name()
                    );
                }
            }
            let one = run(&c64, Isa::Portable, 1);
            assert!(
                one == run(&c64, Isa::Portable, 2),
                "{} f64: 2 threads differ",
                cell.name()
            );
        }
    }
}

/// Inference output `y`, `h_n` and `c_n` as bits.
fn infer<F: Float>(c: &RandomCase<F>, isa: Isa, threads: usize) -> Vec<u64> {
    let d = c.dims;
    let mut layer = Layer::new(c.cell, d.input, d.hidden, c.weights()).unwrap();
    layer.set_isa(isa).unwrap();
    layer.set_threads(threads).unwrap();
    let (y, h_n, c_n) = inference_forward(&layer, c);
    [y, h_n, c_n]
        .iter()
        .flatten()
        .map(|v| v.to_f64().to_bits())
        .collect()
}

#[test]
fn small_batch_inference_split_by_hidden_units_does_not_change_any_bit() {
    // Batches below 8 run split by hidden units (one synchronisation per step) once a step has
    // >= 2^16 multiply-adds: H = 260 (not a whole number of panels, so the last slice is
    // ragged) for every cell; B = 3 checks the rows within a slice. The reference (1 thread)
    // is also checked against the fused kernels' own sequential path by the other tests.
    for &(t, b, i, h) in &[(9, 1, 37, 260), (5, 3, 20, 150)] {
        for (ci, &cell) in CellKind::ALL.iter().enumerate() {
            let d = dims(t, b, i, h);
            let c32 = RandomCase::<f32>::new(cell, d, 70 + ci as u64);
            let c64: RandomCase<f64> = c32.cast();
            for isa in Isa::available() {
                let one = infer(&c32, isa, 1);
                for n in [2, 3] {
                    assert!(
                        one == infer(&c32, isa, n),
                        "{} f32 {isa:?} B={b}: {n} threads differ",
                        cell.name()
                    );
                }
            }
            let one = infer(&c64, Isa::Portable, 1);
            assert!(
                one == infer(&c64, Isa::Portable, 2),
                "{} f64 B={b}: 2 threads differ",
                cell.name()
            );
        }
    }
}

#[test]
fn batch_one_inference_with_the_projection_folded_into_the_steps_does_not_change_any_bit() {
    // At batch 1 on AVX-512 an inference pass folds most of the input projection into the
    // steps' GEMVs (on one thread too), block by block of 8 steps (the first block and the
    // rows after the last full one before the loop): T = 16 is the shortest that folds, 15
    // folds nothing, 47 leaves 7 rows after the last block. H = 260 gives each slice a ragged
    // last panel and an odd panel count (a piece over one panel); I = 1, 37 and 600 cut each
    // tile into one, several uneven and many pieces. The AVX2 path never folds and computes
    // the same sums (tests/determinism.rs): the folded pass must be its bits, on any thread
    // count.
    let shapes = [
        (16, 1, 260),
        (47, 37, 260),
        (15, 37, 256),
        (64, 600, 128),
        (130, 256, 256),
    ];
    for &(t, i, h) in &shapes {
        for (ci, &cell) in CellKind::ALL.iter().enumerate() {
            let d = dims(t, 1, i, h);
            let c32 = RandomCase::<f32>::new(cell, d, 90 + ci as u64);
            let unfolded = Isa::Avx2Fma
                .is_available()
                .then(|| infer(&c32, Isa::Avx2Fma, 1));
            for isa in Isa::available() {
                let one = infer(&c32, isa, 1);
                if let Some(unfolded) = unfolded.as_ref().filter(|_| isa == Isa::Avx512) {
                    assert!(
                        one == *unfolded,
                        "{} T={t} I={i} H={h}: AVX-512 (folded) differs from AVX2",
                        cell.name()
                    );
                }
                for n in [2, 3] {
                    assert!(
                        one == infer(&c32, isa, n),
                        "{} f32 {isa:?} T={t} I={i} H={h}: {n} threads differ",
                        cell.name()
                    );
                }
            }
        }
    }
}

/// `h_t` (and the final `c`) of `T` streaming steps, as bits.
/// How a test feeds a stream its steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pacing {
    /// One step right after the other (a split step's workers are awake).
    BackToBack,
    /// A pause longer than the workers' spin window before every other step, so that they
    /// park and the caller wakes them or takes their slices over.
    Paused,
    /// Back to back, but the second half of the steps runs on a clone of the stream made
    /// halfway (with worker threads of its own).
    Cloned,
}

fn stream<F: Float>(c: &RandomCase<F>, isa: Isa, threads: usize, pacing: Pacing) -> Vec<u64> {
    let d = c.dims;
    let mut layer = Layer::new(c.cell, d.input, d.hidden, c.weights()).unwrap();
    layer.set_isa(isa).unwrap();
    layer.set_threads(threads).unwrap();
    let mut s = StreamingLayer::new(layer, d.batch).unwrap();
    s.set_state(c.h0().unwrap(), c.c0()).unwrap();
    let mut out = Vec::new();
    let steps: Vec<&[F]> = c.x.chunks_exact(d.batch * d.input).collect();
    for (t, x_t) in steps.iter().enumerate() {
        if pacing == Pacing::Paused && t % 2 == 1 {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        if pacing == Pacing::Cloned && t == steps.len() / 2 {
            s = s.clone();
        }
        out.extend(s.step(x_t).unwrap().iter().map(|v| v.to_f64().to_bits()));
    }
    out.extend(
        s.cell_state()
            .unwrap_or(&[])
            .iter()
            .map(|v| v.to_f64().to_bits()),
    );
    out
}

#[test]
fn streaming_step_split_by_hidden_units_does_not_change_any_bit() {
    // Steps of >= 3·2^15 multiply-adds (both GEMMs) and fewer than 8 rows run split by hidden
    // units over the stream's worker threads: every cell at the first two shapes but the RNN,
    // which needs the third.
    let shapes = [(6, 1, 37, 200), (6, 3, 20, 120), (6, 1, 37, 350)];
    for (k, &(t, b, i, h)) in shapes.iter().enumerate() {
        for (ci, &cell) in CellKind::ALL.iter().enumerate() {
            if (k == 2) != matches!(cell, CellKind::Rnn(_)) {
                continue;
            }
            let d = dims(t, b, i, h);
            let c32 = RandomCase::<f32>::new(cell, d, 90 + ci as u64);
            for isa in Isa::available() {
                let one = stream(&c32, isa, 1, Pacing::BackToBack);
                for n in [2, 3] {
                    for pacing in [Pacing::BackToBack, Pacing::Paused, Pacing::Cloned] {
                        assert!(
                            one == stream(&c32, isa, n, pacing),
                            "{} f32 {isa:?} B={b}: {n} threads ({pacing:?}) differ",
                            cell.name()
                        );
                    }
                }
            }
            let c64: RandomCase<f64> = c32.cast();
            assert!(
                stream(&c64, Isa::Portable, 1, Pacing::BackToBack)
                    == stream(&c64, Isa::Portable, 2, Pacing::Paused),
                "{} f64 B={b}: 2 threads differ",
                cell.name()
            );
        }
    }
}

#[test]
fn zero_threads_is_an_error() {
    let mut l = Layer::<f32>::with_seeded_init(CellKind::Lstm, 3, 4, 1).unwrap();
    assert!(l.set_threads(0).is_err());
    assert_eq!(l.threads(), 1);
}

/// One training pass of `layer` over `c` in the given workspace: the gradients' bits.
fn pass_in<F: Float>(
    layer: &Layer<F>,
    ws: &mut fused_rnn::Workspace<F>,
    c: &RandomCase<F>,
) -> Vec<u64> {
    let (_, dx, g) = training_pass_in(layer, ws, &c.x, c.dy().unwrap());
    [dx, g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh]
        .iter()
        .flatten()
        .map(|v| v.to_f64().to_bits())
        .collect()
}

#[test]
fn one_workspace_serves_layers_of_any_thread_count() {
    // The weight gradients' packing scratch lives in the workspace, sized by the first
    // backward for that layer's threads: a layer with more threads grows it, one with fewer
    // finds it large (and holding another pass's data). Results stay the same bits.
    let d = dims(4, 27, 50, 120);
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        let c = RandomCase::<f32>::new(cell, d, 60 + ci as u64);
        let layer = |threads| {
            let mut l = Layer::new(cell, d.input, d.hidden, c.weights()).unwrap();
            l.set_threads(threads).unwrap();
            l
        };
        let (one, three) = (layer(1), layer(3));
        let mut ws = one.workspace(d.seq_len, d.batch, Mode::Training).unwrap();
        let first = pass_in(&one, &mut ws, &c);
        assert!(
            first == pass_in(&three, &mut ws, &c),
            "{}: 3 threads after 1",
            cell.name()
        );
        assert!(
            first == pass_in(&one, &mut ws, &c),
            "{}: 1 thread after 3",
            cell.name()
        );
    }
}

#[test]
fn weight_gradient_terms_of_unequal_height_split_over_threads() {
    // The reset-before GRU's weight gradients have a term over H rows beside terms over
    // 2H and 3H: at H = 8 on 4 threads its 2 micro-tiles leave the first thread without it
    // while another thread has it. (I = 1400 makes a step big enough to split by rows.)
    let d = dims(2, 8, 1400, 8);
    let cell = CellKind::Gru(fused_rnn::GruVariant::ResetBefore);
    let c = RandomCase::<f32>::new(cell, d, 81);
    let one = run(&c, Isa::Portable, 1);
    assert!(one == run(&c, Isa::Portable, 4), "4 threads differ");
}
