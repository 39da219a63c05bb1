//! Padded batches (a workspace of `Batch::Padded`) against each row run alone
//! (the per-row oracle of `testkit::padded`).
//!
//! Decodes a cell, an available ISA, f32 or f64, 1-3 threads, `T` 1..=24, `B` 1..=20, `I`
//! 1..=40, `H` 1..=48 and a length per row in `0..=T` (short inputs give repeats and zeros),
//! plants NaN in the padding of `x` and `dy`, and checks:
//! - `y`, `h_n`, `c_n`, `dx`, `dh0`, `dc0` equal the same row run alone with `Layer::forward`
//!   and `Layer::backward` (`B = 1`, `T = its length`) bit for bit, `y` and `dx` are zero at
//!   the padding, a row of length 0 keeps `h0` and passes `dh_n` to `dh0`;
//! - the weight gradients equal the sum of the rows' (in f64) within `F64_REL` (f64) or the
//!   f32 tolerance of the shape (f32), with the RMS of all four tensors as the floor;
//! - an inference padded forward gives the training one's `y` bits;
//! - a length past `T` is refused with `InvalidArgument`.

#![no_main]

use arbitrary::Unstructured;
use fused_rnn::{CellKind, Dims, Error, Float, Isa, Mode};
use fused_rnn_fuzz::{pick_cell, pick_isa};
use libfuzzer_sys::fuzz_target;
use testkit::oracle::fused_layer;
use testkit::padded::{assert_same_rows, padded_pass, rows_alone};
use testkit::random::{RandomCase, SplitMix};
use testkit::tolerance::{assert_close, family_rms, tolerance};

struct Case {
    cell: CellKind,
    isa: Isa,
    f64: bool,
    threads: usize,
    dims: Dims,
    lengths: Vec<usize>,
    seed: u64,
}

fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<Case> {
    let cell = pick_cell(u)?;
    let isa = pick_isa(u)?;
    let f64 = u.arbitrary()?;
    let threads = u.int_in_range(1..=3)?;
    let t = u.int_in_range(1..=24)?;
    let b = u.int_in_range(1..=20)?;
    let i = u.int_in_range(1..=40)?;
    let h = u.int_in_range(1..=48)?;
    let lengths = (0..b)
        .map(|_| u.int_in_range(0..=t))
        .collect::<arbitrary::Result<_>>()?;
    Ok(Case {
        cell,
        isa,
        f64,
        threads,
        dims: Dims {
            seq_len: t,
            batch: b,
            input: i,
            hidden: h,
        },
        lengths,
        seed: u.arbitrary()?,
    })
}

/// The case's parameters and inputs, each exactly an f32: weights and biases U(-k, k) with
/// `k = 2 / (I + H + 2)`, `x`, `c0` and the upstream gradients U(-1, 1), `h0` U(-0.5, 0.5).
fn inputs(c: &Case) -> RandomCase<f64> {
    let d = c.dims;
    let mut rng = SplitMix(c.seed);
    let gh = c.cell.gates() * d.hidden;
    let k = 2.0 / (d.input + d.hidden + 2) as f64;
    let mut v = |n: usize, s: f64| -> Vec<f64> {
        (0..n).map(|_| f64::from((rng.unit() * s) as f32)).collect()
    };
    let s = d.state_len();
    let lstm = c.cell.has_cell_state();
    // Every tensor drawn whatever the cell, in this order, so that an input keeps its values.
    let (weight_ih, weight_hh) = (v(gh * d.input, k), v(gh * d.hidden, k));
    let (bias_ih, bias_hh) = (v(gh, k), v(gh, k));
    let (x, h0, c0) = (v(d.x_len(), 1.0), v(s, 0.5), v(s, 1.0));
    let (dy, dh_n, dc_n) = (v(d.y_len(), 1.0), v(s, 1.0), v(s, 1.0));
    RandomCase {
        cell: c.cell,
        dims: d,
        weight_ih,
        weight_hh,
        bias_ih,
        bias_hh,
        x,
        h0: Some(h0),
        c0: lstm.then_some(c0),
        dy: Some(dy),
        dh_n: Some(dh_n),
        dc_n: lstm.then_some(dc_n),
    }
}

fn check<F: Float>(c: &Case) {
    let case = inputs(c).cast::<F>();
    let got = padded_pass(&fused_layer(&case, c.isa, c.threads), &case, &c.lengths);
    let want = rows_alone(&fused_layer(&case, c.isa, 1), &case, &c.lengths);
    let ctx = format!("{} {} lengths {:?}", c.cell.name(), F::NAME, c.lengths);
    assert_same_rows(&got, &want, &ctx);
    // The weight gradients: the same terms summed in another order, so the difference is
    // rounding on the scale of the terms, which one element's own value can be far below when
    // its terms cancel (one of a single-element tensor is its own RMS). The floor is the RMS
    // of all four tensors (the family floor of `cell_forward_backward`); a missing or doubled
    // row or stretch moves a gradient by its own size and still fails.
    let rel = tolerance::<F>(&c.dims);
    let floor = family_rms(&want.grads.each_ref().map(|g| &g[..]));
    for (k, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
        assert_close(&format!("{ctx}: weight grad {k}"), g, w, rel, floor);
    }
}

fn run(c: &Case) {
    if c.f64 {
        check::<f64>(c);
    } else {
        check::<f32>(c);
    }
    // A length past T is refused.
    let l = fused_layer(&inputs(c).cast::<f32>(), c.isa, 1);
    let mut bad = c.lengths.clone();
    bad[0] = c.dims.seq_len + 1;
    match l.workspace(c.dims.seq_len, &bad, Mode::Training) {
        Err(Error::InvalidArgument {
            what: "lengths", ..
        }) => {}
        other => panic!("length past T: {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(case) = decode(&mut u) {
        run(&case);
    }
});
