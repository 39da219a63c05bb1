//! How NaN and infinity travel through the layer (the policy in `fused_rnn::policy`): never a
//! panic or an `Err`, NaN propagates along the data flow and nowhere else.
//!
//! - NaN in one element of `x` at `(t0, r0)`: for every cell but the ReLU RNN, row `r0`'s
//!   outputs are NaN from step `t0` on (every unit: the NaN reaches all units through `W_ih`,
//!   then through `W_hh`), its earlier steps and every other row are bit for bit those of the
//!   clean input. For the ReLU RNN only the other rows and earlier steps are pinned down.
//! - NaN or ±inf in any weight or bias: `Ok`, no panic, the call returns; with NaN, every
//!   output of the last step is NaN (non-ReLU cells; by then the NaN has reached every unit).
//! - NaN in one element of `dy` at `(t0, r0, u0)`: the gradients of every gate of unit `u0` at
//!   step `t0` are NaN, and for `t0 > 0` all of `dh_{t0-1}` of row `r0` through `W_hh`, so: the
//!   weight and bias gradient rows of unit `u0`'s gates are NaN, and for `t0 > 0` every weight
//!   and bias gradient (any other element is NaN or bit for bit the clean one); `dx` of row
//!   `r0` at steps `<= t0` and `dh0` of row `r0` are NaN, `dc0` of row `r0` too for `t0 > 0`
//!   (for `t0 = 0` only at `u0`: `dc0 = dc_0 * f` is elementwise); `dx` at later steps and every
//!   other row are bit for bit those of the clean upstream gradient (non-ReLU cells).

use fused_rnn::{CellKind, Float, Isa, Layer, Mode, RnnActivation, all_finite};
use testkit::oracle::{Pass, fused_pass_in};
use testkit::random::{RandomCase, dims};

const T: usize = 5;
const B: usize = 3;
const I: usize = 4;
const H: usize = 9;

/// A forward + backward of `c`. Panics on `Err`: the layer must return `Ok` on non-finite
/// data.
fn run<F: Float>(layer: &Layer<F>, c: &RandomCase<F>) -> Pass {
    let mut ws = layer.workspace(T, B, Mode::Training).unwrap();
    fused_pass_in(layer, c, &mut ws, &mut layer.zero_grads().unwrap())
}

/// The same bits (the outputs are widened to f64 exactly).
fn same(a: f64, b: f64) -> bool {
    a.to_bits() == b.to_bits()
}

fn is_relu(cell: CellKind) -> bool {
    cell == CellKind::Rnn(RnnActivation::Relu)
}

fn layer_for<F: Float>(cell: CellKind, isa: Isa, seed: u64) -> (Layer<F>, RandomCase<F>) {
    let c = RandomCase::<F>::new(cell, dims(T, B, I, H), seed);
    let mut layer = Layer::new(cell, I, H, c.weights()).unwrap();
    layer.set_isa(isa).unwrap();
    (layer, c)
}

fn nan_in_x<F: Float>(cell: CellKind, isa: Isa) {
    let (layer, c) = layer_for::<F>(cell, isa, 91);
    let clean = run(&layer, &c);
    assert!(all_finite(&clean.y) && all_finite(&clean.dx));
    for (t0, r0, k) in [(0, 0, 0), (2, 1, 3), (T - 1, B - 1, 1)] {
        let ctx = format!("{} {} x[{t0}, {r0}, {k}] = NaN", cell.name(), isa.name());
        let mut nan = c.clone();
        nan.x[(t0 * B + r0) * I + k] = F::from_f64(f64::NAN);
        let got = run(&layer, &nan);
        for t in 0..T {
            for r in 0..B {
                for u in 0..H {
                    let at = (t * B + r) * H + u;
                    let (g, w) = (got.y[at], clean.y[at]);
                    if r != r0 || t < t0 {
                        assert!(same(g, w), "{ctx}: y[{t}, {r}, {u}] = {g:?}, clean {w:?}");
                    } else if !is_relu(cell) {
                        assert!(g.is_nan(), "{ctx}: y[{t}, {r}, {u}] = {g:?}");
                    }
                }
            }
        }
        // Backward ran (Ok) and rows stay independent there too: dx of the other rows only
        // depends on their own forward and dy.
        for t in 0..T {
            for r in (0..B).filter(|&r| r != r0) {
                for j in 0..I {
                    let at = (t * B + r) * I + j;
                    assert!(
                        same(got.dx[at], clean.dx[at]),
                        "{ctx}: dx[{t}, {r}, {j}] = {:?}, clean {:?}",
                        got.dx[at],
                        clean.dx[at]
                    );
                }
            }
        }
    }
}

fn bad_weight<F: Float>(cell: CellKind, isa: Isa) {
    let (layer, c) = layer_for::<F>(cell, isa, 92);
    let gh = cell.gates() * H;
    for tensor in 0..4 {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut l = layer.clone();
            let w = l.weights_mut();
            let (name, buf): (&str, &mut [F]) = match tensor {
                0 => ("weight_ih", w.weight_ih),
                1 => ("weight_hh", w.weight_hh),
                2 => ("bias_ih", w.bias_ih),
                _ => ("bias_hh", w.bias_hh),
            };
            // A unit of the last gate block, so every gate kind is hit across the tensors.
            let at = (gh - 1 - H / 2) * buf.len() / gh;
            buf[at] = F::from_f64(value);
            let ctx = format!("{} {} {name}[{at}] = {value}", cell.name(), isa.name());
            let got = run(&l, &c);
            if value.is_nan() && !is_relu(cell) {
                let last = &got.y[(T - 1) * B * H..];
                assert!(last.iter().all(|v| v.is_nan()), "{ctx}: last step {last:?}");
                assert!(!all_finite(&got.grads[1]), "{ctx}: dW_hh finite");
            }
        }
    }
}

fn nan_in_dy<F: Float>(cell: CellKind, isa: Isa) {
    let (layer, c) = layer_for::<F>(cell, isa, 93);
    let clean = run(&layer, &c);
    let lstm = cell.has_cell_state();
    for (t0, r0, u0) in [(0, 0, 0), (2, 1, 5), (T - 1, B - 1, H - 1)] {
        let ctx = format!("{} {} dy[{t0}, {r0}, {u0}] = NaN", cell.name(), isa.name());
        let mut nan = c.clone();
        nan.dy.as_mut().expect("dy")[(t0 * B + r0) * H + u0] = F::from_f64(f64::NAN);
        let got = run(&layer, &nan);
        assert!(
            got.y.iter().zip(&clean.y).all(|(a, b)| same(*a, *b)),
            "{ctx}: forward changed"
        );
        if is_relu(cell) {
            continue;
        }
        let (g, cg) = (&got.grads, &clean.grads);
        let gh = cell.gates() * H;
        for (name, v, w) in [
            ("dW_ih", &g[0], &cg[0]),
            ("dW_hh", &g[1], &cg[1]),
            ("db_ih", &g[2], &cg[2]),
            ("db_hh", &g[3], &cg[3]),
        ] {
            let cols = v.len() / gh;
            for (e, (a, b)) in v.iter().zip(w.iter()).enumerate() {
                let gate_row = e / cols;
                // The NaN reaches every gate of unit u0 at step t0; for t0 > 0 it reaches all
                // of dh_{t0-1} of row r0 through W_hh, hence every gate of the earlier steps.
                let must_nan = t0 > 0 || gate_row % H == u0;
                if must_nan {
                    assert!(a.is_nan(), "{ctx}: {name}[{e}] = {a:?}");
                } else {
                    assert!(
                        a.is_nan() || same(*a, *b),
                        "{ctx}: {name}[{e}] = {a:?}, clean {b:?}"
                    );
                }
            }
        }
        for t in 0..T {
            for r in 0..B {
                for j in 0..I {
                    let at = (t * B + r) * I + j;
                    let (a, b) = (got.dx[at], clean.dx[at]);
                    if r == r0 && t <= t0 {
                        assert!(a.is_nan(), "{ctx}: dx[{t}, {r}, {j}] = {a:?}");
                    } else {
                        assert!(same(a, b), "{ctx}: dx[{t}, {r}, {j}] = {a:?}, clean {b:?}");
                    }
                }
            }
        }
        for r in 0..B {
            for u in 0..H {
                let at = r * H + u;
                let mut pairs = vec![("dh0", got.dh0[at], clean.dh0[at])];
                if lstm {
                    pairs.push(("dc0", got.dc0[at], clean.dc0[at]));
                }
                for (name, a, b) in pairs {
                    // dh0 = dG_0 · W_hh mixes every unit; dc0 = dc_0 * f_0 is elementwise, so
                    // from a NaN at step 0 only unit u0's dc0 is NaN.
                    if r == r0 && (name == "dh0" || t0 > 0 || u == u0) {
                        assert!(a.is_nan(), "{ctx}: {name}[{r}, {u}] = {a:?}");
                    } else {
                        assert!(same(a, b), "{ctx}: {name}[{r}, {u}] = {a:?}, clean {b:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn nan_in_one_input_element_stays_in_its_row() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            nan_in_x::<f32>(cell, isa);
            nan_in_x::<f64>(cell, isa);
        }
    }
}

#[test]
fn non_finite_weights_return_ok() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            bad_weight::<f32>(cell, isa);
            bad_weight::<f64>(cell, isa);
        }
    }
}

#[test]
fn nan_in_dy_gives_nan_gradients_along_its_path() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            nan_in_dy::<f32>(cell, isa);
            nan_in_dy::<f64>(cell, isa);
        }
    }
}
