//! The reference's analytic gradients against central finite differences (f64), and the f32
//! reference against the f64 one.
//!
//! # Finite-difference check
//!
//! `L(θ) = sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)`; for an entry `θ` of any input tensor,
//! `fd = (L(θ+h) - L(θ-h)) / ((θ+h) - (θ-h))` with `h = cbrt(eps)·max(1, |θ|) ≈ 6.06e-6·max(1, |θ|)`
//! (the denominator is the step actually represented). It must satisfy
//! `|analytic - fd| <= REL · max(|analytic|, |fd|, floor)`, `REL = 1e-6`.
//!
//! The error of `fd` has two parts:
//! - truncation `h²/6 · |∂³L/∂θ³| ≈ 6e-12 · |L'''|`, far below `1e-6·|L'|` for these smooth
//!   functions of moderate curvature;
//! - rounding: each output `y`, `h_n`, `c_n` is computed from O(1) pre-activations with an
//!   absolute error of a few `eps·max(1, |y|)` (not `eps·|y|`: a pre-activation near 0 is the
//!   result of cancellation), so each evaluation of `L` is off by about `c·eps·S` with
//!   `S = sum |dy|·max(1, |y|) + sum |dh_n|·max(1, |h_n|) + sum |dc_n|·max(1, |c_n|)` (not
//!   `|L|`, which can cancel to near zero) and `c` a small constant. Divided by `2h`, this is
//!   about `c · eps/(2 cbrt(eps)) · S = c · 1.8e-11 · S` in `fd`.
//!
//! So the absolute floor is `floor = FLOOR_REL · S` with `FLOOR_REL = 1e-3`: for entries
//! smaller than the floor, the check becomes the absolute `|analytic - fd| <= 1e-9 · S`, which
//! leaves room for `c` up to ~50 (observed: `|analytic - fd| / S` stays around 1e-11, i.e.
//! `c < 1`; printed in the summary). Entries above the floor, the bulk of them, are held to the
//! full relative `1e-6`, two orders of magnitude above the worst observed FD error and far below
//! what a wrong derivative term produces (an error of the order of the entry itself).
//!
//! ReLU: `L` has a kink wherever a pre-activation is 0. The derivative is exact on either side,
//! so the FD is valid as long as the segment `[θ-h, θ+h]` does not cross a kink. Each FD
//! evaluation checks this: the pattern `y > 0` (which is exactly "pre-activation > 0") at
//! `θ±h` must equal the one at `θ`, else the test fails, naming the seed (then pick another).
//! The seeds below pass that check, so no perturbation crosses a kink and nothing is skipped.
//!
//! Small shapes check every entry of every tensor; for `H = 33` and the long sequence, a seeded
//! random subset of `SUBSET` entries per tensor.

use fused_rnn::reference::{self, ReferenceGradients, ReferenceOutput};
use fused_rnn::{CellKind, Float, RnnActivation};
use rand::RngExt;
use testkit::oracle::{reference_backward, reference_forward};
use testkit::random::{RandomCase, dims, rng};
use testkit::tolerance::{assert_close, f32_tolerance, rms};

/// Relative tolerance of the FD check.
const REL: f64 = 1e-6;
/// Absolute floor of the FD check, relative to `S` (see the module docs).
const FLOOR_REL: f64 = 1e-3;
/// Entries per tensor checked in the large shapes.
const SUBSET: usize = 40;

/// `(T, B, I, H, every entry?)`: T = 1, B = 1, H ∈ {1, 7, 8, 9, 33}, I ≠ H, a long sequence.
const SHAPES: [(usize, usize, usize, usize, bool); 7] = [
    (1, 1, 1, 1, true),
    (1, 1, 3, 7, true),
    (3, 2, 4, 8, true),
    (4, 1, 5, 9, true),
    (2, 3, 2, 7, true),
    (3, 2, 5, 33, false),
    (24, 2, 3, 7, false),
];

/// The tensors a gradient is checked for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tensor {
    X,
    H0,
    C0,
    WeightIh,
    WeightHh,
    BiasIh,
    BiasHh,
}

const TENSORS: [Tensor; 7] = [
    Tensor::X,
    Tensor::H0,
    Tensor::C0,
    Tensor::WeightIh,
    Tensor::WeightHh,
    Tensor::BiasIh,
    Tensor::BiasHh,
];

impl Tensor {
    fn name(self) -> &'static str {
        match self {
            Tensor::X => "dx",
            Tensor::H0 => "dh0",
            Tensor::C0 => "dc0",
            Tensor::WeightIh => "dW_ih",
            Tensor::WeightHh => "dW_hh",
            Tensor::BiasIh => "db_ih",
            Tensor::BiasHh => "db_hh",
        }
    }

    /// The tensor in a case (`None`: the cell has no such tensor).
    fn param_mut(self, case: &mut RandomCase<f64>) -> Option<&mut Vec<f64>> {
        match self {
            Tensor::X => Some(&mut case.x),
            Tensor::H0 => case.h0.as_mut(),
            Tensor::C0 => case.c0.as_mut(),
            Tensor::WeightIh => Some(&mut case.weight_ih),
            Tensor::WeightHh => Some(&mut case.weight_hh),
            Tensor::BiasIh => Some(&mut case.bias_ih),
            Tensor::BiasHh => Some(&mut case.bias_hh),
        }
    }

    /// Its analytic gradient.
    fn grad(self, g: &ReferenceGradients<f64>) -> Option<&[f64]> {
        match self {
            Tensor::X => Some(&g.dx),
            Tensor::H0 => Some(&g.dh0),
            Tensor::C0 => g.dc0.as_deref(),
            Tensor::WeightIh => Some(&g.weights.weight_ih),
            Tensor::WeightHh => Some(&g.weights.weight_hh),
            Tensor::BiasIh => Some(&g.weights.bias_ih),
            Tensor::BiasHh => Some(&g.weights.bias_hh),
        }
    }
}

fn run_forward<F: Float>(case: &RandomCase<F>) -> ReferenceOutput<F> {
    reference_forward(case).expect("valid case")
}

fn run_backward<F: Float>(case: &RandomCase<F>) -> ReferenceGradients<F> {
    reference_backward(case).expect("valid case")
}

/// `(L, S)`: the loss and the scale of its rounding error, `S = sum |dy|·max(1, |y|)` over all
/// its terms (see the module docs).
fn loss(case: &RandomCase<f64>, out: &ReferenceOutput<f64>) -> (f64, f64) {
    let mut l = 0.0;
    let mut s = 0.0;
    let mut add = |a: &[f64], b: &[f64]| {
        for (&u, &v) in a.iter().zip(b) {
            l += u * v;
            s += v.abs() * u.abs().max(1.0);
        }
    };
    add(&out.y, case.dy().unwrap());
    add(&out.h_n, case.dh_n().unwrap());
    if let (Some(c), Some(dc)) = (&out.c_n, &case.dc_n) {
        add(c, dc);
    }
    (l, s)
}

/// The ReLU activation pattern (`y > 0` ⇔ pre-activation > 0), empty for other cells.
fn relu_pattern(case: &RandomCase<f64>, out: &ReferenceOutput<f64>) -> Vec<bool> {
    match case.cell {
        CellKind::Rnn(RnnActivation::Relu) => out.y.iter().map(|&v| v > 0.0).collect(),
        _ => Vec::new(),
    }
}

/// Result of checking one case.
#[derive(Default)]
struct Stats {
    entries: usize,
    /// Entries with `max(|analytic|, |fd|) < floor`, checked against the absolute floor.
    under_floor: usize,
    max_rel: f64,
    /// max |analytic - fd| / S.
    max_abs_over_s: f64,
}

/// Checks every tensor of `case` (all entries, or `SUBSET` random ones) against FD.
fn check_case(case: &RandomCase<f64>, seed: u64, full: bool) -> Stats {
    let base = run_forward(case);
    let (_, s) = loss(case, &base);
    let pattern = relu_pattern(case, &base);
    let grads = run_backward(case);
    let floor = FLOOR_REL * s;
    let mut stats = Stats::default();
    let mut pick = rng(seed ^ 0x5eed_5eed);
    let ctx = format!("{} {:?} seed {seed}", case.cell.name(), case.dims);
    for tensor in TENSORS {
        let mut work = case.clone();
        let Some(len) = tensor.param_mut(&mut work).map(|p| p.len()) else {
            assert!(
                tensor.grad(&grads).is_none(),
                "{ctx}: gradient {} for a tensor the cell does not have",
                tensor.name()
            );
            continue;
        };
        let analytic = tensor
            .grad(&grads)
            .expect("gradient for every input tensor");
        assert_eq!(analytic.len(), len, "{ctx}: {} length", tensor.name());
        let indices: Vec<usize> = if full || len <= SUBSET {
            (0..len).collect()
        } else {
            let mut v: Vec<usize> = Vec::with_capacity(SUBSET);
            while v.len() < SUBSET {
                let i = pick.random_range(0..len);
                if !v.contains(&i) {
                    v.push(i);
                }
            }
            v
        };
        for i in indices {
            let theta = tensor.param_mut(&mut work).expect("present")[i];
            let h = f64::EPSILON.cbrt() * theta.abs().max(1.0);
            let (plus, minus) = (theta + h, theta - h);
            let mut eval = |v: f64| {
                tensor.param_mut(&mut work).expect("present")[i] = v;
                let out = run_forward(&work);
                assert_eq!(
                    relu_pattern(&work, &out),
                    pattern,
                    "{ctx}: perturbing {}[{i}] by {h:e} crosses a ReLU kink; choose another seed",
                    tensor.name()
                );
                loss(&work, &out).0
            };
            let fd = (eval(plus) - eval(minus)) / (plus - minus);
            tensor.param_mut(&mut work).expect("present")[i] = theta;
            let a = analytic[i];
            let err = (a - fd).abs();
            let scale = a.abs().max(fd.abs()).max(floor);
            let rel = err / scale;
            assert!(
                rel <= REL,
                "{ctx}: {}[{i}]: analytic {a:e}, finite difference {fd:e}, |diff| {err:e} > \
                 {REL:e} * max(|analytic|, |fd|, floor {floor:e})",
                tensor.name()
            );
            stats.entries += 1;
            stats.under_floor += usize::from(a.abs().max(fd.abs()) < floor);
            stats.max_rel = stats.max_rel.max(rel);
            stats.max_abs_over_s = stats.max_abs_over_s.max(err / s);
        }
    }
    stats
}

/// The seed of `(cell index, shape index)`.
fn seed(cell: usize, shape: usize) -> u64 {
    1000 + 100 * cell as u64 + shape as u64
}

#[test]
fn gradients_match_finite_differences() {
    let mut summary = Vec::new();
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        let mut total = Stats::default();
        for (si, &(t, b, i, h, full)) in SHAPES.iter().enumerate() {
            let seed = seed(ci, si);
            let case = RandomCase::<f64>::new(cell, dims(t, b, i, h), seed);
            let st = check_case(&case, seed, full);
            total.entries += st.entries;
            total.under_floor += st.under_floor;
            total.max_rel = total.max_rel.max(st.max_rel);
            total.max_abs_over_s = total.max_abs_over_s.max(st.max_abs_over_s);
        }
        summary.push(format!(
            "  {:<17} {:>5} entries ({:>4} under the floor), max rel err {:.2e}, \
             max |analytic - fd| / S {:.2e}",
            cell.name(),
            total.entries,
            total.under_floor,
            total.max_rel,
            total.max_abs_over_s
        ));
    }
    println!(
        "finite-difference check (REL {REL:e}, floor {FLOOR_REL:e}·S):\n{}",
        summary.join("\n")
    );
}

/// Absent `h0`, `c0`, `dy`, `dh_n`, `dc_n` mean zeros.
#[test]
fn absent_buffers_mean_zeros() {
    for &cell in &CellKind::ALL {
        let d = dims(3, 2, 4, 5);
        let case = RandomCase::<f64>::new(cell, d, 7);
        let w = case.weights();
        let zeros = vec![0.0; d.state_len()];
        let zeros_y = vec![0.0; d.y_len()];
        let zc = cell.has_cell_state().then_some(zeros.as_slice());
        let a = reference::forward(cell, d, &w, &case.x, None, None).unwrap();
        let b = reference::forward(cell, d, &w, &case.x, Some(&zeros), zc).unwrap();
        assert_eq!(a, b, "{}: forward", cell.name());
        // Gradient of sum(y * dy) alone, both ways.
        let ga =
            reference::backward(cell, d, &w, &case.x, None, None, case.dy(), None, None).unwrap();
        let gb = reference::backward(
            cell,
            d,
            &w,
            &case.x,
            Some(&zeros),
            zc,
            case.dy(),
            Some(&zeros),
            zc,
        )
        .unwrap();
        assert_eq!(ga, gb, "{}: backward", cell.name());
        // No upstream gradient at all: every gradient is zero.
        let g0 = reference::backward(cell, d, &w, &case.x, None, None, None, None, None).unwrap();
        let gz = reference::backward(
            cell,
            d,
            &w,
            &case.x,
            None,
            None,
            Some(&zeros_y),
            Some(&zeros),
            zc,
        )
        .unwrap();
        assert_eq!(
            g0,
            gz,
            "{}: backward without upstream gradients",
            cell.name()
        );
        assert!(g0.dx.iter().all(|&v| v == 0.0));
        assert!(g0.weights.weight_hh.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn reference_f32_vs_f64() {
    let shapes = [(1, 1, 1, 1), (5, 3, 4, 8), (12, 2, 6, 9), (4, 2, 10, 33)];
    let mut worst = Vec::new();
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        let mut max_ratio = 0.0f64;
        for (si, &(t, b, i, h)) in shapes.iter().enumerate() {
            let d = dims(t, b, i, h);
            let c32 = RandomCase::<f32>::new(cell, d, 500 + 10 * ci as u64 + si as u64);
            let c64: RandomCase<f64> = c32.cast();
            let tol = f32_tolerance(&d);
            let ctx = format!("{} {d:?}", cell.name());
            let (o32, o64) = (run_forward(&c32), run_forward(&c64));
            let (g32, g64) = (run_backward(&c32), run_backward(&c64));
            let mut pairs: Vec<(&str, Vec<f64>, &[f64])> = vec![
                ("y", widen(&o32.y), &o64.y),
                ("h_n", widen(&o32.h_n), &o64.h_n),
                ("dx", widen(&g32.dx), &g64.dx),
                ("dh0", widen(&g32.dh0), &g64.dh0),
                (
                    "dW_ih",
                    widen(&g32.weights.weight_ih),
                    &g64.weights.weight_ih,
                ),
                (
                    "dW_hh",
                    widen(&g32.weights.weight_hh),
                    &g64.weights.weight_hh,
                ),
                ("db_ih", widen(&g32.weights.bias_ih), &g64.weights.bias_ih),
                ("db_hh", widen(&g32.weights.bias_hh), &g64.weights.bias_hh),
            ];
            if let (Some(a), Some(b)) = (&o32.c_n, &o64.c_n) {
                pairs.push(("c_n", widen(a), b));
            }
            if let (Some(a), Some(b)) = (&g32.dc0, &g64.dc0) {
                pairs.push(("dc0", widen(a), b));
            }
            for (name, got, want) in &pairs {
                let floor = rms(want);
                assert_close(&format!("{ctx} {name}"), got, want, tol, floor);
                for (&g, &w) in got.iter().zip(want.iter()) {
                    max_ratio = max_ratio.max((g - w).abs() / (tol * w.abs().max(floor)));
                }
            }
        }
        worst.push(format!(
            "  {:<17} worst error {:.3} of the tolerance",
            cell.name(),
            max_ratio
        ));
    }
    println!("f32 vs f64 reference:\n{}", worst.join("\n"));
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&a| f64::from(a)).collect()
}
