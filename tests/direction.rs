//! `Direction::Reverse`: a reverse pass is the forward pass over each row's valid steps read
//! backwards, for fixed and padded batches, every cell, f32 and f64, one and two threads, on
//! the row split and the hidden-unit split.
//!
//! The oracle is the forward direction itself (tested against the scalar reference elsewhere):
//! row `b` of a reverse pass equals a forward pass over `x_b[len-1], ..., x_b[0]` alone, with
//! `y` and `dx` read back in time order. Outputs, states, `dx`, `dh0` and `dc0` are computed by
//! the same operations in the same order, so they must be equal bit for bit; the weight
//! gradients sum the same terms over the rows in another order, so they are compared to the
//! f64 round-off of that sum (1e-12 relative in f64, `f32_tolerance` in f32).

use fused_rnn::{
    Batch, CellKind, Direction, FinalState, Float, GradMode, InitialState, InputGrads, Layer,
    LayerGrads, Mode, Upstream,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A padded (or fixed, when every length is `t`) problem.
struct Problem<F> {
    t: usize,
    lengths: Vec<usize>,
    x: Vec<F>,
    h0: Vec<F>,
    c0: Vec<F>,
    dy: Vec<F>,
    dh_n: Vec<F>,
    dc_n: Vec<F>,
}

/// Everything a training pass gives.
struct Pass<F> {
    y: Vec<F>,
    h_n: Vec<F>,
    c_n: Vec<F>,
    dx: Vec<F>,
    dh0: Vec<F>,
    dc0: Vec<F>,
    grads: LayerGrads<F>,
}

fn values<F: Float>(rng: &mut StdRng, n: usize) -> Vec<F> {
    (0..n)
        .map(|_| F::from_f64(rng.random_range(-1.0..1.0)))
        .collect()
}

fn problem<F: Float>(layer: &Layer<F>, t: usize, lengths: &[usize], seed: u64) -> Problem<F> {
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, i, h) = (lengths.len(), layer.input_size(), layer.hidden_size());
    Problem {
        t,
        lengths: lengths.to_vec(),
        x: values(&mut rng, t * b * i),
        h0: values(&mut rng, b * h),
        c0: values(&mut rng, b * h),
        dy: values(&mut rng, t * b * h),
        dh_n: values(&mut rng, b * h),
        dc_n: values(&mut rng, b * h),
    }
}

/// A training forward and backward of `p` in `direction` over `batch` (NaN-filled outputs, so
/// an element left unwritten shows).
fn pass<F: Float>(layer: &Layer<F>, p: &Problem<F>, batch: Batch<'_>, dir: Direction) -> Pass<F> {
    let (b, i, h) = (p.lengths.len(), layer.input_size(), layer.hidden_size());
    let lstm = layer.cell().has_cell_state();
    let nan = F::from_f64(f64::NAN);
    let mut ws = layer.workspace(p.t, batch, Mode::Training).unwrap();
    let mut y = vec![nan; p.t * b * h];
    let (mut h_n, mut c_n) = (vec![nan; b * h], vec![nan; b * h]);
    layer
        .forward(
            &mut ws,
            dir,
            &p.x,
            InitialState {
                h0: Some(&p.h0),
                c0: lstm.then_some(&p.c0[..]),
            },
            &mut y,
            FinalState {
                h_n: Some(&mut h_n),
                c_n: lstm.then_some(&mut c_n[..]),
            },
        )
        .unwrap();
    let mut grads = layer.zero_grads().unwrap();
    let (mut dx, mut dh0, mut dc0) = (vec![nan; p.t * b * i], vec![nan; b * h], vec![nan; b * h]);
    layer
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
    if !lstm {
        c_n.fill(F::ZERO);
        dc0.fill(F::ZERO);
    }
    Pass {
        y,
        h_n,
        c_n,
        dx,
        dh0,
        dc0,
        grads,
    }
}

/// Row `r`'s `[len, w]` steps of `m [T, B, w]`, last valid step first.
fn row_reversed<F: Copy>(m: &[F], b: usize, w: usize, r: usize, len: usize) -> Vec<F> {
    (0..len)
        .rev()
        .flat_map(|t| m[(t * b + r) * w..][..w].iter().copied())
        .collect()
}

fn bits<F: Float>(v: &[F]) -> Vec<u64> {
    v.iter().map(|a| a.to_f64().to_bits()).collect()
}

/// The reverse pass of `p` against each row run forward alone over its steps reversed.
fn check_against_rows<F: Float>(layer: &Layer<F>, p: &Problem<F>, batch: Batch<'_>, tol: f64) {
    let (b, i, h) = (p.lengths.len(), layer.input_size(), layer.hidden_size());
    let what = format!(
        "{} {:?} lengths {:?}",
        layer.cell().name(),
        F::NAME,
        p.lengths
    );
    let rev = pass(layer, p, batch, Direction::Reverse);
    let mut sum = layer.zero_grads().unwrap();
    for (r, &len) in p.lengths.iter().enumerate() {
        let row = |m: &[F], w: usize| m[r * w..(r + 1) * w].to_vec();
        if len == 0 {
            // Nothing runs: the final state is the initial one, and dh_n flows to dh0.
            assert_eq!(
                bits(&row(&rev.h_n, h)),
                bits(&row(&p.h0, h)),
                "{what} row {r}"
            );
            assert_eq!(
                bits(&row(&rev.dh0, h)),
                bits(&row(&p.dh_n, h)),
                "{what} row {r}"
            );
            for t in 0..p.t {
                assert!(
                    rev.y[(t * b + r) * h..][..h]
                        .iter()
                        .all(|v| v.to_f64() == 0.0)
                );
                assert!(
                    rev.dx[(t * b + r) * i..][..i]
                        .iter()
                        .all(|v| v.to_f64() == 0.0)
                );
            }
            continue;
        }
        let alone = Problem {
            t: len,
            lengths: vec![len],
            x: row_reversed(&p.x, b, i, r, len),
            h0: row(&p.h0, h),
            c0: row(&p.c0, h),
            dy: row_reversed(&p.dy, b, h, r, len),
            dh_n: row(&p.dh_n, h),
            dc_n: row(&p.dc_n, h),
        };
        let fwd = pass(layer, &alone, Batch::Fixed(1), Direction::Forward);
        let at = format!("{what} row {r}");
        assert_eq!(
            bits(&row_reversed(&rev.y, b, h, r, len)),
            bits(&fwd.y),
            "{at}: y"
        );
        assert_eq!(
            bits(&row_reversed(&rev.dx, b, i, r, len)),
            bits(&fwd.dx),
            "{at}: dx"
        );
        for (name, got, want) in [
            ("h_n", &rev.h_n, &fwd.h_n),
            ("c_n", &rev.c_n, &fwd.c_n),
            ("dh0", &rev.dh0, &fwd.dh0),
            ("dc0", &rev.dc0, &fwd.dc0),
        ] {
            assert_eq!(bits(&row(got, h)), bits(want), "{at}: {name}");
        }
        for t in len..p.t {
            let pad =
                |m: &[F], w: usize| m[(t * b + r) * w..][..w].iter().all(|v| v.to_f64() == 0.0);
            assert!(pad(&rev.y, h) && pad(&rev.dx, i), "{at}: padding step {t}");
        }
        for (s, g) in [
            (&mut sum.weight_ih, &fwd.grads.weight_ih),
            (&mut sum.weight_hh, &fwd.grads.weight_hh),
            (&mut sum.bias_ih, &fwd.grads.bias_ih),
            (&mut sum.bias_hh, &fwd.grads.bias_hh),
        ] {
            for (a, v) in s.iter_mut().zip(g) {
                *a += *v;
            }
        }
    }
    for (name, got, want) in [
        ("dW_ih", &rev.grads.weight_ih, &sum.weight_ih),
        ("dW_hh", &rev.grads.weight_hh, &sum.weight_hh),
        ("db_ih", &rev.grads.bias_ih, &sum.bias_ih),
        ("db_hh", &rev.grads.bias_hh, &sum.bias_hh),
    ] {
        let scale = want.iter().map(|v| v.to_f64().abs()).fold(1e-30, f64::max);
        for (k, (g, w)) in got.iter().zip(want.iter()).enumerate() {
            let err = (g.to_f64() - w.to_f64()).abs() / scale;
            assert!(
                err <= tol,
                "{what}: {name}[{k}] {} vs {} ({err:e})",
                g.to_f64(),
                w.to_f64()
            );
        }
    }
}

fn layer<F: Float>(cell: CellKind, i: usize, h: usize, threads: usize) -> Layer<F> {
    let mut l = Layer::with_seeded_init(cell, i, h, 7).unwrap();
    l.set_threads(threads).unwrap();
    l
}

/// The f32 bound of the crate's tests (`f32_tolerance` in the test kit: dot products of
/// `K = I + H` terms summed over `T·B` rows), relative to the tensor's largest element.
fn f32_tol(k: usize, rows: usize) -> f64 {
    8.0 * f64::from(f32::EPSILON) * (4.0 + ((k * rows) as f64).sqrt())
}

#[test]
fn fixed_reverse_is_each_row_run_forward_over_its_steps_reversed() {
    for cell in CellKind::ALL {
        for threads in [1, 2] {
            // B = 9 splits by rows on two threads where a step has 2^18 multiply-adds.
            let (t, b, i, h) = (6, 9, 40, 64);
            let l = layer::<f64>(cell, i, h, threads);
            let p = problem(&l, t, &vec![t; b], 1);
            check_against_rows(&l, &p, Batch::Fixed(b), 1e-12);
            let l = layer::<f32>(cell, i, h, threads);
            let p = problem(&l, t, &vec![t; b], 2);
            check_against_rows(&l, &p, Batch::Fixed(b), f32_tol(i + h, t * b));
        }
    }
}

#[test]
fn padded_reverse_starts_each_row_at_its_own_last_valid_step() {
    for cell in CellKind::ALL {
        for threads in [1, 2] {
            for lengths in [vec![5, 3, 3, 1, 0, 5], vec![2, 7, 4]] {
                let l = layer::<f64>(cell, 5, 9, threads);
                let p = problem(&l, 7, &lengths, 3);
                check_against_rows(&l, &p, Batch::Padded(&lengths), 1e-12);
                let l = layer::<f32>(cell, 5, 9, threads);
                let p = problem(&l, 7, &lengths, 4);
                check_against_rows(
                    &l,
                    &p,
                    Batch::Padded(&lengths),
                    f32_tol(14, 7 * lengths.len()),
                );
            }
        }
    }
}

/// A padded batch whose rows all run `T` steps is the fixed batch, in either direction: the
/// same bits for outputs, states and input gradients; going forward, for the weight gradients
/// too (in reverse, the padded pass sums their rows in the order it runs the steps, the fixed
/// one in time order; `check_against_rows` bounds both).
#[test]
fn padded_at_full_length_equals_fixed_in_both_directions() {
    for cell in CellKind::ALL {
        let l = layer::<f32>(cell, 6, 20, 1);
        let lengths = vec![8; 3];
        let p = problem(&l, 8, &lengths, 5);
        for dir in Direction::BOTH {
            let fixed = pass(&l, &p, Batch::Fixed(3), dir);
            let padded = pass(&l, &p, Batch::Padded(&lengths), dir);
            let mut compared = vec![
                ("y", &fixed.y, &padded.y),
                ("h_n", &fixed.h_n, &padded.h_n),
                ("c_n", &fixed.c_n, &padded.c_n),
                ("dx", &fixed.dx, &padded.dx),
                ("dh0", &fixed.dh0, &padded.dh0),
                ("dc0", &fixed.dc0, &padded.dc0),
            ];
            if dir == Direction::Forward {
                compared.extend([
                    ("dW_ih", &fixed.grads.weight_ih, &padded.grads.weight_ih),
                    ("dW_hh", &fixed.grads.weight_hh, &padded.grads.weight_hh),
                    ("db_ih", &fixed.grads.bias_ih, &padded.grads.bias_ih),
                    ("db_hh", &fixed.grads.bias_hh, &padded.grads.bias_hh),
                ]);
            }
            for (name, a, b) in compared {
                assert_eq!(bits(a), bits(b), "{} {dir:?}: {name}", cell.name());
            }
        }
    }
}

/// Reverse inference split by hidden units (batch below 8, a step of at least 2^16
/// multiply-adds) gives the bits of one thread, and of the training pass's outputs.
#[test]
fn reverse_inference_split_by_units_matches_one_thread() {
    for cell in CellKind::ALL {
        let (t, b, i, h) = (20, 2, 48, 128);
        let one = layer::<f32>(cell, i, h, 1);
        let two = layer::<f32>(cell, i, h, 2);
        let p = problem(&one, t, &vec![t; b], 6);
        let run = |l: &Layer<f32>| {
            let mut ws = l.workspace(t, b, Mode::Inference).unwrap();
            let mut y = vec![f32::NAN; t * b * h];
            let mut h_n = vec![f32::NAN; b * h];
            l.forward(
                &mut ws,
                Direction::Reverse,
                &p.x,
                InitialState {
                    h0: Some(&p.h0),
                    c0: cell.has_cell_state().then_some(&p.c0[..]),
                },
                &mut y,
                FinalState {
                    h_n: Some(&mut h_n),
                    c_n: None,
                },
            )
            .unwrap();
            (y, h_n)
        };
        let (y1, h1) = run(&one);
        let (y2, h2) = run(&two);
        assert_eq!(bits(&y1), bits(&y2), "{}: y", cell.name());
        assert_eq!(bits(&h1), bits(&h2), "{}: h_n", cell.name());
        let train = pass(&one, &p, Batch::Fixed(b), Direction::Reverse);
        assert_eq!(bits(&y1), bits(&train.y), "{}: y, training", cell.name());
    }
}

/// Backward follows the direction of the forward it consumes.
#[test]
fn backward_runs_in_the_direction_of_its_forward() {
    let l = layer::<f64>(CellKind::Lstm, 3, 5, 1);
    let p = problem(&l, 6, &[6, 6], 8);
    let rev = pass(&l, &p, Batch::Fixed(2), Direction::Reverse);
    let fwd = pass(&l, &p, Batch::Fixed(2), Direction::Forward);
    assert_ne!(bits(&rev.dx), bits(&fwd.dx));
    // And the reverse pass's dx is not the forward's read backwards (the order of the steps
    // matters to a recurrence): the oracle above is not trivially satisfied.
    let flipped = row_reversed(&fwd.dx, 2, 3, 0, 6);
    assert_ne!(bits(&row_reversed(&rev.dx, 2, 3, 0, 6)), bits(&flipped));
}
