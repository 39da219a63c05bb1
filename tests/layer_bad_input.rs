//! Every wrong length, zero-sized dimension, misplaced buffer, mismatched workspace and
//! out-of-order call on the layer API returns `Err`, never a panic.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, Error, FinalState, GradMode, InitialState, InputGrads, Layer, LayerGrads,
    LayerWeights, Mode, Upstream, Workspace,
};

const T: usize = 3;
const B: usize = 2;
const I: usize = 4;
const H: usize = 5;

fn layer(cell: CellKind) -> Layer<f32> {
    Layer::with_seeded_init(cell, I, H, 1).unwrap()
}

fn is_len_err(r: fused_rnn::Result<()>, what_prefix: &str) {
    match r {
        Err(Error::BufferLength { what, .. }) => {
            assert!(what.starts_with(what_prefix), "{what} vs {what_prefix}")
        }
        other => panic!("expected BufferLength for {what_prefix}, got {other:?}"),
    }
}

#[test]
fn construction_rejects_bad_weights_and_dims() {
    for cell in CellKind::ALL {
        let g = cell.gates();
        let (wi, wh, b) = (
            vec![0.0f32; g * H * I],
            vec![0.0f32; g * H * H],
            vec![0.0f32; g * H],
        );
        let ok = LayerWeights {
            weight_ih: &wi,
            weight_hh: &wh,
            bias_ih: &b,
            bias_hh: &b,
        };
        assert!(Layer::new(cell, I, H, ok).is_ok());
        let short = &wi[1..];
        is_len_err(
            Layer::new(
                cell,
                I,
                H,
                LayerWeights {
                    weight_ih: short,
                    ..ok
                },
            )
            .map(|_| ()),
            "weight_ih",
        );
        is_len_err(
            Layer::new(
                cell,
                I,
                H,
                LayerWeights {
                    weight_hh: &wh[1..],
                    ..ok
                },
            )
            .map(|_| ()),
            "weight_hh",
        );
        is_len_err(
            Layer::new(
                cell,
                I,
                H,
                LayerWeights {
                    bias_ih: &b[1..],
                    ..ok
                },
            )
            .map(|_| ()),
            "bias_ih",
        );
        is_len_err(
            Layer::new(
                cell,
                I,
                H,
                LayerWeights {
                    bias_hh: &b[1..],
                    ..ok
                },
            )
            .map(|_| ()),
            "bias_hh",
        );
        assert!(matches!(
            Layer::<f32>::with_seeded_init(cell, 0, H, 1),
            Err(Error::ZeroDim { .. })
        ));
        assert!(matches!(
            Layer::<f32>::with_seeded_init(cell, I, 0, 1),
            Err(Error::ZeroDim { .. })
        ));
        let l = layer(cell);
        assert!(matches!(
            l.workspace(0, B, Mode::Training),
            Err(Error::ZeroDim { what: "seq_len" })
        ));
        assert!(matches!(
            l.workspace(T, 0, Mode::Inference),
            Err(Error::ZeroDim { what: "batch" })
        ));
        assert!(matches!(
            l.workspace(usize::MAX / 2, usize::MAX / 2, Mode::Training),
            Err(Error::SizeOverflow { .. })
        ));
    }
}

#[test]
fn forward_rejects_every_wrong_buffer() {
    for cell in CellKind::ALL {
        let l = layer(cell);
        let mut ws = l.workspace(T, B, Mode::Training).unwrap();
        let x = vec![0.1f32; T * B * I];
        let s = vec![0.0f32; B * H];
        let mut y = vec![0.0f32; T * B * H];
        let mut out = vec![0.0f32; B * H];
        is_len_err(
            l.forward(
                &mut ws,
                Direction::Forward,
                &x[1..],
                InitialState::default(),
                &mut y,
                FinalState::default(),
            ),
            "x",
        );
        is_len_err(
            l.forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y[1..],
                FinalState::default(),
            ),
            "y",
        );
        let init = InitialState {
            h0: Some(&s[1..]),
            c0: None,
        };
        is_len_err(
            l.forward(
                &mut ws,
                Direction::Forward,
                &x,
                init,
                &mut y,
                FinalState::default(),
            ),
            "h0",
        );
        let fin = FinalState {
            h_n: Some(&mut out[1..]),
            c_n: None,
        };
        is_len_err(
            l.forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                fin,
            ),
            "h_n",
        );
        let init = InitialState {
            h0: None,
            c0: Some(&s),
        };
        let r = l.forward(
            &mut ws,
            Direction::Forward,
            &x,
            init,
            &mut y,
            FinalState::default(),
        );
        if cell.has_cell_state() {
            assert!(r.is_ok());
            let init = InitialState {
                h0: None,
                c0: Some(&s[1..]),
            };
            is_len_err(
                l.forward(
                    &mut ws,
                    Direction::Forward,
                    &x,
                    init,
                    &mut y,
                    FinalState::default(),
                ),
                "c0",
            );
        } else {
            assert!(
                matches!(r, Err(Error::UnexpectedBuffer { what: "c0", .. })),
                "{r:?}"
            );
            let fin = FinalState {
                h_n: None,
                c_n: Some(&mut out),
            };
            let r = l.forward(
                &mut ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                &mut y,
                fin,
            );
            assert!(
                matches!(r, Err(Error::UnexpectedBuffer { what: "c_n", .. })),
                "{r:?}"
            );
        }
        // A workspace for another cell kind or other widths.
        let other_cell = if cell == CellKind::Lstm {
            CellKind::Gru(fused_rnn::GruVariant::ResetAfter)
        } else {
            CellKind::Lstm
        };
        let mut ws_other = Workspace::<f32>::new(other_cell, l.dims(T, B), Mode::Training).unwrap();
        let r = l.forward(
            &mut ws_other,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        );
        assert!(matches!(r, Err(Error::WorkspaceMismatch { .. })), "{r:?}");
        let mut dims = l.dims(T, B);
        dims.hidden += 1;
        let mut ws_wide = Workspace::<f32>::new(cell, dims, Mode::Training).unwrap();
        let r = l.forward(
            &mut ws_wide,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        );
        assert!(matches!(r, Err(Error::WorkspaceMismatch { .. })), "{r:?}");
    }
}

#[test]
fn backward_rejects_every_wrong_buffer_and_call_order() {
    for cell in CellKind::ALL {
        let l = layer(cell);
        let x = vec![0.1f32; T * B * I];
        let dy = [0.3f32; T * B * H];
        let s = vec![0.0f32; B * H];
        let mut y = vec![0.0f32; T * B * H];
        let mut grads = l.zero_grads().unwrap();
        let mut ws = l.workspace(T, B, Mode::Training).unwrap();
        let bwd = |ws: &mut Workspace<f32>, x: &[f32], up, grads: &mut LayerGrads<f32>, inputs| {
            l.backward(ws, x, up, grads, inputs, GradMode::Overwrite)
        };
        // Before any forward.
        let r = bwd(
            &mut ws,
            &x,
            Upstream::default(),
            &mut grads,
            InputGrads::default(),
        );
        assert!(matches!(r, Err(Error::InvalidState { .. })), "{r:?}");
        // An inference workspace.
        let mut ws_inf = l.workspace(T, B, Mode::Inference).unwrap();
        l.forward(
            &mut ws_inf,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
        let r = bwd(
            &mut ws_inf,
            &x,
            Upstream::default(),
            &mut grads,
            InputGrads::default(),
        );
        assert!(matches!(r, Err(Error::WorkspaceMismatch { .. })), "{r:?}");

        let forward = |ws: &mut Workspace<f32>, y: &mut [f32]| {
            l.forward(
                ws,
                Direction::Forward,
                &x,
                InitialState::default(),
                y,
                FinalState::default(),
            )
            .unwrap()
        };
        forward(&mut ws, &mut y);
        is_len_err(
            bwd(
                &mut ws,
                &x[1..],
                Upstream::default(),
                &mut grads,
                InputGrads::default(),
            ),
            "x",
        );
        let up = Upstream {
            dy: Some(&dy[1..]),
            ..Default::default()
        };
        is_len_err(
            bwd(&mut ws, &x, up, &mut grads, InputGrads::default()),
            "dy",
        );
        let up = Upstream {
            dh_n: Some(&s[1..]),
            ..Default::default()
        };
        is_len_err(
            bwd(&mut ws, &x, up, &mut grads, InputGrads::default()),
            "dh_n",
        );
        let mut dx = vec![0.0f32; T * B * I - 1];
        let inputs = InputGrads {
            dx: Some(&mut dx),
            ..Default::default()
        };
        is_len_err(
            bwd(&mut ws, &x, Upstream::default(), &mut grads, inputs),
            "dx",
        );
        let mut dh0 = vec![0.0f32; B * H + 1];
        let inputs = InputGrads {
            dh0: Some(&mut dh0),
            ..Default::default()
        };
        is_len_err(
            bwd(&mut ws, &x, Upstream::default(), &mut grads, inputs),
            "dh0",
        );
        let mut bad = l.zero_grads().unwrap();
        bad.weight_hh.pop();
        is_len_err(
            bwd(
                &mut ws,
                &x,
                Upstream::default(),
                &mut bad,
                InputGrads::default(),
            ),
            "grads.weight_hh",
        );
        let mut bad = l.zero_grads().unwrap();
        bad.bias_ih.push(0.0);
        is_len_err(
            bwd(
                &mut ws,
                &x,
                Upstream::default(),
                &mut bad,
                InputGrads::default(),
            ),
            "grads.bias_ih",
        );
        let mut dc0 = vec![0.0f32; B * H];
        let up = Upstream {
            dc_n: Some(&s),
            ..Default::default()
        };
        let inputs = InputGrads {
            dc0: Some(&mut dc0),
            ..Default::default()
        };
        let r = bwd(&mut ws, &x, up, &mut grads, inputs);
        if cell.has_cell_state() {
            assert!(r.is_ok(), "{r:?}");
            // The forward state is consumed: a second backward is refused.
            let r = bwd(
                &mut ws,
                &x,
                Upstream::default(),
                &mut grads,
                InputGrads::default(),
            );
            assert!(matches!(r, Err(Error::InvalidState { .. })), "{r:?}");
        } else {
            assert!(matches!(r, Err(Error::UnexpectedBuffer { .. })), "{r:?}");
            assert!(
                bwd(
                    &mut ws,
                    &x,
                    Upstream::default(),
                    &mut grads,
                    InputGrads::default()
                )
                .is_ok()
            );
            let r = bwd(
                &mut ws,
                &x,
                Upstream::default(),
                &mut grads,
                InputGrads::default(),
            );
            assert!(matches!(r, Err(Error::InvalidState { .. })), "{r:?}");
        }
    }
}

#[test]
fn unavailable_isa_is_an_error_not_a_crash() {
    let mut l = layer(CellKind::Lstm);
    for isa in [
        fused_rnn::Isa::Portable,
        fused_rnn::Isa::Avx2Fma,
        fused_rnn::Isa::Avx512,
    ] {
        let r = l.set_isa(isa);
        assert_eq!(r.is_ok(), isa.is_available());
        if !isa.is_available() {
            assert!(matches!(r, Err(Error::IsaUnavailable { .. })));
        }
    }
}

/// A training forward, then `f` on the layer, then backward with `backward_layer(layer)`.
fn backward_after<Fb>(cell: CellKind, batch: fused_rnn::Batch<'_>, f: Fb) -> fused_rnn::Result<()>
where
    Fb: FnOnce(&mut Layer<f32>) -> Option<Layer<f32>>,
{
    let mut l = layer(cell);
    let mut ws = l.workspace(T, batch, Mode::Training).unwrap();
    let b = ws.dims().batch;
    let x = vec![0.25f32; T * b * I];
    let mut y = vec![0.0f32; T * b * H];
    l.forward(
        &mut ws,
        Direction::Forward,
        &x,
        InitialState::default(),
        &mut y,
        FinalState::default(),
    )
    .unwrap();
    let other = f(&mut l);
    let runner = other.as_ref().unwrap_or(&l);
    let dy = vec![1.0f32; T * b * H];
    let mut grads = runner.zero_grads().unwrap();
    runner.backward(
        &mut ws,
        &x,
        Upstream {
            dy: Some(&dy),
            ..Default::default()
        },
        &mut grads,
        InputGrads::default(),
        GradMode::Overwrite,
    )
}

/// Backward refuses a forward whose weights changed since (`weights_mut`), or that another
/// layer of the same shape ran; a clone, whose weights are the same, may run it.
#[test]
fn backward_refuses_stale_or_foreign_weights() {
    let state = |r: fused_rnn::Result<()>, what: &str| match r {
        Err(Error::InvalidState { .. }) => {}
        other => panic!("{what}: expected InvalidState, got {other:?}"),
    };
    let lengths = [T, 1];
    for cell in CellKind::ALL {
        for batch in [
            fused_rnn::Batch::Fixed(B),
            fused_rnn::Batch::Padded(&lengths),
        ] {
            let what = format!("{} {batch:?}", cell.name());
            state(
                backward_after(cell, batch, |l| {
                    l.weights_mut().weight_hh[0] += 0.5;
                    None
                }),
                &format!("{what}: weights changed"),
            );
            // Asking for the weights mutably is enough: the layer cannot know nothing changed.
            state(
                backward_after(cell, batch, |l| {
                    let _ = l.weights_mut();
                    None
                }),
                &format!("{what}: weights_mut"),
            );
            state(
                backward_after(cell, batch, |_| Some(layer(cell))),
                &format!("{what}: another layer"),
            );
            backward_after(cell, batch, |l| Some(l.clone())).expect("a clone's weights");
            backward_after(cell, batch, |_| None).expect("the same layer");
        }
    }
}

/// A thread count past `MAX_THREADS` is refused before anything is sized for it (it used to
/// abort on a vector of `1 << 40` thread handles, or panic on `usize::MAX`); the layer keeps
/// its threads.
#[test]
fn absurd_thread_counts_are_refused_before_anything_is_sized() {
    let mut l = layer(CellKind::Lstm);
    l.set_threads(2).unwrap();
    for n in [0, fused_rnn::MAX_THREADS + 1, 1 << 40, usize::MAX] {
        match l.set_threads(n) {
            Err(Error::InvalidArgument {
                what: "threads", ..
            }) => {}
            other => panic!("{n} threads: expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(l.threads(), 2, "{n} threads: the layer keeps its pool");
    }
}

/// The packed copies of the weights are padded to whole panels of 16 columns: an RNN with
/// `I = 2^30`, `H = 1` (4 GiB of weights) needs 64 GiB of packed `W_ihᵀ`. Forward and a stream
/// over it used to abort the process on that request; they return `AllocationFailed`. (Run
/// only where the kernel refuses 64 GiB outright, so that the request cannot be granted.)
#[test]
fn packed_copies_larger_than_memory_are_errors() {
    let (i, h) = (1usize << 30, 1);
    if !testkit::memory::kernel_refuses_allocation(16 * i * h * 4) {
        eprintln!("skipped: this kernel may grant 64 GiB");
        return;
    }
    let cell = CellKind::Rnn(fused_rnn::RnnActivation::Tanh);
    let zeros = vec![0.0f32; i];
    let w = LayerWeights {
        weight_ih: &zeros,
        weight_hh: &[0.5],
        bias_ih: &[0.0],
        bias_hh: &[0.0],
    };
    let l = Layer::new(cell, i, h, w).unwrap();
    let mut ws = l.workspace(1, 1, Mode::Inference).unwrap();
    let mut y = [0.0f32];
    let r = l.forward(
        &mut ws,
        Direction::Forward,
        &zeros,
        InitialState::default(),
        &mut y,
        FinalState::default(),
    );
    assert!(
        matches!(r, Err(Error::AllocationFailed { .. })),
        "forward: {r:?}"
    );
    let s = fused_rnn::StreamingLayer::new(l, 1);
    assert!(
        matches!(s, Err(Error::AllocationFailed { .. })),
        "stream: {:?}",
        s.err()
    );
}
