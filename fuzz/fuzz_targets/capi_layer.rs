//! The C API's layer functions (`frnn_layer_create`, `frnn_layer_from_safetensors`,
//! `frnn_layer_sizes`, `frnn_layer_set_threads`, `frnn_forward`, `frnn_backward`,
//! `frnn_forward_padded`, `frnn_backward_padded` (rows of their own lengths, some past `T`),
//! `frnn_step`)
//! under arbitrary sequences of calls with arbitrary (often wrong) lengths, NULL buffers,
//! overlapping buffers, zero dimensions, unknown cells, NULL handles and damaged safetensors
//! files, against a one-thread Rust [`Layer`] of the same weights.
//!
//! The status code of every call is predicted from the header's rules alone, in the order the
//! header and the Rust layer check them (NULL pointers, then overlaps, then zero dimensions,
//! then lengths, then buffers the cell has no use for; for backward, the weight-gradient
//! lengths, then a pending training forward). The target tracks on its own whether a backward
//! is pending, for the fixed-length and the padded workspace apart: an accepted training
//! forward leaves one pending, an accepted backward consumes it, and nothing else touches it,
//! since "a refused call (any FRNN_ERR_* but FRNN_ERR_PANIC) changes nothing in its handle: a
//! layer keeps its pending backward (a refused training forward, even with another T, B or
//! lengths, leaves the earlier training forward's backward pending)" and "training = 0 keeps
//! nothing and does not disturb a pending backward". `FRNN_ERR_PANIC` is never right. Every
//! output of a successful call equals the Rust layer's bit for bit (NaN payloads aside),
//! whatever the C layer's thread count: the crate promises the same bits for every count.
//!
//! Files: the layer saved by `save_layers` must load exactly when the name (layer index,
//! direction) and the gate count match; a file with bytes changed or cut off must give what
//! the Rust loader gives (`FRNN_OK`, `FRNN_ERR_FORMAT` or `FRNN_ERR_ARGUMENT`), and when it
//! loads, the same outputs.

#![no_main]

use std::ffi::c_int;

use arbitrary::{Arbitrary, Unstructured};
use fused_rnn::interop::Direction;
use fused_rnn::interop::pytorch::{load_layer_converting, save_layers};
use fused_rnn::{
    CellKind, Error, FinalState, GradMode, InitialState, InputGrads, Layer, LayerGrads,
    LayerWeights, Mode, Upstream, Workspace,
};
use fused_rnn_capi::{
    FRNN_ERR_ARGUMENT, FRNN_ERR_FORMAT, FRNN_ERR_LENGTH, FRNN_ERR_NULL, FRNN_ERR_STATE, FRNN_OK,
    FrnnLayer, cell_to_c, frnn_backward, frnn_backward_padded, frnn_forward, frnn_forward_padded,
    frnn_last_error_message, frnn_layer_create, frnn_layer_free, frnn_layer_from_safetensors,
    frnn_layer_set_threads, frnn_layer_sizes, frnn_step,
};
use fused_rnn_fuzz::c_args::{Buf, arg, bits, values, wrong_len};
use fused_rnn_fuzz::{pick_cell, pick_stream_dims};
use libfuzzer_sys::fuzz_target;
use testkit::random::SplitMix;

/// A layer made before the main one, to exercise the two constructors.
#[derive(Arbitrary, Debug)]
enum Attempt {
    /// `frnn_layer_create` with the case's sizes (the input width 0 when `zero_input`).
    Create {
        cell: u8,
        w_ih: Buf,
        w_hh: Buf,
        b_ih: Buf,
        b_hh: Buf,
        zero_input: bool,
    },
    /// `frnn_layer_from_safetensors` on the main layer saved as layer `saved_index`,
    /// `saved_reverse`, then changed at up to eight places and maybe cut short.
    Load {
        saved_index: bool,
        saved_reverse: bool,
        index: bool,
        reverse: bool,
        cell: u8,
        edits: Vec<(u16, u8)>,
        cut: Option<u16>,
    },
    /// `frnn_layer_from_safetensors` on arbitrary bytes.
    Raw { cell: u8, bytes: Vec<u8> },
    /// Both constructors with `out` NULL, and `bytes` NULL.
    NullOut,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Forward {
        training: bool,
        seq_len: u8,
        batch: u8,
        x: Buf,
        h0: Buf,
        c0: Buf,
        y: Buf,
        h_n: Buf,
        c_n: Buf,
        /// [`Quirk`]: `h_n` points at `y`'s first element.
        quirk: u8,
        /// One element of `x` is NaN.
        nan: bool,
        /// `frnn_forward_padded` with these row lengths (`B` = their count), else
        /// `frnn_forward`.
        lengths: Option<Vec<u8>>,
    },
    Backward {
        x: Buf,
        dy: Buf,
        dh_n: Buf,
        dc_n: Buf,
        dx: Buf,
        dh0: Buf,
        dc0: Buf,
        dw_ih: Buf,
        dw_hh: Buf,
        db_ih: Buf,
        db_hh: Buf,
        accumulate: bool,
        /// [`Quirk`]: `dh0` points at `dx`'s first element.
        quirk: u8,
        /// `frnn_backward_padded` (after `frnn_forward_padded`), else `frnn_backward`.
        padded: bool,
    },
    Step {
        batch: u8,
        x: Buf,
        h: Buf,
        c: Buf,
        /// [`Quirk`]: `c` points at `h`'s first element.
        quirk: u8,
    },
    /// 0 (refused), 1 or 2 threads.
    SetThreads(u8),
    /// Bit k set: output k of `frnn_layer_sizes` is NULL.
    Sizes(u8),
    /// Every layer function on a NULL handle.
    NullLayer,
}

/// What else a call gets wrong on purpose, from a byte: one call in eight passes two
/// overlapping buffers ([`Quirk::Alias`]); one in sixteen passes the `c` buffers it names to a
/// cell without a cell state as chosen ([`Quirk::StrayC`]); the rest pass no `c` buffer of the
/// right length to such a cell (a right one becomes NULL), so that most calls can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quirk {
    Alias,
    StrayC,
    None,
}

impl Quirk {
    fn of(k: u8) -> Self {
        // High bytes for the quirks: an input that runs out reads zeros.
        match k {
            224.. => Quirk::Alias,
            208..=223 => Quirk::StrayC,
            _ => Quirk::None,
        }
    }

    /// The `c` buffer argument actually passed to a cell with (`lstm`) or without a cell
    /// state.
    fn c_buf(self, buf: Buf, lstm: bool) -> Buf {
        match (buf, lstm, self) {
            (Buf::Right, false, Quirk::Alias | Quirk::None) => Buf::Null,
            _ => buf,
        }
    }
}

struct Case {
    cell: CellKind,
    max_batch: usize,
    input: usize,
    hidden: usize,
    threads: usize,
    from_file: bool,
    seed: u64,
    attempts: Vec<Attempt>,
    ops: Vec<Op>,
}

fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<Case> {
    let cell = pick_cell(u)?;
    let (max_batch, input, hidden, threads) = pick_stream_dims(u, cell)?;
    let from_file = u.arbitrary()?;
    let seed = u.arbitrary()?;
    let n = u.int_in_range(0..=3)?;
    let attempts = (0..n)
        .map(|_| u.arbitrary())
        .collect::<arbitrary::Result<_>>()?;
    let n = u.int_in_range(1..=16)?;
    let ops = (0..n)
        .map(|_| u.arbitrary())
        .collect::<arbitrary::Result<_>>()?;
    Ok(Case {
        cell,
        max_batch,
        input,
        hidden,
        threads,
        from_file,
        seed,
        attempts,
        ops,
    })
}

/// The status code the C API gives for a Rust error (as `fused_rnn.h` documents the codes).
fn code_of(e: &Error) -> c_int {
    match e {
        Error::BufferLength { .. } => FRNN_ERR_LENGTH,
        Error::WorkspaceMismatch { .. } | Error::InvalidState { .. } => FRNN_ERR_STATE,
        Error::Format { .. } => FRNN_ERR_FORMAT,
        _ => FRNN_ERR_ARGUMENT,
    }
}

/// `FRNN_CELL_*` codes: the five valid ones, then three unknown ones.
fn cell_code(k: u8) -> c_int {
    match k % 8 {
        k @ 0..=4 => cell_to_c(CellKind::ALL[usize::from(k)]),
        5 => 5,
        6 => -1,
        _ => c_int::MAX,
    }
}

fn direction(reverse: bool) -> Direction {
    if reverse {
        Direction::Reverse
    } else {
        Direction::Forward
    }
}

/// A dimension from a byte: 0 (refused) one time in 16, otherwise `1..=max` (1 for the
/// zeros of an input that ran out).
fn small_dim(k: u8, max: usize) -> usize {
    if k >= 240 {
        0
    } else {
        1 + usize::from(k) % max
    }
}

/// A layer's four parameters, owned.
struct Params {
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    b_ih: Vec<f32>,
    b_hh: Vec<f32>,
}

impl Params {
    fn random(rng: &mut SplitMix, cell: CellKind, i: usize, h: usize) -> Self {
        let gh = cell.gates() * h;
        let scale = 1.0 / (h as f64).sqrt();
        Params {
            w_ih: values(rng, gh * i, scale),
            w_hh: values(rng, gh * h, scale),
            b_ih: values(rng, gh, scale),
            b_hh: values(rng, gh, scale),
        }
    }

    fn weights(&self) -> LayerWeights<'_, f32> {
        LayerWeights {
            weight_ih: &self.w_ih,
            weight_hh: &self.w_hh,
            bias_ih: &self.b_ih,
            bias_hh: &self.b_hh,
        }
    }
}

/// The pending backward of one kind of pass (fixed-length or padded), as the target predicts
/// the C handle's.
#[derive(Default)]
struct Expect {
    /// `(T, B)` of the last accepted training forward of this kind.
    sizes: Option<(usize, usize)>,
    /// That forward has not been consumed by an accepted backward.
    pending: bool,
    /// The Rust layer's workspace of the last successful training forward, and its `x`.
    model_train: Option<(ModelWs, Vec<f32>)>,
}

/// The Rust layer's workspace of a training forward.
enum ModelWs {
    Fixed(Workspace<f32>),
    Padded(Workspace<f32>),
}

/// Row lengths from bytes: `0..=t`, and `t + 1` (past `T`, refused) for bytes from 240 (the
/// zeros of an input that ran out give length 0); at most `max` rows.
fn pick_lengths(bytes: &[u8], t: usize, max: usize) -> Vec<usize> {
    bytes
        .iter()
        .take(max)
        .map(|&k| {
            if k >= 240 {
                t + 1
            } else {
                usize::from(k) % (t + 1)
            }
        })
        .collect()
}

/// Checks `frnn_layer_sizes` and one `T = 1` forward of a C layer against a Rust layer
/// (sizes, every output bit), then frees the C layer.
fn check_same_layer(c: *mut FrnnLayer, model: &Layer<f32>, rng: &mut SplitMix, what: &str) {
    let (i, h) = (model.input_size(), model.hidden_size());
    let (mut cell, mut ci, mut ch) = (-7, 0, 0);
    // SAFETY: a live layer; each output valid for one write.
    let rc = unsafe { frnn_layer_sizes(c, &mut cell, &mut ci, &mut ch) };
    assert_eq!(rc, FRNN_OK, "{what}: sizes");
    assert_eq!(
        (cell, ci, ch),
        (cell_to_c(model.cell()), i, h),
        "{what}: sizes"
    );
    let x = values(rng, i, 1.0);
    let mut y = vec![f32::NAN; h];
    // SAFETY: a live layer; each buffer valid for its length.
    let rc = unsafe {
        frnn_forward(
            c,
            1,
            1,
            0,
            x.as_ptr(),
            x.len(),
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            y.as_mut_ptr(),
            y.len(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            0,
        )
    };
    assert_eq!(rc, FRNN_OK, "{what}: forward");
    let mut want = vec![0.0; h];
    let mut ws = model.workspace(1, 1, Mode::Inference).expect("workspace");
    model
        .forward(
            &mut ws,
            Direction::Forward,
            &x,
            InitialState::default(),
            &mut want,
            FinalState::default(),
        )
        .expect("model forward");
    assert_eq!(bits(&y), bits(&want), "{what}: y");
    // SAFETY: a live layer, freed once.
    unsafe { frnn_layer_free(c) };
}

/// A constructor's result: with `FRNN_OK` a live handle, otherwise none written.
fn created(rc: c_int, out: *mut FrnnLayer, what: &str) -> Option<*mut FrnnLayer> {
    check_message(rc, what);
    if rc == FRNN_OK {
        assert!(!out.is_null(), "{what}: OK without a handle");
        Some(out)
    } else {
        assert!(out.is_null(), "{what}: failed ({rc}) but wrote a handle");
        None
    }
}

fn attempt(case: &Case, main: &Layer<f32>, a: &Attempt, rng: &mut SplitMix, what: &str) {
    let (i, h) = (case.input, case.hidden);
    let mut out: *mut FrnnLayer = std::ptr::null_mut();
    match a {
        Attempt::Create {
            cell,
            w_ih,
            w_hh,
            b_ih,
            b_hh,
            zero_input,
        } => {
            let code = cell_code(*cell);
            let known = CellKind::ALL.get(usize::from(*cell % 8)).copied();
            let i = if *zero_input { 0 } else { i };
            let gh = known.unwrap_or(case.cell).gates() * h;
            let p = Params::random(rng, known.unwrap_or(case.cell), i, h);
            let bufs = [
                (w_ih, &p.w_ih),
                (w_hh, &p.w_hh),
                (b_ih, &p.b_ih),
                (b_hh, &p.b_hh),
            ];
            let rights = [gh * i, gh * h, gh, gh];
            let mut stores: [Vec<f32>; 4] = Default::default();
            let mut args = [(std::ptr::null_mut(), 0); 4];
            for k in 0..4 {
                args[k] = arg(&mut stores[k], bufs[k].0.len(rights[k]), bufs[k].1);
                // `arg` repeats the values: a buffer of the right length holds exactly them.
            }
            let any_null = args.iter().any(|(p, _)| p.is_null());
            let all_right = (0..4).all(|k| args[k].1 == rights[k]);
            // SAFETY: each buffer valid for its length; `out` valid for one write.
            let rc = unsafe {
                frnn_layer_create(
                    code, i, h, args[0].0, args[0].1, args[1].0, args[1].1, args[2].0, args[2].1,
                    args[3].0, args[3].1, &mut out,
                )
            };
            let ok = match known {
                None => {
                    assert_eq!(rc, FRNN_ERR_ARGUMENT, "{what}: unknown cell {code}");
                    false
                }
                Some(_) if any_null => {
                    assert_eq!(rc, FRNN_ERR_NULL, "{what}");
                    false
                }
                // Which of the two a zero width with wrong lengths gives is the layer's order.
                Some(_) if *zero_input && !all_right => {
                    assert!(
                        rc == FRNN_ERR_ARGUMENT || rc == FRNN_ERR_LENGTH,
                        "{what}: {rc}"
                    );
                    false
                }
                Some(_) if *zero_input => {
                    assert_eq!(rc, FRNN_ERR_ARGUMENT, "{what}: I = 0");
                    false
                }
                Some(_) if !all_right => {
                    assert_eq!(rc, FRNN_ERR_LENGTH, "{what}");
                    false
                }
                Some(_) => {
                    assert_eq!(rc, FRNN_OK, "{what}");
                    true
                }
            };
            if let Some(c) = created(rc, out, what) {
                assert!(ok);
                let cell = known.expect("OK only for a known cell");
                let model = Layer::new(cell, i, h, p.weights()).expect("same weights");
                check_same_layer(c, &model, rng, what);
            }
        }
        Attempt::Load {
            saved_index,
            saved_reverse,
            index,
            reverse,
            cell,
            edits,
            cut,
        } => {
            let saved = (usize::from(*saved_index), direction(*saved_reverse));
            let mut bytes = save_layers(&[(saved.0, saved.1, main)]).expect("save");
            let intact = edits.is_empty() && cut.is_none();
            for &(pos, val) in edits.iter().take(8) {
                let n = bytes.len();
                bytes[usize::from(pos) % n] = val;
            }
            if let Some(c) = cut {
                bytes.truncate(usize::from(*c) % (bytes.len() + 1));
            }
            let cell = CellKind::ALL[usize::from(*cell % 5)];
            let wanted = (usize::from(*index), direction(*reverse));
            // SAFETY: `bytes` valid for its length; `out` valid for one write.
            let rc = unsafe {
                frnn_layer_from_safetensors(
                    bytes.as_ptr(),
                    bytes.len(),
                    cell_to_c(cell),
                    wanted.0,
                    c_int::from(*reverse),
                    &mut out,
                )
            };
            let rust = load_layer_converting::<f32>(&bytes, cell, wanted.0, wanted.1);
            if intact {
                // The header's rules: the name must be there, the shapes fit the gate count.
                let want = if wanted != saved || cell.gates() != main.cell().gates() {
                    FRNN_ERR_FORMAT
                } else {
                    FRNN_OK
                };
                assert_eq!(rc, want, "{what}: intact file");
            }
            assert_eq!(
                rc,
                rust.as_ref().map_or_else(code_of, |_| FRNN_OK),
                "{what}: against the Rust loader ({:?})",
                rust.as_ref().err()
            );
            if let Some(c) = created(rc, out, what) {
                let model = rust.expect("loaded in Rust too");
                if intact {
                    let (a, b) = (model.weights(), main.weights());
                    for (name, got, want) in [
                        ("weight_ih", a.weight_ih, b.weight_ih),
                        ("weight_hh", a.weight_hh, b.weight_hh),
                        ("bias_ih", a.bias_ih, b.bias_ih),
                        ("bias_hh", a.bias_hh, b.bias_hh),
                    ] {
                        assert_eq!(bits(got), bits(want), "{what}: {name}");
                    }
                }
                check_same_layer(c, &model, rng, what);
            }
        }
        Attempt::Raw { cell, bytes } => {
            let cell = CellKind::ALL[usize::from(*cell % 5)];
            // A non-NULL pointer even when empty.
            let ptr = if bytes.is_empty() {
                std::ptr::NonNull::dangling().as_ptr()
            } else {
                bytes.as_ptr()
            };
            // SAFETY: `ptr` valid for `bytes.len()` bytes; `out` valid for one write.
            let rc = unsafe {
                frnn_layer_from_safetensors(ptr, bytes.len(), cell_to_c(cell), 0, 0, &mut out)
            };
            let rust = load_layer_converting::<f32>(bytes, cell, 0, Direction::Forward);
            assert_eq!(
                rc,
                rust.as_ref().map_or_else(code_of, |_| FRNN_OK),
                "{what}: against the Rust loader"
            );
            if let Some(c) = created(rc, out, what) {
                check_same_layer(c, &rust.expect("loaded"), rng, what);
            }
        }
        Attempt::NullOut => {
            let p = Params::random(rng, case.cell, i, h);
            let code = cell_to_c(case.cell);
            let bytes = save_layers(&[(0, Direction::Forward, main)]).expect("save");
            // SAFETY: each buffer valid for its length; NULL `out` is checked first.
            unsafe {
                let rc = frnn_layer_create(
                    code,
                    i,
                    h,
                    p.w_ih.as_ptr(),
                    p.w_ih.len(),
                    p.w_hh.as_ptr(),
                    p.w_hh.len(),
                    p.b_ih.as_ptr(),
                    p.b_ih.len(),
                    p.b_hh.as_ptr(),
                    p.b_hh.len(),
                    std::ptr::null_mut(),
                );
                assert_eq!(rc, FRNN_ERR_NULL, "{what}: create, out NULL");
                let rc = frnn_layer_from_safetensors(
                    bytes.as_ptr(),
                    bytes.len(),
                    code,
                    0,
                    0,
                    std::ptr::null_mut(),
                );
                assert_eq!(rc, FRNN_ERR_NULL, "{what}: load, out NULL");
                let rc = frnn_layer_from_safetensors(
                    std::ptr::null(),
                    bytes.len(),
                    code,
                    0,
                    0,
                    &mut out,
                );
                assert_eq!(rc, FRNN_ERR_NULL, "{what}: load, bytes NULL");
                assert!(out.is_null(), "{what}: failed load wrote a handle");
            }
        }
    }
}

/// Two buffers `(a, b)` of the given lengths; with `alias`, `b` starts where `a` does (one
/// store long enough for both), otherwise each has its own store.
fn pair(
    alias: bool,
    sa: &mut Vec<f32>,
    sb: &mut Vec<f32>,
    la: Option<usize>,
    lb: Option<usize>,
    fa: &[f32],
    fb: &[f32],
) -> (CArg, CArg) {
    if let (true, Some(na), Some(nb)) = (alias, la, lb) {
        let (p, _) = arg(sa, Some(na.max(nb)), fa);
        ((p, na), (p, nb))
    } else {
        (arg(sa, la, fa), arg(sb, lb, fb))
    }
}

/// After a failed call, `frnn_last_error_message` says why (a non-empty message).
fn check_message(rc: c_int, what: &str) {
    if rc != FRNN_OK {
        // SAFETY: never NULL, NUL-terminated, valid until the next failing call here.
        let msg = unsafe { std::ffi::CStr::from_ptr(frnn_last_error_message()) };
        assert!(!msg.is_empty(), "{what}: code {rc} without a message");
    }
}

/// A buffer argument as passed: pointer and length.
type CArg = (*mut f32, usize);

/// Whether any of the optional buffers is present with a length other than its right one.
fn any_wrong(args: &[(CArg, usize)]) -> bool {
    args.iter()
        .any(|&((p, len), right)| wrong_len(p, len, right))
}

/// Whether any of the buffers is present (non-NULL).
fn any_given(args: &[CArg]) -> bool {
    args.iter().any(|a| !a.0.is_null())
}

/// Whether two argument buffers overlap (both non-NULL, non-empty, with a common address).
fn overlap(a: CArg, b: CArg) -> bool {
    !a.0.is_null() && !b.0.is_null() && a.1 > 0 && b.1 > 0 && a.0 == b.0
}

fn opt(p: CArg, store: &[f32]) -> Option<&[f32]> {
    (!p.0.is_null()).then_some(&store[..p.1])
}

fn run(case: &Case) {
    let (cell, i, h) = (case.cell, case.input, case.hidden);
    let lstm = cell.has_cell_state();
    let g = cell.gates();
    let mut rng = SplitMix(case.seed);
    let p = Params::random(&mut rng, cell, i, h);
    let model = Layer::new(cell, i, h, p.weights()).expect("valid layer");

    for (n, a) in case.attempts.iter().enumerate() {
        attempt(case, &model, a, &mut rng, &format!("attempt {n} {a:?}"));
    }

    let mut layer: *mut FrnnLayer = std::ptr::null_mut();
    let rc = if case.from_file {
        let bytes = save_layers(&[(0, Direction::Forward, &model)]).expect("save");
        // SAFETY: `bytes` valid for its length; `layer` valid for one write.
        unsafe {
            frnn_layer_from_safetensors(
                bytes.as_ptr(),
                bytes.len(),
                cell_to_c(cell),
                0,
                0,
                &mut layer,
            )
        }
    } else {
        // SAFETY: each buffer valid for its length; `layer` valid for one write.
        unsafe {
            frnn_layer_create(
                cell_to_c(cell),
                i,
                h,
                p.w_ih.as_ptr(),
                p.w_ih.len(),
                p.w_hh.as_ptr(),
                p.w_hh.len(),
                p.b_ih.as_ptr(),
                p.b_ih.len(),
                p.b_hh.as_ptr(),
                p.b_hh.len(),
                &mut layer,
            )
        }
    };
    assert_eq!(rc, FRNN_OK, "main layer");
    // SAFETY: a live layer.
    assert_eq!(
        unsafe { frnn_layer_set_threads(layer, case.threads) },
        FRNN_OK
    );
    let l = layer;
    // The fixed-length and the padded training workspaces, kept apart by the handle.
    let (mut fixed, mut padded_ws) = (Expect::default(), Expect::default());
    let mut st: [Vec<f32>; 11] = Default::default();
    for (n, op) in case.ops.iter().enumerate() {
        let what = format!("op {n} {op:?}");
        match *op {
            Op::Forward {
                training,
                seq_len,
                batch,
                x,
                h0,
                c0,
                y,
                h_n,
                c_n,
                quirk,
                nan,
                ref lengths,
            } => {
                let quirk = Quirk::of(quirk);
                let alias = quirk == Quirk::Alias;
                let (c0, c_n) = (quirk.c_buf(c0, lstm), quirk.c_buf(c_n, lstm));
                let t = small_dim(seq_len, 3);
                let lens = lengths
                    .as_deref()
                    .map(|l| pick_lengths(l, t, case.max_batch + 1));
                let b = match &lens {
                    Some(l) => l.len(),
                    None => small_dim(batch, case.max_batch),
                };
                let past = lens.as_ref().is_some_and(|l| l.iter().any(|&n| n > t));
                let (nx, ny, ns) = (t * b * i, t * b * h, b * h);
                let mut xs = values(&mut rng, nx.max(1), 1.0);
                if nan {
                    let k = rng.next_u64() as usize % xs.len();
                    xs[k] = f32::NAN;
                }
                let h0s = values(&mut rng, ns.max(1), 1.0);
                let c0s = values(&mut rng, ns.max(1), 1.0);
                let [sx, sh0, sc0, sy, shn, scn, ..] = &mut st;
                let px = arg(sx, x.len(nx), &xs);
                let ph0 = arg(sh0, h0.len(ns), &h0s);
                let pc0 = arg(sc0, c0.len(ns), &c0s);
                let (py, phn) = pair(
                    alias,
                    sy,
                    shn,
                    y.len(ny),
                    h_n.len(ns),
                    &[f32::NAN],
                    &[f32::NAN],
                );
                let pcn = arg(scn, c_n.len(ns), &[f32::NAN]);
                let want = if px.0.is_null() || py.0.is_null() {
                    FRNN_ERR_NULL
                } else if overlap(py, phn) {
                    FRNN_ERR_ARGUMENT
                } else if t == 0 || b == 0 || past {
                    FRNN_ERR_ARGUMENT
                } else if px.1 != nx
                    || py.1 != ny
                    || any_wrong(&[(ph0, ns), (pc0, ns), (phn, ns), (pcn, ns)])
                {
                    FRNN_ERR_LENGTH
                } else if !lstm && any_given(&[pc0, pcn]) {
                    FRNN_ERR_ARGUMENT
                } else {
                    FRNN_OK
                };
                let training_c = c_int::from(training);
                // SAFETY: a live layer; each buffer valid for its length (`lengths` too: an
                // empty Vec's pointer is dangling but aligned and non-NULL).
                let rc = unsafe {
                    match &lens {
                        Some(ls) => frnn_forward_padded(
                            l,
                            t,
                            ls.as_ptr(),
                            ls.len(),
                            training_c,
                            px.0,
                            px.1,
                            ph0.0,
                            ph0.1,
                            pc0.0,
                            pc0.1,
                            py.0,
                            py.1,
                            phn.0,
                            phn.1,
                            pcn.0,
                            pcn.1,
                        ),
                        None => frnn_forward(
                            l, t, b, training_c, px.0, px.1, ph0.0, ph0.1, pc0.0, pc0.1, py.0,
                            py.1, phn.0, phn.1, pcn.0, pcn.1,
                        ),
                    }
                };
                assert_eq!(rc, want, "{what}");
                check_message(rc, &what);
                // A refused call changes nothing in the handle, whatever its T, B or lengths:
                // the pending backward of either kind stays as it was.
                if rc != FRNN_OK {
                    continue;
                }
                let expect = if lens.is_some() {
                    &mut padded_ws
                } else {
                    &mut fixed
                };
                let xs = &sx[..nx];
                let mode = if training {
                    Mode::Training
                } else {
                    Mode::Inference
                };
                let mut y_m = vec![0.0; ny];
                let mut hn_m = vec![0.0; ns];
                let mut cn_m = vec![0.0; ns];
                let init = InitialState {
                    h0: opt(ph0, sh0),
                    c0: opt(pc0, sc0),
                };
                let fin = FinalState {
                    h_n: Some(&mut hn_m),
                    c_n: lstm.then_some(&mut cn_m[..]),
                };
                let ws = match &lens {
                    Some(ls) => {
                        let mut ws = model.workspace(t, ls, mode).expect("model ws");
                        model
                            .forward(&mut ws, Direction::Forward, xs, init, &mut y_m, fin)
                            .expect("model forward_padded");
                        ModelWs::Padded(ws)
                    }
                    None => {
                        let mut ws = model.workspace(t, b, mode).expect("model workspace");
                        model
                            .forward(&mut ws, Direction::Forward, xs, init, &mut y_m, fin)
                            .expect("model forward");
                        ModelWs::Fixed(ws)
                    }
                };
                assert_eq!(bits(&sy[..ny]), bits(&y_m), "{what}: y");
                if !phn.0.is_null() {
                    assert_eq!(bits(&shn[..ns]), bits(&hn_m), "{what}: h_n");
                }
                if !pcn.0.is_null() {
                    assert_eq!(bits(&scn[..ns]), bits(&cn_m), "{what}: c_n");
                }
                if training {
                    expect.sizes = Some((t, b));
                    expect.pending = true;
                    expect.model_train = Some((ws, xs.to_vec()));
                }
            }
            Op::Backward {
                x,
                dy,
                dh_n,
                dc_n,
                dx,
                dh0,
                dc0,
                dw_ih,
                dw_hh,
                db_ih,
                db_hh,
                accumulate,
                quirk,
                padded,
            } => {
                let quirk = Quirk::of(quirk);
                let alias = quirk == Quirk::Alias;
                let (dc_n, dc0) = (quirk.c_buf(dc_n, lstm), quirk.c_buf(dc0, lstm));
                let expect = if padded { &mut padded_ws } else { &mut fixed };
                let (t, b) = expect.sizes.unwrap_or((1, 1));
                let (nx, ny, ns) = (t * b * i, t * b * h, b * h);
                let gh = g * h;
                let rights = [gh * i, gh * h, gh, gh];
                let x_fill = match &expect.model_train {
                    Some((_, xs)) if expect.pending => xs.clone(),
                    _ => values(&mut rng, nx.max(1), 1.0),
                };
                let up: Vec<Vec<f32>> = (0..3)
                    .map(|k| values(&mut rng, if k == 0 { ny } else { ns }.max(1), 1.0))
                    .collect();
                let dw_init: Vec<Vec<f32>> =
                    rights.iter().map(|&r| values(&mut rng, r, 1.0)).collect();
                let [sx, sdy, sdhn, sdcn, sdx, sdh0, sdc0, s0, s1, s2, s3] = &mut st;
                let px = arg(sx, x.len(nx), &x_fill);
                let pdy = arg(sdy, dy.len(ny), &up[0]);
                let pdhn = arg(sdhn, dh_n.len(ns), &up[1]);
                let pdcn = arg(sdcn, dc_n.len(ns), &up[2]);
                let (pdx, pdh0) = pair(
                    alias,
                    sdx,
                    sdh0,
                    dx.len(nx),
                    dh0.len(ns),
                    &[f32::NAN],
                    &[f32::NAN],
                );
                let pdc0 = arg(sdc0, dc0.len(ns), &[f32::NAN]);
                let dw_bufs = [dw_ih, dw_hh, db_ih, db_hh];
                let dw_stores = [s0, s1, s2, s3];
                let mut pdw = [(std::ptr::null_mut(), 0); 4];
                for (k, store) in dw_stores.into_iter().enumerate() {
                    pdw[k] = arg(store, dw_bufs[k].len(rights[k]), &dw_init[k]);
                }
                let want = if px.0.is_null() {
                    FRNN_ERR_NULL
                } else if overlap(pdx, pdh0) {
                    FRNN_ERR_ARGUMENT
                } else if any_wrong(&[
                    (pdw[0], rights[0]),
                    (pdw[1], rights[1]),
                    (pdw[2], rights[2]),
                    (pdw[3], rights[3]),
                ]) {
                    FRNN_ERR_LENGTH
                } else if !expect.pending {
                    FRNN_ERR_STATE
                } else if px.1 != nx
                    || any_wrong(&[
                        (pdy, ny),
                        (pdhn, ns),
                        (pdcn, ns),
                        (pdx, nx),
                        (pdh0, ns),
                        (pdc0, ns),
                    ])
                {
                    FRNN_ERR_LENGTH
                } else if !lstm && any_given(&[pdcn, pdc0]) {
                    FRNN_ERR_ARGUMENT
                } else {
                    FRNN_OK
                };
                let backward = if padded {
                    frnn_backward_padded
                } else {
                    frnn_backward
                };
                // SAFETY: a live layer; each buffer valid for its length.
                let rc = unsafe {
                    backward(
                        l,
                        px.0,
                        px.1,
                        pdy.0,
                        pdy.1,
                        pdhn.0,
                        pdhn.1,
                        pdcn.0,
                        pdcn.1,
                        pdx.0,
                        pdx.1,
                        pdh0.0,
                        pdh0.1,
                        pdc0.0,
                        pdc0.1,
                        pdw[0].0,
                        pdw[0].1,
                        pdw[1].0,
                        pdw[1].1,
                        pdw[2].0,
                        pdw[2].1,
                        pdw[3].0,
                        pdw[3].1,
                        c_int::from(accumulate),
                    )
                };
                assert_eq!(rc, want, "{what}");
                check_message(rc, &what);
                if rc != FRNN_OK {
                    continue;
                }
                expect.pending = false;
                let (ws, xs) = expect.model_train.as_mut().expect("a pending forward");
                // The C layer starts from the caller's gradients when accumulating.
                let start = |k: usize| {
                    if accumulate && !pdw[k].0.is_null() {
                        dw_init[k].clone()
                    } else {
                        vec![0.0; rights[k]]
                    }
                };
                let mut grads = LayerGrads {
                    weight_ih: start(0),
                    weight_hh: start(1),
                    bias_ih: start(2),
                    bias_hh: start(3),
                };
                let mut dx_m = vec![0.0; nx];
                let mut dh0_m = vec![0.0; ns];
                let mut dc0_m = vec![0.0; ns];
                let mode = if accumulate {
                    GradMode::Accumulate
                } else {
                    GradMode::Overwrite
                };
                let up = Upstream {
                    dy: opt(pdy, sdy),
                    dh_n: opt(pdhn, sdhn),
                    dc_n: opt(pdcn, sdcn),
                };
                let inputs = InputGrads {
                    dx: Some(&mut dx_m),
                    dh0: Some(&mut dh0_m),
                    dc0: lstm.then_some(&mut dc0_m[..]),
                };
                match ws {
                    ModelWs::Fixed(ws) => model.backward(ws, xs, up, &mut grads, inputs, mode),
                    ModelWs::Padded(ws) => model.backward(ws, xs, up, &mut grads, inputs, mode),
                }
                .expect("model backward");
                let outs: [(&str, CArg, &[f32]); 3] = [
                    ("dx", pdx, &dx_m),
                    ("dh0", pdh0, &dh0_m),
                    ("dc0", pdc0, &dc0_m),
                ];
                for (name, p, m) in outs {
                    if !p.0.is_null() {
                        // SAFETY: the store behind `p` holds `p.1` elements (checked above).
                        let got = unsafe { std::slice::from_raw_parts(p.0, p.1) };
                        assert_eq!(bits(got), bits(m), "{what}: {name}");
                    }
                }
                let model_dw = [
                    &grads.weight_ih,
                    &grads.weight_hh,
                    &grads.bias_ih,
                    &grads.bias_hh,
                ];
                for k in 0..4 {
                    if !pdw[k].0.is_null() {
                        // SAFETY: as above.
                        let got = unsafe { std::slice::from_raw_parts(pdw[k].0, pdw[k].1) };
                        assert_eq!(bits(got), bits(model_dw[k]), "{what}: weight grad {k}");
                    }
                }
            }
            Op::Step {
                batch,
                x,
                h: hb,
                c,
                quirk,
            } => {
                let quirk = Quirk::of(quirk);
                let alias = quirk == Quirk::Alias;
                let c = quirk.c_buf(c, lstm);
                let b = small_dim(batch, case.max_batch);
                let (nx, ns) = (b * i, b * h);
                let xs = values(&mut rng, nx.max(1), 1.0);
                let hs = values(&mut rng, ns.max(1), 1.0);
                let cs = values(&mut rng, ns.max(1), 1.0);
                let [sx, sh, sc, ..] = &mut st;
                let px = arg(sx, x.len(nx), &xs);
                let (ph, pc) = pair(alias, sh, sc, hb.len(ns), c.len(ns), &hs, &cs);
                let want = if px.0.is_null() || ph.0.is_null() || (lstm && pc.0.is_null()) {
                    FRNN_ERR_NULL
                } else if !lstm && any_given(&[pc]) {
                    FRNN_ERR_ARGUMENT
                } else if overlap(ph, pc) || b == 0 {
                    FRNN_ERR_ARGUMENT
                } else if px.1 != nx || ph.1 != ns || any_wrong(&[(pc, ns)]) {
                    FRNN_ERR_LENGTH
                } else {
                    FRNN_OK
                };
                // SAFETY: a live layer; each buffer valid for its length.
                let rc = unsafe { frnn_step(l, b, px.0, px.1, ph.0, ph.1, pc.0, pc.1) };
                assert_eq!(rc, want, "{what}");
                check_message(rc, &what);
                if rc != FRNN_OK {
                    continue;
                }
                let mut ws = model.workspace(1, b, Mode::Inference).expect("workspace");
                let mut h_m = vec![0.0; ns];
                let mut c_m = vec![0.0; ns];
                model
                    .forward(
                        &mut ws,
                        Direction::Forward,
                        &sx[..nx],
                        InitialState {
                            h0: Some(&hs[..ns]),
                            c0: lstm.then_some(&cs[..ns]),
                        },
                        &mut h_m,
                        FinalState {
                            h_n: None,
                            c_n: lstm.then_some(&mut c_m[..]),
                        },
                    )
                    .expect("model step");
                assert_eq!(bits(&sh[..ns]), bits(&h_m), "{what}: h");
                if lstm {
                    assert_eq!(bits(&sc[..ns]), bits(&c_m), "{what}: c");
                }
            }
            Op::SetThreads(k) => {
                let n = usize::from(k % 3);
                // SAFETY: a live layer.
                let rc = unsafe { frnn_layer_set_threads(l, n) };
                let want = if n == 0 { FRNN_ERR_ARGUMENT } else { FRNN_OK };
                assert_eq!(rc, want, "{what}");
                check_message(rc, &what);
            }
            Op::Sizes(mask) => {
                let (mut cc, mut ci, mut ch) = (-7, 0, 0);
                let pc: *mut c_int = if mask & 1 == 0 {
                    &mut cc
                } else {
                    std::ptr::null_mut()
                };
                let pi: *mut usize = if mask & 2 == 0 {
                    &mut ci
                } else {
                    std::ptr::null_mut()
                };
                let ph: *mut usize = if mask & 4 == 0 {
                    &mut ch
                } else {
                    std::ptr::null_mut()
                };
                // SAFETY: a live layer; each non-NULL output valid for one write.
                let rc = unsafe { frnn_layer_sizes(l, pc, pi, ph) };
                assert_eq!(rc, FRNN_OK, "{what}");
                let want = (
                    if pc.is_null() { -7 } else { cell_to_c(cell) },
                    if pi.is_null() { 0 } else { i },
                    if ph.is_null() { 0 } else { h },
                );
                assert_eq!((cc, ci, ch), want, "{what}");
            }
            Op::NullLayer => {
                let null = std::ptr::null_mut::<FrnnLayer>();
                let mut v = vec![0.0f32; 4];
                let p = v.as_mut_ptr();
                let np = std::ptr::null_mut::<f32>();
                // SAFETY: NULL handles are checked before any buffer is read.
                unsafe {
                    assert_eq!(
                        frnn_forward(null, 1, 1, 1, p, 1, np, 0, np, 0, p, 1, np, 0, np, 0),
                        FRNN_ERR_NULL
                    );
                    assert_eq!(
                        frnn_backward(
                            null, p, 1, np, 0, np, 0, np, 0, np, 0, np, 0, np, 0, np, 0, np, 0, np,
                            0, np, 0, 0
                        ),
                        FRNN_ERR_NULL
                    );
                    assert_eq!(frnn_step(null, 1, p, 1, p, 1, np, 0), FRNN_ERR_NULL);
                    assert_eq!(frnn_layer_set_threads(null, 1), FRNN_ERR_NULL);
                    assert_eq!(
                        frnn_layer_sizes(
                            null,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                            std::ptr::null_mut()
                        ),
                        FRNN_ERR_NULL
                    );
                    frnn_layer_free(null);
                }
            }
        }
    }
    // SAFETY: a live layer, freed once.
    unsafe { frnn_layer_free(l) };
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    if let Ok(case) = decode(&mut u) {
        run(&case);
    }
});
