//! Run-to-run determinism: the same inputs give the same bits, for every cell kind, f32 and
//! f64, on every ISA path: forward + backward with fresh workspaces and with one reused
//! workspace (and reused, dirty gradient buffers under `GradMode::Overwrite`), and the
//! streaming layer stepped twice from `reset`. And the AVX-512 path gives the AVX2 path's bits.

use fused_rnn::{CellKind, Dims, Float, Isa, Layer, LayerGrads, Mode, StreamingLayer, Workspace};
use testkit::oracle::fused_pass_in;
use testkit::random::{RandomCase, dims};

/// Every output and gradient of one forward + backward, as bit patterns.
fn forward_backward<F: Float>(
    layer: &Layer<F>,
    c: &RandomCase<F>,
    ws: &mut Workspace<F>,
    grads: &mut LayerGrads<F>,
) -> Vec<(&'static str, Vec<u64>)> {
    let pass = fused_pass_in(layer, c, ws, grads).outputs();
    let bits = |v: Vec<f64>| v.iter().map(|a| a.to_bits()).collect();
    pass.into_iter().map(|(name, v)| (name, bits(v))).collect()
}

fn assert_same(ctx: &str, a: &[(&str, Vec<u64>)], b: &[(&str, Vec<u64>)]) {
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(b) {
        if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
            panic!(
                "{ctx} {name}: element {i} differs between runs: {:#x} vs {:#x}",
                x[i], y[i]
            );
        }
        assert_eq!(x.len(), y.len(), "{ctx} {name}: length");
    }
}

const SHAPES: [(usize, usize, usize, usize); 2] = [(6, 3, 5, 9), (3, 2, 17, 16)];

fn layer_twice<F: Float>(cell: CellKind, isa: Isa) {
    for (n, &(t, b, i, h)) in SHAPES.iter().enumerate() {
        let d: Dims = dims(t, b, i, h);
        let c = RandomCase::<F>::new(cell, d, 500 + n as u64);
        let mut layer = Layer::new(cell, i, h, c.weights()).unwrap();
        layer.set_isa(isa).unwrap();
        let ctx = format!("{} {} T={t} B={b} I={i} H={h}", cell.name(), isa.name());
        let fresh = |layer: &Layer<F>| {
            let mut ws = layer.workspace(t, b, Mode::Training).unwrap();
            let mut grads = layer.zero_grads().unwrap();
            forward_backward(layer, &c, &mut ws, &mut grads)
        };
        let first = fresh(&layer);
        assert_same(&format!("{ctx} fresh"), &first, &fresh(&layer));
        // One workspace and one gradient buffer reused; Overwrite must not see old contents.
        let mut ws = layer.workspace(t, b, Mode::Training).unwrap();
        let mut grads = layer.zero_grads().unwrap();
        for k in 0..3 {
            let again = forward_backward(&layer, &c, &mut ws, &mut grads);
            assert_same(&format!("{ctx} reused workspace, run {k}"), &first, &again);
        }
        // A clone of the layer is the same layer.
        assert_same(
            &format!("{ctx} cloned layer"),
            &first,
            &fresh(&layer.clone()),
        );
    }
}

fn stream_twice<F: Float>(cell: CellKind, isa: Isa) {
    for (n, &(t, b, i, h)) in SHAPES.iter().enumerate() {
        let c = RandomCase::<F>::new(cell, dims(t, b, i, h), 700 + n as u64);
        let mut layer = Layer::new(cell, i, h, c.weights()).unwrap();
        layer.set_isa(isa).unwrap();
        let ctx = format!("{} {} T={t} B={b} I={i} H={h}", cell.name(), isa.name());
        let mut s = StreamingLayer::new(layer.clone(), b).unwrap();
        let steps = |s: &mut StreamingLayer<F>| {
            let mut out = Vec::new();
            for x_t in c.x.chunks_exact(b * i) {
                out.extend(s.step(x_t).unwrap().iter().map(|a| a.to_f64().to_bits()));
            }
            out.extend(
                s.cell_state()
                    .unwrap_or(&[])
                    .iter()
                    .map(|a| a.to_f64().to_bits()),
            );
            out
        };
        let first = steps(&mut s);
        s.reset();
        assert_eq!(first, steps(&mut s), "{ctx}: second pass after reset");
        let mut other = StreamingLayer::new(layer, b).unwrap();
        assert_eq!(first, steps(&mut other), "{ctx}: a second stream");
    }
}

#[test]
fn layer_forward_backward_is_deterministic() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            layer_twice::<f32>(cell, isa);
            layer_twice::<f64>(cell, isa);
        }
    }
}

#[test]
fn streaming_is_deterministic() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            stream_twice::<f32>(cell, isa);
            stream_twice::<f64>(cell, isa);
        }
    }
}

/// The AVX-512 path runs the GEMMs on 512-bit registers and everything else as the AVX2 path
/// does, and every GEMM output element is the same chain of fused multiply-adds: the results
/// must be the AVX2 path's, bit for bit. The shapes reach every tile of the AVX-512 kernel: 1-6
/// rows (B = 13 is two full 6-row tiles and one row; the weight-gradient GEMMs' rows are the
/// gate columns), partial panels (H = 40, 70: not multiples of 16), panel counts that are not
/// multiples of 4, K beyond one 256-deep chunk of the weight gradients (I + H = 370), and two
/// threads (row shards, hidden-unit slices, split weight gradients, the streaming workers).
#[test]
fn avx512_path_equals_avx2_path_bit_for_bit() {
    if !Isa::Avx512.is_available() {
        println!("no AVX-512F on this CPU: nothing to compare");
        return;
    }
    for cell in CellKind::ALL {
        for (n, &(t, b, i, h)) in [(5, 13, 37, 40), (3, 1, 300, 70), (2, 7, 16, 16)]
            .iter()
            .enumerate()
        {
            let c = RandomCase::<f32>::new(cell, dims(t, b, i, h), 900 + n as u64);
            for threads in [1, 2] {
                let ctx = format!("{} T={t} B={b} I={i} H={h} threads={threads}", cell.name());
                let run = |isa: Isa| {
                    let mut layer = Layer::new(cell, i, h, c.weights()).unwrap();
                    layer.set_isa(isa).unwrap();
                    layer.set_threads(threads).unwrap();
                    let mut ws = layer.workspace(t, b, Mode::Training).unwrap();
                    let mut grads = layer.zero_grads().unwrap();
                    let mut out = forward_backward(&layer, &c, &mut ws, &mut grads);
                    let mut s = StreamingLayer::new(layer, b).unwrap();
                    let mut steps = Vec::new();
                    for x_t in c.x.chunks_exact(b * i) {
                        steps.extend(s.step(x_t).unwrap().iter().map(|a| a.to_f64().to_bits()));
                    }
                    out.push(("streamed h", steps));
                    out
                };
                assert_same(&ctx, &run(Isa::Avx2Fma), &run(Isa::Avx512));
            }
        }
    }
}
