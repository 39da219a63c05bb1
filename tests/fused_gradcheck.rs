//! The fused layer's analytic f64 gradients against central finite differences of its own
//! forward pass, for every cell kind and every gradient tensor.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, InitialState, InputGrads, Layer, LayerWeights, Mode, Upstream,
};
use rand::{RngExt, SeedableRng, rngs::StdRng};

struct Case {
    cell: CellKind,
    t: usize,
    b: usize,
    i: usize,
    h: usize,
    params: [Vec<f64>; 4],
    x: Vec<f64>,
    h0: Vec<f64>,
    c0: Vec<f64>,
    dy: Vec<f64>,
    dh_n: Vec<f64>,
    dc_n: Vec<f64>,
}

fn uniform(rng: &mut StdRng, n: usize, a: f64) -> Vec<f64> {
    (0..n).map(|_| rng.random_range(-a..a)).collect()
}

impl Case {
    fn new(cell: CellKind, t: usize, b: usize, i: usize, h: usize, seed: u64) -> Case {
        let mut rng = StdRng::seed_from_u64(seed);
        let gh = cell.gates() * h;
        let w = 0.6;
        Case {
            cell,
            t,
            b,
            i,
            h,
            params: [
                uniform(&mut rng, gh * i, w),
                uniform(&mut rng, gh * h, w),
                uniform(&mut rng, gh, w),
                uniform(&mut rng, gh, w),
            ],
            x: uniform(&mut rng, t * b * i, 1.0),
            h0: uniform(&mut rng, b * h, 0.8),
            c0: uniform(&mut rng, b * h, 0.8),
            dy: uniform(&mut rng, t * b * h, 1.0),
            dh_n: uniform(&mut rng, b * h, 1.0),
            dc_n: uniform(&mut rng, b * h, 1.0),
        }
    }

    fn layer(&self) -> Layer<f64> {
        let [wi, wh, bi, bh] = &self.params;
        let w = LayerWeights {
            weight_ih: wi,
            weight_hh: wh,
            bias_ih: bi,
            bias_hh: bh,
        };
        Layer::new(self.cell, self.i, self.h, w).unwrap()
    }

    fn lstm(&self) -> bool {
        self.cell.has_cell_state()
    }

    /// `(L, M)`: L = sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n), and M the same sum of
    /// absolute values of the terms (the scale of L's rounding error).
    fn loss(&self) -> (f64, f64) {
        let layer = self.layer();
        let mut ws = layer.workspace(self.t, self.b, Mode::Inference).unwrap();
        let mut y = vec![f64::NAN; self.t * self.b * self.h];
        let mut h_n = vec![0.0; self.b * self.h];
        let mut c_n = vec![0.0; self.b * self.h];
        let init = InitialState {
            h0: Some(&self.h0),
            c0: self.lstm().then_some(&self.c0[..]),
        };
        let fin = FinalState {
            h_n: Some(&mut h_n),
            c_n: if self.lstm() { Some(&mut c_n) } else { None },
        };
        layer
            .forward(&mut ws, Direction::Forward, &self.x, init, &mut y, fin)
            .unwrap();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
        let dot_abs =
            |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| (p * q).abs()).sum::<f64>();
        let lstm = if self.lstm() { 1.0 } else { 0.0 };
        (
            dot(&y, &self.dy) + dot(&h_n, &self.dh_n) + lstm * dot(&c_n, &self.dc_n),
            dot_abs(&y, &self.dy) + dot_abs(&h_n, &self.dh_n) + lstm * dot_abs(&c_n, &self.dc_n),
        )
    }
}

/// Analytic gradients: [dW_ih, dW_hh, db_ih, db_hh, dx, dh0, dc0].
fn analytic(c: &Case) -> Vec<Vec<f64>> {
    let layer = c.layer();
    let mut ws = layer.workspace(c.t, c.b, Mode::Training).unwrap();
    let mut y = vec![f64::NAN; c.t * c.b * c.h];
    let init = InitialState {
        h0: Some(&c.h0),
        c0: c.lstm().then_some(&c.c0[..]),
    };
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &c.x,
            init,
            &mut y,
            FinalState::default(),
        )
        .unwrap();
    let mut g = layer.zero_grads().unwrap();
    let mut dx = vec![f64::NAN; c.x.len()];
    let mut dh0 = vec![f64::NAN; c.h0.len()];
    let mut dc0 = vec![f64::NAN; c.c0.len()];
    let up = Upstream {
        dy: Some(&c.dy),
        dh_n: Some(&c.dh_n),
        dc_n: c.lstm().then_some(&c.dc_n[..]),
    };
    let inputs = InputGrads {
        dx: Some(&mut dx),
        dh0: Some(&mut dh0),
        dc0: if c.lstm() { Some(&mut dc0) } else { None },
    };
    layer
        .backward(&mut ws, &c.x, up, &mut g, inputs, GradMode::Overwrite)
        .unwrap();
    vec![g.weight_ih, g.weight_hh, g.bias_ih, g.bias_hh, dx, dh0, dc0]
}

const NAMES: [&str; 7] = ["dW_ih", "dW_hh", "db_ih", "db_hh", "dx", "dh0", "dc0"];

/// Relative tolerance of the check. Central differences with step h ≈ cbrt(eps) have
/// truncation error O(h² f''') ≈ 4e-11 and rounding error O(eps |L| / h) ≈ 4e-11 |L|, so a
/// correct gradient agrees to ~1e-9 relative; 1e-6 leaves three orders of margin while any
/// real bug (a missing term, a wrong gate) shows up at O(1).
const REL: f64 = 1e-6;
/// Absolute floor for entries near zero, from the rounding error of the difference quotient:
/// each loss evaluation carries an error of a few eps times M = sum of |terms| of L, so
/// `(L+ - L-) / 2h` is off by about `eps·M/h`. Entries are compared against
/// `max(REL·|g|, NOISE_ULPS·eps·M/h)`; with M ≈ 10 and h ≈ 6e-6 that floor is ≈ 3e-9.
const NOISE_ULPS: f64 = 8.0;

fn check(cell: CellKind, t: usize, b: usize, i: usize, h: usize, seed: u64) -> f64 {
    let case = Case::new(cell, t, b, i, h, seed);
    let ana = analytic(&case);
    let loss_mag = case.loss().1.max(1.0);
    let mut worst = 0.0f64;
    for (k, name) in NAMES.iter().enumerate() {
        if k == 6 && !case.lstm() {
            continue;
        }
        let n = ana[k].len();
        // Whole tensors when small, a seeded subset of 40 entries otherwise.
        let mut rng = StdRng::seed_from_u64(seed ^ ((k as u64 + 1) * 0x9E37));
        let idx: Vec<usize> = if n <= 60 {
            (0..n).collect()
        } else {
            (0..40).map(|_| rng.random_range(0..n)).collect()
        };
        for j in idx {
            let mut c = Case::new(cell, t, b, i, h, seed);
            let slot: &mut Vec<f64> = match k {
                0..=3 => &mut c.params[k],
                4 => &mut c.x,
                5 => &mut c.h0,
                _ => &mut c.c0,
            };
            let v = slot[j];
            let step = f64::EPSILON.cbrt() * v.abs().max(1.0);
            slot[j] = v + step;
            let lp = c.loss().0;
            let slot: &mut Vec<f64> = match k {
                0..=3 => &mut c.params[k],
                4 => &mut c.x,
                5 => &mut c.h0,
                _ => &mut c.c0,
            };
            slot[j] = v - step;
            let lm = c.loss().0;
            let fd = (lp - lm) / (2.0 * step);
            let a = ana[k][j];
            let noise = NOISE_ULPS * f64::EPSILON * loss_mag / step;
            let err = (a - fd).abs() / a.abs().max(fd.abs()).max(noise / REL);
            assert!(
                err <= REL,
                "{} T={t} B={b} I={i} H={h}: {name}[{j}] analytic {a:e} vs finite difference {fd:e} (rel err {err:e})",
                cell.name()
            );
            worst = worst.max(err);
        }
    }
    worst
}

#[test]
fn fused_f64_gradients_match_finite_differences() {
    // T=1, B=1, H in {1, 7, 8, 9, 33}, I != H.
    let shapes = [
        (1, 1, 3, 1),
        (3, 2, 5, 7),
        (1, 1, 4, 8),
        (4, 3, 2, 9),
        (2, 2, 5, 33),
        (5, 1, 1, 3),
    ];
    for cell in CellKind::ALL {
        let mut worst = 0.0f64;
        for (n, &(t, b, i, h)) in shapes.iter().enumerate() {
            worst = worst.max(check(cell, t, b, i, h, 1000 + n as u64));
        }
        println!("{:>18}: max relative FD error {worst:.2e}", cell.name());
    }
}
