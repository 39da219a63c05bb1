//! The C API's streams (`frnn_stream_*`, `frnn_layer_set_threads`) under arbitrary sequences
//! of calls with arbitrary (often wrong) lengths, NULL buffers and NULL handles, against a
//! one-thread `StreamingLayer` of the same weights as the model.
//!
//! Every call must return `FRNN_OK` exactly when its arguments are valid, and otherwise the
//! code the header names for the first rule broken (`FRNN_ERR_LENGTH`, `FRNN_ERR_NULL`,
//! `FRNN_ERR_ARGUMENT`), never `FRNN_ERR_PANIC`. A call that fails leaves the state as it was.
//! Every output (each step's `h`, the state read back) equals the model's bit for bit: the
//! stream runs the same kernels whatever its thread count. One case in eight is an f32 layer
//! on two threads big enough for its steps to split over the stream's worker thread, with
//! pauses and spin-window changes among the calls (so steps also run on recurrent halves the
//! worker computed in a pause).

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use fused_rnn::{CellKind, Layer, LayerWeights, StreamingLayer};
use fused_rnn_capi::cell_to_c;
use fused_rnn_capi::{
    FRNN_ERR_ARGUMENT, FRNN_ERR_LENGTH, FRNN_ERR_NULL, FRNN_OK, FrnnLayer, FrnnStream,
    frnn_layer_create, frnn_layer_free, frnn_layer_set_threads, frnn_stream_create,
    frnn_stream_free, frnn_stream_get_state, frnn_stream_reset, frnn_stream_set_spin_window,
    frnn_stream_set_state, frnn_stream_step,
};
use fused_rnn_fuzz::c_args::{Buf, arg, bits, values, wrong_len};
use fused_rnn_fuzz::{pick_cell, pick_stream_dims};
use libfuzzer_sys::fuzz_target;
use testkit::random::SplitMix;

#[derive(Arbitrary, Debug)]
enum Op {
    Step {
        x: Buf,
        h: Buf,
    },
    SetState {
        h: Buf,
        c: Buf,
    },
    GetState {
        h: Buf,
        c: Buf,
    },
    Reset,
    /// 0, 200 µs or 50 ms.
    SpinWindow(u8),
    /// 300 µs without a call.
    Pause,
    /// Every stream call on a NULL handle.
    NullStream,
}

struct Case {
    cell: CellKind,
    batch: usize,
    input: usize,
    hidden: usize,
    threads: usize,
    seed: u64,
    ops: Vec<Op>,
}

fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<Case> {
    let cell = pick_cell(u)?;
    let (batch, input, hidden, threads) = pick_stream_dims(u, cell)?;
    let seed = u.arbitrary()?;
    let n = u.int_in_range(1..=24)?;
    let ops = (0..n)
        .map(|_| u.arbitrary())
        .collect::<arbitrary::Result<_>>()?;
    Ok(Case {
        cell,
        batch,
        input,
        hidden,
        threads,
        seed,
        ops,
    })
}

/// Reads the stream's state through the C API (must succeed) and checks it against the model.
fn check_state(s: *mut FrnnStream, model: &StreamingLayer<f32>, what: &str) {
    let mut h = vec![f32::NAN; model.hidden_state().len()];
    let mut c = vec![f32::NAN; model.cell_state().map_or(0, <[f32]>::len)];
    let (cp, cl) = if model.cell_state().is_some() {
        (c.as_mut_ptr(), c.len())
    } else {
        (std::ptr::null_mut(), 0)
    };
    // SAFETY: a live stream; each buffer valid for its length.
    let rc = unsafe { frnn_stream_get_state(s, h.as_mut_ptr(), h.len(), cp, cl) };
    assert_eq!(rc, FRNN_OK, "{what}: reading the state back");
    assert_eq!(bits(&h), bits(model.hidden_state()), "{what}: h");
    if let Some(mc) = model.cell_state() {
        assert_eq!(bits(&c), bits(mc), "{what}: c");
    }
}

fn run(case: &Case) {
    let (cell, b, i, h) = (case.cell, case.batch, case.input, case.hidden);
    let lstm = cell.has_cell_state();
    let g = cell.gates();
    let mut rng = SplitMix(case.seed);
    let scale = 1.0 / (h as f64).sqrt();
    let w_ih = values(&mut rng, g * h * i, scale);
    let w_hh = values(&mut rng, g * h * h, scale);
    let b_ih = values(&mut rng, g * h, scale);
    let b_hh = values(&mut rng, g * h, scale);
    let weights = LayerWeights {
        weight_ih: &w_ih,
        weight_hh: &w_hh,
        bias_ih: &b_ih,
        bias_hh: &b_hh,
    };
    let mut model = StreamingLayer::new(Layer::new(cell, i, h, weights).expect("valid layer"), b)
        .expect("stream");

    let mut layer: *mut FrnnLayer = std::ptr::null_mut();
    // SAFETY: each buffer valid for its length; `layer` valid for one write.
    let rc = unsafe {
        frnn_layer_create(
            cell_to_c(cell),
            i,
            h,
            w_ih.as_ptr(),
            w_ih.len(),
            w_hh.as_ptr(),
            w_hh.len(),
            b_ih.as_ptr(),
            b_ih.len(),
            b_hh.as_ptr(),
            b_hh.len(),
            &mut layer,
        )
    };
    assert_eq!(rc, FRNN_OK, "create");
    // SAFETY: a live layer.
    unsafe {
        assert_eq!(
            frnn_layer_set_threads(layer, 0),
            FRNN_ERR_ARGUMENT,
            "0 threads"
        );
        assert_eq!(
            frnn_layer_set_threads(layer, case.threads),
            FRNN_OK,
            "threads"
        );
    }
    let mut stream: *mut FrnnStream = std::ptr::null_mut();
    // SAFETY: a live layer; `stream` valid for one write.
    unsafe {
        assert_eq!(
            frnn_stream_create(layer, 0, &mut stream),
            FRNN_ERR_ARGUMENT,
            "B = 0"
        );
        assert!(stream.is_null(), "a failed create wrote a handle");
        assert_eq!(
            frnn_stream_create(layer, b, &mut stream),
            FRNN_OK,
            "stream create"
        );
        // The stream holds its own copy of the layer.
        frnn_layer_free(layer);
    }
    let s = stream;
    let (bi, bh) = (b * i, b * h);
    let (mut xb, mut hb, mut cb) = (Vec::new(), Vec::new(), Vec::new());
    for (n, op) in case.ops.iter().enumerate() {
        let what = format!("op {n} {op:?}");
        match *op {
            Op::Step { x, h: hout } => {
                let xs = values(&mut rng, bi, 1.0);
                let (xp, xl) = arg(&mut xb, x.len(bi), &xs);
                let (hp, hl) = arg(&mut hb, hout.len(bh), &[f32::NAN]);
                let want = if xp.is_null() {
                    FRNN_ERR_NULL
                } else if xl != bi || wrong_len(hp, hl, bh) {
                    FRNN_ERR_LENGTH
                } else {
                    FRNN_OK
                };
                // SAFETY: a live stream; each buffer valid for its length.
                let rc = unsafe { frnn_stream_step(s, xp, xl, hp, hl) };
                assert_eq!(rc, want, "{what}");
                if rc == FRNN_OK {
                    let h_t = model.step(&xs).expect("model step");
                    if !hp.is_null() {
                        assert_eq!(bits(&hb), bits(h_t), "{what}: h_t");
                    }
                }
            }
            Op::SetState { h: hin, c } => {
                let hs = values(&mut rng, bh, 1.0);
                let cs = values(&mut rng, bh, 1.0);
                let (hp, hl) = arg(&mut hb, hin.len(bh), &hs);
                let (cp, cl) = arg(&mut cb, c.len(bh), &cs);
                let want = if hp.is_null() {
                    FRNN_ERR_NULL
                } else if hl != bh {
                    FRNN_ERR_LENGTH
                } else {
                    match (lstm, cp.is_null()) {
                        (true, true) => FRNN_ERR_ARGUMENT,
                        (true, false) if cl != bh => FRNN_ERR_LENGTH,
                        (true, false) | (false, true) => FRNN_OK,
                        (false, false) => FRNN_ERR_ARGUMENT,
                    }
                };
                // SAFETY: a live stream; each buffer valid for its length.
                let rc = unsafe { frnn_stream_set_state(s, hp, hl, cp, cl) };
                assert_eq!(rc, want, "{what}");
                if rc == FRNN_OK {
                    model
                        .set_state(&hs, lstm.then_some(&cs[..]))
                        .expect("model set_state");
                }
            }
            Op::GetState { h: hout, c } => {
                let (hp, hl) = arg(&mut hb, hout.len(bh), &[f32::NAN]);
                let (cp, cl) = arg(&mut cb, c.len(bh), &[f32::NAN]);
                let want = if !cp.is_null() && !lstm {
                    FRNN_ERR_ARGUMENT
                } else if wrong_len(hp, hl, bh) || wrong_len(cp, cl, bh) {
                    FRNN_ERR_LENGTH
                } else {
                    FRNN_OK
                };
                // SAFETY: a live stream; each buffer valid for its length.
                let rc = unsafe { frnn_stream_get_state(s, hp, hl, cp, cl) };
                assert_eq!(rc, want, "{what}");
                if rc == FRNN_OK {
                    if !hp.is_null() {
                        assert_eq!(bits(&hb), bits(model.hidden_state()), "{what}: h");
                    }
                    if let (false, Some(mc)) = (cp.is_null(), model.cell_state()) {
                        assert_eq!(bits(&cb), bits(mc), "{what}: c");
                    }
                }
            }
            Op::Reset => {
                // SAFETY: a live stream.
                assert_eq!(unsafe { frnn_stream_reset(s) }, FRNN_OK, "{what}");
                model.reset();
            }
            Op::SpinWindow(k) => {
                let us = [0, 200, 50_000][usize::from(k % 3)];
                // SAFETY: a live stream.
                let rc = unsafe { frnn_stream_set_spin_window(s, us) };
                assert_eq!(rc, FRNN_OK, "{what}");
            }
            Op::Pause => std::thread::sleep(std::time::Duration::from_micros(300)),
            Op::NullStream => {
                let null = std::ptr::null_mut::<FrnnStream>();
                let mut v = vec![0.0f32; bi.max(bh)];
                let p = v.as_mut_ptr();
                // SAFETY: NULL handles are checked before any buffer is read.
                unsafe {
                    assert_eq!(
                        frnn_stream_step(null, p, bi, std::ptr::null_mut(), 0),
                        FRNN_ERR_NULL
                    );
                    assert_eq!(
                        frnn_stream_set_state(null, p, bh, std::ptr::null(), 0),
                        FRNN_ERR_NULL
                    );
                    assert_eq!(
                        frnn_stream_get_state(null, p, bh, std::ptr::null_mut(), 0),
                        FRNN_ERR_NULL
                    );
                    assert_eq!(frnn_stream_reset(null), FRNN_ERR_NULL);
                    assert_eq!(frnn_stream_set_spin_window(null, 1), FRNN_ERR_NULL);
                    frnn_stream_free(null);
                }
            }
        }
        // Failed calls leave the state alone; successful ones match the model.
        check_state(s, &model, &what);
    }
    // SAFETY: a live stream, freed once.
    unsafe { frnn_stream_free(s) };
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(case) = decode(&mut u) {
        run(&case);
    }
});
