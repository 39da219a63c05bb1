//! Helpers shared by the integration tests: seeded random layers and inputs, and a
//! relative-error comparison that reports where and by how much it failed.
#![allow(dead_code)]

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, Dims, FinalState, Float, GradMode, InitialState, InputGrads, Layer, LayerWeights,
    Mode, Upstream,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A seeded random number generator (deterministic across runs and platforms).
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values drawn from U(lo, hi) in f64 and rounded to `F`.
pub fn uniform<F: Float>(rng: &mut StdRng, n: usize, lo: f64, hi: f64) -> Vec<F> {
    (0..n)
        .map(|_| F::from_f64(rng.random_range(lo..hi)))
        .collect()
}

/// A random layer with random inputs and upstream gradients for one `(cell, dims, seed)`.
///
/// Weights and biases are U(-k, k) with `k = min(1, 2/sqrt(H))`: twice PyTorch's default bound
/// `1/sqrt(H)` (the PyTorch fixtures use the same), so that the gates spread over (0, 1) instead
/// of all sitting near 0.5. `x`, `dy`, `dh_n`, `dc_n` are U(-1, 1); `h0` is U(-0.5, 0.5), `c0`
/// U(-1, 1). `c0` and `dc_n` are `Some` for the LSTM only.
#[derive(Debug, Clone)]
pub struct RandomCase<F> {
    /// The cell kind.
    pub cell: CellKind,
    /// The dimensions.
    pub dims: Dims,
    /// `[G*H, I]`.
    pub weight_ih: Vec<F>,
    /// `[G*H, H]`.
    pub weight_hh: Vec<F>,
    /// `[G*H]`.
    pub bias_ih: Vec<F>,
    /// `[G*H]`.
    pub bias_hh: Vec<F>,
    /// `[T, B, I]`.
    pub x: Vec<F>,
    /// `[B, H]`.
    pub h0: Vec<F>,
    /// `[B, H]`, LSTM only.
    pub c0: Option<Vec<F>>,
    /// `[T, B, H]`.
    pub dy: Vec<F>,
    /// `[B, H]`.
    pub dh_n: Vec<F>,
    /// `[B, H]`, LSTM only.
    pub dc_n: Option<Vec<F>>,
}

impl<F: Float> RandomCase<F> {
    /// Draws a case from `seed`.
    pub fn new(cell: CellKind, dims: Dims, seed: u64) -> Self {
        let mut r = rng(seed);
        let gh = cell.gates() * dims.hidden;
        let k = (2.0 / (dims.hidden as f64).sqrt()).min(1.0);
        let s = dims.state_len();
        let lstm = cell.has_cell_state();
        let weight_ih = uniform(&mut r, gh * dims.input, -k, k);
        let weight_hh = uniform(&mut r, gh * dims.hidden, -k, k);
        let bias_ih = uniform(&mut r, gh, -k, k);
        let bias_hh = uniform(&mut r, gh, -k, k);
        let x = uniform(&mut r, dims.x_len(), -1.0, 1.0);
        let h0 = uniform(&mut r, s, -0.5, 0.5);
        let c0 = lstm.then(|| uniform(&mut r, s, -1.0, 1.0));
        let dy = uniform(&mut r, dims.y_len(), -1.0, 1.0);
        let dh_n = uniform(&mut r, s, -1.0, 1.0);
        let dc_n = lstm.then(|| uniform(&mut r, s, -1.0, 1.0));
        RandomCase {
            cell,
            dims,
            weight_ih,
            weight_hh,
            bias_ih,
            bias_hh,
            x,
            h0,
            c0,
            dy,
            dh_n,
            dc_n,
        }
    }

    /// The layer's parameters as a view.
    pub fn weights(&self) -> LayerWeights<'_, F> {
        LayerWeights {
            weight_ih: &self.weight_ih,
            weight_hh: &self.weight_hh,
            bias_ih: &self.bias_ih,
            bias_hh: &self.bias_hh,
        }
    }

    /// `c0` as an optional slice.
    pub fn c0(&self) -> Option<&[F]> {
        self.c0.as_deref()
    }

    /// `dc_n` as an optional slice.
    pub fn dc_n(&self) -> Option<&[F]> {
        self.dc_n.as_deref()
    }

    /// The same case in another precision (exact when widening f32 to f64).
    pub fn cast<G: Float>(&self) -> RandomCase<G> {
        fn conv<F: Float, G: Float>(v: &[F]) -> Vec<G> {
            v.iter().map(|&a| G::from_f64(a.to_f64())).collect()
        }
        RandomCase {
            cell: self.cell,
            dims: self.dims,
            weight_ih: conv(&self.weight_ih),
            weight_hh: conv(&self.weight_hh),
            bias_ih: conv(&self.bias_ih),
            bias_hh: conv(&self.bias_hh),
            x: conv(&self.x),
            h0: conv(&self.h0),
            c0: self.c0.as_deref().map(conv),
            dy: conv(&self.dy),
            dh_n: conv(&self.dh_n),
            dc_n: self.dc_n.as_deref().map(conv),
        }
    }
}

/// Whether this machine's kernel refuses a single allocation of `bytes` outright, so that a
/// test may ask for it without the risk of being granted it (and then writing to it).
///
/// Linux only, from `/proc`: with `vm.overcommit_memory = 0` (heuristic) a request larger than
/// RAM + swap is refused, with 2 (strict) one larger than the commit limit; with 1 (always)
/// anything up to the address space is granted, so this says `false`. Requires twice the
/// limit, as a margin. `false` wherever it cannot tell.
pub fn kernel_refuses_allocation(bytes: usize) -> bool {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let kib = |key: &str| -> Option<u128> {
        let line = meminfo.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let limit_kib = match read("/proc/sys/vm/overcommit_memory").trim() {
        "0" => kib("MemTotal:").zip(kib("SwapTotal:")).map(|(m, s)| m + s),
        "2" => kib("CommitLimit:"),
        _ => None,
    };
    limit_kib.is_some_and(|l| bytes as u128 > 2 * 1024 * l)
}

/// Shorthand for [`Dims`].
pub fn dims(seq_len: usize, batch: usize, input: usize, hidden: usize) -> Dims {
    Dims {
        seq_len,
        batch,
        input,
        hidden,
    }
}

/// Panics unless `|got[i] - want[i]| <= rel * max(|want[i]|, abs_floor)` for every `i`.
///
/// Also fails on a length mismatch and where exactly one of `got[i]`, `want[i]` is NaN (both
/// NaN passes; equal infinities pass). The message names `what`, the first failing index with
/// both values, and the worst element.
pub fn assert_close<F: Float>(what: &str, got: &[F], want: &[F], rel: f64, abs_floor: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length mismatch: got {}, want {}",
        got.len(),
        want.len()
    );
    let mut first_fail: Option<(usize, f64, f64, f64)> = None;
    let mut fails = 0usize;
    // Worst ratio |got - want| / (rel * max(|want|, abs_floor)); NaN mismatches count as
    // infinite, so the ratio itself is never NaN.
    let mut worst = (0usize, 0.0f64, 0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (g, w) = (g.to_f64(), w.to_f64());
        let ratio = if g.is_nan() && w.is_nan() || g == w {
            0.0
        } else if g.is_nan() || w.is_nan() {
            f64::INFINITY
        } else {
            let err = (g - w).abs();
            let bound = rel * w.abs().max(abs_floor);
            // err is NaN only for opposite infinities.
            if err.is_nan() {
                f64::INFINITY
            } else {
                err / bound
            }
        };
        if ratio > worst.3 {
            worst = (i, g, w, ratio);
        }
        if ratio > 1.0 {
            fails += 1;
            if first_fail.is_none() {
                first_fail = Some((i, g, w, ratio));
            }
        }
    }
    if let Some((i, g, w, ratio)) = first_fail {
        panic!(
            "{what}: {fails} of {} elements differ (rel {rel:e}, abs floor {abs_floor:e}); \
             first at [{i}]: got {g:e}, want {w:e} (err {:e}, {ratio:.3}x the bound); \
             worst at [{}]: got {:e}, want {:e} (err {:e}, {:.3}x the bound)",
            got.len(),
            (g - w).abs(),
            worst.0,
            worst.1,
            worst.2,
            (worst.1 - worst.2).abs(),
            worst.3
        );
    }
}

/// Relative tolerance of an f32 computation (reference or fused) against the f64 reference on
/// the same inputs.
///
/// Every value is built from dot products of length `K = I + H` (forward) and, in backward,
/// sums over up to `T·B` steps and rows, chained through `T` steps. With sequential summation
/// the rounding error of an `n`-term sum is bounded by `n·eps·sum|terms|` in the worst case and
/// behaves like `sqrt(n)·eps·sum|terms|` for independent roundings (Higham & Mary 2019), and the
/// errors of the `T` steps add up. We use the statistical form with everything chained, plus a
/// length-independent term for the few rounded operations every element goes through whatever
/// the length (activation, the derivative `1 - y²` or `σ(1 - σ)` from the activated value,
/// which loses relative accuracy near saturation, products with the upstream gradient):
/// `tol = C · eps_f32 · (4 + sqrt(K · T · B))`, `C = 8`, with `abs_floor` = the RMS of the
/// tensor, since the error of an element is relative to the size of the terms it sums, not to
/// the element itself (which can cancel to near zero).
pub fn f32_tolerance(d: &Dims) -> f64 {
    const C: f64 = 8.0;
    let n = ((d.input + d.hidden) * d.seq_len * d.batch) as f64;
    C * f64::from(f32::EPSILON) * (4.0 + n.sqrt())
}

pub fn rms(v: &[f64]) -> f64 {
    (v.iter().map(|a| a * a).sum::<f64>() / v.len() as f64).sqrt()
}

/// An inference forward of `layer` over case `c` (its `h0`/`c0`): `y`, `h_n` and, for the
/// LSTM, `c_n`.
pub fn inference_forward<F: Float>(
    layer: &Layer<F>,
    c: &RandomCase<F>,
) -> (Vec<F>, Vec<F>, Option<Vec<F>>) {
    let d = c.dims;
    let mut ws = layer
        .workspace(d.seq_len, d.batch, Mode::Inference)
        .unwrap();
    let mut y = vec![F::ZERO; d.y_len()];
    let mut h_n = vec![F::ZERO; d.state_len()];
    let mut c_n = vec![F::ZERO; d.state_len()];
    let lstm = c.cell.has_cell_state();
    let init = InitialState {
        h0: Some(&c.h0),
        c0: c.c0(),
    };
    let fin = FinalState {
        h_n: Some(&mut h_n),
        c_n: if lstm { Some(&mut c_n) } else { None },
    };
    layer
        .forward(&mut ws, Direction::Forward, &c.x, init, &mut y, fin)
        .unwrap();
    (y, h_n, lstm.then_some(c_n))
}

/// One training forward from the zero state over `x [T, B, I]` and a backward of the upstream
/// gradient `dy [T, B, H]`: returns `y`, `dx` and the weight gradients.
pub fn training_pass<F: Float>(
    layer: &Layer<F>,
    x: &[F],
    dy: &[F],
    seq_len: usize,
    batch: usize,
) -> (Vec<F>, Vec<F>, fused_rnn::LayerGrads<F>) {
    let mut ws = layer.workspace(seq_len, batch, Mode::Training).unwrap();
    training_pass_in(layer, &mut ws, x, dy)
}

/// [`training_pass`] in a given workspace (its dimensions say `T` and `B`).
pub fn training_pass_in<F: Float>(
    layer: &Layer<F>,
    ws: &mut fused_rnn::Workspace<F>,
    x: &[F],
    dy: &[F],
) -> (Vec<F>, Vec<F>, fused_rnn::LayerGrads<F>) {
    let d = ws.dims();
    let mut y = vec![F::ZERO; d.y_len()];
    let mut dx = vec![F::ZERO; d.x_len()];
    layer
        .forward(
            ws,
            Direction::Forward,
            x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
    let mut grads = layer.zero_grads();
    let up = Upstream {
        dy: Some(dy),
        ..Default::default()
    };
    let inputs = InputGrads {
        dx: Some(&mut dx),
        ..Default::default()
    };
    layer
        .backward(ws, x, up, &mut grads, inputs, GradMode::Overwrite)
        .unwrap();
    (y, dx, grads)
}

/// A training forward of `layer` over `x [T, B, I]` from `(h0, c0)`: `y`, `h_n`, `c_n` (zeros
/// for a cell without a cell state) and the workspace, kept for [`backward_from`].
pub fn forward_from<F: Float>(
    layer: &Layer<F>,
    x: &[F],
    (t, b): (usize, usize),
    h0: &[F],
    c0: Option<&[F]>,
) -> (Vec<F>, Vec<F>, Vec<F>, fused_rnn::Workspace<F>) {
    let h = layer.hidden_size();
    let lstm = layer.cell().has_cell_state();
    let mut ws = layer.workspace(t, b, Mode::Training).expect("workspace");
    let mut y = vec![F::ZERO; t * b * h];
    let (mut hn, mut cn) = (vec![F::ZERO; b * h], vec![F::ZERO; b * h]);
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            x,
            InitialState { h0: Some(h0), c0 },
            &mut y,
            FinalState {
                h_n: Some(&mut hn),
                c_n: lstm.then_some(&mut cn[..]),
            },
        )
        .expect("forward");
    (y, hn, cn, ws)
}

/// The backward of a [`forward_from`] with upstream `(dy, dh_n, dc_n)`, weight gradients into
/// `grads` by `mode`: returns `dx`, `dh0`, `dc0` (zeros for a cell without a cell state).
#[allow(clippy::too_many_arguments)]
pub fn backward_from<F: Float>(
    layer: &Layer<F>,
    ws: &mut fused_rnn::Workspace<F>,
    x: &[F],
    dy: &[F],
    dh_n: &[F],
    dc_n: Option<&[F]>,
    grads: &mut fused_rnn::LayerGrads<F>,
    mode: GradMode,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let lstm = layer.cell().has_cell_state();
    let s = dh_n.len();
    let (mut dx, mut dh0, mut dc0) = (vec![F::ZERO; x.len()], vec![F::ZERO; s], vec![F::ZERO; s]);
    layer
        .backward(
            ws,
            x,
            Upstream {
                dy: Some(dy),
                dh_n: Some(dh_n),
                dc_n,
            },
            grads,
            InputGrads {
                dx: Some(&mut dx),
                dh0: Some(&mut dh0),
                dc0: lstm.then_some(&mut dc0[..]),
            },
            mode,
        )
        .expect("backward");
    (dx, dh0, dc0)
}
