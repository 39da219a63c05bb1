//! The per-row oracle of padded batches: a padded batch must give, row by row, exactly what
//! each row gives run alone for its own length (`B = 1`, `T = its length`), and NaN planted in
//! its padding must reach nothing.
//!
//! Every call the kit makes to the padded API is in one private function, `padded_calls`, so
//! that a change of that API changes one function.

use fused_rnn::Direction;
use fused_rnn::{FinalState, Float, GradMode, InitialState, InputGrads, Layer, Mode, Upstream};

use crate::convert::widen;
use crate::oracle::{Pass, backward_in, forward_from, grads_of};
use crate::random::RandomCase;

/// `c`'s `x` and `dy` (zeros if absent) with NaN at every padded step of every row.
pub fn with_nan_padding<F: Float>(c: &RandomCase<F>, lengths: &[usize]) -> (Vec<F>, Vec<F>) {
    let d = c.dims;
    let (b, i, h) = (d.batch, d.input, d.hidden);
    let nan = F::from_f64(f64::NAN);
    let mut x = c.x.clone();
    let mut dy = c
        .dy()
        .map_or_else(|| vec![F::ZERO; d.y_len()], <[F]>::to_vec);
    for t in 0..d.seq_len {
        for (r, &len) in lengths.iter().enumerate() {
            if t >= len {
                x[(t * b + r) * i..][..i].fill(nan);
                dy[(t * b + r) * h..][..h].fill(nan);
            }
        }
    }
    (x, dy)
}

/// The padded API on case `c` (`T = c.dims.seq_len`, one row per length): a forward over `x`
/// from `c`'s initial state in `mode`, then, in training, a backward of `dy` and `c`'s
/// `dh_n`, `dc_n` (weight gradients overwritten). Outputs are prefilled with NaN; after an
/// inference forward the gradients are empty.
fn padded_calls<F: Float>(
    layer: &Layer<F>,
    c: &RandomCase<F>,
    lengths: &[usize],
    (x, dy): (&[F], &[F]),
    mode: Mode,
) -> Pass {
    let d = c.dims;
    let (s, nan) = (d.state_len(), F::from_f64(f64::NAN));
    let lstm = c.cell.has_cell_state();
    let c_len = if lstm { s } else { 0 };
    let mut ws = layer
        .workspace(d.seq_len, lengths, mode)
        .expect("padded workspace");
    let (mut y, mut h_n, mut c_n) = (vec![nan; d.y_len()], vec![nan; s], vec![nan; c_len]);
    let fin = FinalState {
        h_n: Some(&mut h_n),
        c_n: lstm.then_some(&mut c_n[..]),
    };
    layer
        .forward(&mut ws, Direction::Forward, x, c.init(), &mut y, fin)
        .expect("padded forward");
    let mut p = Pass {
        y: widen(&y),
        h_n: widen(&h_n),
        c_n: widen(&c_n),
        ..Pass::default()
    };
    if mode == Mode::Training {
        let (mut dx, mut dh0, mut dc0) = (vec![nan; x.len()], vec![nan; s], vec![nan; c_len]);
        let mut grads = layer.zero_grads().unwrap();
        let up = Upstream {
            dy: Some(dy),
            ..c.upstream()
        };
        let inputs = InputGrads {
            dx: Some(&mut dx),
            dh0: Some(&mut dh0),
            dc0: lstm.then_some(&mut dc0[..]),
        };
        layer
            .backward(&mut ws, x, up, &mut grads, inputs, GradMode::Overwrite)
            .expect("padded backward");
        (p.dx, p.dh0, p.dc0) = (widen(&dx), widen(&dh0), widen(&dc0));
        p.grads = grads_of(&grads);
    }
    p
}

/// A padded training forward and backward of case `c` on `layer` (NaN in the padding of `x`
/// and `dy`), whose `y` an inference forward must give too, bit for bit.
pub fn padded_pass<F: Float>(layer: &Layer<F>, c: &RandomCase<F>, lengths: &[usize]) -> Pass {
    let (x, dy) = with_nan_padding(c, lengths);
    let p = padded_calls(layer, c, lengths, (&x, &dy), Mode::Training);
    let inference = padded_calls(layer, c, lengths, (&x, &dy), Mode::Inference);
    let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&inference.y),
        bits(&p.y),
        "inference y of a padded batch"
    );
    p
}

/// A padded inference forward of case `c` on `layer` (NaN in the padding of `x`): `y`, `h_n`,
/// `c_n`.
pub fn padded_forward<F: Float>(layer: &Layer<F>, c: &RandomCase<F>, lengths: &[usize]) -> Pass {
    let (x, dy) = with_nan_padding(c, lengths);
    padded_calls(layer, c, lengths, (&x, &dy), Mode::Inference)
}

/// What [`padded_pass`] must give, assembled from each row of case `c` run alone on `layer`
/// (`B = 1`, `T = its length`, `Layer::forward` and `Layer::backward`): the row's `y` and `dx`
/// at its valid steps and zeros at its padding, its `h_n`, `c_n`, `dh0`, `dc0` (a row of length
/// 0 keeps `h0`, `c0` and passes `dh_n`, `dc_n` on), and the weight gradients summed over the
/// rows in f64.
pub fn rows_alone<F: Float>(layer: &Layer<F>, c: &RandomCase<F>, lengths: &[usize]) -> Pass {
    let d = c.dims;
    let (b, i, h) = (d.batch, d.input, d.hidden);
    let lstm = c.cell.has_cell_state();
    let s = d.state_len();
    let c_len = if lstm { s } else { 0 };
    let zeros = vec![F::ZERO; s];
    let or_zeros = |v: Option<&[F]>| v.unwrap_or(&zeros).to_vec();
    let (h0, dh_n) = (or_zeros(c.h0()), or_zeros(c.dh_n()));
    let (c0, dc_n) = (or_zeros(c.c0()), or_zeros(c.dc_n()));
    let (_, dy) = with_nan_padding(c, lengths);
    let mut p = Pass {
        y: vec![0.0; d.y_len()],
        h_n: vec![0.0; s],
        c_n: vec![0.0; c_len],
        dx: vec![0.0; d.x_len()],
        dh0: vec![0.0; s],
        dc0: vec![0.0; c_len],
        grads: grads_of(&layer.zero_grads().unwrap()).map(|g| vec![0.0; g.len()]),
    };
    for (r, &len) in lengths.iter().enumerate() {
        let row = |m: &[F]| m[r * h..(r + 1) * h].to_vec();
        let put = |dst: &mut [f64], v: &[F]| dst[r * h..(r + 1) * h].copy_from_slice(&widen(v));
        if len == 0 {
            put(&mut p.h_n, &row(&h0));
            put(&mut p.dh0, &row(&dh_n));
            if lstm {
                put(&mut p.c_n, &row(&c0));
                put(&mut p.dc0, &row(&dc_n));
            }
            continue;
        }
        let steps = |m: &[F], w: usize| -> Vec<F> {
            (0..len)
                .flat_map(|t| m[(t * b + r) * w..][..w].to_vec())
                .collect()
        };
        let (x, dy) = (steps(&c.x, i), steps(&dy, h));
        let (h0_r, dh_n_r) = (row(&h0), row(&dh_n));
        let (c0_r, dc_n_r) = (lstm.then(|| row(&c0)), lstm.then(|| row(&dc_n)));
        let init = InitialState {
            h0: Some(&h0_r),
            c0: c0_r.as_deref(),
        };
        let (y, hn, cn, mut ws) = forward_from(layer, &x, (len, 1), init);
        let mut g = layer.zero_grads().unwrap();
        let up = Upstream {
            dy: Some(&dy),
            dh_n: Some(&dh_n_r),
            dc_n: dc_n_r.as_deref(),
        };
        let (dx, dh0, dc0) = backward_in(layer, &mut ws, &x, up, &mut g, GradMode::Overwrite);
        for t in 0..len {
            p.y[(t * b + r) * h..][..h].copy_from_slice(&widen(&y[t * h..][..h]));
            p.dx[(t * b + r) * i..][..i].copy_from_slice(&widen(&dx[t * i..][..i]));
        }
        put(&mut p.h_n, &hn);
        put(&mut p.dh0, &dh0);
        if lstm {
            put(&mut p.c_n, &cn);
            put(&mut p.dc0, &dc0);
        }
        for (sum, g) in p.grads.iter_mut().zip(grads_of(&g)) {
            for (s, v) in sum.iter_mut().zip(g) {
                *s += v;
            }
        }
    }
    p
}

/// Panics unless `got` and `want` hold the same per-row outputs and input gradients (`y`,
/// `h_n`, `c_n`, `dx`, `dh0`, `dc0`) bit for bit: each element is a sum over `k` in a fixed
/// order whatever the batch. (The weight gradients sum over rows in another order: compare them
/// with a tolerance.)
#[track_caller]
pub fn assert_same_rows(got: &Pass, want: &Pass, what: &str) {
    let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
    for (name, g, w) in [
        ("y", &got.y, &want.y),
        ("h_n", &got.h_n, &want.h_n),
        ("c_n", &got.c_n, &want.c_n),
        ("dx", &got.dx, &want.dx),
        ("dh0", &got.dh0, &want.dh0),
        ("dc0", &got.dc0, &want.dc0),
    ] {
        assert_eq!(
            bits(g),
            bits(w),
            "{what}: {name} of the padded batch and of its rows"
        );
    }
}
