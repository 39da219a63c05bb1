//! Padded batches (a workspace of `Batch::Padded`): every row equals the
//! same row run alone for its own length, the padding never reaches the state, the output or
//! the gradients (NaN planted there changes nothing), the gradients match central finite
//! differences, threads change no bit, and bad input is an `Err`.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, Error, FinalState, Float, GradMode, GruVariant, InitialState, InputGrads, Isa, Layer,
    LayerGrads, Mode, Upstream,
};
use testkit::oracle::fused_layer;
use testkit::padded::{assert_same_rows, padded_forward, padded_pass, rows_alone};
use testkit::random::{RandomCase, dims};
use testkit::tolerance::{assert_close, f32_tolerance, rms};

/// Case `c`'s layer on the fastest ISA, with `threads` threads.
fn layer<F: Float>(c: &RandomCase<F>, threads: usize) -> Layer<F> {
    fused_layer(c, Isa::detect(), threads)
}

const CELLS: [CellKind; 5] = CellKind::ALL;

/// Batches: lengths with repeats, a 0, full rows and rows of 1 step, in no order.
fn cases() -> Vec<(fused_rnn::Dims, Vec<usize>)> {
    vec![
        (dims(9, 6, 5, 7), vec![9, 0, 4, 9, 1, 4]),
        (dims(7, 3, 4, 17), vec![2, 7, 5]),
        // Big enough for two threads to split the rows (B >= 8).
        (
            dims(6, 12, 16, 32),
            vec![6, 3, 6, 1, 5, 6, 2, 4, 6, 3, 0, 6],
        ),
    ]
}

/// Per row, exactly what the row computes alone: `y`, `h_n`, `c_n`, `dx`, `dh0`, `dc0` bit for
/// bit (each element is a sum over `k` in a fixed order whatever the batch), the weight
/// gradients (a sum over rows in another order) to 1e-12 relative (RMS floor) in f64 and the
/// f32 tolerance in f32. The padding of `y` and `dx` is exactly zero although `x` and `dy` hold NaN
/// there. Every cell kind, f32 and f64, one thread and two.
#[test]
fn every_row_is_the_row_run_alone_and_padding_is_never_read() {
    for cell in CELLS {
        for (k, (d, lengths)) in cases().into_iter().enumerate() {
            let c64 = RandomCase::<f64>::new(cell, d, 100 + k as u64);
            let c32 = c64.cast::<f32>();
            for threads in [1, 2] {
                let what = format!("{} case {k} threads {threads}", cell.name());
                let got = padded_pass(&layer(&c64, threads), &c64, &lengths);
                let want = rows_alone(&layer(&c64, 1), &c64, &lengths);
                assert_same_rows(&got, &want, &format!("{what} f64"));
                // Sums over the same terms in another order: in f64 over at most T·B = 72 terms
                // the difference is below 72 · 1.1e-16 of the terms' scale (about the RMS), far
                // inside 1e-12 with the RMS as the floor (the fused-vs-oracle f64 convention).
                for (n, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
                    assert_close(&format!("{what} f64 grad {n}"), g, w, 1e-12, rms(w));
                }
                let got = padded_pass(&layer(&c32, threads), &c32, &lengths);
                let want = rows_alone(&layer(&c32, 1), &c32, &lengths);
                assert_same_rows(&got, &want, &format!("{what} f32"));
                // The f32 sums over rows differ in order only: the usual f32 bound, against the
                // f64 sum of the same f32 row gradients.
                let tol = f32_tolerance(&d);
                for (n, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
                    assert_close(&format!("{what} f32 grad {n}"), g, w, tol, rms(w));
                }
                let dx_pad_zero = (0..d.seq_len).all(|t| {
                    lengths.iter().enumerate().all(|(r, &len)| {
                        t < len
                            || got.dx[(t * d.batch + r) * d.input..][..d.input]
                                .iter()
                                .all(|v| v.to_bits() == 0)
                    })
                });
                assert!(dx_pad_zero, "{what}: dx at the padding is +0");
            }
        }
    }
}

/// The padded loss `L = Σ_valid y·dy + Σ h_n·dh_n + Σ c_n·dc_n` (padding excluded), in f64.
fn loss(c: &RandomCase<f64>, lengths: &[usize]) -> f64 {
    let d = c.dims;
    let (b, h) = (d.batch, d.hidden);
    let p = padded_forward(&layer(c, 1), c, lengths);
    let dy = c.dy().unwrap();
    let mut l = 0.0;
    for t in 0..d.seq_len {
        for (r, &len) in lengths.iter().enumerate() {
            if t < len {
                for u in 0..h {
                    l += p.y[(t * b + r) * h + u] * dy[(t * b + r) * h + u];
                }
            }
        }
    }
    l += p
        .h_n
        .iter()
        .zip(c.dh_n().unwrap())
        .map(|(a, b)| a * b)
        .sum::<f64>();
    if let Some(dc) = c.dc_n() {
        l += p.c_n.iter().zip(dc).map(|(a, b)| a * b).sum::<f64>();
    }
    l
}

/// Every gradient of every cell kind against central differences of the padded loss in f64.
/// Step 1e-5: the truncation error is O(1e-10) times the third derivative and the rounding
/// error about 1e-16 / 1e-5 = 1e-11, both far below the bound `1e-6 · max(|fd|, 1e-3)`.
#[test]
fn padded_gradients_match_central_differences() {
    let d = dims(5, 4, 3, 4);
    let lengths = [5, 2, 0, 3];
    for cell in CELLS {
        let c = RandomCase::<f64>::new(cell, d, 7);
        let p = padded_pass(&layer(&c, 1), &c, &lengths);
        let eps = 1e-5;
        let check =
            |name: &str, analytic: &[f64], perturb: &dyn Fn(&mut RandomCase<f64>, usize, f64)| {
                for (k, &a) in analytic.iter().enumerate() {
                    let (mut up, mut down) = (c.clone(), c.clone());
                    perturb(&mut up, k, eps);
                    perturb(&mut down, k, -eps);
                    let fd = (loss(&up, &lengths) - loss(&down, &lengths)) / (2.0 * eps);
                    assert!(
                        (a - fd).abs() <= 1e-6 * fd.abs().max(1e-3),
                        "{} {name}[{k}]: analytic {a}, finite difference {fd}",
                        cell.name()
                    );
                }
            };
        check("x", &p.dx, &|c, k, e| c.x[k] += e);
        check("h0", &p.dh0, &|c, k, e| c.h0.as_mut().expect("h0")[k] += e);
        if c.c0.is_some() {
            check("c0", &p.dc0, &|c, k, e| c.c0.as_mut().expect("c0")[k] += e);
        }
        check("weight_ih", &p.grads[0], &|c, k, e| c.weight_ih[k] += e);
        check("weight_hh", &p.grads[1], &|c, k, e| c.weight_hh[k] += e);
        check("bias_ih", &p.grads[2], &|c, k, e| c.bias_ih[k] += e);
        check("bias_hh", &p.grads[3], &|c, k, e| c.bias_hh[k] += e);
    }
}

/// The f32 padded pass against the f64 one, within the f32 tolerance of the shape.
#[test]
fn f32_padded_pass_is_within_the_f32_tolerance_of_f64() {
    let (d, lengths) = cases().remove(2);
    for cell in CELLS {
        let c64 = RandomCase::<f64>::new(cell, d, 3);
        let c32 = c64.cast::<f32>();
        let want = padded_pass(&layer(&c64, 1), &c64, &lengths);
        let got = padded_pass(&layer(&c32, 2), &c32, &lengths);
        let tol = f32_tolerance(&d);
        for (name, g, w) in [
            ("y", &got.y, &want.y),
            ("h_n", &got.h_n, &want.h_n),
            ("dx", &got.dx, &want.dx),
            ("dh0", &got.dh0, &want.dh0),
            ("weight_ih", &got.grads[0], &want.grads[0]),
            ("weight_hh", &got.grads[1], &want.grads[1]),
            ("bias_ih", &got.grads[2], &want.grads[2]),
            ("bias_hh", &got.grads[3], &want.grads[3]),
        ] {
            assert_close(&format!("{} {name}", cell.name()), g, w, tol, rms(w));
        }
    }
}

#[test]
fn bad_padded_input_is_an_error() {
    let cell = CellKind::Gru(GruVariant::ResetAfter);
    let layer = Layer::<f32>::with_seeded_init(cell, 3, 4, 1).expect("layer");
    let err = |r: Result<fused_rnn::Workspace<f32>, Error>| r.expect_err("must fail");
    assert!(matches!(
        err(layer.workspace(4, &[2, 5], Mode::Training)),
        Error::InvalidArgument {
            what: "lengths",
            ..
        }
    ));
    assert!(matches!(
        err(layer.workspace(4, &[], Mode::Training)),
        Error::ZeroDim { .. }
    ));
    assert!(matches!(
        err(layer.workspace(0, &[0], Mode::Training)),
        Error::ZeroDim { .. }
    ));
    // Short rows of a batch whose padded buffers could not exist.
    assert!(matches!(
        err(layer.workspace(usize::MAX / 2, &[1, 2], Mode::Training)),
        Error::SizeOverflow { .. }
    ));

    let (t, b, i, h) = (4, 2, 3, 4);
    let mut ws = layer.workspace(t, &[4, 1], Mode::Training).expect("ws");
    let x = vec![0.5f32; t * b * i];
    let mut y = vec![0.0f32; t * b * h];
    let mut grads = layer.zero_grads().unwrap();
    let backward = |ws: &mut fused_rnn::Workspace<f32>, grads: &mut LayerGrads<f32>| {
        layer.backward(
            ws,
            &x,
            Upstream::default(),
            grads,
            InputGrads::default(),
            GradMode::Overwrite,
        )
    };
    assert!(matches!(
        backward(&mut ws, &mut grads),
        Err(Error::InvalidState { .. })
    ));
    assert!(matches!(
        layer.forward(
            &mut ws,
            Direction::Forward,
            &x[1..],
            InitialState::default(),
            &mut y,
            FinalState::default()
        ),
        Err(Error::BufferLength { .. })
    ));
    let c0 = vec![0.0f32; b * h];
    assert!(matches!(
        layer.forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState {
                h0: None,
                c0: Some(&c0)
            },
            &mut y,
            FinalState::default()
        ),
        Err(Error::UnexpectedBuffer { .. })
    ));
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .expect("forward");
    let mut short = LayerGrads {
        weight_ih: vec![0.0; 1],
        ..layer.zero_grads().unwrap()
    };
    assert!(matches!(
        backward(&mut ws, &mut short),
        Err(Error::BufferLength { .. })
    ));
    backward(&mut ws, &mut grads).expect("backward after forward");
    assert!(matches!(
        backward(&mut ws, &mut grads),
        Err(Error::InvalidState { .. })
    ));
    // Inference workspaces keep nothing for backward; another layer's does not fit.
    let mut inf = layer.workspace(t, &[4, 1], Mode::Inference).expect("ws");
    layer
        .forward(
            &mut inf,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .expect("inference forward");
    assert!(matches!(
        backward(&mut inf, &mut grads),
        Err(Error::WorkspaceMismatch { .. })
    ));
    let other = Layer::<f32>::with_seeded_init(cell, 3, 5, 1).expect("layer");
    let mut ws_other = other.workspace(t, &[4, 1], Mode::Training).expect("ws");
    assert!(matches!(
        layer.forward(
            &mut ws_other,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default()
        ),
        Err(Error::WorkspaceMismatch { .. })
    ));
}
