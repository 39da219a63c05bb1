//! One forward and backward of the fused layer, and of the scalar reference (the oracle), on a
//! [`RandomCase`]: every output and gradient widened to f64 in a [`Pass`].
//!
//! Output buffers are prefilled with NaN (rule of thumb 11), so an element left unwritten
//! shows up in any comparison.

use fused_rnn::Direction;
use fused_rnn::reference::{self, ReferenceGradients, ReferenceOutput};
use fused_rnn::{
    FinalState, Float, GradMode, InitialState, InputGrads, Isa, Layer, LayerGrads, Mode, Upstream,
    Workspace,
};

use crate::convert::widen;
use crate::random::RandomCase;

/// Everything a forward + backward gives, widened to f64 (exactly). `c_n` and `dc0` are empty
/// for a cell without a cell state; the input and weight gradients are empty after a forward
/// alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pass {
    /// `[T, B, H]`.
    pub y: Vec<f64>,
    /// `[B, H]`.
    pub h_n: Vec<f64>,
    /// `[B, H]`, LSTM only.
    pub c_n: Vec<f64>,
    /// `[T, B, I]`.
    pub dx: Vec<f64>,
    /// `[B, H]`.
    pub dh0: Vec<f64>,
    /// `[B, H]`, LSTM only.
    pub dc0: Vec<f64>,
    /// `dW_ih, dW_hh, db_ih, db_hh`.
    pub grads: [Vec<f64>; 4],
}

/// Named output tensors, in the order [`Pass::outputs`] gives them.
pub type Outputs = Vec<(&'static str, Vec<f64>)>;

impl Pass {
    /// `y, h_n, dx, dh0, dW_ih, dW_hh, db_ih, db_hh`, then `c_n, dc0` where the cell has them.
    pub fn outputs(self) -> Outputs {
        let [dw_ih, dw_hh, db_ih, db_hh] = self.grads;
        let mut out = vec![
            ("y", self.y),
            ("h_n", self.h_n),
            ("dx", self.dx),
            ("dh0", self.dh0),
            ("dW_ih", dw_ih),
            ("dW_hh", dw_hh),
            ("db_ih", db_ih),
            ("db_hh", db_hh),
        ];
        if !self.c_n.is_empty() {
            out.push(("c_n", self.c_n));
            out.push(("dc0", self.dc0));
        }
        out
    }
}

/// The four weight gradients, widened.
pub fn grads_of<F: Float>(g: &LayerGrads<F>) -> [Vec<f64>; 4] {
    [&g.weight_ih, &g.weight_hh, &g.bias_ih, &g.bias_hh].map(|v| widen(v))
}

/// A forward of `layer` in `ws` (its dimensions say `T` and `B`) over `x` from `init`: `y`,
/// `h_n` and `c_n` (empty for a cell without a cell state).
pub fn forward_in<F: Float>(
    layer: &Layer<F>,
    ws: &mut Workspace<F>,
    x: &[F],
    init: InitialState<'_, F>,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let d = ws.dims();
    let nan = F::from_f64(f64::NAN);
    let lstm = layer.cell().has_cell_state();
    let (mut y, mut h_n) = (vec![nan; d.y_len()], vec![nan; d.state_len()]);
    let mut c_n = vec![nan; if lstm { d.state_len() } else { 0 }];
    let fin = FinalState {
        h_n: Some(&mut h_n),
        c_n: lstm.then_some(&mut c_n[..]),
    };
    layer
        .forward(ws, Direction::Forward, x, init, &mut y, fin)
        .expect("forward");
    (y, h_n, c_n)
}

/// The backward of the forward last run in `ws` with upstream `up`, weight gradients into
/// `grads` by `mode`: `dx`, `dh0` and `dc0` (empty for a cell without a cell state).
pub fn backward_in<F: Float>(
    layer: &Layer<F>,
    ws: &mut Workspace<F>,
    x: &[F],
    up: Upstream<'_, F>,
    grads: &mut LayerGrads<F>,
    mode: GradMode,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let s = ws.dims().state_len();
    let nan = F::from_f64(f64::NAN);
    let lstm = layer.cell().has_cell_state();
    let (mut dx, mut dh0) = (vec![nan; x.len()], vec![nan; s]);
    let mut dc0 = vec![nan; if lstm { s } else { 0 }];
    let inputs = InputGrads {
        dx: Some(&mut dx),
        dh0: Some(&mut dh0),
        dc0: lstm.then_some(&mut dc0[..]),
    };
    layer
        .backward(ws, x, up, grads, inputs, mode)
        .expect("backward");
    (dx, dh0, dc0)
}

/// A training forward of `layer` over `x [T, B, I]` from `init`: `y`, `h_n`, `c_n` (empty for
/// a cell without a cell state) and the workspace, kept for [`backward_in`].
pub fn forward_from<F: Float>(
    layer: &Layer<F>,
    x: &[F],
    (t, b): (usize, usize),
    init: InitialState<'_, F>,
) -> (Vec<F>, Vec<F>, Vec<F>, Workspace<F>) {
    let mut ws = layer.workspace(t, b, Mode::Training).expect("workspace");
    let (y, h_n, c_n) = forward_in(layer, &mut ws, x, init);
    (y, h_n, c_n, ws)
}

/// An inference forward of `layer` over case `c`: `y`, `h_n` and `c_n` (empty for a cell
/// without a cell state).
pub fn inference_forward<F: Float>(
    layer: &Layer<F>,
    c: &RandomCase<F>,
) -> (Vec<F>, Vec<F>, Vec<F>) {
    let d = c.dims;
    let mut ws = layer
        .workspace(d.seq_len, d.batch, Mode::Inference)
        .expect("inference workspace");
    forward_in(layer, &mut ws, &c.x, c.init())
}

/// One training forward from the zero state over `x [T, B, I]` and a backward of the upstream
/// gradient `dy [T, B, H]`: returns `y`, `dx` and the weight gradients.
pub fn training_pass<F: Float>(
    layer: &Layer<F>,
    x: &[F],
    dy: &[F],
    seq_len: usize,
    batch: usize,
) -> (Vec<F>, Vec<F>, LayerGrads<F>) {
    let mut ws = layer.workspace(seq_len, batch, Mode::Training).unwrap();
    training_pass_in(layer, &mut ws, x, dy)
}

/// [`training_pass`] in a given workspace (its dimensions say `T` and `B`).
pub fn training_pass_in<F: Float>(
    layer: &Layer<F>,
    ws: &mut Workspace<F>,
    x: &[F],
    dy: &[F],
) -> (Vec<F>, Vec<F>, LayerGrads<F>) {
    let (y, _, _) = forward_in(layer, ws, x, InitialState::default());
    let mut grads = layer.zero_grads().unwrap();
    let up = Upstream {
        dy: Some(dy),
        ..Default::default()
    };
    let (dx, _, _) = backward_in(layer, ws, x, up, &mut grads, GradMode::Overwrite);
    (y, dx, grads)
}

/// A training forward and a backward (`GradMode::Overwrite`) of case `c` in `ws` with the
/// weight gradients in `grads` (both may be reused, dirty).
pub fn fused_pass_in<F: Float>(
    layer: &Layer<F>,
    c: &RandomCase<F>,
    ws: &mut Workspace<F>,
    grads: &mut LayerGrads<F>,
) -> Pass {
    let (y, h_n, c_n) = forward_in(layer, ws, &c.x, c.init());
    let (dx, dh0, dc0) = backward_in(layer, ws, &c.x, c.upstream(), grads, GradMode::Overwrite);
    Pass {
        y: widen(&y),
        h_n: widen(&h_n),
        c_n: widen(&c_n),
        dx: widen(&dx),
        dh0: widen(&dh0),
        dc0: widen(&dc0),
        grads: grads_of(grads),
    }
}

/// The fused layer of case `c` on `isa` and `threads` threads.
///
/// # Panics
/// If `isa` is not available or the case's parameters do not fit its dimensions.
pub fn fused_layer<F: Float>(c: &RandomCase<F>, isa: Isa, threads: usize) -> Layer<F> {
    let d = c.dims;
    let mut layer = Layer::new(c.cell, d.input, d.hidden, c.weights()).expect("Layer::new");
    layer.set_isa(isa).expect("set_isa of an available ISA");
    layer
        .set_threads(threads)
        .expect("set_threads of a positive count");
    layer
}

/// The fused layer on case `c` on `isa`, one thread: an inference forward, then a training
/// forward (its `y`, `h_n`, `c_n` must be the inference ones bit for bit, NaN payloads aside),
/// then backward. Panics if any call returns `Err` (every buffer is valid).
pub fn run_fused<F: Float>(c: &RandomCase<F>, isa: Isa) -> Pass {
    run_fused_on(c, isa, 1)
}

/// [`run_fused`] on a layer of `threads` threads.
pub fn run_fused_on<F: Float>(c: &RandomCase<F>, isa: Isa, threads: usize) -> Pass {
    let d = c.dims;
    let layer = fused_layer(c, isa, threads);
    let (y, h_n, c_n) = inference_forward(&layer, c);
    let mut ws = layer
        .workspace(d.seq_len, d.batch, Mode::Training)
        .expect("training workspace");
    let pass = fused_pass_in(&layer, c, &mut ws, &mut layer.zero_grads().unwrap());
    for (what, inference, training) in [
        ("y", &y, &pass.y),
        ("h_n", &h_n, &pass.h_n),
        ("c_n", &c_n, &pass.c_n),
    ] {
        for (i, (&u, &v)) in widen(inference).iter().zip(training).enumerate() {
            assert!(
                (u.is_nan() && v.is_nan()) || u.to_bits() == v.to_bits(),
                "{} {}: training and inference {what} differ at [{i}]: {v:e} vs {u:e}",
                c.cell.name(),
                isa.name()
            );
        }
    }
    pass
}

/// `reference::forward` on case `c`.
pub fn reference_forward<F: Float>(c: &RandomCase<F>) -> fused_rnn::Result<ReferenceOutput<F>> {
    reference::forward(c.cell, c.dims, &c.weights(), &c.x, c.h0(), c.c0())
}

/// `reference::backward` on case `c`.
pub fn reference_backward<F: Float>(c: &RandomCase<F>) -> fused_rnn::Result<ReferenceGradients<F>> {
    reference::backward(
        c.cell,
        c.dims,
        &c.weights(),
        &c.x,
        c.h0(),
        c.c0(),
        c.dy(),
        c.dh_n(),
        c.dc_n(),
    )
}

/// The same tensors as [`run_fused`] from the scalar oracle, computed in `F` (f64 is the
/// oracle proper; in f32 it shows how far plain scalar f32 code lands on the same inputs, to
/// triage a failure).
pub fn run_reference<F: Float>(c: &RandomCase<F>) -> Pass {
    let o = reference_forward(c).expect("reference::forward");
    let g = reference_backward(c).expect("reference::backward");
    let opt = |v: Option<Vec<F>>| v.as_deref().map(widen).unwrap_or_default();
    Pass {
        y: widen(&o.y),
        h_n: widen(&o.h_n),
        c_n: opt(o.c_n),
        dx: widen(&g.dx),
        dh0: widen(&g.dh0),
        dc0: opt(g.dc0),
        grads: grads_of(&g.weights),
    }
}
