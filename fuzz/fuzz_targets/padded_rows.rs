//! Padded batches (`Layer::forward_padded` / `backward_padded`) against each row run alone.
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
use fused_rnn::{
    CellKind, Dims, Error, FinalState, Float, GradMode, InitialState, InputGrads, Isa, Layer,
    LayerWeights, Mode, Upstream,
};
use fused_rnn_fuzz::{
    F64_REL, SplitMix, assert_close, f32_tolerance, narrow, pick_cell, pick_isa, rms, widen,
};
use libfuzzer_sys::fuzz_target;

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

/// Everything a training pass gives, widened to f64.
#[derive(Default)]
struct Pass {
    y: Vec<f64>,
    h_n: Vec<f64>,
    c_n: Vec<f64>,
    dx: Vec<f64>,
    dh0: Vec<f64>,
    dc0: Vec<f64>,
    grads: [Vec<f64>; 4],
}

/// The inputs of a case, in f64 (each exactly an f32).
struct Inputs {
    w: [Vec<f64>; 4],
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    dy: Vec<f64>,
    dh_n: Vec<f64>,
    dc_n: Vec<f64>,
}

fn inputs(c: &Case) -> Inputs {
    let d = c.dims;
    let mut rng = SplitMix(c.seed);
    let gh = c.cell.gates() * d.hidden;
    let k = 2.0 / (d.input + d.hidden + 2) as f64;
    let mut v = |n: usize, s: f64| -> Vec<f64> {
        (0..n).map(|_| f64::from((rng.unit() * s) as f32)).collect()
    };
    let s = d.batch * d.hidden;
    Inputs {
        w: [v(gh * d.input, k), v(gh * d.hidden, k), v(gh, k), v(gh, k)],
        x: v(d.x_len(), 1.0),
        h0: v(s, 0.5),
        c0: v(s, 1.0),
        dy: v(d.y_len(), 1.0),
        dh_n: v(s, 1.0),
        dc_n: v(s, 1.0),
    }
}

fn layer<F: Float>(c: &Case, inp: &Inputs, threads: usize) -> Layer<F> {
    let [w_ih, w_hh, b_ih, b_hh] = inp.w.each_ref().map(|w| narrow::<F>(w));
    let mut l = Layer::new(
        c.cell,
        c.dims.input,
        c.dims.hidden,
        LayerWeights {
            weight_ih: &w_ih,
            weight_hh: &w_hh,
            bias_ih: &b_ih,
            bias_hh: &b_hh,
        },
    )
    .expect("valid layer");
    l.set_isa(c.isa).expect("available ISA");
    l.set_threads(threads).expect("threads");
    l
}

fn padded<F: Float>(c: &Case, inp: &Inputs) -> Pass {
    let d = c.dims;
    let (t, b, h) = (d.seq_len, d.batch, d.hidden);
    let lstm = c.cell.has_cell_state();
    let l = layer::<F>(c, inp, c.threads);
    let (mut x, mut dy) = (narrow::<F>(&inp.x), narrow::<F>(&inp.dy));
    let nan = F::from_f64(f64::NAN);
    for s in 0..t {
        for (r, &len) in c.lengths.iter().enumerate() {
            if s >= len {
                x[(s * b + r) * d.input..][..d.input].fill(nan);
                dy[(s * b + r) * h..][..h].fill(nan);
            }
        }
    }
    let (h0, c0) = (narrow::<F>(&inp.h0), narrow::<F>(&inp.c0));
    let (dh_n, dc_n) = (narrow::<F>(&inp.dh_n), narrow::<F>(&inp.dc_n));
    let mut ws = l
        .padded_workspace(&c.lengths, t, Mode::Training)
        .expect("padded workspace");
    let mut y = vec![nan; d.y_len()];
    let (mut hn, mut cn) = (vec![nan; b * h], vec![nan; b * h]);
    l.forward_padded(
        &mut ws,
        &x,
        InitialState {
            h0: Some(&h0),
            c0: lstm.then_some(&c0[..]),
        },
        &mut y,
        FinalState {
            h_n: Some(&mut hn),
            c_n: lstm.then_some(&mut cn[..]),
        },
    )
    .expect("forward_padded");
    // Inference gives the same y.
    let mut ws_inf = l
        .padded_workspace(&c.lengths, t, Mode::Inference)
        .expect("padded workspace");
    let mut y_inf = vec![nan; d.y_len()];
    l.forward_padded(
        &mut ws_inf,
        &x,
        InitialState {
            h0: Some(&h0),
            c0: lstm.then_some(&c0[..]),
        },
        &mut y_inf,
        FinalState::default(),
    )
    .expect("inference forward_padded");
    let bits = |v: &[F]| v.iter().map(|a| a.to_f64().to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&y_inf), bits(&y), "inference y");
    let mut grads = l.zero_grads();
    let (mut dx, mut dh0, mut dc0) = (vec![nan; d.x_len()], vec![nan; b * h], vec![nan; b * h]);
    l.backward_padded(
        &mut ws,
        &x,
        Upstream {
            dy: Some(&dy),
            dh_n: Some(&dh_n),
            dc_n: lstm.then_some(&dc_n[..]),
        },
        &mut grads,
        InputGrads {
            dx: Some(&mut dx),
            dh0: Some(&mut dh0),
            dc0: lstm.then_some(&mut dc0[..]),
        },
        GradMode::Overwrite,
    )
    .expect("backward_padded");
    Pass {
        y: widen(&y),
        h_n: widen(&hn),
        c_n: if lstm { widen(&cn) } else { Vec::new() },
        dx: widen(&dx),
        dh0: widen(&dh0),
        dc0: if lstm { widen(&dc0) } else { Vec::new() },
        grads: [
            widen(&grads.weight_ih),
            widen(&grads.weight_hh),
            widen(&grads.bias_ih),
            widen(&grads.bias_hh),
        ],
    }
}

/// Each row alone on one thread; weight gradients summed over rows in f64.
fn rows_alone<F: Float>(c: &Case, inp: &Inputs) -> Pass {
    let d = c.dims;
    let (b, i, h) = (d.batch, d.input, d.hidden);
    let lstm = c.cell.has_cell_state();
    let l = layer::<F>(c, inp, 1);
    let s = b * h;
    let mut p = Pass {
        y: vec![0.0; d.y_len()],
        h_n: vec![0.0; s],
        c_n: vec![0.0; if lstm { s } else { 0 }],
        dx: vec![0.0; d.x_len()],
        dh0: vec![0.0; s],
        dc0: vec![0.0; if lstm { s } else { 0 }],
        grads: [
            vec![0.0; inp.w[0].len()],
            vec![0.0; inp.w[1].len()],
            vec![0.0; inp.w[2].len()],
            vec![0.0; inp.w[3].len()],
        ],
    };
    for (r, &len) in c.lengths.iter().enumerate() {
        let row = |m: &[f64]| narrow::<F>(&m[r * h..(r + 1) * h]);
        let (h0, c0, dh_n, dc_n) = (row(&inp.h0), row(&inp.c0), row(&inp.dh_n), row(&inp.dc_n));
        let put = |dst: &mut Vec<f64>, v: &[F]| dst[r * h..(r + 1) * h].copy_from_slice(&widen(v));
        if len == 0 {
            put(&mut p.h_n, &h0);
            put(&mut p.dh0, &dh_n);
            if lstm {
                put(&mut p.c_n, &c0);
                put(&mut p.dc0, &dc_n);
            }
            continue;
        }
        let steps = |m: &[f64], w: usize| -> Vec<F> {
            let v: Vec<f64> = (0..len)
                .flat_map(|t| m[(t * b + r) * w..][..w].to_vec())
                .collect();
            narrow::<F>(&v)
        };
        let (x, dy) = (steps(&inp.x, i), steps(&inp.dy, h));
        let mut ws = l.workspace(len, 1, Mode::Training).expect("ws");
        let mut y = vec![F::ZERO; len * h];
        let (mut hn, mut cn) = (vec![F::ZERO; h], vec![F::ZERO; h]);
        l.forward(
            &mut ws,
            &x,
            InitialState {
                h0: Some(&h0),
                c0: lstm.then_some(&c0[..]),
            },
            &mut y,
            FinalState {
                h_n: Some(&mut hn),
                c_n: lstm.then_some(&mut cn[..]),
            },
        )
        .expect("row forward");
        let mut g = l.zero_grads();
        let (mut dx, mut dh0, mut dc0) =
            (vec![F::ZERO; len * i], vec![F::ZERO; h], vec![F::ZERO; h]);
        l.backward(
            &mut ws,
            &x,
            Upstream {
                dy: Some(&dy),
                dh_n: Some(&dh_n),
                dc_n: lstm.then_some(&dc_n[..]),
            },
            &mut g,
            InputGrads {
                dx: Some(&mut dx),
                dh0: Some(&mut dh0),
                dc0: lstm.then_some(&mut dc0[..]),
            },
            GradMode::Overwrite,
        )
        .expect("row backward");
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
        let rg = [g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh];
        for (sum, gk) in p.grads.iter_mut().zip(rg) {
            for (s, v) in sum.iter_mut().zip(gk) {
                *s += v.to_f64();
            }
        }
    }
    p
}

fn check<F: Float>(c: &Case) {
    let inp = inputs(c);
    let got = padded::<F>(c, &inp);
    let want = rows_alone::<F>(c, &inp);
    let bits = |v: &[f64]| v.iter().map(|a| a.to_bits()).collect::<Vec<_>>();
    for (name, g, w) in [
        ("y", &got.y, &want.y),
        ("h_n", &got.h_n, &want.h_n),
        ("c_n", &got.c_n, &want.c_n),
        ("dx", &got.dx, &want.dx),
        ("dh0", &got.dh0, &want.dh0),
        ("dc0", &got.dc0, &want.dc0),
    ] {
        assert_eq!(bits(g), bits(w), "{name} ({} {})", c.cell.name(), F::NAME);
    }
    // The weight gradients: the same terms summed in another order, so the difference is
    // rounding on the scale of the terms, which one element's own value can be far below when
    // its terms cancel (one of a single-element tensor is its own RMS). The floor is the RMS
    // of all four tensors (the family floor of `cell_forward_backward`); a missing or doubled
    // row or stretch moves a gradient by its own size and still fails.
    let rel = if F::NAME == "f64" {
        F64_REL
    } else {
        f32_tolerance(&c.dims)
    };
    let family: Vec<f64> = want.grads.concat();
    for (k, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
        assert_close(
            &format!("weight grad {k}"),
            g,
            w,
            rel,
            rms(&family),
            &format!("{} {} lengths {:?}", c.cell.name(), F::NAME, c.lengths),
        );
    }
}

fn run(c: &Case) {
    if c.f64 {
        check::<f64>(c);
    } else {
        check::<f32>(c);
    }
    // A length past T is refused.
    let inp = inputs(c);
    let l = layer::<f32>(c, &inp, 1);
    let mut bad = c.lengths.clone();
    bad[0] = c.dims.seq_len + 1;
    match l.padded_workspace(&bad, c.dims.seq_len, Mode::Training) {
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
