//! `Stack`: gradients of every parameter, input and initial state against central finite
//! differences in f64 (2-layer bidirectional LSTM and GRU over rows of different lengths), a
//! one-layer stack against the layer it wraps, and bad input answered with errors.
// A gradcheck perturbs element k of one buffer and reads element k of another.
#![allow(clippy::needless_range_loop)]

use fused_rnn::{
    Batch, CellKind, Direction, Directions, Error, FinalState, GradMode, GruVariant, InitialState,
    InputGrads, Layer, Mode, Stack, Upstream,
};
use testkit::random::{rng, uniform};

/// The loss `L = sum(y·dy) + sum(h_n·dh_n) + sum(c_n·dc_n)` of a forward of `stack`.
struct Problem {
    t: usize,
    lengths: Vec<usize>,
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    dy: Vec<f64>,
    dh_n: Vec<f64>,
    dc_n: Vec<f64>,
}

impl Problem {
    fn new(stack: &Stack<f64>, t: usize, lengths: &[usize], seed: u64) -> Self {
        let mut r = rng(seed);
        let b = lengths.len();
        let (i, h, w) = (stack.input_size(), stack.hidden_size(), stack.output_size());
        let s = stack.num_layers() * stack.directions().count() * b * h;
        Problem {
            t,
            lengths: lengths.to_vec(),
            x: uniform(&mut r, t * b * i, -1.0, 1.0),
            h0: uniform(&mut r, s, -0.5, 0.5),
            c0: uniform(&mut r, s, -1.0, 1.0),
            dy: uniform(&mut r, t * b * w, -1.0, 1.0),
            dh_n: uniform(&mut r, s, -1.0, 1.0),
            dc_n: uniform(&mut r, s, -1.0, 1.0),
        }
    }

    fn states(&self, stack: &Stack<f64>) -> usize {
        stack.num_layers() * stack.directions().count() * self.lengths.len() * stack.hidden_size()
    }

    fn loss(&self, stack: &Stack<f64>, x: &[f64], h0: &[f64], c0: &[f64]) -> f64 {
        let lstm = stack.cell().has_cell_state();
        let s = self.states(stack);
        let mut ws = stack
            .workspace(self.t, &self.lengths, Mode::Inference)
            .unwrap();
        let mut y = vec![0.0; self.dy.len()];
        let (mut h_n, mut c_n) = (vec![0.0; s], vec![0.0; s]);
        stack
            .forward(
                &mut ws,
                x,
                InitialState {
                    h0: Some(h0),
                    c0: lstm.then_some(c0),
                },
                &mut y,
                FinalState {
                    h_n: Some(&mut h_n),
                    c_n: lstm.then_some(&mut c_n[..]),
                },
            )
            .unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        dot(&y, &self.dy) + dot(&h_n, &self.dh_n) + if lstm { dot(&c_n, &self.dc_n) } else { 0.0 }
    }
}

/// Central difference of `f` at `v[k]`, step `h = cbrt(eps)·max(1, |v[k]|)`.
fn central(v: &mut [f64], k: usize, f: &mut dyn FnMut(&[f64]) -> f64) -> f64 {
    let x0 = v[k];
    let h = f64::EPSILON.cbrt() * x0.abs().max(1.0);
    v[k] = x0 + h;
    let up = f(v);
    v[k] = x0 - h;
    let down = f(v);
    v[k] = x0;
    (up - down) / (2.0 * h)
}

fn assert_grad(what: &str, analytic: f64, numeric: f64) {
    // Central differences at h = cbrt(eps) are accurate to about eps^(2/3) ~ 4e-11 of the
    // loss's scale (O(1) here); 1e-6 leaves room for the curvature terms.
    let err = (analytic - numeric).abs() / numeric.abs().max(1.0);
    assert!(
        err < 1e-6,
        "{what}: analytic {analytic:e}, numeric {numeric:e} ({err:e})"
    );
}

#[test]
fn every_gradient_of_bidirectional_stacks_over_padded_rows_matches_finite_differences() {
    for cell in [CellKind::Lstm, CellKind::Gru(GruVariant::ResetAfter)] {
        let mut stack =
            Stack::<f64>::with_seeded_init(cell, 3, 4, 2, Directions::Both, 11).unwrap();
        let lengths = [5, 2, 4];
        let p = Problem::new(&stack, 5, &lengths, 12);
        let lstm = cell.has_cell_state();
        let s = p.states(&stack);
        // Analytic gradients.
        let mut ws = stack.workspace(p.t, &lengths, Mode::Training).unwrap();
        let mut y = vec![0.0; p.dy.len()];
        stack
            .forward(
                &mut ws,
                &p.x,
                InitialState {
                    h0: Some(&p.h0),
                    c0: lstm.then_some(&p.c0[..]),
                },
                &mut y,
                FinalState::default(),
            )
            .unwrap();
        let mut grads = stack.zero_grads().unwrap();
        let (mut dx, mut dh0, mut dc0) = (vec![0.0; p.x.len()], vec![0.0; s], vec![0.0; s]);
        stack
            .backward(
                &mut ws,
                &p.x,
                Upstream {
                    dy: Some(&p.dy),
                    dh_n: Some(&p.dh_n),
                    dc_n: lstm.then_some(&p.dc_n[..]),
                },
                &mut grads,
                InputGrads {
                    dx: Some(&mut dx),
                    dh0: Some(&mut dh0),
                    dc0: lstm.then_some(&mut dc0[..]),
                },
                GradMode::Overwrite,
            )
            .unwrap();
        let name = cell.name();
        // Inputs and initial states.
        let (mut x, mut h0, mut c0) = (p.x.clone(), p.h0.clone(), p.c0.clone());
        for k in 0..x.len() {
            let n = central(&mut x, k, &mut |v| p.loss(&stack, v, &p.h0, &p.c0));
            assert_grad(&format!("{name} dx[{k}]"), dx[k], n);
        }
        for k in 0..s {
            let n = central(&mut h0, k, &mut |v| p.loss(&stack, &p.x, v, &p.c0));
            assert_grad(&format!("{name} dh0[{k}]"), dh0[k], n);
            if lstm {
                let n = central(&mut c0, k, &mut |v| p.loss(&stack, &p.x, &p.h0, v));
                assert_grad(&format!("{name} dc0[{k}]"), dc0[k], n);
            }
        }
        // Every parameter of every (layer, direction).
        for n in 0..grads.layers.len() {
            let (k, dir) = (n / 2, Direction::BOTH[n % 2]);
            let g = grads.layers[n].clone();
            for (param, analytic) in [
                (0, &g.weight_ih),
                (1, &g.weight_hh),
                (2, &g.bias_ih),
                (3, &g.bias_hh),
            ] {
                for e in 0..analytic.len() {
                    let mut f = |v: f64| {
                        let l = stack.layer_mut(k, dir).unwrap();
                        let w = l.weights_mut();
                        let slot = match param {
                            0 => &mut w.weight_ih[e],
                            1 => &mut w.weight_hh[e],
                            2 => &mut w.bias_ih[e],
                            _ => &mut w.bias_hh[e],
                        };
                        let old = *slot;
                        *slot = v;
                        let loss = p.loss(&stack, &p.x, &p.h0, &p.c0);
                        let l = stack.layer_mut(k, dir).unwrap();
                        let w = l.weights_mut();
                        match param {
                            0 => w.weight_ih[e] = old,
                            1 => w.weight_hh[e] = old,
                            2 => w.bias_ih[e] = old,
                            _ => w.bias_hh[e] = old,
                        }
                        (loss, old)
                    };
                    let (_, w0) = f(f64::NAN);
                    let step = f64::EPSILON.cbrt() * w0.abs().max(1.0);
                    let numeric = (f(w0 + step).0 - f(w0 - step).0) / (2.0 * step);
                    assert_grad(
                        &format!("{name} layer {k} {dir:?} param {param}[{e}]"),
                        analytic[e],
                        numeric,
                    );
                }
            }
        }
    }
}

/// One layer in one direction is that layer, bit for bit.
#[test]
fn a_one_layer_stack_is_its_layer() {
    let layer = Layer::<f32>::with_seeded_init(CellKind::Lstm, 5, 7, 3).unwrap();
    let stack = Stack::new(vec![layer.clone()], 1, Directions::Forward).unwrap();
    let (t, b) = (6, 2);
    let mut r = rng(4);
    let x: Vec<f32> = uniform(&mut r, t * b * 5, -1.0, 1.0);
    let mut y_layer = vec![0.0f32; t * b * 7];
    let mut y_stack = vec![0.0f32; t * b * 7];
    let mut ws = layer.workspace(t, b, Mode::Inference).unwrap();
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y_layer,
            FinalState::default(),
        )
        .unwrap();
    let mut sws = stack.workspace(t, b, Mode::Inference).unwrap();
    stack
        .forward(
            &mut sws,
            &x,
            InitialState::default(),
            &mut y_stack,
            FinalState::default(),
        )
        .unwrap();
    assert_eq!(
        y_layer.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        y_stack.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn bad_stacks_and_buffers_are_errors() {
    let cell = CellKind::Lstm;
    // Layers that do not stack.
    let l0 = Layer::<f32>::with_seeded_init(cell, 3, 4, 0).unwrap();
    // Layer 1 reads D*H inputs: 4 in one direction, 8 in both.
    let wrong = Layer::<f32>::with_seeded_init(cell, 5, 4, 0).unwrap();
    let gru =
        Layer::<f32>::with_seeded_init(CellKind::Gru(GruVariant::ResetAfter), 4, 4, 0).unwrap();
    for (layers, l, dirs) in [
        (vec![l0.clone(), wrong.clone()], 2, Directions::Forward),
        (vec![l0.clone(), gru], 2, Directions::Forward),
        (vec![l0.clone()], 2, Directions::Forward),
        (vec![l0.clone(), l0.clone(), wrong], 2, Directions::Both),
        (vec![], 0, Directions::Forward),
    ] {
        assert!(Stack::new(layers, l, dirs).is_err());
    }
    let stack = Stack::<f32>::with_seeded_init(cell, 3, 4, 2, Directions::Both, 1).unwrap();
    let (t, b) = (4, 2);
    let mut ws = stack.workspace(t, Batch::Fixed(b), Mode::Training).unwrap();
    let x = vec![0.0f32; t * b * 3];
    let mut y = vec![0.0f32; t * b * 8];
    let len_err =
        |r: fused_rnn::Result<()>| assert!(matches!(r, Err(Error::BufferLength { .. })), "{r:?}");
    len_err(stack.forward(
        &mut ws,
        &x[1..],
        InitialState::default(),
        &mut y,
        FinalState::default(),
    ));
    len_err(stack.forward(
        &mut ws,
        &x,
        InitialState::default(),
        &mut y[1..],
        FinalState::default(),
    ));
    let h0 = vec![0.0f32; 3 * b * 4]; // [L*D, B, H] needs 4 slices
    len_err(stack.forward(
        &mut ws,
        &x,
        InitialState {
            h0: Some(&h0),
            c0: None,
        },
        &mut y,
        FinalState::default(),
    ));
    // Backward before a forward, and with an inference workspace.
    let mut grads = stack.zero_grads().unwrap();
    let r = stack.backward(
        &mut ws,
        &x,
        Upstream::default(),
        &mut grads,
        InputGrads::default(),
        GradMode::Overwrite,
    );
    assert!(matches!(r, Err(Error::InvalidState { .. })), "{r:?}");
    let mut inf = stack.workspace(t, b, Mode::Inference).unwrap();
    let r = stack.backward(
        &mut inf,
        &x,
        Upstream::default(),
        &mut grads,
        InputGrads::default(),
        GradMode::Overwrite,
    );
    assert!(matches!(r, Err(Error::WorkspaceMismatch { .. })), "{r:?}");
    // Padded lengths past T.
    assert!(stack.workspace(t, &[5, 1], Mode::Training).is_err());
    // A workspace of another stack shape (the same L·D passes: 2 layers of 1 direction against
    // 1 layer of 2) is refused before any layer runs.
    let other = Stack::<f32>::with_seeded_init(cell, 3, 4, 1, Directions::Both, 1).unwrap();
    let twice = Stack::<f32>::with_seeded_init(cell, 3, 4, 2, Directions::Forward, 1).unwrap();
    let mut ows = other.workspace(t, b, Mode::Training).unwrap();
    let r = twice.forward(
        &mut ows,
        &x,
        InitialState::default(),
        &mut y[..t * b * 4],
        FinalState::default(),
    );
    assert!(matches!(r, Err(Error::WorkspaceMismatch { .. })), "{r:?}");
}

/// A backward refused for a buffer of the bottom layer (checked last by the layers' own
/// backward) leaves every layer's forward pending: the next, correct backward gives what a
/// backward right after the forward gives.
#[test]
fn a_refused_stack_backward_changes_nothing() {
    let stack =
        Stack::<f64>::with_seeded_init(CellKind::Lstm, 3, 4, 2, Directions::Both, 5).unwrap();
    let (t, lengths) = (5, [5, 3]);
    let p = Problem::new(&stack, t, &lengths, 6);
    let run = |refuse_first: bool| {
        let mut ws = stack.workspace(t, &lengths, Mode::Training).unwrap();
        let mut y = vec![0.0; p.dy.len()];
        stack
            .forward(
                &mut ws,
                &p.x,
                InitialState::default(),
                &mut y,
                FinalState::default(),
            )
            .unwrap();
        let mut grads = stack.zero_grads().unwrap();
        let up = Upstream {
            dy: Some(&p.dy),
            ..Default::default()
        };
        if refuse_first {
            let mut bad = stack.zero_grads().unwrap();
            bad.layers[0].bias_hh.pop();
            let r = stack.backward(
                &mut ws,
                &p.x,
                up,
                &mut bad,
                InputGrads::default(),
                GradMode::Overwrite,
            );
            assert!(matches!(r, Err(Error::BufferLength { .. })), "{r:?}");
        }
        let mut dx = vec![0.0; p.x.len()];
        stack
            .backward(
                &mut ws,
                &p.x,
                up,
                &mut grads,
                InputGrads {
                    dx: Some(&mut dx),
                    ..Default::default()
                },
                GradMode::Overwrite,
            )
            .unwrap();
        (dx, grads.layers[3].weight_hh.clone())
    };
    assert_eq!(run(true), run(false));
}

/// Runs a training forward and backward of `p` through `stack` with `ws` (reseeded to `seed`
/// first): `y`, `dx` and the gradients.
fn train(
    stack: &Stack<f64>,
    ws: &mut fused_rnn::StackWorkspace<f64>,
    p: &Problem,
    seed: u64,
) -> (Vec<f64>, Vec<f64>, fused_rnn::StackGrads<f64>) {
    ws.reseed(seed);
    let mut y = vec![0.0; p.dy.len()];
    stack
        .forward(
            ws,
            &p.x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
    let mut grads = stack.zero_grads().unwrap();
    let mut dx = vec![0.0; p.x.len()];
    let up = Upstream {
        dy: Some(&p.dy),
        ..Default::default()
    };
    let inputs = InputGrads {
        dx: Some(&mut dx),
        ..Default::default()
    };
    stack
        .backward(ws, &p.x, up, &mut grads, inputs, GradMode::Overwrite)
        .unwrap();
    (y, dx, grads)
}

/// Dropout: `p = 0` is no dropout bit for bit; inference ignores it; the kept fraction is
/// `1 - p` within four binomial standard deviations and the kept elements are scaled by
/// exactly `1 / (1 - p)`; out-of-range probabilities and workspaces made for another `p` are
/// errors.
#[test]
fn dropout_between_layers_is_pytorchs() {
    let cell = CellKind::Gru(GruVariant::ResetAfter);
    let (t, lengths) = (40, vec![40; 8]);
    let plain = Stack::<f64>::with_seeded_init(cell, 3, 16, 3, Directions::Both, 1).unwrap();
    let p = Problem::new(&plain, t, &lengths, 2);
    let mut zero = plain.clone();
    zero.set_dropout(0.0, 99).unwrap();
    let a = train(
        &plain,
        &mut plain.workspace(t, &lengths, Mode::Training).unwrap(),
        &p,
        1,
    );
    let b = train(
        &zero,
        &mut zero.workspace(t, &lengths, Mode::Training).unwrap(),
        &p,
        1,
    );
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2.layers[0].weight_ih, b.2.layers[0].weight_ih);

    let mut drop = plain.clone();
    let prob = 0.3;
    drop.set_dropout(prob, 7).unwrap();
    let mut ws = drop.workspace(t, &lengths, Mode::Training).unwrap();
    let with = train(&drop, &mut ws, &p, 3);
    assert_ne!(with.0, a.0, "dropout changed nothing");
    for boundary in 0..2 {
        let mask = ws.dropout_mask(boundary).expect("a mask per boundary");
        let n = mask.len() as f64;
        let dropped = mask.iter().filter(|m| **m == 0.0).count() as f64;
        let sd = (prob * (1.0 - prob) / n).sqrt();
        assert!(
            (dropped / n - prob).abs() < 4.0 * sd,
            "dropped {dropped} of {n}"
        );
        assert!(mask.iter().all(|m| *m == 0.0 || *m == 1.0 / (1.0 - prob)));
    }
    assert!(
        ws.dropout_mask(2).is_none(),
        "no dropout after the last layer"
    );
    // The same seed draws the same masks, another seed others.
    assert_eq!(train(&drop, &mut ws, &p, 3).0, with.0);
    assert_ne!(train(&drop, &mut ws, &p, 4).0, with.0);
    // Inference runs without dropout.
    let infer = |s: &Stack<f64>| {
        let mut ws = s.workspace(t, &lengths, Mode::Inference).unwrap();
        let mut y = vec![0.0; p.dy.len()];
        s.forward(
            &mut ws,
            &p.x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
        y
    };
    assert_eq!(infer(&drop), infer(&plain));
    // Errors.
    for bad in [-0.1, 1.5, f64::NAN] {
        assert!(drop.clone().set_dropout(bad, 0).is_err(), "{bad}");
    }
    let mut old = plain.workspace(t, &lengths, Mode::Training).unwrap();
    let mut y = vec![0.0; p.dy.len()];
    let r = drop.forward(
        &mut old,
        &p.x,
        InitialState::default(),
        &mut y,
        FinalState::default(),
    );
    assert!(matches!(r, Err(Error::WorkspaceMismatch { .. })), "{r:?}");
}

/// With the mask held fixed (the same seed before every forward), the gradients through
/// dropout are those of the masked function: central differences of `dx` and of layer 0's
/// `W_ih` and layer 1's `W_ih` (which reads the masked outputs).
#[test]
fn dropout_gradients_match_finite_differences_with_a_fixed_mask() {
    let mut stack =
        Stack::<f64>::with_seeded_init(CellKind::Lstm, 3, 4, 2, Directions::Both, 21).unwrap();
    stack.set_dropout(0.4, 5).unwrap();
    let lengths = [5, 3, 4];
    let p = Problem::new(&stack, 5, &lengths, 22);
    let mut ws = stack.workspace(p.t, &lengths, Mode::Training).unwrap();
    let (_, dx, grads) = train(&stack, &mut ws, &p, 8);
    let loss = |s: &Stack<f64>, ws: &mut fused_rnn::StackWorkspace<f64>, x: &[f64]| {
        ws.reseed(8);
        let mut y = vec![0.0; p.dy.len()];
        s.forward(
            ws,
            x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
        y.iter().zip(&p.dy).map(|(a, b)| a * b).sum::<f64>()
    };
    let mut x = p.x.clone();
    for k in 0..x.len() {
        let n = central(&mut x, k, &mut |v| loss(&stack, &mut ws, v));
        assert_grad(&format!("dx[{k}]"), dx[k], n);
    }
    for (layer, dir, n_idx) in [(0, Direction::Forward, 0), (1, Direction::Reverse, 3)] {
        let analytic = grads.layers[n_idx].weight_ih.clone();
        for e in 0..analytic.len() {
            let w0 = stack.layer(layer, dir).unwrap().weights().weight_ih[e];
            let step = f64::EPSILON.cbrt() * w0.abs().max(1.0);
            let mut at = |v: f64| {
                stack.layer_mut(layer, dir).unwrap().weights_mut().weight_ih[e] = v;
                let l = loss(&stack, &mut ws, &p.x);
                stack.layer_mut(layer, dir).unwrap().weights_mut().weight_ih[e] = w0;
                l
            };
            let numeric = (at(w0 + step) - at(w0 - step)) / (2.0 * step);
            assert_grad(
                &format!("layer {layer} {dir:?} W_ih[{e}]"),
                analytic[e],
                numeric,
            );
        }
    }
}

/// A stack saved as a PyTorch `state_dict` loads back bit for bit, with its layers and
/// directions found from the names; a file missing a direction of one layer, or with a layer
/// past a gap, is a format error; the fixtures' int64 `lengths` read as counts.
#[test]
fn stacks_round_trip_through_state_dicts() {
    use fused_rnn::interop::pytorch::{DtypePolicy, StateDict, save_layers, save_stack};
    for (l, dirs) in [(3, Directions::Forward), (2, Directions::Both)] {
        let stack = Stack::<f32>::with_seeded_init(CellKind::Lstm, 3, 5, l, dirs, 9).unwrap();
        let bytes = save_stack(&stack).unwrap();
        let back: Stack<f32> = StateDict::parse(&bytes)
            .unwrap()
            .stack("", CellKind::Lstm, DtypePolicy::Exact)
            .unwrap();
        assert_eq!((back.num_layers(), back.directions()), (l, dirs));
        for ((_, _, a), (_, _, b)) in stack.layers().zip(back.layers()) {
            assert_eq!(a.weights().weight_ih, b.weights().weight_ih);
            assert_eq!(a.weights().bias_hh, b.weights().bias_hh);
        }
    }
    let stack =
        Stack::<f32>::with_seeded_init(CellKind::Lstm, 3, 5, 3, Directions::Both, 9).unwrap();
    let all: Vec<_> = stack.layers().collect();
    let load = |layers: &[(usize, Direction, &Layer<f32>)]| {
        let bytes = save_layers(layers).unwrap();
        StateDict::parse(&bytes)
            .unwrap()
            .stack::<f32>("", CellKind::Lstm, DtypePolicy::Exact)
            .map(|_| ())
    };
    // Layer 1 without its reverse half; layers 0 and 2 without layer 1.
    let no_reverse_1: Vec<_> = all
        .iter()
        .copied()
        .filter(|(k, d, _)| !(*k == 1 && *d == Direction::Reverse))
        .collect();
    let gap: Vec<_> = all.iter().copied().filter(|(k, _, _)| *k != 1).collect();
    for (what, layers) in [("no reverse in layer 1", no_reverse_1), ("a gap", gap)] {
        match load(&layers) {
            Err(Error::Format { .. }) => {}
            other => panic!("{what}: expected a format error, got {other:?}"),
        }
    }
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pytorch/lstm_L2_bi_packed_T6_B3_I4_H5_len362_unsorted.safetensors");
    let bytes = std::fs::read(fixture).unwrap();
    let sd = StateDict::parse(&bytes).unwrap();
    assert_eq!(sd.counts("lengths").unwrap(), vec![3, 6, 2]);
    assert!(matches!(sd.counts("x"), Err(Error::Format { .. })));
}

/// A unidirectional stack streamed one step at a time gives the sequence forward's outputs
/// bit for bit, on one thread and two; resetting one row restarts that row alone; a
/// bidirectional stack cannot stream.
#[test]
fn a_streaming_stack_is_the_sequence_forward_step_by_step() {
    use fused_rnn::StreamingStack;
    for cell in CellKind::ALL {
        for threads in [1, 2] {
            let (t, b, i, h) = (8, 3, 5, 96);
            let mut stack =
                Stack::<f32>::with_seeded_init(cell, i, h, 3, Directions::Forward, 2).unwrap();
            stack.set_threads(threads).unwrap();
            let mut r = rng(3);
            let x: Vec<f32> = uniform(&mut r, t * b * i, -1.0, 1.0);
            let mut ws = stack.workspace(t, b, Mode::Inference).unwrap();
            let mut y = vec![0.0f32; t * b * h];
            stack
                .forward(
                    &mut ws,
                    &x,
                    InitialState::default(),
                    &mut y,
                    FinalState::default(),
                )
                .unwrap();
            let mut s = StreamingStack::new(&stack, b).unwrap();
            for step in 0..t {
                let out = s.step(&x[step * b * i..(step + 1) * b * i]).unwrap();
                let want = &y[step * b * h..(step + 1) * b * h];
                assert_eq!(
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} threads {threads} step {step}",
                    cell.name()
                );
            }
            // Row 1 restarts at step 3: its outputs are then those of its steps 3.. run from
            // zero, the other rows' unchanged.
            s.reset();
            let rest = t - 3;
            let mut xr = vec![0.0f32; rest * i];
            for step in 0..rest {
                xr[step * i..(step + 1) * i].copy_from_slice(&x[((step + 3) * b + 1) * i..][..i]);
            }
            let mut ws1 = stack.workspace(rest, 1, Mode::Inference).unwrap();
            let mut y1 = vec![0.0f32; rest * h];
            stack
                .forward(
                    &mut ws1,
                    &xr,
                    InitialState::default(),
                    &mut y1,
                    FinalState::default(),
                )
                .unwrap();
            for step in 0..t {
                if step == 3 {
                    s.reset_row(1).unwrap();
                }
                let out = s
                    .step(&x[step * b * i..(step + 1) * b * i])
                    .unwrap()
                    .to_vec();
                for row in [0, 2] {
                    assert_eq!(out[row * h..(row + 1) * h], y[(step * b + row) * h..][..h]);
                }
                if step >= 3 {
                    assert_eq!(
                        out[h..2 * h],
                        y1[(step - 3) * h..][..h],
                        "{} row 1",
                        cell.name()
                    );
                }
            }
            assert!(s.reset_row(b).is_err());
            assert!(s.step(&x[..b * i - 1]).is_err());
        }
    }
    let bi = Stack::<f32>::with_seeded_init(CellKind::Lstm, 2, 4, 2, Directions::Both, 0).unwrap();
    assert!(StreamingStack::new(&bi, 1).is_err());
}

/// Stacks round-trip through ONNX nodes, both directions in one tensor per layer (ONNX's
/// `direction = "bidirectional"`), bit for bit for every cell; nodes that disagree on
/// `num_directions` are refused.
#[test]
fn stacks_round_trip_through_onnx_nodes() {
    use fused_rnn::interop::onnx::{OnnxOp, stack_from_onnx, stack_layer_to_onnx};
    for cell in CellKind::ALL {
        for dirs in [Directions::Forward, Directions::Both] {
            let stack = Stack::<f64>::with_seeded_init(cell, 3, 5, 2, dirs, 4).unwrap();
            let nodes: Vec<_> = (0..2)
                .map(|k| stack_layer_to_onnx(&stack, k).unwrap())
                .collect();
            assert!(stack_layer_to_onnx(&stack, 2).is_none());
            assert_eq!(nodes[0].dims.num_directions, dirs.count());
            let op: OnnxOp = nodes[0].op;
            let views: Vec<_> = nodes.iter().map(|n| (n.dims, n.tensors())).collect();
            let back = stack_from_onnx(op, &views).unwrap();
            for ((k, dir, a), (_, _, b)) in stack.layers().zip(back.layers()) {
                let (wa, wb) = (a.weights(), b.weights());
                assert_eq!(
                    (wa.weight_ih, wa.weight_hh, wa.bias_ih, wa.bias_hh),
                    (wb.weight_ih, wb.weight_hh, wb.bias_ih, wb.bias_hh),
                    "{} layer {k} {dir:?}",
                    cell.name()
                );
            }
            if dirs == Directions::Both {
                let mut one = nodes[1].clone();
                one.dims.num_directions = 1;
                one.w.truncate(one.w.len() / 2);
                one.r.truncate(one.r.len() / 2);
                one.b.truncate(one.b.len() / 2);
                let mixed = [
                    (nodes[0].dims, nodes[0].tensors()),
                    (one.dims, one.tensors()),
                ];
                assert!(stack_from_onnx(op, &mixed).is_err());
            }
        }
    }
}
