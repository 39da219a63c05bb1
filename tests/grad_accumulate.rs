//! `GradMode::Accumulate` adds a backward's weight and bias gradients to what the buffers hold:
//! a backward over sequence A that overwrites, then one over sequence B that accumulates,
//! leaves the sum of the two separate gradients, for every cell kind, on one thread and on two
//! (where the weight gradients and the bias sums are split over threads), the same bits on both.

use fused_rnn::Direction;
use fused_rnn::{
    CellKind, FinalState, GradMode, InputGrads, Layer, LayerGrads, Mode, Upstream, Workspace,
};
use testkit::random::{RandomCase, dims};
use testkit::tolerance::{assert_close, rms};

/// A training forward over `c`'s `x` from its initial state, then a backward of its `dy` into
/// `grads` in `mode`.
fn backward_into(
    layer: &Layer<f64>,
    ws: &mut Workspace<f64>,
    c: &RandomCase<f64>,
    grads: &mut LayerGrads<f64>,
    mode: GradMode,
) {
    let d = c.dims;
    let mut y = vec![0.0; d.y_len()];
    layer
        .forward(
            ws,
            Direction::Forward,
            &c.x,
            c.init(),
            &mut y,
            FinalState::default(),
        )
        .unwrap();
    let up = Upstream {
        dy: c.dy(),
        ..Default::default()
    };
    layer
        .backward(ws, &c.x, up, grads, InputGrads::default(), mode)
        .unwrap();
}

fn parts(g: &LayerGrads<f64>) -> [(&'static str, &[f64]); 4] {
    [
        ("weight_ih", &g.weight_ih),
        ("weight_hh", &g.weight_hh),
        ("bias_ih", &g.bias_ih),
        ("bias_hh", &g.bias_hh),
    ]
}

#[test]
fn accumulate_adds_to_the_previous_gradients() {
    // B = 8 and I = H = 192: every cell splits by rows on two threads (a step's work is at
    // least 2^18 multiply-adds) and the bias sums' G*H >= 128 columns split too.
    let d = dims(3, 8, 192, 192);
    for (k, cell) in CellKind::ALL.into_iter().enumerate() {
        let a = RandomCase::<f64>::new(cell, d, 300 + k as u64);
        let b = RandomCase::<f64>::new(cell, d, 400 + k as u64);
        let mut accumulated: Vec<LayerGrads<f64>> = Vec::new();
        for threads in [1, 2] {
            let ctx = format!("{} threads={threads}", cell.name());
            let mut layer = Layer::new(cell, d.input, d.hidden, a.weights()).unwrap();
            layer.set_threads(threads).unwrap();
            let mut ws = layer.workspace(d.seq_len, d.batch, Mode::Training).unwrap();
            let (mut ga, mut gb, mut sum) = (
                layer.zero_grads().unwrap(),
                layer.zero_grads().unwrap(),
                layer.zero_grads().unwrap(),
            );
            backward_into(&layer, &mut ws, &a, &mut ga, GradMode::Overwrite);
            backward_into(&layer, &mut ws, &b, &mut gb, GradMode::Overwrite);
            // Stale values that overwriting must drop.
            for v in [
                &mut sum.weight_ih,
                &mut sum.weight_hh,
                &mut sum.bias_ih,
                &mut sum.bias_hh,
            ] {
                v.fill(1e6);
            }
            backward_into(&layer, &mut ws, &a, &mut sum, GradMode::Overwrite);
            backward_into(&layer, &mut ws, &b, &mut sum, GradMode::Accumulate);
            for ((name, got), ((_, ga), (_, gb))) in parts(&sum)
                .into_iter()
                .zip(parts(&ga).into_iter().zip(parts(&gb)))
            {
                let want: Vec<f64> = ga.iter().zip(gb).map(|(x, y)| x + y).collect();
                // f64 sums of at most T·B = 24 products and two partial results, against the
                // same sums taken separately and added: a few ulp of the tensor's scale. A
                // missed or doubled term is off by the whole gradient.
                let floor = rms(&want);
                assert_close(&format!("{ctx} {name}"), got, &want, 1e-12, floor);
            }
            accumulated.push(sum);
        }
        for ((name, one), (_, two)) in parts(&accumulated[0])
            .into_iter()
            .zip(parts(&accumulated[1]))
        {
            assert!(
                one.iter().zip(two).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{}: accumulated {name} differs between 1 and 2 threads",
                cell.name()
            );
        }
    }
}
