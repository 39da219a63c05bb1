//! The streaming layer against the sequence forward: step by step and `run`, both bit for bit
//! (the same kernels on the same data), and state get/set/reset.

use fused_rnn::{CellKind, Error, Float, Isa, Layer, StreamingLayer};
use testkit::oracle::inference_forward;
use testkit::random::{RandomCase, dims};

fn check<F: Float>(cell: CellKind, isa: Isa, seed: u64) {
    for &(t, b, i, h) in &[(1, 1, 3, 5), (12, 3, 7, 9), (40, 2, 16, 33)] {
        let d = dims(t, b, i, h);
        let c = RandomCase::<F>::new(cell, d, seed + (t * 100 + h) as u64);
        let mut layer = Layer::new(cell, i, h, c.weights()).unwrap();
        layer.set_isa(isa).unwrap();
        let (y, h_n, c_n) = inference_forward(&layer, &c);
        let ctx = format!("{} {} T={t} B={b} I={i} H={h}", isa.name(), cell.name());

        let mut s = StreamingLayer::new(layer.clone(), b).unwrap();
        s.set_state(c.h0().unwrap(), c.c0()).unwrap();
        let mut y_stream = Vec::with_capacity(y.len());
        for step in c.x.chunks_exact(b * i) {
            y_stream.extend_from_slice(s.step(step).unwrap());
        }
        // The step runs the sequence forward's kernels on the same data (the input projection
        // too: the same packed GEMM, each element summed over k in order), so it is exact.
        let bits = |v: &[F]| v.iter().map(|a| a.to_f64().to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&y_stream),
            bits(&y),
            "{ctx}: step differs from forward"
        );
        assert_eq!(bits(s.hidden_state()), bits(&h_n), "{ctx}: step's h_n");
        assert_eq!(
            bits(s.cell_state().unwrap_or_default()),
            bits(&c_n),
            "{ctx}: step's c_n"
        );
        // `run` is the sequence forward: bit for bit.
        s.set_state(c.h0().unwrap(), c.c0()).unwrap();
        let mut y_run = vec![F::ZERO; y.len()];
        s.run(&c.x, &mut y_run).unwrap();
        assert_eq!(bits(&y_run), bits(&y), "{ctx}: run differs from forward");
        assert_eq!(
            bits(s.hidden_state()),
            bits(&h_n),
            "{ctx}: run's final state differs"
        );

        // reset() is a zero state.
        s.reset();
        assert!(s.hidden_state().iter().all(|v| *v == F::ZERO));
        if let Some(cs) = s.cell_state() {
            assert!(cs.iter().all(|v| *v == F::ZERO));
        }
    }
}

#[test]
fn stream_matches_sequence_forward_f64() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            check::<f64>(cell, isa, 31);
        }
    }
}

#[test]
fn stream_matches_sequence_forward_f32() {
    for isa in Isa::available() {
        for cell in CellKind::ALL {
            check::<f32>(cell, isa, 37);
        }
    }
}

#[test]
fn stream_state_api_validates() {
    for cell in CellKind::ALL {
        let layer = Layer::<f32>::with_seeded_init(cell, 3, 4, 1).unwrap();
        let mut s = StreamingLayer::new(layer, 2).unwrap();
        assert!(matches!(s.step(&[0.0; 5]), Err(Error::BufferLength { .. })));
        assert!(matches!(
            s.set_state(&[0.0; 7], None),
            Err(Error::BufferLength { .. })
        ));
        let c = [0.0f32; 8];
        let r = s.set_state(&[0.0; 8], Some(&c));
        assert_eq!(r.is_ok(), cell.has_cell_state(), "{r:?}");
        let r = s.set_state(&[0.0; 8], None);
        assert_eq!(r.is_ok(), !cell.has_cell_state(), "{r:?}");
        let mut y = vec![0.0f32; 8];
        assert!(matches!(
            s.run(&[0.0; 5], &mut y),
            Err(Error::BufferLength { .. })
        ));
        assert!(matches!(
            s.run(&[], &mut y),
            Err(Error::BufferLength { .. })
        ));
        assert!(matches!(
            s.run(&[0.0; 6], &mut y[..7]),
            Err(Error::BufferLength { .. })
        ));
        assert!(s.run(&[0.0; 6], &mut y).is_ok());
        let layer = Layer::<f32>::with_seeded_init(cell, 3, 4, 1).unwrap();
        assert!(matches!(
            StreamingLayer::new(layer, 0),
            Err(Error::ZeroDim { .. })
        ));
    }
}
