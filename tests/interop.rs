//! PyTorch safetensors loading/saving and ONNX conversion: bitwise round trips, clear errors on
//! bad files, and the ONNX mapping checked numerically against a scalar implementation of the
//! ONNX operator equations written here, independently of the crate.

use fused_rnn::interop::Direction;
use fused_rnn::interop::onnx::{self, OnnxDims, OnnxOp, OnnxTensors};
use fused_rnn::interop::pytorch::{self, DtypePolicy, Param, StateDict, param_name};
use fused_rnn::{
    CellKind, Error, FinalState, Float, GruVariant, InitialState, Layer, Mode, RnnActivation,
};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use testkit::random::uniform;
use testkit::tolerance::{assert_close, rms};

fn bits<F: Float>(v: &[F]) -> Vec<u64> {
    v.iter().map(|a| a.to_f64().to_bits()).collect()
}

fn assert_same_layer<F: Float>(a: &Layer<F>, b: &Layer<F>) {
    assert_eq!(a.cell(), b.cell());
    assert_eq!(a.input_size(), b.input_size());
    assert_eq!(a.hidden_size(), b.hidden_size());
    let (wa, wb) = (a.weights(), b.weights());
    assert_eq!(bits(wa.weight_ih), bits(wb.weight_ih));
    assert_eq!(bits(wa.weight_hh), bits(wb.weight_hh));
    assert_eq!(bits(wa.bias_ih), bits(wb.bias_ih));
    assert_eq!(bits(wa.bias_hh), bits(wb.bias_hh));
}

/// Checks `r` is an `Error::Format` whose message contains every one of `parts`.
fn assert_format_err<T: std::fmt::Debug>(r: fused_rnn::Result<T>, parts: &[&str]) {
    match r {
        Err(e @ Error::Format { .. }) => {
            let msg = e.to_string();
            for p in parts {
                assert!(msg.contains(p), "message {msg:?} lacks {p:?}");
            }
        }
        other => panic!("expected Error::Format, got {other:?}"),
    }
}

fn pytorch_round_trip<F: Float>() {
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        let h = 5;
        // A 2-layer bidirectional module: layer 0 reads I = 3, layer 1 reads 2H.
        let l0f = Layer::<F>::with_seeded_init(cell, 3, h, 10 + ci as u64).unwrap();
        let l0r = Layer::<F>::with_seeded_init(cell, 3, h, 20 + ci as u64).unwrap();
        let l1f = Layer::<F>::with_seeded_init(cell, 2 * h, h, 30 + ci as u64).unwrap();
        let l1r = Layer::<F>::with_seeded_init(cell, 2 * h, h, 40 + ci as u64).unwrap();
        let entries = [
            (0, Direction::Forward, &l0f),
            (0, Direction::Reverse, &l0r),
            (1, Direction::Forward, &l1f),
            (1, Direction::Reverse, &l1r),
        ];
        let bytes = pytorch::save_layers(&entries).unwrap();
        let sd = StateDict::parse(&bytes).unwrap();
        assert_eq!(sd.names().len(), 16);
        assert!(sd.contains("weight_hh_l1_reverse"));
        assert_eq!(
            sd.shape("weight_ih_l1").unwrap(),
            vec![cell.gates() * h, 2 * h]
        );
        for (k, dir, l) in entries {
            let back = pytorch::load_layer::<F>(&bytes, cell, k, dir).unwrap();
            assert_same_layer(&back, l);
        }
        // PyTorch's metadata marker is written.
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(
            meta.metadata().as_ref().and_then(|m| m.get("format")),
            Some(&"pt".to_string())
        );
    }
}

#[test]
fn pytorch_save_load_is_bitwise_lossless_f32() {
    pytorch_round_trip::<f32>();
}

#[test]
fn pytorch_save_load_is_bitwise_lossless_f64() {
    pytorch_round_trip::<f64>();
}

#[test]
fn pytorch_dtype_policy() {
    let l64 = Layer::<f64>::with_seeded_init(CellKind::Lstm, 4, 3, 1).unwrap();
    let bytes = pytorch::save_layers(&[(0, Direction::Forward, &l64)]).unwrap();
    // Exact refuses f64 data for an f32 layer, naming both dtypes.
    assert_format_err(
        pytorch::load_layer::<f32>(&bytes, CellKind::Lstm, 0, Direction::Forward),
        &["weight_hh_l0", "F32", "F64"],
    );
    // Convert rounds to nearest.
    let l32 = pytorch::load_layer_converting::<f32>(&bytes, CellKind::Lstm, 0, Direction::Forward)
        .unwrap();
    for (a, b) in l32.weights().weight_ih.iter().zip(l64.weights().weight_ih) {
        assert_eq!(a.to_bits(), (*b as f32).to_bits());
    }
    // f32 -> f64 is exact, so converting back up and saving as f32 again is the same file.
    let bytes32 = pytorch::save_layers(&[(0, Direction::Forward, &l32)]).unwrap();
    let l64b =
        pytorch::load_layer_converting::<f64>(&bytes32, CellKind::Lstm, 0, Direction::Forward)
            .unwrap();
    for (a, b) in l64b.weights().weight_hh.iter().zip(l32.weights().weight_hh) {
        assert_eq!(*a, f64::from(*b));
    }
}

/// A safetensors file from (name, dtype, shape, element count); data are zeros.
fn raw_file(tensors: &[(&str, Dtype, Vec<usize>)]) -> Vec<u8> {
    let datas: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, d, s)| vec![0u8; s.iter().product::<usize>() * d.bitsize() / 8])
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&datas)
        .map(|((n, d, s), b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(views, None).unwrap()
}

#[test]
fn pytorch_load_errors_name_the_problem() {
    let gru = CellKind::Gru(GruVariant::ResetAfter);
    let good = |d: Dtype| {
        vec![
            ("weight_ih_l0", d, vec![9, 2]),
            ("weight_hh_l0", d, vec![9, 3]),
            ("bias_ih_l0", d, vec![9]),
            ("bias_hh_l0", d, vec![9]),
        ]
    };
    // The good file loads, with I and H inferred.
    let l = pytorch::load_layer::<f32>(&raw_file(&good(Dtype::F32)), gru, 0, Direction::Forward)
        .unwrap();
    assert_eq!((l.input_size(), l.hidden_size()), (2, 3));

    // Wrong layer index / direction / cell kind.
    let f = raw_file(&good(Dtype::F32));
    assert_format_err(
        pytorch::load_layer::<f32>(&f, gru, 1, Direction::Forward),
        &["weight_hh_l1", "absent", "weight_hh_l0"],
    );
    assert_format_err(
        pytorch::load_layer::<f32>(&f, gru, 0, Direction::Reverse),
        &["weight_hh_l0_reverse", "absent"],
    );
    assert_format_err(
        pytorch::load_layer::<f32>(&f, CellKind::Lstm, 0, Direction::Forward),
        &["weight_hh_l0", "[12, 3]", "[9, 3]", "lstm"],
    );
    // Unsupported dtype.
    let mut t = good(Dtype::F32);
    t[0].1 = Dtype::BF16;
    assert_format_err(
        pytorch::load_layer::<f32>(&raw_file(&t), gru, 0, Direction::Forward),
        &["weight_ih_l0", "F32 or F64", "BF16"],
    );
    // Shapes.
    for (idx, shape, parts) in [
        (0usize, vec![8, 2], vec!["weight_ih_l0", "[9, I]", "[8, 2]"]),
        (
            0,
            vec![9, 2, 1],
            vec!["weight_ih_l0", "[9, I]", "[9, 2, 1]"],
        ),
        (1, vec![9, 4], vec!["weight_hh_l0", "[12, 4]", "[9, 4]"]),
        (1, vec![27], vec!["weight_hh_l0", "2 axes", "[27]"]),
        (2, vec![8], vec!["bias_ih_l0", "[9]", "[8]"]),
        (3, vec![1, 9], vec!["bias_hh_l0", "[9]", "[1, 9]"]),
    ] {
        let mut t = good(Dtype::F64);
        t[idx].2 = shape;
        assert_format_err(
            pytorch::load_layer::<f64>(&raw_file(&t), gru, 0, Direction::Forward),
            &parts,
        );
    }
    // Missing bias (bias=False modules).
    let t = good(Dtype::F64)[..3].to_vec();
    assert_format_err(
        pytorch::load_layer::<f64>(&raw_file(&t), gru, 0, Direction::Forward),
        &["bias_hh_l0", "absent"],
    );
    // Zero-size tensors (H = 0 or I = 0) are a file the loader cannot use: a format error
    // naming the tensor, as the policy says of a wrong shape (not the ZeroDim of a caller's
    // dimensions).
    let t = vec![
        ("weight_ih_l0", Dtype::F64, vec![0, 2]),
        ("weight_hh_l0", Dtype::F64, vec![0, 0]),
        ("bias_ih_l0", Dtype::F64, vec![0]),
        ("bias_hh_l0", Dtype::F64, vec![0]),
    ];
    assert_format_err(
        pytorch::load_layer::<f64>(&raw_file(&t), gru, 0, Direction::Forward),
        &["weight_hh_l0", "H >= 1", "[0, 0]"],
    );
    let mut t = good(Dtype::F32);
    t[0].2 = vec![9, 0];
    assert_format_err(
        pytorch::load_layer::<f32>(&raw_file(&t), gru, 0, Direction::Forward),
        &["weight_ih_l0", "I >= 1", "[9, 0]"],
    );
    // Not a safetensors file at all, and a truncated one.
    assert_format_err(
        pytorch::load_layer::<f32>(b"not a file", gru, 0, Direction::Forward),
        &["safetensors"],
    );
    let f = raw_file(&good(Dtype::F32));
    assert_format_err(
        pytorch::load_layer::<f32>(&f[..f.len() - 4], gru, 0, Direction::Forward),
        &["safetensors"],
    );
}

#[test]
fn pytorch_prefixed_names_and_save_errors() {
    let l = Layer::<f32>::with_seeded_init(CellKind::Lstm, 2, 3, 5).unwrap();
    let g = Layer::<f32>::with_seeded_init(CellKind::Gru(GruVariant::ResetAfter), 2, 3, 5).unwrap();
    // Prefixed names as saved from a wrapping module.
    let bytes = pytorch::save_layers(&[(0, Direction::Forward, &l)]).unwrap();
    let sd = StateDict::parse(&bytes).unwrap();
    let names: Vec<String> = Param::ALL
        .iter()
        .map(|p| format!("enc.{}", param_name(*p, 0, Direction::Forward)))
        .collect();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Param::ALL
        .iter()
        .zip(&names)
        .map(|(p, n)| {
            let t = sd
                .tensor::<f32>(&param_name(*p, 0, Direction::Forward), DtypePolicy::Exact)
                .unwrap();
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (n.clone(), t.shape, b)
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            (
                n.as_str(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let pref = safetensors::serialize(views, None).unwrap();
    let sd = StateDict::parse(&pref).unwrap();
    let back: Layer<f32> = sd
        .layer_with_prefix(
            "enc.",
            CellKind::Lstm,
            0,
            Direction::Forward,
            DtypePolicy::Exact,
        )
        .unwrap();
    assert_same_layer(&back, &l);

    // Duplicates and mixed modules are refused.
    let r = pytorch::save_layers(&[(0, Direction::Forward, &l), (0, Direction::Forward, &l)]);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
    let r = pytorch::save_layers(&[(0, Direction::Forward, &l), (1, Direction::Forward, &g)]);
    assert!(matches!(r, Err(Error::InvalidArgument { .. })), "{r:?}");
}

// ---------------------------------------------------------------------------------------------
// ONNX: a scalar f64 implementation of the operators, straight from the ONNX specification.
// ---------------------------------------------------------------------------------------------

fn sigma(a: f64) -> f64 {
    1.0 / (1.0 + (-a).exp())
}

/// `sum_k M[row][k] v[k]` for a row-major `M` with `v.len()` columns.
fn dot_row(m: &[f64], row: usize, v: &[f64]) -> f64 {
    let n = v.len();
    m[row * n..(row + 1) * n]
        .iter()
        .zip(v)
        .map(|(a, b)| a * b)
        .sum()
}

/// Runs one direction (index 0) of ONNX `op` over `x [T, B, I]` from `h0`, `c0`; returns
/// `Y [T, B, H]` and the final `C` (LSTM).
///
/// Spec (onnx.ai/onnx/operators): `W [G*H, I]`, `R [G*H, H]`, `B = [Wb, Rb]`.
/// LSTM (gates i, o, f, c): `it = σ(Xt·Wiᵀ + Ht-1·Riᵀ + Wbi + Rbi)`, same for `ft`, `ot`;
/// `ct = tanh(Xt·Wcᵀ + Ht-1·Rcᵀ + Wbc + Rbc)`; `Ct = ft⊙Ct-1 + it⊙ct`; `Ht = ot⊙tanh(Ct)`.
/// GRU (gates z, r, h): `zt = σ(Xt·Wzᵀ + Ht-1·Rzᵀ + Wbz + Rbz)`, `rt` likewise;
/// `linear_before_reset = 0`: `ht = tanh(Xt·Whᵀ + (rt⊙Ht-1)·Rhᵀ + Rbh + Wbh)`;
/// `= 1`: `ht = tanh(Xt·Whᵀ + rt⊙(Ht-1·Rhᵀ + Rbh) + Wbh)`; `Ht = (1 - zt)⊙ht + zt⊙Ht-1`.
/// RNN: `Ht = f(Xt·Wᵀ + Ht-1·Rᵀ + Wb + Rb)`.
// Index loops read closest to the specification's per-unit equations.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
fn onnx_reference(
    op: OnnxOp,
    t_len: usize,
    batch: usize,
    i_sz: usize,
    h: usize,
    w: &[f64],
    r: &[f64],
    b: &[f64],
    x: &[f64],
    h0: &[f64],
    c0: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let g = op.cell().gates();
    let (wb, rb) = b.split_at(g * h);
    let mut y = vec![0.0; t_len * batch * h];
    let mut c_fin = vec![0.0; batch * h];
    for bi in 0..batch {
        let mut hs = h0[bi * h..(bi + 1) * h].to_vec();
        let mut cs = c0[bi * h..(bi + 1) * h].to_vec();
        for t in 0..t_len {
            let xt = &x[(t * batch + bi) * i_sz..(t * batch + bi + 1) * i_sz];
            // Xt·Wᵀ + Wb for a gate row j.
            let xw = |j: usize| dot_row(w, j, xt) + wb[j];
            let hr = |j: usize, hv: &[f64]| dot_row(r, j, hv) + rb[j];
            let mut hn = vec![0.0; h];
            match op {
                OnnxOp::Rnn(act) => {
                    for k in 0..h {
                        let a = xw(k) + hr(k, &hs);
                        hn[k] = match act {
                            RnnActivation::Tanh => a.tanh(),
                            RnnActivation::Relu => a.max(0.0),
                        };
                    }
                }
                OnnxOp::Lstm => {
                    let mut cn = vec![0.0; h];
                    for k in 0..h {
                        let it = sigma(xw(k) + hr(k, &hs));
                        let ot = sigma(xw(h + k) + hr(h + k, &hs));
                        let ft = sigma(xw(2 * h + k) + hr(2 * h + k, &hs));
                        let ct = (xw(3 * h + k) + hr(3 * h + k, &hs)).tanh();
                        cn[k] = ft * cs[k] + it * ct;
                        hn[k] = ot * cn[k].tanh();
                    }
                    cs = cn;
                }
                OnnxOp::Gru {
                    linear_before_reset,
                } => {
                    let z: Vec<f64> = (0..h).map(|k| sigma(xw(k) + hr(k, &hs))).collect();
                    let rg: Vec<f64> = (0..h).map(|k| sigma(xw(h + k) + hr(h + k, &hs))).collect();
                    let rh: Vec<f64> = (0..h).map(|k| rg[k] * hs[k]).collect();
                    for k in 0..h {
                        let j = 2 * h + k;
                        let cand = if linear_before_reset {
                            (xw(j) + rg[k] * (dot_row(r, j, &hs) + rb[j])).tanh()
                        } else {
                            (xw(j) + dot_row(r, j, &rh) + rb[j]).tanh()
                        };
                        hn[k] = (1.0 - z[k]) * cand + z[k] * hs[k];
                    }
                }
            }
            hs = hn;
            y[(t * batch + bi) * h..(t * batch + bi + 1) * h].copy_from_slice(&hs);
        }
        c_fin[bi * h..(bi + 1) * h].copy_from_slice(&cs);
    }
    (y, c_fin)
}

const ONNX_OPS: [OnnxOp; 5] = [
    OnnxOp::Rnn(RnnActivation::Tanh),
    OnnxOp::Rnn(RnnActivation::Relu),
    OnnxOp::Lstm,
    OnnxOp::Gru {
        linear_before_reset: false,
    },
    OnnxOp::Gru {
        linear_before_reset: true,
    },
];

#[test]
fn onnx_tensors_run_through_our_layer_equal_the_onnx_equations() {
    let (t_len, batch, i_sz, h) = (6, 3, 4, 5);
    for (oi, &op) in ONNX_OPS.iter().enumerate() {
        let mut rng = testkit::random::rng(500 + oi as u64);
        let g = op.cell().gates();
        let w: Vec<f64> = uniform(&mut rng, g * h * i_sz, -0.8, 0.8);
        let r: Vec<f64> = uniform(&mut rng, g * h * h, -0.8, 0.8);
        let b: Vec<f64> = uniform(&mut rng, 2 * g * h, -0.8, 0.8);
        let x: Vec<f64> = uniform(&mut rng, t_len * batch * i_sz, -1.0, 1.0);
        let h0: Vec<f64> = uniform(&mut rng, batch * h, -0.5, 0.5);
        let c0: Vec<f64> = uniform(&mut rng, batch * h, -1.0, 1.0);
        let (want_y, want_c) = onnx_reference(op, t_len, batch, i_sz, h, &w, &r, &b, &x, &h0, &c0);

        let dims = OnnxDims {
            input_size: i_sz,
            hidden_size: h,
            num_directions: 1,
        };
        let t = OnnxTensors {
            w: &w,
            r: &r,
            b: Some(&b),
            p: None,
        };
        let layer = onnx::from_onnx(op, dims, t, Direction::Forward).unwrap();
        assert_eq!(layer.cell(), op.cell());
        let lstm = layer.cell().has_cell_state();
        let mut ws = layer.workspace(t_len, batch, Mode::Inference).unwrap();
        let mut y = vec![f64::NAN; t_len * batch * h];
        let mut c_n = vec![f64::NAN; batch * h];
        let init = InitialState {
            h0: Some(&h0),
            c0: lstm.then_some(&c0[..]),
        };
        let fin = FinalState {
            h_n: None,
            c_n: lstm.then_some(&mut c_n[..]),
        };
        layer
            .forward(&mut ws, Direction::Forward, &x, init, &mut y, fin)
            .unwrap();
        // Both in f64; they differ in summation order and in how the sigmoid is evaluated
        // (here 1/(1+e^-a); the z flip of the reset-before GRU turns 1 - σ(a) into σ(-a)), a few
        // eps per value, chained over 6 steps.
        let ctx = format!("{op:?} y");
        assert_close(&ctx, &y, &want_y, 1e-12, rms(&want_y));
        if lstm {
            assert_close("LSTM c_n", &c_n, &want_c, 1e-12, rms(&want_c));
        }

        // The ONNX equations are not what our layer computes for the wrong variant: the test
        // can tell the GRUs apart (guards against a mapping that is the identity by accident).
        if let OnnxOp::Gru {
            linear_before_reset,
        } = op
        {
            let other = OnnxOp::Gru {
                linear_before_reset: !linear_before_reset,
            };
            let (y_other, _) =
                onnx_reference(other, t_len, batch, i_sz, h, &w, &r, &b, &x, &h0, &c0);
            let diff = y
                .iter()
                .zip(&y_other)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(diff > 1e-3, "{op:?}: variants indistinguishable ({diff})");
        }
    }
}

#[test]
fn onnx_round_trips_are_bitwise() {
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        // Layer -> ONNX -> layer.
        let l = Layer::<f32>::with_seeded_init(cell, 3, 4, 70 + ci as u64).unwrap();
        let o = onnx::to_onnx(&l);
        assert_eq!(o.op, OnnxOp::from_cell(cell));
        assert_eq!(o.op.cell(), cell);
        let back = onnx::from_onnx(o.op, o.dims(), o.tensors(), Direction::Forward).unwrap();
        assert_same_layer(&back, &l);

        // ONNX -> layer -> ONNX, with a bidirectional pair sliced by direction.
        let g = cell.gates();
        let (i_sz, h) = (3, 4);
        let mut rng = testkit::random::rng(80 + ci as u64);
        let w: Vec<f64> = uniform(&mut rng, 2 * g * h * i_sz, -1.0, 1.0);
        let r: Vec<f64> = uniform(&mut rng, 2 * g * h * h, -1.0, 1.0);
        let b: Vec<f64> = uniform(&mut rng, 2 * 2 * g * h, -1.0, 1.0);
        let dims = OnnxDims {
            input_size: i_sz,
            hidden_size: h,
            num_directions: 2,
        };
        let t = OnnxTensors {
            w: &w,
            r: &r,
            b: Some(&b),
            p: None,
        };
        let op = OnnxOp::from_cell(cell);
        let fwd = onnx::to_onnx(&onnx::from_onnx(op, dims, t, Direction::Forward).unwrap());
        let rev = onnx::to_onnx(&onnx::from_onnx(op, dims, t, Direction::Reverse).unwrap());
        let cat = |a: &[f64], b: &[f64]| [a, b].concat();
        assert_eq!(bits(&cat(&fwd.w, &rev.w)), bits(&w));
        assert_eq!(bits(&cat(&fwd.r, &rev.r)), bits(&r));
        assert_eq!(bits(&cat(&fwd.b, &rev.b)), bits(&b));
    }
}

#[test]
fn onnx_gate_mapping_is_explicit() {
    // Mark every ONNX row with its block number and read where it lands in our layout.
    let h = 2;
    let i_sz = 1;
    for (op, want) in [
        (OnnxOp::Lstm, vec![0.0f64, 2.0, 3.0, 1.0]),
        (
            OnnxOp::Gru {
                linear_before_reset: true,
            },
            vec![1.0, 0.0, 2.0],
        ),
        (
            OnnxOp::Gru {
                linear_before_reset: false,
            },
            vec![1.0, -0.0, 2.0],
        ),
    ] {
        let g = want.len();
        let w: Vec<f64> = (0..g * h).map(|j| (j / h) as f64).collect();
        let b: Vec<f64> = (0..2 * g * h)
            .map(|j| ((j / h) % g) as f64 + 10.0)
            .collect();
        let t = OnnxTensors {
            w: &w,
            r: &vec![0.0; g * h * h],
            b: Some(&b),
            p: None,
        };
        let dims = OnnxDims {
            input_size: i_sz,
            hidden_size: h,
            num_directions: 1,
        };
        let l = onnx::from_onnx(op, dims, t, Direction::Forward).unwrap();
        let got_blocks: Vec<f64> = l.weights().weight_ih.iter().step_by(h).copied().collect();
        assert_eq!(bits(&got_blocks), bits(&want), "{op:?}");
        let want_bias: Vec<f64> = want
            .iter()
            .map(|v| {
                if v.is_sign_negative() {
                    -(v.abs() + 10.0)
                } else {
                    v + 10.0
                }
            })
            .collect();
        let got_bias: Vec<f64> = l.weights().bias_hh.iter().step_by(h).copied().collect();
        assert_eq!(got_bias, want_bias, "{op:?}");
    }
}

#[test]
fn onnx_bad_input_is_refused() {
    let dims = OnnxDims {
        input_size: 2,
        hidden_size: 3,
        num_directions: 1,
    };
    let w = vec![0.0f32; 12 * 2];
    let r = vec![0.0f32; 12 * 3];
    let b = vec![0.0f32; 24];
    let t = OnnxTensors {
        w: &w,
        r: &r,
        b: Some(&b),
        p: None,
    };
    assert!(onnx::from_onnx(OnnxOp::Lstm, dims, t, Direction::Forward).is_ok());
    // B absent means zeros.
    let no_b = OnnxTensors { b: None, ..t };
    let l = onnx::from_onnx(OnnxOp::Lstm, dims, no_b, Direction::Forward).unwrap();
    assert!(l.weights().bias_ih.iter().all(|v| *v == 0.0));
    // Lengths.
    let short = OnnxTensors { w: &w[1..], ..t };
    assert!(matches!(
        onnx::from_onnx(OnnxOp::Lstm, dims, short, Direction::Forward),
        Err(Error::BufferLength { .. })
    ));
    let short_b = OnnxTensors {
        b: Some(&b[..12]),
        ..t
    };
    assert!(matches!(
        onnx::from_onnx(OnnxOp::Lstm, dims, short_b, Direction::Forward),
        Err(Error::BufferLength { .. })
    ));
    // A GRU reading LSTM-sized tensors.
    assert!(matches!(
        onnx::from_onnx(
            OnnxOp::Gru {
                linear_before_reset: true
            },
            dims,
            t,
            Direction::Forward
        ),
        Err(Error::BufferLength { .. })
    ));
    // Reverse of a single-direction operator; 3 directions.
    assert!(matches!(
        onnx::from_onnx(OnnxOp::Lstm, dims, t, Direction::Reverse),
        Err(Error::InvalidArgument { .. })
    ));
    let three = OnnxDims {
        num_directions: 3,
        ..dims
    };
    assert!(matches!(
        onnx::from_onnx(OnnxOp::Lstm, three, t, Direction::Forward),
        Err(Error::InvalidArgument { .. })
    ));
    // Peepholes: zeros are fine, anything else is refused.
    let p0 = vec![0.0f32; 9];
    let mut p1 = p0.clone();
    p1[4] = 0.5;
    assert!(
        onnx::from_onnx(
            OnnxOp::Lstm,
            dims,
            OnnxTensors { p: Some(&p0), ..t },
            Direction::Forward
        )
        .is_ok()
    );
    assert!(matches!(
        onnx::from_onnx(
            OnnxOp::Lstm,
            dims,
            OnnxTensors { p: Some(&p1), ..t },
            Direction::Forward
        ),
        Err(Error::InvalidArgument { what: "P", .. })
    ));
    // Zero hidden size.
    let zero = OnnxDims {
        hidden_size: 0,
        ..dims
    };
    let e: [f32; 0] = [];
    let t0 = OnnxTensors {
        w: &e,
        r: &e,
        b: Some(&e),
        p: None,
    };
    assert!(matches!(
        onnx::from_onnx(OnnxOp::Lstm, zero, t0, Direction::Forward),
        Err(Error::ZeroDim { .. })
    ));
}
