//! Packed weights follow weight updates: after `weights_mut`, forward and backward use the new
//! values (bit-identical to a layer built from them), never a stale packed copy.

use fused_rnn::Direction;
use fused_rnn::{CellKind, FinalState, GradMode, InputGrads, Layer, Mode, Upstream};
use testkit::random::{RandomCase, dims};

fn pass(layer: &Layer<f32>, c: &RandomCase<f32>) -> Vec<u32> {
    let d = c.dims;
    let mut ws = layer.workspace(d.seq_len, d.batch, Mode::Training).unwrap();
    let mut y = vec![0.0f32; d.y_len()];
    layer
        .forward(
            &mut ws,
            Direction::Forward,
            &c.x,
            c.init(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
    let mut g = layer.zero_grads().unwrap();
    let mut dh0 = vec![0.0f32; d.state_len()];
    let up = Upstream {
        dy: c.dy(),
        ..Default::default()
    };
    let inputs = InputGrads {
        dh0: Some(&mut dh0),
        ..Default::default()
    };
    layer
        .backward(&mut ws, &c.x, up, &mut g, inputs, GradMode::Overwrite)
        .unwrap();
    [y, dh0, g.weight_hh]
        .iter()
        .flatten()
        .map(|v| v.to_bits())
        .collect()
}

#[test]
fn weights_mut_invalidates_the_packed_copies() {
    for (k, cell) in CellKind::ALL.into_iter().enumerate() {
        let d = dims(5, 3, 4, 9);
        let first = RandomCase::<f32>::new(cell, d, 70 + k as u64);
        let second = RandomCase::<f32>::new(cell, d, 90 + k as u64);
        let mut layer = Layer::new(cell, 4, 9, first.weights()).unwrap();
        let before = pass(&layer, &second);
        {
            let w = layer.weights_mut();
            w.weight_ih.copy_from_slice(&second.weight_ih);
            w.weight_hh.copy_from_slice(&second.weight_hh);
            w.bias_ih.copy_from_slice(&second.bias_ih);
            w.bias_hh.copy_from_slice(&second.bias_hh);
        }
        let fresh = Layer::new(cell, 4, 9, second.weights()).unwrap();
        let after = pass(&layer, &second);
        assert!(
            after == pass(&fresh, &second),
            "{}: stale packed weights after weights_mut",
            cell.name()
        );
        assert!(
            after != before,
            "{}: the update changed nothing",
            cell.name()
        );
    }
}
