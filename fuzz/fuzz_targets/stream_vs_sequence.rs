//! `StreamingLayer` under random interleavings of `step`, `run`, `reset`, `set_state`, state
//! reads, spin-window changes and pauses (which change which thread computes a split step's
//! slices, never the bits), against a model that recomputes everything with `Layer::forward`.
//!
//! Decodes a cell kind, f32 or f64, an available ISA, `B` 1..=4, `I` 1..=8, `H` 1..=16 (or, one
//! case in eight, a layer on two threads big enough for the stream to split each step over its
//! worker thread: `B` = 4, `I` = `H` in 72..=87, 112..=127 for the RNN), weights
//! scaled as in `cell_forward_backward` (every weight and bias `v · P / (I + H + 2)`, `|v| <= 1`,
//! `P` in (0, 2]; every value exact in f32), then up to 24 operations. Inputs and set states
//! lie in [-1, 1].
//!
//! The model keeps the state the stream was last set to (zero at first and after `reset`,
//! else the `set_state` argument) and every input step since. After each operation:
//!
//! - `step`: bit for bit one step of `Layer::<F>::forward` from the state before it (same
//!   ISA: the same kernels on the same data), `h_t` and `c_t`; and its `h_t` against `y[T-1]`
//!   of `Layer::<f64>::forward` over the `T` steps since the state was set, from that state
//!   (on the exactly widened weights, inputs and state);
//! - `run` (1..=4 steps): bit for bit `Layer::<F>::forward` from the stream's current state
//!   (same ISA), `y` and the state it leaves; and graded against the model like `step`;
//! - `hidden_state` / `cell_state`: graded against the model's `h_T` / `c_T` (exact when no step
//!   ran since the state was set); `cell_state` is `None` for cells without one;
//! - `reset` / `set_state`: the state reads back exactly;
//! - wrong lengths (step, run's `x` and `y`, `set_state`'s `h` and `c`, a `c` for a cell that has
//!   none or none for the LSTM): `Err` of the right kind, never a panic, state untouched.
//!
//! Grading is `cell_forward_backward`'s: f64 within `F64_REL`, f32 within
//! `f32_tolerance(T, B, I, H)`, both relative with the floor `max(RMS of the tensor, RMS of
//! the state family (y, h_T, c_T), eps / rel)`; f32 only when `B·H >= 8` (below that a tensor's
//! RMS is no scale), and where the f32 stream misses the bound it passes only if the scalar
//! oracle run in f32 misses it too and the stream stays within `SCALAR_FACTOR` times the
//! oracle's error. The ReLU kink exclusion of that target concerns gradients only; this target
//! checks forward values, which are continuous at the kink, so it does not apply.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fused_rnn::Direction;
use fused_rnn::{
    CellKind, Dims, Error, FinalState, Float, InitialState, Isa, Layer, LayerWeights, Mode,
    StreamingLayer, reference,
};
use fused_rnn_fuzz::{pick_cell, pick_isa, pick_stream_dims};
use libfuzzer_sys::fuzz_target;
use testkit::convert::{narrow, widen};
use testkit::random::SplitMix;
use testkit::tolerance::{F64_REL, f32_tolerance, family_rms, rms, worst_ratio};

/// See `cell_forward_backward::SCALAR_FACTOR`.
const SCALAR_FACTOR: f64 = 4.0;
/// Longest sequence since the last `set_state`/`reset` (a longer one resets first).
const MAX_T: usize = 40;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    /// One step; `zero` makes `x_t` all zeros.
    Step {
        zero: bool,
    },
    /// `run` over `1 + n % 4` steps.
    Run(u8),
    Reset,
    SetState,
    /// `hidden_state` and `cell_state`.
    Read,
    /// `step` with `B·I + 1 + k % 3` or `B·I - 1 - k % 3` elements.
    BadStep {
        longer: bool,
        k: u8,
    },
    /// `run` with an empty `x`, an `x` that is no multiple of `B·I`, or a wrong `y`.
    BadRun(u8),
    /// `set_state` with a wrong `h`, a wrong or missing or unexpected `c`.
    BadSetState(u8),
    /// The workers' spin window (of a stream that splits its steps): zero, the default 200 µs
    /// or 50 ms.
    SpinWindow(u8),
    /// A pause longer than the default spin window: the next step finds the workers parked
    /// (and runs their slices on the caller), the one after wakes them.
    Pause,
}

struct Case {
    cell: CellKind,
    isa: Isa,
    f64: bool,
    batch: usize,
    input: usize,
    hidden: usize,
    /// Threads of the layer (2 only with the big dims).
    threads: usize,
    seed: u64,
    p_scale: f64,
    ops: Vec<Op>,
}

fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<Case> {
    let cell = pick_cell(u)?;
    let isa = pick_isa(u)?;
    let f64: bool = u.arbitrary()?;
    let (batch, input, hidden, threads) = pick_stream_dims(u, cell)?;
    let seed = u.arbitrary()?;
    let p_scale = 2.0 * (f64::from(u.arbitrary::<u8>()?) + 1.0) / 256.0;
    let n = u.int_in_range(1..=24)?;
    let ops = (0..n)
        .map(|_| u.arbitrary())
        .collect::<arbitrary::Result<_>>()?;
    Ok(Case {
        cell,
        isa,
        f64,
        batch,
        input,
        hidden,
        threads,
        seed,
        p_scale,
        ops,
    })
}

/// What the stream must hold: the state last set and the inputs since.
struct Model<F> {
    h0: Vec<F>,
    c0: Vec<F>,
    xs: Vec<F>,
    steps: usize,
}

/// Expected tensors of the sequence since the state was set, widened to f64.
struct Expected {
    y: Vec<f64>,
    h_n: Vec<f64>,
    c_n: Option<Vec<f64>>,
}

impl Expected {
    /// RMS of the state family (y, h_T, c_T).
    fn family_rms(&self) -> f64 {
        family_rms(&[&self.y, &self.h_n, self.c_n.as_deref().unwrap_or_default()])
    }
}

struct Ctx<'a, F> {
    cell: CellKind,
    b: usize,
    i: usize,
    h: usize,
    is_f32: bool,
    /// The layer in the precision under test (weights exact in f32).
    layer: &'a Layer<F>,
    /// The same weights in f64.
    layer64: &'a Layer<f64>,
    desc: String,
}

impl<F: Float> Ctx<'_, F> {
    fn dims(&self, t: usize) -> Dims {
        Dims {
            seq_len: t,
            batch: self.b,
            input: self.i,
            hidden: self.h,
        }
    }

    /// `Layer::<f64>::forward` over the model's steps from its state.
    fn expected(&self, m: &Model<F>) -> Expected {
        let (y, h_n, c_n) = forward(
            self.layer64,
            m.steps,
            self.b,
            &widen(&m.xs),
            &widen(&m.h0),
            &widen(&m.c0),
        );
        Expected { y, h_n, c_n }
    }

    /// The scalar oracle in the precision under test, over the model's steps.
    fn scalar(&self, m: &Model<F>) -> Expected {
        let lstm = self.cell.has_cell_state();
        let o = reference::forward(
            self.cell,
            self.dims(m.steps),
            &self.layer.weights(),
            &m.xs,
            Some(&m.h0),
            lstm.then_some(&m.c0[..]),
        )
        .expect("reference::forward");
        Expected {
            y: widen(&o.y),
            h_n: widen(&o.h_n),
            c_n: o.c_n.as_deref().map(widen),
        }
    }

    /// Grades `got` against `pick(expected)` (see the module docs).
    fn grade(
        &self,
        what: &str,
        m: &Model<F>,
        exp: &Expected,
        got: &[F],
        pick: impl Fn(&Expected) -> Vec<f64>,
    ) {
        let want = pick(exp);
        let got = widen(got);
        let t = m.steps;
        let (rel, eps) = if self.is_f32 {
            if self.b * self.h < 8 {
                return;
            }
            (f32_tolerance(&self.dims(t)), f64::from(f32::EPSILON))
        } else {
            (F64_REL, f64::EPSILON)
        };
        let floor = rms(&want).max(exp.family_rms()).max(eps / rel);
        let (i, g, w, ratio) = worst_ratio(&got, &want, rel, floor);
        if ratio <= 1.0 {
            return;
        }
        let msg = format!(
            "{} T={t} {what}: worst element [{i}]: got {g:e}, want {w:e}, err {:e} = {ratio:.3}x \
             the bound (rel {rel:e}, floor {floor:e})",
            self.desc,
            (g - w).abs()
        );
        assert!(self.is_f32, "{msg}");
        let s = pick(&self.scalar(m));
        let (si, sg, _, sratio) = worst_ratio(&s, &want, rel, floor);
        assert!(
            sratio > 1.0 && ratio <= SCALAR_FACTOR * sratio,
            "{msg}; the scalar oracle in f32: worst [{si}] {sg:e}, {sratio:.3}x"
        );
    }
}

/// `layer.forward` (inference) over `t` steps from `(h0, c0)`: `(y, h_T, c_T)`.
fn forward<G: Float>(
    layer: &Layer<G>,
    t: usize,
    b: usize,
    x: &[G],
    h0: &[G],
    c0: &[G],
) -> (Vec<G>, Vec<G>, Option<Vec<G>>) {
    let d = layer.dims(t, b);
    let lstm = layer.cell().has_cell_state();
    let mut ws = layer
        .workspace(t, b, Mode::Inference)
        .expect("inference workspace");
    let nan = G::from_f64(f64::NAN);
    let (mut y, mut h_n, mut c_n) = (
        vec![nan; d.y_len()],
        vec![nan; d.state_len()],
        vec![nan; d.state_len()],
    );
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            x,
            InitialState {
                h0: Some(h0),
                c0: lstm.then_some(c0),
            },
            &mut y,
            FinalState {
                h_n: Some(&mut h_n),
                c_n: if lstm { Some(&mut c_n) } else { None },
            },
        )
        .expect("forward");
    (y, h_n, lstm.then_some(c_n))
}

/// `n` values in [-1, 1], exact in f32.
fn values<F: Float>(n: usize, rng: &mut SplitMix) -> Vec<F> {
    (0..n)
        .map(|_| F::from_f64(f64::from(rng.unit() as f32)))
        .collect()
}

fn bits<F: Float>(v: &[F]) -> Vec<u64> {
    v.iter().map(|a| a.to_f64().to_bits()).collect()
}

/// The stream's state, for "untouched" checks.
fn state<F: Float>(s: &StreamingLayer<F>) -> (Vec<u64>, Option<Vec<u64>>) {
    (bits(s.hidden_state()), s.cell_state().map(bits))
}

fn run_case<F: Float>(case: &Case) {
    let (b, i, h, cell) = (case.batch, case.input, case.hidden, case.cell);
    let is_f32 = !case.f64;
    let lstm = cell.has_cell_state();
    let gh = cell.gates() * h;
    let mut rng = SplitMix(case.seed);
    let k = case.p_scale / (i + h + 2) as f64;
    let mut w =
        |n: usize| -> Vec<f64> { (0..n).map(|_| f64::from((rng.unit() * k) as f32)).collect() };
    let (wih, whh, bih, bhh) = (w(gh * i), w(gh * h), w(gh), w(gh));
    let weights64 = LayerWeights {
        weight_ih: &wih,
        weight_hh: &whh,
        bias_ih: &bih,
        bias_hh: &bhh,
    };
    let layer64 = Layer::new(cell, i, h, weights64).expect("Layer::new f64");
    let (fih, fhh, fbi, fbh) = (
        narrow::<F>(&wih),
        narrow::<F>(&whh),
        narrow::<F>(&bih),
        narrow::<F>(&bhh),
    );
    let mut layer = Layer::new(
        cell,
        i,
        h,
        LayerWeights {
            weight_ih: &fih,
            weight_hh: &fhh,
            bias_ih: &fbi,
            bias_hh: &fbh,
        },
    )
    .expect("Layer::new");
    layer.set_isa(case.isa).expect("available ISA");
    layer.set_threads(case.threads).expect("1 or 2 threads");
    let mut s = StreamingLayer::new(layer.clone(), b).expect("StreamingLayer::new");
    assert_eq!(s.batch(), b);
    let ctx = Ctx {
        cell,
        b,
        i,
        h,
        is_f32,
        layer: &layer,
        layer64: &layer64,
        desc: format!(
            "{} {} B={b} I={i} H={h} isa={}",
            cell.name(),
            if is_f32 { "f32" } else { "f64" },
            case.isa.name()
        ),
    };
    let (bh, bi) = (b * h, b * i);
    let zeros = || vec![F::ZERO; bh];
    // The model of a stream in its zero state (new, or after a reset).
    let fresh = || Model {
        h0: zeros(),
        c0: if lstm { zeros() } else { Vec::new() },
        xs: Vec::new(),
        steps: 0,
    };
    let mut m = fresh();
    let mut rng = SplitMix(case.seed ^ 0x5eed);
    assert!(
        s.hidden_state().iter().all(|v| v.to_f64() == 0.0),
        "{}: new state not zero",
        ctx.desc
    );
    for (n, op) in case.ops.iter().enumerate() {
        let what = format!("op {n} {op:?}");
        match *op {
            Op::Step { zero } => {
                if m.steps + 1 > MAX_T {
                    s.reset();
                    m = fresh();
                }
                let x = if zero {
                    vec![F::ZERO; bi]
                } else {
                    values(bi, &mut rng)
                };
                let (prev_h, prev_c) =
                    (s.hidden_state().to_vec(), s.cell_state().map(<[F]>::to_vec));
                let y = s.step(&x).expect("step").to_vec();
                // The step runs the sequence forward's kernels on the same data: one step of
                // `Layer::forward` from the same state is the same bits.
                let (y_ref, _, c_ref) =
                    forward(&layer, 1, b, &x, &prev_h, prev_c.as_deref().unwrap_or(&[]));
                assert_eq!(
                    bits(&y),
                    bits(&y_ref),
                    "{} {what}: step differs from one step of Layer::forward",
                    ctx.desc
                );
                assert_eq!(
                    s.cell_state().map(bits),
                    c_ref.as_deref().map(bits),
                    "{} {what}: step's c differs from Layer::forward's",
                    ctx.desc
                );
                m.xs.extend_from_slice(&x);
                m.steps += 1;
                let exp = ctx.expected(&m);
                let t = m.steps;
                ctx.grade(&what, &m, &exp, &y, |e| e.y[(t - 1) * bh..].to_vec());
                assert_eq!(
                    bits(&y),
                    bits(s.hidden_state()),
                    "{} {what}: step's result is not the state",
                    ctx.desc
                );
            }
            Op::Run(len) => {
                let t_run = 1 + usize::from(len % 4);
                if m.steps + t_run > MAX_T {
                    s.reset();
                    m = fresh();
                }
                let x = values(t_run * bi, &mut rng);
                let (cur_h, cur_c) = (s.hidden_state().to_vec(), s.cell_state().map(<[F]>::to_vec));
                let (y_ref, h_ref, c_ref) = forward(
                    &layer,
                    t_run,
                    b,
                    &x,
                    &cur_h,
                    cur_c.as_deref().unwrap_or(&[]),
                );
                let mut y = vec![F::from_f64(f64::NAN); t_run * bh];
                s.run(&x, &mut y).expect("run");
                assert_eq!(
                    bits(&y),
                    bits(&y_ref),
                    "{} {what}: run's y differs from Layer::forward",
                    ctx.desc
                );
                assert_eq!(
                    bits(s.hidden_state()),
                    bits(&h_ref),
                    "{} {what}: run's final h differs",
                    ctx.desc
                );
                assert_eq!(
                    s.cell_state().map(bits),
                    c_ref.as_deref().map(bits),
                    "{} {what}: run's final c differs",
                    ctx.desc
                );
                let t0 = m.steps;
                m.xs.extend_from_slice(&x);
                m.steps += t_run;
                let exp = ctx.expected(&m);
                ctx.grade(&what, &m, &exp, &y, |e| e.y[t0 * bh..].to_vec());
            }
            Op::SpinWindow(k) => {
                let us = [0, 200, 50_000][usize::from(k % 3)];
                s.set_spin_window(std::time::Duration::from_micros(us));
            }
            Op::Pause => std::thread::sleep(std::time::Duration::from_micros(300)),
            Op::Reset => {
                s.reset();
                m = fresh();
                assert!(
                    s.hidden_state().iter().all(|v| v.to_f64() == 0.0),
                    "{} {what}: h not zero",
                    ctx.desc
                );
                if let Some(c) = s.cell_state() {
                    assert!(
                        c.iter().all(|v| v.to_f64() == 0.0),
                        "{} {what}: c not zero",
                        ctx.desc
                    );
                }
            }
            Op::SetState => {
                let h0 = values(bh, &mut rng);
                let c0 = if lstm {
                    values(bh, &mut rng)
                } else {
                    Vec::new()
                };
                s.set_state(&h0, lstm.then_some(&c0[..]))
                    .expect("set_state");
                assert_eq!(
                    bits(s.hidden_state()),
                    bits(&h0),
                    "{} {what}: h reads back differently",
                    ctx.desc
                );
                assert_eq!(
                    s.cell_state().map(bits),
                    lstm.then(|| bits(&c0)),
                    "{} {what}: c reads back differently",
                    ctx.desc
                );
                m = Model {
                    h0,
                    c0,
                    xs: Vec::new(),
                    steps: 0,
                };
            }
            Op::Read => {
                let (hs, cs) = (s.hidden_state().to_vec(), s.cell_state().map(<[F]>::to_vec));
                assert_eq!(
                    cs.is_some(),
                    lstm,
                    "{} {what}: cell_state presence",
                    ctx.desc
                );
                if m.steps == 0 {
                    assert_eq!(bits(&hs), bits(&m.h0), "{} {what}: h", ctx.desc);
                    if let Some(cs) = &cs {
                        assert_eq!(bits(cs), bits(&m.c0), "{} {what}: c", ctx.desc);
                    }
                } else {
                    let exp = ctx.expected(&m);
                    ctx.grade(&format!("{what} h"), &m, &exp, &hs, |e| e.h_n.clone());
                    if let Some(cs) = &cs {
                        ctx.grade(&format!("{what} c"), &m, &exp, cs, |e| {
                            e.c_n.clone().expect("c_n")
                        });
                    }
                }
            }
            Op::BadStep { longer, k } => {
                let d = 1 + usize::from(k % 3);
                let len = if longer { bi + d } else { bi.saturating_sub(d) };
                let before = state(&s);
                let r = s.step(&vec![F::ZERO; len]).map(|_| ());
                assert!(
                    matches!(r, Err(Error::BufferLength { .. })),
                    "{} {what}: len {len}: {r:?}",
                    ctx.desc
                );
                assert_eq!(
                    state(&s),
                    before,
                    "{} {what}: state changed by a refused call",
                    ctx.desc
                );
            }
            Op::BadRun(kind) => {
                let before = state(&s);
                let (xl, yl) = match kind % 4 {
                    0 => (0, bh),
                    1 if bi > 1 => (bi + 1 + usize::from(kind / 4) % (bi - 1), 2 * bh),
                    1 => (0, 0),
                    2 => (2 * bi, 2 * bh + 1 + usize::from(kind / 4) % 3),
                    _ => (
                        2 * bi,
                        (2 * bh).saturating_sub(1 + usize::from(kind / 4) % 3),
                    ),
                };
                let mut y = vec![F::ZERO; yl];
                let r = s.run(&vec![F::ZERO; xl], &mut y);
                assert!(
                    matches!(r, Err(Error::BufferLength { .. })),
                    "{} {what}: x {xl}, y {yl}: {r:?}",
                    ctx.desc
                );
                assert_eq!(
                    state(&s),
                    before,
                    "{} {what}: state changed by a refused call",
                    ctx.desc
                );
            }
            Op::BadSetState(kind) => {
                let before = state(&s);
                let good = vec![F::ZERO; bh];
                let bad = vec![F::ZERO; bh + 1 + usize::from(kind / 4) % 3];
                let r = match kind % 4 {
                    0 => s.set_state(&bad, lstm.then_some(&good[..])),
                    1 => s.set_state(&good, (!lstm).then_some(&good[..])),
                    2 => s.set_state(&good, Some(&bad[..])),
                    _ => s.set_state(&good[1..], lstm.then_some(&good[..])),
                };
                let ok_kind = match (kind % 4, lstm) {
                    (1, true) => matches!(r, Err(Error::InvalidArgument { .. })),
                    (1, false) | (2, false) => matches!(r, Err(Error::UnexpectedBuffer { .. })),
                    _ => matches!(r, Err(Error::BufferLength { .. })),
                };
                assert!(ok_kind, "{} {what}: {r:?}", ctx.desc);
                assert_eq!(
                    state(&s),
                    before,
                    "{} {what}: state changed by a refused call",
                    ctx.desc
                );
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(case) = decode(&mut u) else {
        return;
    };
    if case.f64 {
        run_case::<f64>(&case);
    } else {
        run_case::<f32>(&case);
    }
});
