//! A long series in windows, the state carried from one window to the next: the forward is
//! bit for bit one pass over the whole series, and chaining the windows' backward passes
//! (each window's `dh0`/`dc0` as the previous window's `dh_n`/`dc_n`) is full BPTT. Truncated
//! BPTT is the same with that link cut (`dh_n = 0`), which the test also checks differs.

use fused_rnn::{CellKind, GradMode, InitialState, Layer, LayerGrads, Upstream};
use testkit::oracle::{backward_in, forward_from};
use testkit::random::{RandomCase, dims};
use testkit::tolerance::{assert_close, rms};

/// Rows `t0..t1` of a time-major `[T, B, w]` tensor.
fn steps(m: &[f64], t0: usize, t1: usize, bw: usize) -> &[f64] {
    &m[t0 * bw..t1 * bw]
}

fn grads_of(g: &LayerGrads<f64>) -> [&[f64]; 4] {
    [&g.weight_ih, &g.weight_hh, &g.bias_ih, &g.bias_hh]
}

#[test]
fn windows_with_the_state_carried_are_one_pass_and_chained_backward_is_full_bptt() {
    let d = dims(12, 3, 4, 6);
    let (t, b, i, h) = (d.seq_len, d.batch, d.input, d.hidden);
    let cut = 5;
    for cell in CellKind::ALL {
        let c = RandomCase::<f64>::new(cell, d, 21);
        let lstm = cell.has_cell_state();
        let layer = Layer::new(cell, i, h, c.weights()).expect("layer");
        let (bi, bh) = (b * i, b * h);
        let dy = c.dy().unwrap();

        // One pass over the whole series.
        let (y, hn, cn, mut ws) = forward_from(&layer, &c.x, (t, b), c.init());
        let mut full = layer.zero_grads().unwrap();
        let overwrite = GradMode::Overwrite;
        let (dx, dh0, dc0) = backward_in(&layer, &mut ws, &c.x, c.upstream(), &mut full, overwrite);

        // Two windows, the state carried.
        let (x1, x2) = (steps(&c.x, 0, cut, bi), steps(&c.x, cut, t, bi));
        let (y1, h1, c1, mut ws1) = forward_from(&layer, x1, (cut, b), c.init());
        let carried = InitialState {
            h0: Some(&h1),
            c0: lstm.then_some(&c1[..]),
        };
        let (y2, h2, c2, mut ws2) = forward_from(&layer, x2, (t - cut, b), carried);
        let name = cell.name();
        assert_eq!([y1, y2].concat(), y, "{name}: y of the windows");
        assert_eq!(h2, hn, "{name}: h_n");
        if lstm {
            assert_eq!(c2, cn, "{name}: c_n");
        }

        // Backward, last window first, its dh0 entering the first window as dh_n.
        let mut chained = layer.zero_grads().unwrap();
        let last = Upstream {
            dy: Some(steps(dy, cut, t, bh)),
            ..c.upstream()
        };
        let (dx2, dh_mid, dc_mid) =
            backward_in(&layer, &mut ws2, x2, last, &mut chained, overwrite);
        // Truncated BPTT would cut the link: keep a copy of the first window's workspace state
        // for that by running its forward again.
        let (_, _, _, mut ws1_cut) = forward_from(&layer, x1, (cut, b), c.init());
        let first = Upstream {
            dy: Some(steps(dy, 0, cut, bh)),
            dh_n: Some(&dh_mid),
            dc_n: lstm.then_some(&dc_mid[..]),
        };
        let accumulate = GradMode::Accumulate;
        let (dx1, dh0_w, dc0_w) =
            backward_in(&layer, &mut ws1, x1, first, &mut chained, accumulate);
        // Sums over the same terms in another order (the weight gradients add two windows'
        // GEMMs instead of one GEMM over all rows): 1e-12 with the RMS floor in f64. The input
        // gradients are per-row chains and must agree to the same bound.
        assert_close(
            &format!("{name} dx"),
            &[dx1, dx2].concat(),
            &dx,
            1e-12,
            rms(&dx),
        );
        assert_close(&format!("{name} dh0"), &dh0_w, &dh0, 1e-12, rms(&dh0));
        if lstm {
            assert_close(&format!("{name} dc0"), &dc0_w, &dc0, 1e-12, rms(&dc0));
        }
        for (k, (g, w)) in grads_of(&chained)
            .into_iter()
            .zip(grads_of(&full))
            .enumerate()
        {
            assert_close(&format!("{name} grad {k}"), g, w, 1e-12, rms(w));
        }

        // Cutting the link (truncated BPTT) loses the gradient that flows back from the
        // second window: the first window's dh0 changes.
        let zeros = vec![0.0; bh];
        let mut truncated = layer.zero_grads().unwrap();
        let cut_link = Upstream {
            dy: Some(steps(dy, 0, cut, bh)),
            dh_n: Some(&zeros),
            dc_n: lstm.then_some(&zeros[..]),
        };
        let (_, dh0_cut, _) = backward_in(
            &layer,
            &mut ws1_cut,
            x1,
            cut_link,
            &mut truncated,
            overwrite,
        );
        let diff = dh0_cut
            .iter()
            .zip(&dh0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            diff > 1e-6 * rms(&dh0),
            "{name}: truncation should change dh0 (max difference {diff})"
        );
    }
}
