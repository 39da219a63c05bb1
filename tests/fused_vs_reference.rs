//! The fused layer against the scalar reference (the oracle): f64 to 1e-12 relative, f32 on
//! every available ISA path within the precision-derived tolerance of `common::f32_tolerance`,
//! over shapes whose hidden sizes sit at, below and above the SIMD width (tails), T up to 256
//! and H up to 130.

mod common;

use common::{RandomCase, assert_close, dims, f32_tolerance, rms};
use fused_rnn::Direction;
use fused_rnn::reference;
use fused_rnn::{
    CellKind, FinalState, Float, GradMode, InitialState, InputGrads, Isa, Layer, Mode, Upstream,
};

/// Every output and gradient of one forward + backward, named, widened to f64.
fn run_fused<F: Float>(c: &RandomCase<F>, isa: Isa) -> Vec<(&'static str, Vec<f64>)> {
    let d = c.dims;
    let mut layer = Layer::new(c.cell, d.input, d.hidden, c.weights()).unwrap();
    layer.set_isa(isa).unwrap();
    let lstm = c.cell.has_cell_state();
    let nan = F::from_f64(f64::NAN);
    // NaN-filled outputs: anything left unwritten shows up.
    let mut y = vec![nan; d.y_len()];
    let mut h_n = vec![nan; d.state_len()];
    let mut c_n = vec![nan; d.state_len()];
    let init = InitialState {
        h0: Some(&c.h0),
        c0: c.c0(),
    };
    // An inference forward must give the same outputs as the training one.
    let mut ws_inf = layer
        .workspace(d.seq_len, d.batch, Mode::Inference)
        .unwrap();
    let mut y_inf = vec![nan; d.y_len()];
    let mut h_inf = vec![nan; d.state_len()];
    let mut c_inf = vec![nan; d.state_len()];
    let fin = FinalState {
        h_n: Some(&mut h_inf),
        c_n: if lstm { Some(&mut c_inf) } else { None },
    };
    layer
        .forward(&mut ws_inf, Direction::Forward, &c.x, init, &mut y_inf, fin)
        .unwrap();

    let mut ws = layer.workspace(d.seq_len, d.batch, Mode::Training).unwrap();
    let fin = FinalState {
        h_n: Some(&mut h_n),
        c_n: if lstm { Some(&mut c_n) } else { None },
    };
    layer
        .forward(&mut ws, Direction::Forward, &c.x, init, &mut y, fin)
        .unwrap();
    let bits = |v: &[F]| v.iter().map(|a| a.to_f64().to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&y),
        bits(&y_inf),
        "{}: training and inference y differ",
        c.cell.name()
    );
    assert_eq!(
        bits(&h_n),
        bits(&h_inf),
        "{}: training and inference h_n differ",
        c.cell.name()
    );

    let mut grads = layer.zero_grads();
    let mut dx = vec![nan; d.x_len()];
    let mut dh0 = vec![nan; d.state_len()];
    let mut dc0 = vec![nan; d.state_len()];
    let up = Upstream {
        dy: Some(&c.dy),
        dh_n: Some(&c.dh_n),
        dc_n: c.dc_n(),
    };
    let inputs = InputGrads {
        dx: Some(&mut dx),
        dh0: Some(&mut dh0),
        dc0: if lstm { Some(&mut dc0) } else { None },
    };
    layer
        .backward(&mut ws, &c.x, up, &mut grads, inputs, GradMode::Overwrite)
        .unwrap();
    let w = |v: &[F]| v.iter().map(|a| a.to_f64()).collect::<Vec<f64>>();
    let mut out = vec![
        ("y", w(&y)),
        ("h_n", w(&h_n)),
        ("dx", w(&dx)),
        ("dh0", w(&dh0)),
        ("dW_ih", w(&grads.weight_ih)),
        ("dW_hh", w(&grads.weight_hh)),
        ("db_ih", w(&grads.bias_ih)),
        ("db_hh", w(&grads.bias_hh)),
    ];
    if lstm {
        out.push(("c_n", w(&c_n)));
        out.push(("dc0", w(&dc0)));
    }
    out
}

/// The same tensors from the f64 reference.
fn run_reference(c: &RandomCase<f64>) -> Vec<(&'static str, Vec<f64>)> {
    let w = c.weights();
    let o = reference::forward(c.cell, c.dims, &w, &c.x, Some(&c.h0), c.c0()).unwrap();
    let g = reference::backward(
        c.cell,
        c.dims,
        &w,
        &c.x,
        Some(&c.h0),
        c.c0(),
        Some(&c.dy),
        Some(&c.dh_n),
        c.dc_n(),
    )
    .unwrap();
    let mut out = vec![
        ("y", o.y),
        ("h_n", o.h_n),
        ("dx", g.dx),
        ("dh0", g.dh0),
        ("dW_ih", g.weights.weight_ih),
        ("dW_hh", g.weights.weight_hh),
        ("db_ih", g.weights.bias_ih),
        ("db_hh", g.weights.bias_hh),
    ];
    if let (Some(cn), Some(dc0)) = (o.c_n, g.dc0) {
        out.push(("c_n", cn));
        out.push(("dc0", dc0));
    }
    out
}

/// (T, B, I, H): H at, below and above the 8-lane width and the 16-column GEMM block, B at,
/// below and above the 4-row GEMM block, I != H.
const SHAPES: [(usize, usize, usize, usize); 10] = [
    (1, 1, 3, 1),
    (5, 2, 7, 7),
    (3, 4, 8, 8),
    (9, 3, 5, 9),
    (16, 5, 33, 16),
    (7, 1, 20, 33),
    (64, 2, 16, 65),
    (256, 2, 8, 130),
    (256, 1, 4, 17),
    (32, 6, 130, 130),
];

#[test]
fn fused_f64_equals_reference() {
    // Both compute in f64 with std's activations; they differ only in summation order (the
    // GEMMs block their K loops), which moves results by a few eps per dot product.
    const REL: f64 = 1e-12;
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        for (si, &(t, b, i, h)) in SHAPES.iter().enumerate() {
            let c =
                RandomCase::<f64>::new(cell, dims(t, b, i, h), 7000 + 100 * ci as u64 + si as u64);
            let want = run_reference(&c);
            let got = run_fused(&c, Isa::Portable);
            for ((name, g), (_, w)) in got.iter().zip(&want) {
                let ctx = format!("{} T={t} B={b} I={i} H={h} {name}", cell.name());
                assert_close(&ctx, g, w, REL, rms(w));
            }
        }
    }
}

#[test]
fn fused_f32_matches_f64_reference_on_every_isa() {
    for isa in Isa::available() {
        for (ci, &cell) in CellKind::ALL.iter().enumerate() {
            let mut worst = 0.0f64;
            for (si, &(t, b, i, h)) in SHAPES.iter().enumerate() {
                let d = dims(t, b, i, h);
                let c32 = RandomCase::<f32>::new(cell, d, 9000 + 100 * ci as u64 + si as u64);
                let c64: RandomCase<f64> = c32.cast();
                let tol = f32_tolerance(&d);
                let want = run_reference(&c64);
                let got = run_fused(&c32, isa);
                for ((name, g), (_, w)) in got.iter().zip(&want) {
                    let floor = rms(w);
                    let ctx = format!(
                        "{} {} T={t} B={b} I={i} H={h} {name}",
                        isa.name(),
                        cell.name()
                    );
                    assert_close(&ctx, g, w, tol, floor);
                    for (a, e) in g.iter().zip(w) {
                        worst = worst.max((a - e).abs() / (tol * e.abs().max(floor)));
                    }
                }
            }
            println!(
                "{:>9} {:>17}: worst error {worst:.3} of the tolerance",
                isa.name(),
                cell.name()
            );
        }
    }
}
