//! Compiles `tests/test_capi.c` with the system C compiler against the static library cargo
//! built for this crate, and runs it. The expected values (every output and gradient, bit for
//! bit) come from the Rust API and reach the C program as a generated header, so the C side
//! checks that the ABI computes exactly what `fused_rnn::Layer` computes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use fused_rnn::interop::Direction;
use fused_rnn::interop::pytorch;
use fused_rnn::{
    CellKind, FinalState, GradMode, GruVariant, InitialState, InputGrads, Layer, LayerGrads,
    LayerWeights, Mode, StreamingLayer, Upstream,
};
use testkit::oracle::{backward_in, forward_from};

/// Deterministic U(-1, 1) values (a 64-bit LCG; no dependency needed).
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

struct Arrays {
    out: String,
}

impl Arrays {
    fn f32s(&mut self, name: &str, v: &[f32]) {
        let body: Vec<String> = v
            .iter()
            .map(|a| format!("0x{:08x}u", a.to_bits()))
            .collect();
        writeln!(
            self.out,
            "static const uint32_t {name}[{}] = {{{}}};",
            v.len().max(1),
            if body.is_empty() {
                "0".to_string()
            } else {
                body.join(",")
            }
        )
        .unwrap();
    }
    fn bytes(&mut self, name: &str, v: &[u8]) {
        let body: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        writeln!(
            self.out,
            "static const uint8_t {name}[{}] = {{{}}};",
            v.len(),
            body.join(",")
        )
        .unwrap();
    }
}

/// Training forward then backward with `mode` on `grads`; returns (y, h_n, c_n, dx, dh0, dc0),
/// `c_n` and `dc0` empty for a cell without a cell state.
#[allow(clippy::type_complexity)]
fn fwd_bwd(
    layer: &Layer<f32>,
    t: usize,
    b: usize,
    inp: &[Vec<f32>; 6],
    grads: &mut LayerGrads<f32>,
    mode: GradMode,
) -> [Vec<f32>; 6] {
    let [x, h0, c0, dy, dh_n, dc_n] = inp;
    let lstm = layer.cell().has_cell_state();
    let init = InitialState {
        h0: Some(h0),
        c0: lstm.then_some(&c0[..]),
    };
    let (y, hn, cn, mut ws) = forward_from(layer, x, (t, b), init);
    let up = Upstream {
        dy: Some(dy),
        dh_n: Some(dh_n),
        dc_n: lstm.then_some(&dc_n[..]),
    };
    let (dx, dh0, dc0) = backward_in(layer, &mut ws, x, up, grads, mode);
    [y, hn, cn, dx, dh0, dc0]
}

/// Emits one case's inputs and expected outputs as C arrays plus a `case_data` initializer.
fn emit_case(a: &mut Arrays, p: &str, cell: CellKind, cell_c: i32, seed: u64) -> String {
    let (t, b, i, h) = (4usize, 3usize, 3usize, 5usize);
    let layer = Layer::<f32>::with_seeded_init(cell, i, h, seed).unwrap();
    let lstm = cell.has_cell_state();
    let st = |v: Vec<f32>| if lstm { v } else { Vec::new() };
    let inp = [
        values(seed + 1, t * b * i),
        values(seed + 2, b * h).iter().map(|v| v * 0.5).collect(),
        st(values(seed + 3, b * h)),
        values(seed + 4, t * b * h),
        values(seed + 5, b * h),
        st(values(seed + 6, b * h)),
    ];
    let mut g1 = layer.zero_grads().unwrap();
    let out = fwd_bwd(&layer, t, b, &inp, &mut g1, GradMode::Overwrite);
    let mut g2 = g1.clone();
    let _ = fwd_bwd(&layer, t, b, &inp, &mut g2, GradMode::Accumulate);

    // Streaming: T single-step inference forwards from (h0, c0).
    let mut hs = inp[1].clone();
    let mut cs = inp[2].clone();
    let mut ws = layer.workspace(1, b, Mode::Inference).unwrap();
    for step in 0..t {
        let mut hn = vec![0.0; b * h];
        let mut cn = vec![0.0; b * h];
        layer
            .forward(
                &mut ws,
                Direction::Forward,
                &inp[0][step * b * i..(step + 1) * b * i],
                InitialState {
                    h0: Some(&hs),
                    c0: lstm.then_some(&cs[..]),
                },
                &mut hn,
                FinalState {
                    h_n: None,
                    c_n: lstm.then_some(&mut cn[..]),
                },
            )
            .unwrap();
        hs = hn;
        if lstm {
            cs = cn;
        }
    }

    // A padded batch of rows of lengths PAD_LENGTHS (training forward, backward overwriting).
    let lengths = [4usize, 0, 2];
    let mut pws = layer.workspace(t, &lengths, Mode::Training).unwrap();
    let (mut py, mut phn, mut pcn) = (vec![0.0; t * b * h], vec![0.0; b * h], vec![0.0; b * h]);
    layer
        .forward(
            &mut pws,
            Direction::Forward,
            &inp[0],
            InitialState {
                h0: Some(&inp[1]),
                c0: lstm.then_some(&inp[2][..]),
            },
            &mut py,
            FinalState {
                h_n: Some(&mut phn),
                c_n: lstm.then_some(&mut pcn[..]),
            },
        )
        .unwrap();
    let mut pg = layer.zero_grads().unwrap();
    let (mut pdx, mut pdh0, mut pdc0) = (vec![0.0; t * b * i], vec![0.0; b * h], vec![0.0; b * h]);
    layer
        .backward(
            &mut pws,
            &inp[0],
            Upstream {
                dy: Some(&inp[3]),
                dh_n: Some(&inp[4]),
                dc_n: lstm.then_some(&inp[5][..]),
            },
            &mut pg,
            InputGrads {
                dx: Some(&mut pdx),
                dh0: Some(&mut pdh0),
                dc0: lstm.then_some(&mut pdc0[..]),
            },
            GradMode::Overwrite,
        )
        .unwrap();

    let w = layer.weights();
    let named: Vec<(&str, Vec<f32>)> = vec![
        ("w_ih", w.weight_ih.to_vec()),
        ("w_hh", w.weight_hh.to_vec()),
        ("b_ih", w.bias_ih.to_vec()),
        ("b_hh", w.bias_hh.to_vec()),
        ("x", inp[0].clone()),
        ("h0", inp[1].clone()),
        ("c0", inp[2].clone()),
        ("dy", inp[3].clone()),
        ("dh_n", inp[4].clone()),
        ("dc_n", inp[5].clone()),
        ("y", out[0].clone()),
        ("h_n", out[1].clone()),
        ("c_n", out[2].clone()),
        ("dx", out[3].clone()),
        ("dh0", out[4].clone()),
        ("dc0", out[5].clone()),
        ("dw_ih", g1.weight_ih.clone()),
        ("dw_hh", g1.weight_hh.clone()),
        ("db_ih", g1.bias_ih.clone()),
        ("db_hh", g1.bias_hh.clone()),
        ("acc_dw_ih", g2.weight_ih.clone()),
        ("acc_dw_hh", g2.weight_hh.clone()),
        ("acc_db_ih", g2.bias_ih.clone()),
        ("acc_db_hh", g2.bias_hh.clone()),
        ("step_h", hs),
        ("step_c", st(cs)),
        ("pad_y", py),
        ("pad_h_n", phn),
        ("pad_c_n", st(pcn)),
        ("pad_dx", pdx),
        ("pad_dh0", pdh0),
        ("pad_dc0", st(pdc0)),
        ("pad_dw_ih", pg.weight_ih.clone()),
        ("pad_dw_hh", pg.weight_hh.clone()),
        ("pad_db_ih", pg.bias_ih.clone()),
        ("pad_db_hh", pg.bias_hh.clone()),
    ];
    let mut init = format!("{{ {cell_c}, {t}, {b}, {i}, {h},\n");
    for (n, v) in &named {
        a.f32s(&format!("{p}_{n}"), v);
        writeln!(init, "  {{ {p}_{n}, {} }},", v.len()).unwrap();
    }
    let bytes = pytorch::save_layers(&[(0, Direction::Forward, &layer)]).unwrap();
    a.bytes(&format!("{p}_st"), &bytes);
    write!(init, "  {p}_st, {} }}", bytes.len()).unwrap();
    init
}

/// The stream case: an LSTM with I = H = 128, B = 1, large enough for a two-thread stream to
/// split its steps over a worker. The C program makes the same weights and inputs with the
/// same generator (`values`, scaled in f32), so only the expected states are emitted: `h`
/// after each of `STREAM_T` steps from zero, `c` after the last, then one step after
/// `set_state(h0, c0)` and one after `reset`, all from a one-thread stream.
fn emit_stream_case(a: &mut Arrays) {
    const SEED: u64 = 500;
    let (t, i, h) = (6usize, 128usize, 128usize);
    let g = 4 * h;
    let scaled = |seed: u64, n: usize, k: f32| -> Vec<f32> {
        values(seed, n).iter().map(|v| v * k).collect()
    };
    let (w_ih, w_hh) = (scaled(SEED + 1, g * i, 0.05), scaled(SEED + 2, g * h, 0.05));
    let (b_ih, b_hh) = (scaled(SEED + 3, g, 0.05), scaled(SEED + 4, g, 0.05));
    let x = values(SEED + 5, t * i);
    let (h0, c0) = (values(SEED + 6, h), values(SEED + 7, h));
    let w = LayerWeights {
        weight_ih: &w_ih,
        weight_hh: &w_hh,
        bias_ih: &b_ih,
        bias_hh: &b_hh,
    };
    let layer = Layer::new(CellKind::Lstm, i, h, w).unwrap();
    let mut s = StreamingLayer::new(layer, 1).unwrap();
    let mut hs = Vec::new();
    for step in x.chunks_exact(i) {
        hs.extend_from_slice(s.step(step).unwrap());
    }
    let c_end = s.cell_state().unwrap().to_vec();
    s.set_state(&h0, Some(&c0)).unwrap();
    let after_set = s.step(&x[..i]).unwrap().to_vec();
    s.reset();
    let after_reset = s.step(&x[..i]).unwrap().to_vec();
    writeln!(
        a.out,
        "#define STREAM_SEED {SEED}u\n#define STREAM_T {t}\n#define STREAM_I {i}\n\
         #define STREAM_H {h}"
    )
    .unwrap();
    a.f32s("stream_h", &hs);
    a.f32s("stream_c_end", &c_end);
    a.f32s("stream_h_after_set", &after_set);
    a.f32s("stream_h_after_reset", &after_reset);
}

fn generate_header(path: &Path) {
    let mut a = Arrays { out: String::new() };
    a.out.push_str(
        "/* Generated by capi/tests/c_test.rs: inputs and the Rust API's outputs, as f32 bits. */\n\
         #include <stddef.h>\n#include <stdint.h>\n\
         typedef struct { const uint32_t *p; size_t n; } arr;\n\
         typedef struct { int cell; size_t T, B, I, H;\n\
           arr w_ih, w_hh, b_ih, b_hh, x, h0, c0, dy, dh_n, dc_n, y, h_n, c_n, dx, dh0, dc0,\n\
               dw_ih, dw_hh, db_ih, db_hh, acc_dw_ih, acc_dw_hh, acc_db_ih, acc_db_hh,\n\
               step_h, step_c, pad_y, pad_h_n, pad_c_n, pad_dx, pad_dh0, pad_dc0,\n\
               pad_dw_ih, pad_dw_hh, pad_db_ih, pad_db_hh;\n\
           const uint8_t *st; size_t st_len; } case_data;\n",
    );
    let cases = [
        emit_case(&mut a, "lstm", CellKind::Lstm, 2, 100),
        emit_case(&mut a, "gru", CellKind::Gru(GruVariant::ResetAfter), 3, 200),
        emit_case(
            &mut a,
            "grurb",
            CellKind::Gru(GruVariant::ResetBefore),
            4,
            300,
        ),
        emit_case(
            &mut a,
            "rnn",
            CellKind::Rnn(fused_rnn::RnnActivation::Tanh),
            0,
            400,
        ),
    ];
    emit_stream_case(&mut a);
    writeln!(
        a.out,
        "static const case_data CASES[] = {{\n{}\n}};\n#define N_CASES {}",
        cases.join(",\n"),
        cases.len()
    )
    .unwrap();
    std::fs::write(path, a.out).unwrap();
}

/// The static library cargo built for this crate in the same rustc run as the rlib this test
/// links (crate-type includes rlib for that reason), in the test binary's own `deps` folder.
fn staticlib() -> PathBuf {
    // Referencing the crate makes the dependency explicit.
    assert_eq!(fused_rnn_capi::FRNN_OK, 0);
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().join("libfused_rnn_capi.a");
    assert!(
        lib.exists(),
        "{} not found: cargo builds it with this crate's lib target",
        lib.display()
    );
    lib
}

/// Compiles `capi/tests/{source}` with the header, the directory `include` and the static
/// library into `exe`, as a user would (see the header for the link line).
fn compile_c(source: &str, include: &Path, exe: &Path) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .arg("-I")
        .arg(manifest.join("include"))
        .arg("-I")
        .arg(include)
        .arg(manifest.join("tests").join(source))
        .arg(staticlib())
        .arg("-o")
        .arg(exe)
        // What a Rust staticlib needs on Linux (rustc --print native-static-libs).
        .args([
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "C compilation of {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn c_program_matches_the_rust_api() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi_c_test");
    std::fs::create_dir_all(&dir).unwrap();
    generate_header(&dir.join("case_data.h"));
    let exe = dir.join("test_capi");
    compile_c("test_capi.c", &dir, &exe);
    let run = Command::new(&exe).output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "C test failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("all C API checks passed"), "{stdout}");
}

/// A C host under an address-space limit of 1.5 GB (`ulimit -v`) asks for a layer whose
/// packed weights, a stream or a thread pool cannot fit: every call returns an error code and
/// the process lives on (they used to abort it, or report a panic).
#[test]
fn c_host_survives_requests_past_memory() {
    if !cfg!(target_os = "linux") {
        eprintln!("skipped: needs sh and ulimit -v");
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("capi_c_oversized");
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("oversized");
    compile_c("oversized.c", &dir, &exe);
    let run = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1500000 && exec \"$0\"")
        .arg(&exe)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the C host failed ({}):\n{stdout}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("all oversized checks passed"), "{stdout}");
}
