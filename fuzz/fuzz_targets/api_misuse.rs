//! Arbitrary sequences of calls on every public entry of the layer API with arbitrary
//! (mostly slightly wrong) arguments.
//!
//! A model tracks what each call must do: the target decides, from the arguments alone,
//! whether every argument is valid, and asserts `Ok` exactly then; an `Err` must be of a kind
//! that one of the violated rules names. Every `Ok` result is checked: forward outputs and
//! backward gradients against the f64 scalar oracle (f64 to `F64_REL`, f32 within
//! `f32_tolerance`, RMS floors), `GradMode::Accumulate` as the previous contents plus the
//! oracle's gradients. Workspace states (fresh, forwarded, consumed) are modelled too:
//! backward without a training forward, or twice, must return `InvalidState`.
//!
//! Not thrown at the API: dimensions whose buffers would really be allocated beyond a few
//! MiB (`Workspace::new` is called only when `Workspace::required_len` is small; its result
//! for huge dims is checked without allocating).

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fused_rnn::Direction;
use fused_rnn::{
    CellKind, Dims, Error, FinalState, Float, GradMode, InitialState, InputGrads, Isa, Layer,
    LayerGrads, LayerWeights, Mode, RnnActivation, Upstream, Workspace, reference,
};
use libfuzzer_sys::fuzz_target;
use testkit::convert::widen;
use testkit::random::SplitMix;
use testkit::tolerance::{assert_close, rms, tolerance};

/// A length relative to the right one.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Right,
    Plus(u8),
    Minus(u8),
    Empty,
}

impl Len {
    fn apply(self, right: usize) -> usize {
        match self {
            Len::Right => right,
            Len::Plus(k) => right + 1 + usize::from(k % 4),
            Len::Minus(k) => right.saturating_sub(1 + usize::from(k % 4)),
            Len::Empty => 0,
        }
    }
}

/// A dimension: mostly small, sometimes zero or huge.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum DimSel {
    Small(u8),
    Zero,
    Huge(u8),
}

impl DimSel {
    fn get(self) -> usize {
        match self {
            DimSel::Small(v) => 1 + usize::from(v % 9),
            DimSel::Zero => 0,
            DimSel::Huge(k) => usize::MAX >> (k % 64),
        }
    }
}

/// Which workspace an op uses: one of the slots, or a fresh one for the current layer.
#[derive(Arbitrary, Debug, Clone, Copy)]
struct WsRef(u8);

#[derive(Arbitrary, Debug)]
enum Op {
    /// `Layer::new` with weight lengths perturbed.
    NewLayer {
        cell: u8,
        input: DimSel,
        hidden: DimSel,
        lens: [Len; 4],
        seed: u64,
    },
    /// `Layer::with_seeded_init` (small dims only: it allocates the weights).
    SeededLayer {
        cell: u8,
        input: DimSel,
        hidden: DimSel,
        seed: u64,
    },
    /// `Layer::set_isa`.
    SetIsa(u8),
    /// `Layer::weights_mut`, shrinking one weight of `W_hh` by `|delta| / 256` (0 leaves the
    /// values alone: the call alone makes earlier forwards stale). Shrinking keeps the
    /// recurrence as well conditioned as the initial weights, so that f32 stays within its
    /// tolerance of the f64 oracle.
    WeightsMut { delta: i8 },
    /// `Workspace::new` (or `Layer::workspace`) into slot `slot % 3`.
    NewWorkspace {
        slot: u8,
        from_layer: bool,
        seq_len: DimSel,
        batch: DimSel,
        cell: u8,
        input: DimSel,
        hidden: DimSel,
        training: bool,
    },
    /// `Layer::forward`.
    Forward {
        ws: WsRef,
        x: Len,
        y: Len,
        h0: Option<Len>,
        c0: Option<Len>,
        h_n: Option<Len>,
        c_n: Option<Len>,
        seed: u64,
    },
    /// `Layer::backward`.
    Backward {
        ws: WsRef,
        x: Len,
        dy: Option<Len>,
        dh_n: Option<Len>,
        dc_n: Option<Len>,
        dx: Option<Len>,
        dh0: Option<Len>,
        dc0: Option<Len>,
        grads: [Len; 4],
        accumulate: bool,
        seed: u64,
    },
    /// `reference::forward` / `reference::backward` with arbitrary dims and lengths.
    Reference {
        cell: u8,
        dims: [DimSel; 4],
        lens: [Len; 5],
        backward: bool,
        seed: u64,
    },
}

/// Kinds of `Error`, to check that an `Err` names a rule the call broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    BufferLength,
    ZeroDim,
    SizeOverflow,
    WorkspaceMismatch,
    UnexpectedBuffer,
    InvalidState,
    IsaUnavailable,
}

fn kind(e: &Error) -> Option<Kind> {
    Some(match e {
        Error::BufferLength { .. } => Kind::BufferLength,
        Error::ZeroDim { .. } => Kind::ZeroDim,
        Error::SizeOverflow { .. } => Kind::SizeOverflow,
        Error::WorkspaceMismatch { .. } => Kind::WorkspaceMismatch,
        Error::UnexpectedBuffer { .. } => Kind::UnexpectedBuffer,
        Error::InvalidState { .. } => Kind::InvalidState,
        Error::IsaUnavailable { .. } => Kind::IsaUnavailable,
        _ => return None,
    })
}

/// Asserts `r` is `Ok` iff `violated` is empty, and that an `Err` is one of `violated`.
fn expect<T>(what: &str, r: &fused_rnn::Result<T>, violated: &[Kind]) {
    match r {
        Ok(_) => assert!(
            violated.is_empty(),
            "{what}: Ok although it breaks {violated:?}"
        ),
        Err(e) => {
            let k = kind(e);
            assert!(
                k.is_some_and(|k| violated.contains(&k)),
                "{what}: {e:?} but the call breaks {violated:?}"
            );
        }
    }
}

/// Every rule of dims validation that `d` breaks, without allocating: `ZeroDim`,
/// `SizeOverflow` (`T + 1` or a buffer length overflowing `usize`). Empty if valid.
fn dims_violation(cell: CellKind, d: &Dims) -> Vec<Kind> {
    let mut v = Vec::new();
    if [d.seq_len, d.batch, d.input, d.hidden].contains(&0) {
        v.push(Kind::ZeroDim);
    }
    let ok = (|| {
        let gh = cell.gates().checked_mul(d.hidden)?;
        let tb = d.seq_len.checked_add(1)?.checked_mul(d.batch)?;
        tb.checked_mul(gh)?;
        tb.checked_mul(d.input)?;
        gh.checked_mul(d.input.max(d.hidden))
    })();
    if ok.is_none() {
        v.push(Kind::SizeOverflow);
    }
    v
}

fn values<F: Float>(rng: &mut SplitMix, n: usize, scale: f64) -> Vec<F> {
    (0..n).map(|_| F::from_f64(rng.unit() * scale)).collect()
}

/// What a training forward left in a workspace.
#[derive(Clone)]
struct Saved<F> {
    layer_gen: u64,
    x: Vec<F>,
    h0: Option<Vec<F>>,
    c0: Option<Vec<F>>,
}

#[derive(Clone)]
enum Status<F> {
    Fresh,
    Forwarded(Saved<F>),
    /// A training forward, then a forward that failed validation: the library may keep the
    /// saved state or drop it (either is fine), so backward may return `Ok` (with gradients
    /// of the saved forward) or `InvalidState`.
    Maybe(Saved<F>),
    Consumed,
}

struct Slot<F> {
    ws: Workspace<F>,
    status: Status<F>,
}

struct Model<F> {
    layer: Option<(Layer<F>, u64)>,
    generation: u64,
    slots: [Option<Slot<F>>; 3],
}

/// Largest workspace the target allocates (elements).
const WS_LIMIT: usize = 1 << 16;

/// Whether a tensor's f32 values can be graded with the RMS floor: it is a statistic over the
/// elements, and a tensor of fewer than 8 can cancel as a whole (its RMS then says nothing
/// about the size of the terms its elements sum), and values near or past f32's range cannot
/// be compared with an f64 oracle. f64 is always graded.
fn graded<F: Float>(want: &[f64]) -> bool {
    // Beyond f32's range (an exploding ReLU RNN) f32 overflows where f64 does not.
    let in_range = want
        .iter()
        .all(|v| !v.is_finite() || v.abs() <= f64::from(f32::MAX) / 16.0);
    F::NAME == "f64" || (want.len() >= 8 && in_range)
}

fn close<F: Float>(what: &str, got: &[F], want: &[f64], d: &Dims) {
    if graded::<F>(want) {
        // Inputs, weights and upstream gradients here are O(1), so no element can be computed
        // to better than about one eps absolute (e.g. σ' = s - s² is exactly 0 in f32 once s
        // rounds to 1, where f64 still has e^-a): that is the absolute floor.
        let floor = rms(want).max(F::EPSILON.to_f64() / tolerance::<F>(d));
        assert_close(what, &widen(got), want, tolerance::<F>(d), floor);
    } else {
        assert_eq!(got.len(), want.len(), "{what}: length");
    }
}

fn weights_of<F: Float>(l: &Layer<F>) -> [Vec<f64>; 4] {
    let w = l.weights();
    [
        widen(w.weight_ih),
        widen(w.weight_hh),
        widen(w.bias_ih),
        widen(w.bias_hh),
    ]
}

fn view(w: &[Vec<f64>; 4]) -> LayerWeights<'_, f64> {
    LayerWeights {
        weight_ih: &w[0],
        weight_hh: &w[1],
        bias_ih: &w[2],
        bias_hh: &w[3],
    }
}

fn run<F: Float>(ops: Vec<Op>) {
    let mut m = Model::<F> {
        layer: None,
        generation: 0,
        slots: [None, None, None],
    };
    let cell_of = |c: u8| CellKind::ALL[usize::from(c) % CellKind::ALL.len()];
    for op in ops {
        match op {
            Op::NewLayer {
                cell,
                input,
                hidden,
                lens,
                seed,
            } => {
                let cell = cell_of(cell);
                let (i, h) = (input.get(), hidden.get());
                let d = Dims {
                    seq_len: 1,
                    batch: 1,
                    input: i,
                    hidden: h,
                };
                let mut violated = dims_violation(cell, &d);
                let mut right = [0; 4];
                if violated.is_empty() {
                    let gh = cell.gates() * h;
                    right = [gh * i, gh * h, gh, gh];
                }
                // Never allocate big buffers: huge-but-valid dims get small (wrong) buffers.
                let lens: Vec<usize> = right
                    .iter()
                    .zip(lens)
                    .map(|(&r, l)| if r > WS_LIMIT { 0 } else { l.apply(r) })
                    .collect();
                if lens.iter().zip(right).any(|(&l, r)| l != r) {
                    violated.push(Kind::BufferLength);
                }
                let mut rng = SplitMix(seed);
                let k = 1.0 / (h.clamp(1, 1 << 20) as f64).sqrt();
                let bufs: Vec<Vec<F>> = lens.iter().map(|&n| values(&mut rng, n, k)).collect();
                let w = LayerWeights {
                    weight_ih: &bufs[0],
                    weight_hh: &bufs[1],
                    bias_ih: &bufs[2],
                    bias_hh: &bufs[3],
                };
                let r = Layer::new(cell, i, h, w);
                expect("Layer::new", &r, &violated);
                if let Ok(l) = r {
                    assert_eq!(l.weights().weight_ih, &bufs[0][..]);
                    m.generation += 1;
                    m.layer = Some((l, m.generation));
                }
            }
            Op::SeededLayer {
                cell,
                input,
                hidden,
                seed,
            } => {
                let cell = cell_of(cell);
                let (i, h) = (input.get(), hidden.get());
                let d = Dims {
                    seq_len: 1,
                    batch: 1,
                    input: i,
                    hidden: h,
                };
                let v = dims_violation(cell, &d);
                if v.is_empty() && (i > 64 || h > 64) {
                    continue;
                }
                let r = Layer::<F>::with_seeded_init(cell, i, h, seed);
                expect("Layer::with_seeded_init", &r, &v);
                if let Ok(l) = r {
                    let again = Layer::<F>::with_seeded_init(cell, i, h, seed).unwrap();
                    assert_eq!(l.weights().weight_hh, again.weights().weight_hh);
                    m.generation += 1;
                    m.layer = Some((l, m.generation));
                }
            }
            Op::WeightsMut { delta } => {
                let Some((layer, _)) = m.layer.as_mut() else {
                    continue;
                };
                let w = layer.weights_mut();
                let shrink = 1.0 - f64::from(delta.unsigned_abs()) / 256.0;
                w.weight_hh[0] = F::from_f64(w.weight_hh[0].to_f64() * shrink);
                m.generation += 1;
                if let Some((_, g)) = m.layer.as_mut() {
                    *g = m.generation;
                }
            }
            Op::SetIsa(which) => {
                let Some((l, _)) = m.layer.as_mut() else {
                    continue;
                };
                let isa = [Isa::Portable, Isa::Avx2Fma, Isa::Avx512][which as usize % 3];
                let before = l.isa();
                let r = l.set_isa(isa);
                let v: &[Kind] = if isa.is_available() {
                    &[]
                } else {
                    &[Kind::IsaUnavailable]
                };
                expect("set_isa", &r, v);
                assert_eq!(l.isa(), if r.is_ok() { isa } else { before });
            }
            Op::NewWorkspace {
                slot,
                from_layer,
                seq_len,
                batch,
                cell,
                input,
                hidden,
                training,
            } => {
                let mode = if training {
                    Mode::Training
                } else {
                    Mode::Inference
                };
                let (cell, d) = match (&m.layer, from_layer) {
                    (Some((l, _)), true) => (l.cell(), l.dims(seq_len.get(), batch.get())),
                    _ => (
                        cell_of(cell),
                        Dims {
                            seq_len: seq_len.get(),
                            batch: batch.get(),
                            input: input.get(),
                            hidden: hidden.get(),
                        },
                    ),
                };
                let viol = dims_violation(cell, &d);
                let req = Workspace::<F>::required_len(cell, d, mode);
                match &req {
                    Ok(_) => assert!(viol.is_empty(), "required_len Ok for {d:?}: {viol:?}"),
                    Err(e) => {
                        // The layout's own sums may overflow where the dims are valid:
                        // SizeOverflow is fine then too.
                        let k = kind(e);
                        assert!(
                            k.is_some_and(|k| viol.contains(&k) || k == Kind::SizeOverflow),
                            "required_len {d:?}: {e:?}, model {viol:?}"
                        );
                    }
                }
                let Ok(n) = req else { continue };
                if n > WS_LIMIT {
                    continue;
                }
                let ws = match (&m.layer, from_layer) {
                    (Some((l, _)), true) => l.workspace(d.seq_len, d.batch, mode),
                    _ => Workspace::new(cell, d, mode),
                }
                .expect("workspace of valid small dims");
                assert_eq!(ws.dims(), d);
                assert_eq!(ws.mode(), mode);
                assert_eq!(ws.bytes(), n * size_of::<F>());
                m.slots[usize::from(slot) % 3] = Some(Slot {
                    ws,
                    status: Status::Fresh,
                });
            }
            Op::Forward {
                ws,
                x,
                y,
                h0,
                c0,
                h_n,
                c_n,
                seed,
            } => {
                let Some((layer, layer_gen)) = m.layer.as_ref() else {
                    continue;
                };
                let Some(slot) = m.slots[usize::from(ws.0) % 3].as_mut() else {
                    continue;
                };
                let cell = layer.cell();
                let d = slot.ws.dims();
                let mut viol = Vec::new();
                let ws_ok = slot.ws.cell() == cell
                    && d.input == layer.input_size()
                    && d.hidden == layer.hidden_size();
                if !ws_ok {
                    viol.push(Kind::WorkspaceMismatch);
                }
                let s = d.state_len();
                let mut rng = SplitMix(seed);
                let mut len_of = |l: Len, right: usize| {
                    // `x [T, B, I]` is not in the workspace: I can be huge. Never allocate
                    // big buffers; an empty one is a wrong length all the same.
                    let n = if right > WS_LIMIT { 0 } else { l.apply(right) };
                    if n != right {
                        viol.push(Kind::BufferLength);
                    }
                    n
                };
                let xn = len_of(x, d.x_len());
                let yn = len_of(y, d.y_len());
                let h0n = h0.map(|l| len_of(l, s));
                let c0n = c0.map(|l| len_of(l, s));
                let hnn = h_n.map(|l| len_of(l, s));
                let cnn = c_n.map(|l| len_of(l, s));
                if (c0.is_some() || c_n.is_some()) && !cell.has_cell_state() {
                    viol.push(Kind::UnexpectedBuffer);
                }
                let xv: Vec<F> = values(&mut rng, xn, 1.0);
                let h0v: Option<Vec<F>> = h0n.map(|n| values(&mut rng, n, 0.5));
                let c0v: Option<Vec<F>> = c0n.map(|n| values(&mut rng, n, 1.0));
                let nan = F::from_f64(f64::NAN);
                let mut yv = vec![nan; yn];
                let mut hnv = hnn.map(|n| vec![nan; n]);
                let mut cnv = cnn.map(|n| vec![nan; n]);
                let r = layer.forward(
                    &mut slot.ws,
                    Direction::Forward,
                    &xv,
                    InitialState {
                        h0: h0v.as_deref(),
                        c0: c0v.as_deref(),
                    },
                    &mut yv,
                    FinalState {
                        h_n: hnv.as_deref_mut(),
                        c_n: cnv.as_deref_mut(),
                    },
                );
                expect("forward", &r, &viol);
                if r.is_err() {
                    slot.status = match std::mem::replace(&mut slot.status, Status::Fresh) {
                        Status::Forwarded(sv) | Status::Maybe(sv) => Status::Maybe(sv),
                        other => other,
                    };
                    continue;
                }
                let w = weights_of(layer);
                let o = reference::forward(
                    cell,
                    d,
                    &view(&w),
                    &widen(&xv),
                    h0v.as_deref().map(widen).as_deref(),
                    c0v.as_deref().map(widen).as_deref(),
                )
                .expect("reference forward of a valid call");
                close("forward y", &yv, &o.y, &d);
                if let Some(hn) = &hnv {
                    close("forward h_n", hn, &o.h_n, &d);
                }
                if let (Some(cn), Some(want)) = (&cnv, &o.c_n) {
                    close("forward c_n", cn, want, &d);
                }
                slot.status = if slot.ws.mode() == Mode::Training {
                    Status::Forwarded(Saved {
                        layer_gen: *layer_gen,
                        x: xv,
                        h0: h0v,
                        c0: c0v,
                    })
                } else {
                    Status::Fresh
                };
            }
            Op::Backward {
                ws,
                x,
                dy,
                dh_n,
                dc_n,
                dx,
                dh0,
                dc0,
                grads,
                accumulate,
                seed,
            } => {
                let Some((layer, layer_gen)) = m.layer.as_ref() else {
                    continue;
                };
                let Some(slot) = m.slots[usize::from(ws.0) % 3].as_mut() else {
                    continue;
                };
                let cell = layer.cell();
                let d = slot.ws.dims();
                let s = d.state_len();
                let gh = cell.gates().saturating_mul(d.hidden);
                let ws_ok = slot.ws.cell() == cell
                    && d.input == layer.input_size()
                    && d.hidden == layer.hidden_size()
                    && slot.ws.mode() == Mode::Training;
                let mut viol = Vec::new();
                if !ws_ok {
                    viol.push(Kind::WorkspaceMismatch);
                }
                // Maybe: the library may or may not have kept the saved state.
                let (saved, maybe) = match &slot.status {
                    Status::Forwarded(sv) => (Some(sv.clone()), false),
                    Status::Maybe(sv) => (Some(sv.clone()), true),
                    Status::Fresh | Status::Consumed => {
                        viol.push(Kind::InvalidState);
                        (None, false)
                    }
                };
                // A forward run by another layer, or before `weights_mut`: its saved gates
                // belong to other weights, and backward refuses them.
                if saved.as_ref().is_some_and(|sv| sv.layer_gen != *layer_gen) {
                    viol.push(Kind::InvalidState);
                }
                let mut rng = SplitMix(seed);
                let mut len_of = |l: Len, right: usize| {
                    // `x [T, B, I]` is not in the workspace: I can be huge. Never allocate
                    // big buffers; an empty one is a wrong length all the same.
                    let n = if right > WS_LIMIT { 0 } else { l.apply(right) };
                    if n != right {
                        viol.push(Kind::BufferLength);
                    }
                    n
                };
                let xn = len_of(x, d.x_len());
                let dyn_ = dy.map(|l| len_of(l, d.y_len()));
                let dhnn = dh_n.map(|l| len_of(l, s));
                let dcnn = dc_n.map(|l| len_of(l, s));
                let dxn = dx.map(|l| len_of(l, d.x_len()));
                let dh0n = dh0.map(|l| len_of(l, s));
                let dc0n = dc0.map(|l| len_of(l, s));
                let gl: Vec<usize> = [
                    gh.saturating_mul(d.input),
                    gh.saturating_mul(d.hidden),
                    gh,
                    gh,
                ]
                .iter()
                .zip(grads)
                .map(|(&r, l)| len_of(l, r))
                .collect();
                if (dc_n.is_some() || dc0.is_some()) && !cell.has_cell_state() {
                    viol.push(Kind::UnexpectedBuffer);
                }
                // The forward's own x when the length is right (as the API asks).
                let xv: Vec<F> = match &saved {
                    Some(sv) if sv.x.len() == xn => sv.x.clone(),
                    _ => values(&mut rng, xn, 1.0),
                };
                let dyv: Option<Vec<F>> = dyn_.map(|n| values(&mut rng, n, 1.0));
                let dhnv: Option<Vec<F>> = dhnn.map(|n| values(&mut rng, n, 1.0));
                let dcnv: Option<Vec<F>> = dcnn.map(|n| values(&mut rng, n, 1.0));
                let nan = F::from_f64(f64::NAN);
                let mut dxv = dxn.map(|n| vec![nan; n]);
                let mut dh0v = dh0n.map(|n| vec![nan; n]);
                let mut dc0v = dc0n.map(|n| vec![nan; n]);
                let mut g = LayerGrads {
                    weight_ih: values(&mut rng, gl[0], 1.0),
                    weight_hh: values(&mut rng, gl[1], 1.0),
                    bias_ih: values(&mut rng, gl[2], 1.0),
                    bias_hh: values(&mut rng, gl[3], 1.0),
                };
                let before = g.clone();
                let mode = if accumulate {
                    GradMode::Accumulate
                } else {
                    GradMode::Overwrite
                };
                let r = layer.backward(
                    &mut slot.ws,
                    &xv,
                    Upstream {
                        dy: dyv.as_deref(),
                        dh_n: dhnv.as_deref(),
                        dc_n: dcnv.as_deref(),
                    },
                    &mut g,
                    InputGrads {
                        dx: dxv.as_deref_mut(),
                        dh0: dh0v.as_deref_mut(),
                        dc0: dc0v.as_deref_mut(),
                    },
                    mode,
                );
                if maybe {
                    // Ok only if every argument is right; InvalidState is always acceptable.
                    if let Err(e) = &r {
                        let k = kind(e);
                        assert!(
                            k == Some(Kind::InvalidState) || k.is_some_and(|k| viol.contains(&k)),
                            "backward after a failed forward: {e:?}, breaks {viol:?}"
                        );
                    } else {
                        expect("backward", &r, &viol);
                    }
                } else {
                    expect("backward", &r, &viol);
                }
                let Ok(()) = r else {
                    // Nothing may change on a refused call.
                    assert!(
                        g == before,
                        "backward changed the gradients although it failed"
                    );
                    continue;
                };
                slot.status = Status::Consumed;
                let sv = saved.expect("Ok backward without a saved forward");
                assert_eq!(sv.layer_gen, *layer_gen, "Ok backward with other weights");
                let w = weights_of(layer);
                let rg = reference::backward(
                    cell,
                    d,
                    &view(&w),
                    &widen(&sv.x),
                    sv.h0.as_deref().map(widen).as_deref(),
                    sv.c0.as_deref().map(widen).as_deref(),
                    dyv.as_deref().map(widen).as_deref(),
                    dhnv.as_deref().map(widen).as_deref(),
                    dcnv.as_deref().map(widen).as_deref(),
                )
                .expect("reference backward of a valid call");
                if let Some(v) = &dxv {
                    close("backward dx", v, &rg.dx, &d);
                }
                if let Some(v) = &dh0v {
                    close("backward dh0", v, &rg.dh0, &d);
                }
                if let (Some(v), Some(want)) = (&dc0v, &rg.dc0) {
                    close("backward dc0", v, want, &d);
                }
                let rw = &rg.weights;
                for (name, got, prev, want) in [
                    ("dW_ih", &g.weight_ih, &before.weight_ih, &rw.weight_ih),
                    ("dW_hh", &g.weight_hh, &before.weight_hh, &rw.weight_hh),
                    ("db_ih", &g.bias_ih, &before.bias_ih, &rw.bias_ih),
                    ("db_hh", &g.bias_hh, &before.bias_hh, &rw.bias_hh),
                ] {
                    if !graded::<F>(want) {
                        assert_eq!(got.len(), want.len(), "{name}: length");
                    } else if accumulate {
                        // got - prev against the oracle (the subtraction is exact in f64).
                        // The fused path does not round prev + new once: the weight-gradient
                        // GEMM loads prev into its accumulators and adds each of its T*B
                        // multiply-adds onto it, every one rounding at about |prev|. So an
                        // element's scale is the largest of |want|, the family floor and
                        // |prev|, and the f32 bound applies to that scale. (The floor alone,
                        // one rounding of prev, failed at 1.26x with |want| ~ 2e-4 and prev
                        // O(1), for an input that fails the same way before this session.)
                        let rel = tolerance::<F>(&d);
                        let floor = rms(want).max(F::EPSILON.to_f64() / rel);
                        for (k, ((a, p), w)) in got.iter().zip(prev).zip(want).enumerate() {
                            let (a, p) = (a.to_f64(), p.to_f64());
                            let scale = w.abs().max(floor).max(p.abs());
                            let err = (a - p - w).abs();
                            assert!(
                                err <= rel * scale,
                                "{name} (accumulate) [{k}]: got {a:e} - prev {p:e} = {:e}, \
                                 want {w:e}, err {err:e} > {rel:e} x {scale:e}",
                                a - p
                            );
                        }
                    } else {
                        close(name, got, want, &d);
                    }
                }
            }
            Op::Reference {
                cell,
                dims,
                lens,
                backward,
                seed,
            } => {
                let cell = cell_of(cell);
                let d = Dims {
                    seq_len: dims[0].get(),
                    batch: dims[1].get(),
                    input: dims[2].get(),
                    hidden: dims[3].get(),
                };
                let mut viol = dims_violation(cell, &d);
                let right = if viol.is_empty() {
                    let gh = cell.gates() * d.hidden;
                    [gh * d.input, gh * d.hidden, gh, gh, d.x_len()]
                } else {
                    [0; 5]
                };
                // The oracle allocates its trace, [T+1, B, G*H] and more: keep it small.
                let big = right.iter().any(|&r| r > WS_LIMIT)
                    || d.seq_len
                        .saturating_add(1)
                        .saturating_mul(d.batch)
                        .saturating_mul(d.hidden.saturating_mul(cell.gates()))
                        > WS_LIMIT;
                let n: Vec<usize> = right
                    .iter()
                    .zip(lens)
                    .map(|(&r, l)| if big { 0 } else { l.apply(r) })
                    .collect();
                if n.iter().zip(right).any(|(&a, b)| a != b) {
                    viol.push(Kind::BufferLength);
                }
                let mut rng = SplitMix(seed);
                let b: Vec<Vec<F>> = n.iter().map(|&k| values(&mut rng, k, 0.5)).collect();
                let w = LayerWeights {
                    weight_ih: &b[0],
                    weight_hh: &b[1],
                    bias_ih: &b[2],
                    bias_hh: &b[3],
                };
                if backward {
                    let r = reference::backward(cell, d, &w, &b[4], None, None, None, None, None);
                    expect("reference::backward", &r, &viol);
                } else {
                    let r = reference::forward(cell, d, &w, &b[4], None, None);
                    expect("reference::forward", &r, &viol);
                    // Bounded activations keep finite inputs finite; the ReLU RNN is
                    // unbounded and may legitimately overflow over many steps.
                    if let Ok(o) = r {
                        assert!(
                            cell == CellKind::Rnn(RnnActivation::Relu)
                                || o.y.iter().all(|v| v.is_finite()),
                            "{}: finite in, non-finite out",
                            cell.name()
                        );
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(f64_run) = u.arbitrary::<bool>() else {
        return;
    };
    let Ok(ops) = u
        .arbitrary_iter::<Op>()
        .and_then(|it| it.take(24).collect::<arbitrary::Result<Vec<Op>>>())
    else {
        return;
    };
    if f64_run {
        run::<f64>(ops);
    } else {
        run::<f32>(ops);
    }
});
