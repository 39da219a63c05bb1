//! Padded batches (`Layer::forward_padded`, `Layer::backward_padded`): every row equals the
//! same row run alone for its own length, the padding never reaches the state, the output or
//! the gradients (NaN planted there changes nothing), the gradients match central finite
//! differences, threads change no bit, and bad input is an `Err`.

mod common;

use common::{RandomCase, assert_close, backward_from, dims, f32_tolerance, forward_from, rms};
use fused_rnn::Direction;
use fused_rnn::{
    CellKind, Error, FinalState, Float, GradMode, GruVariant, InitialState, InputGrads, Layer,
    LayerGrads, Mode, Upstream,
};

/// Everything a padded training pass gives.
#[derive(Debug, Clone, PartialEq)]
struct Pass<F> {
    y: Vec<F>,
    h_n: Vec<F>,
    c_n: Vec<F>,
    dx: Vec<F>,
    dh0: Vec<F>,
    dc0: Vec<F>,
    grads: [Vec<F>; 4],
}

fn grads_of<F: Float>(g: LayerGrads<F>) -> [Vec<F>; 4] {
    [g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh]
}

/// `c`'s `x` and `dy` with NaN at every padded step of every row.
fn with_nan_padding<F: Float>(c: &RandomCase<F>, lengths: &[usize]) -> (Vec<F>, Vec<F>) {
    let (b, i, h) = (c.dims.batch, c.dims.input, c.dims.hidden);
    let (mut x, mut dy) = (c.x.clone(), c.dy.clone());
    for t in 0..c.dims.seq_len {
        for (r, &len) in lengths.iter().enumerate() {
            if t >= len {
                x[(t * b + r) * i..][..i].fill(F::from_f64(f64::NAN));
                dy[(t * b + r) * h..][..h].fill(F::from_f64(f64::NAN));
            }
        }
    }
    (x, dy)
}

/// A padded training forward and backward of `c` (NaN in the padding of `x` and `dy`).
fn padded_pass<F: Float>(c: &RandomCase<F>, lengths: &[usize], threads: usize) -> Pass<F> {
    let d = c.dims;
    let (t, b, i, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let lstm = c.cell.has_cell_state();
    let mut layer = Layer::new(c.cell, i, h, c.weights()).expect("layer");
    layer.set_threads(threads).expect("threads");
    let (x, dy) = with_nan_padding(c, lengths);
    let mut ws = layer
        .workspace(t, lengths, Mode::Training)
        .expect("workspace");
    let s = b * h;
    let mut p = Pass {
        y: vec![F::from_f64(f64::NAN); t * b * h],
        h_n: vec![F::ZERO; s],
        c_n: vec![F::ZERO; if lstm { s } else { 0 }],
        dx: vec![F::from_f64(f64::NAN); t * b * i],
        dh0: vec![F::ZERO; s],
        dc0: vec![F::ZERO; if lstm { s } else { 0 }],
        grads: Default::default(),
    };
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState {
                h0: Some(&c.h0),
                c0: c.c0(),
            },
            &mut p.y,
            FinalState {
                h_n: Some(&mut p.h_n),
                c_n: lstm.then_some(&mut p.c_n[..]),
            },
        )
        .expect("forward_padded");
    let mut grads = layer.zero_grads();
    layer
        .backward(
            &mut ws,
            &x,
            Upstream {
                dy: Some(&dy),
                dh_n: Some(&c.dh_n),
                dc_n: c.dc_n(),
            },
            &mut grads,
            InputGrads {
                dx: Some(&mut p.dx),
                dh0: Some(&mut p.dh0),
                dc0: lstm.then_some(&mut p.dc0[..]),
            },
            GradMode::Overwrite,
        )
        .expect("backward_padded");
    p.grads = grads_of(grads);
    p
}

/// The same pass assembled from each row run alone (`B = 1`, `T = its length`), weight
/// gradients summed over the rows in f64.
fn rows_alone<F: Float>(c: &RandomCase<F>, lengths: &[usize]) -> Pass<F> {
    let d = c.dims;
    let (t_all, b, i, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let lstm = c.cell.has_cell_state();
    let layer = Layer::new(c.cell, i, h, c.weights()).expect("layer");
    let s = b * h;
    let mut p = Pass {
        y: vec![F::ZERO; t_all * b * h],
        h_n: vec![F::ZERO; s],
        c_n: vec![F::ZERO; if lstm { s } else { 0 }],
        dx: vec![F::ZERO; t_all * b * i],
        dh0: vec![F::ZERO; s],
        dc0: vec![F::ZERO; if lstm { s } else { 0 }],
        grads: Default::default(),
    };
    let mut sums: [Vec<f64>; 4] = grads_of(layer.zero_grads()).map(|g| vec![0.0; g.len()]);
    for (r, &len) in lengths.iter().enumerate() {
        let row = |m: &[F]| m[r * h..(r + 1) * h].to_vec();
        let steps = |m: &[F], w: usize| -> Vec<F> {
            (0..len)
                .flat_map(|t| m[(t * b + r) * w..][..w].to_vec())
                .collect()
        };
        if len == 0 {
            p.h_n[r * h..(r + 1) * h].copy_from_slice(&row(&c.h0));
            p.dh0[r * h..(r + 1) * h].copy_from_slice(&row(&c.dh_n));
            if lstm {
                p.c_n[r * h..(r + 1) * h].copy_from_slice(&row(c.c0().expect("c0")));
                p.dc0[r * h..(r + 1) * h].copy_from_slice(&row(c.dc_n().expect("dc_n")));
            }
            continue;
        }
        let x = steps(&c.x, i);
        let dy = steps(&c.dy, h);
        let (h0, c0) = (row(&c.h0), c.c0().map(row));
        let (dh_n, dc_n) = (row(&c.dh_n), c.dc_n().map(row));
        let (y, hn, cn, mut ws) = forward_from(&layer, &x, (len, 1), &h0, c0.as_deref());
        let mut g = layer.zero_grads();
        let (dx, dh0, dc0) = backward_from(
            &layer,
            &mut ws,
            &x,
            &dy,
            &dh_n,
            dc_n.as_deref(),
            &mut g,
            GradMode::Overwrite,
        );
        for t in 0..len {
            p.y[(t * b + r) * h..][..h].copy_from_slice(&y[t * h..][..h]);
            p.dx[(t * b + r) * i..][..i].copy_from_slice(&dx[t * i..][..i]);
        }
        p.h_n[r * h..(r + 1) * h].copy_from_slice(&hn);
        p.dh0[r * h..(r + 1) * h].copy_from_slice(&dh0);
        if lstm {
            p.c_n[r * h..(r + 1) * h].copy_from_slice(&cn);
            p.dc0[r * h..(r + 1) * h].copy_from_slice(&dc0);
        }
        for (sum, g) in sums.iter_mut().zip(grads_of(g)) {
            for (s, v) in sum.iter_mut().zip(g) {
                *s += v.to_f64();
            }
        }
    }
    p.grads = sums.map(|s| s.into_iter().map(F::from_f64).collect());
    p
}

fn bits<F: Float>(v: &[F]) -> Vec<u64> {
    v.iter().map(|x| x.to_f64().to_bits()).collect()
}

/// Every per-row output and input gradient, bit for bit.
fn same_row_outputs<F: Float>(got: &Pass<F>, want: &Pass<F>, what: &str) {
    for (name, g, w) in [
        ("y", &got.y, &want.y),
        ("h_n", &got.h_n, &want.h_n),
        ("c_n", &got.c_n, &want.c_n),
        ("dx", &got.dx, &want.dx),
        ("dh0", &got.dh0, &want.dh0),
        ("dc0", &got.dc0, &want.dc0),
    ] {
        assert_eq!(bits(g), bits(w), "{what} {name}");
    }
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
                let got = padded_pass(&c64, &lengths, threads);
                let want = rows_alone(&c64, &lengths);
                same_row_outputs(&got, &want, &format!("{what} f64"));
                // Sums over the same terms in another order: in f64 over at most T·B = 72 terms
                // the difference is below 72 · 1.1e-16 of the terms' scale (about the RMS), far
                // inside 1e-12 with the RMS as the floor (the fused-vs-oracle f64 convention).
                for (n, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
                    assert_close(&format!("{what} f64 grad {n}"), g, w, 1e-12, rms(w));
                }
                let got = padded_pass(&c32, &lengths, threads);
                let want = rows_alone(&c32, &lengths);
                same_row_outputs(&got, &want, &format!("{what} f32"));
                // The f32 sums over rows differ in order only: the usual f32 bound, against the
                // f64 sum of the same f32 row gradients.
                let tol = f32_tolerance(&d);
                for (n, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
                    let w64: Vec<f64> = w.iter().map(|v| v.to_f64()).collect();
                    let g64: Vec<f64> = g.iter().map(|v| v.to_f64()).collect();
                    assert_close(&format!("{what} f32 grad {n}"), &g64, &w64, tol, rms(&w64));
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
    let (t_all, b, i, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let lstm = c.cell.has_cell_state();
    let layer = Layer::new(c.cell, i, h, c.weights()).expect("layer");
    let mut ws = layer
        .workspace(t_all, lengths, Mode::Inference)
        .expect("ws");
    let mut y = vec![0.0; t_all * b * h];
    let (mut hn, mut cn) = (vec![0.0; b * h], vec![0.0; b * h]);
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &c.x,
            InitialState {
                h0: Some(&c.h0),
                c0: c.c0(),
            },
            &mut y,
            FinalState {
                h_n: Some(&mut hn),
                c_n: lstm.then_some(&mut cn[..]),
            },
        )
        .expect("forward");
    let mut l = 0.0;
    for t in 0..t_all {
        for (r, &len) in lengths.iter().enumerate() {
            if t < len {
                for u in 0..h {
                    l += y[(t * b + r) * h + u] * c.dy[(t * b + r) * h + u];
                }
            }
        }
    }
    l += hn.iter().zip(&c.dh_n).map(|(a, b)| a * b).sum::<f64>();
    if let Some(dc) = c.dc_n() {
        l += cn.iter().zip(dc).map(|(a, b)| a * b).sum::<f64>();
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
        let p = padded_pass(&c, &lengths, 1);
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
        check("h0", &p.dh0, &|c, k, e| c.h0[k] += e);
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
        let want = padded_pass(&c64, &lengths, 1);
        let got = padded_pass(&c64.cast::<f32>(), &lengths, 2);
        let tol = f32_tolerance(&d);
        let widen = |v: &[f32]| -> Vec<f64> { v.iter().map(|&a| f64::from(a)).collect() };
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
            assert_close(
                &format!("{} {name}", cell.name()),
                &widen(g),
                w,
                tol,
                rms(w),
            );
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
    let mut grads = layer.zero_grads();
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
        ..layer.zero_grads()
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
