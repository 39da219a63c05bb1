//! Random stacks (cell, 1-3 layers, one or both directions, fixed or padded batches, 1 or 2
//! threads, f32 and f64) against the same stack composed by hand from single-layer passes on
//! one thread: each `(layer, direction)` run alone in its direction, the directions' outputs
//! concatenated (forward half first) as the next layer's input, and in backward the
//! directions' input gradients summed (forward first) into the layer below. Outputs, final
//! states, `dx`, `dh0`, `dc0` and every weight gradient must agree bit for bit (NaN payloads
//! aside): the stack adds nothing to the layers' arithmetic, and thread counts change no bit.
#![no_main]

use arbitrary::Unstructured;
use fused_rnn::{
    Batch, CellKind, Direction, Directions, FinalState, Float, GradMode, InitialState, InputGrads,
    Mode, Stack, Upstream,
};
use libfuzzer_sys::fuzz_target;
use testkit::random::SplitMix;

fn bits<F: Float>(v: &[F]) -> Vec<u64> {
    v.iter()
        .map(|a| {
            let x = a.to_f64();
            if x.is_nan() { u64::MAX } else { x.to_bits() }
        })
        .collect()
}

fn values<F: Float>(rng: &mut SplitMix, n: usize) -> Vec<F> {
    (0..n).map(|_| F::from_f64(rng.unit())).collect()
}

/// Everything a training pass gives.
#[derive(PartialEq, Debug)]
struct Out {
    y: Vec<u64>,
    h_n: Vec<u64>,
    c_n: Vec<u64>,
    dx: Vec<u64>,
    dh0: Vec<u64>,
    dc0: Vec<u64>,
    grads: Vec<Vec<u64>>,
}

fn run<F: Float>(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let cell = CellKind::ALL[u.choose_index(CellKind::ALL.len())?];
    let l = u.int_in_range(1..=3)?;
    let dirs = if u.arbitrary()? {
        Directions::Both
    } else {
        Directions::Forward
    };
    let d = dirs.count();
    let (i, h) = (u.int_in_range(1..=6)?, u.int_in_range(1..=9)?);
    let (t, b) = (u.int_in_range(1..=6)?, u.int_in_range(1..=4)?);
    let lengths: Option<Vec<usize>> = if u.arbitrary()? {
        Some(
            (0..b)
                .map(|_| u.int_in_range(0..=t))
                .collect::<arbitrary::Result<_>>()?,
        )
    } else {
        None
    };
    let threads = u.int_in_range(1..=2)?;
    let seed: u64 = u.arbitrary()?;
    let batch = match &lengths {
        Some(l) => Batch::Padded(l),
        None => Batch::Fixed(b),
    };
    let mut stack = Stack::<F>::with_seeded_init(cell, i, h, l, dirs, seed).unwrap();
    stack.set_threads(threads).unwrap();
    let mut rng = SplitMix(seed ^ 0x5eed);
    let s = l * d * b * h;
    let lstm = cell.has_cell_state();
    let x = values::<F>(&mut rng, t * b * i);
    let (h0, c0) = (values::<F>(&mut rng, s), values::<F>(&mut rng, s));
    let dy = values::<F>(&mut rng, t * b * d * h);
    let (dh_n, dc_n) = (values::<F>(&mut rng, s), values::<F>(&mut rng, s));
    let c0o = lstm.then_some(&c0[..]);
    let dc_no = lstm.then_some(&dc_n[..]);

    // The stack.
    let got = {
        let mut ws = stack.workspace(t, batch, Mode::Training).unwrap();
        let (mut y, mut hn, mut cn) = (vec![F::ZERO; dy.len()], vec![F::ZERO; s], vec![F::ZERO; s]);
        stack
            .forward(
                &mut ws,
                &x,
                InitialState {
                    h0: Some(&h0),
                    c0: c0o,
                },
                &mut y,
                FinalState {
                    h_n: Some(&mut hn),
                    c_n: lstm.then_some(&mut cn[..]),
                },
            )
            .unwrap();
        let mut grads = stack.zero_grads().unwrap();
        let (mut dx, mut dh0, mut dc0) =
            (vec![F::ZERO; x.len()], vec![F::ZERO; s], vec![F::ZERO; s]);
        stack
            .backward(
                &mut ws,
                &x,
                Upstream {
                    dy: Some(&dy),
                    dh_n: Some(&dh_n),
                    dc_n: dc_no,
                },
                &mut grads,
                InputGrads {
                    dx: Some(&mut dx),
                    dh0: Some(&mut dh0),
                    dc0: lstm.then_some(&mut dc0[..]),
                },
                GradMode::Overwrite,
            )
            .unwrap();
        Out {
            y: bits(&y),
            h_n: bits(&hn),
            c_n: bits(&cn),
            dx: bits(&dx),
            dh0: bits(&dh0),
            dc0: bits(&dc0),
            grads: grads
                .layers
                .iter()
                .flat_map(|g| {
                    [
                        bits(&g.weight_ih),
                        bits(&g.weight_hh),
                        bits(&g.bias_ih),
                        bits(&g.bias_hh),
                    ]
                })
                .collect(),
        }
    };

    // Composed by hand, one thread.
    let want = {
        let layers: Vec<_> = stack
            .layers()
            .map(|(_, _, layer)| {
                let mut one = layer.clone();
                one.set_threads(1).unwrap();
                one
            })
            .collect();
        let slice = |n: usize| n * b * h..(n + 1) * b * h;
        let (mut hn, mut cn) = (vec![F::ZERO; s], vec![F::ZERO; s]);
        let mut inputs: Vec<Vec<F>> = vec![x.clone()];
        let mut wss = Vec::new();
        for k in 0..l {
            let mut out = vec![F::ZERO; t * b * d * h];
            for (di, dir) in Direction::BOTH.into_iter().take(d).enumerate() {
                let n = k * d + di;
                let mut ws = layers[n].workspace(t, batch, Mode::Training).unwrap();
                let mut half = vec![F::ZERO; t * b * h];
                let (hs, cs) = (&mut hn[slice(n)], &mut cn[slice(n)]);
                layers[n]
                    .forward(
                        &mut ws,
                        dir,
                        &inputs[k],
                        InitialState {
                            h0: Some(&h0[slice(n)]),
                            c0: c0o.map(|c| &c[slice(n)]),
                        },
                        &mut half,
                        FinalState {
                            h_n: Some(hs),
                            c_n: lstm.then_some(cs),
                        },
                    )
                    .unwrap();
                for (o, v) in out.chunks_exact_mut(d * h).zip(half.chunks_exact(h)) {
                    o[di * h..(di + 1) * h].copy_from_slice(v);
                }
                wss.push(ws);
            }
            inputs.push(out);
        }
        let y = inputs.pop().unwrap();
        let mut grads: Vec<_> = layers.iter().map(|l| l.zero_grads().unwrap()).collect();
        let (mut dh0, mut dc0) = (vec![F::ZERO; s], vec![F::ZERO; s]);
        let mut dy_k = dy.clone();
        let mut dx = Vec::new();
        for k in (0..l).rev() {
            let in_w = if k == 0 { i } else { d * h };
            let mut sum = vec![F::ZERO; t * b * in_w];
            for di in 0..d {
                let n = k * d + di;
                let half: Vec<F> = dy_k
                    .chunks_exact(d * h)
                    .flat_map(|r| r[di * h..(di + 1) * h].iter().copied())
                    .collect();
                let mut dxd = vec![F::ZERO; t * b * in_w];
                let (a, c) = (&mut dh0[slice(n)], &mut dc0[slice(n)]);
                layers[n]
                    .backward(
                        &mut wss[n],
                        &inputs[k],
                        Upstream {
                            dy: Some(&half),
                            dh_n: Some(&dh_n[slice(n)]),
                            dc_n: dc_no.map(|v| &v[slice(n)]),
                        },
                        &mut grads[n],
                        InputGrads {
                            dx: Some(&mut dxd),
                            dh0: Some(a),
                            dc0: lstm.then_some(c),
                        },
                        GradMode::Overwrite,
                    )
                    .unwrap();
                if di == 0 {
                    sum.copy_from_slice(&dxd);
                } else {
                    for (a, v) in sum.iter_mut().zip(&dxd) {
                        *a += *v;
                    }
                }
            }
            if k == 0 {
                dx = sum;
            } else {
                dy_k = sum;
            }
        }
        Out {
            y: bits(&y),
            h_n: bits(&hn),
            c_n: bits(&cn),
            dx: bits(&dx),
            dh0: bits(&dh0),
            dc0: bits(&dc0),
            grads: grads
                .iter()
                .flat_map(|g| {
                    [
                        bits(&g.weight_ih),
                        bits(&g.weight_hh),
                        bits(&g.bias_ih),
                        bits(&g.bias_hh),
                    ]
                })
                .collect(),
        }
    };
    assert_eq!(
        got,
        want,
        "{} L={l} D={d} I={i} H={h} T={t} B={b} lengths {lengths:?} threads {threads}",
        cell.name()
    );
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = if u.arbitrary::<bool>().unwrap_or(false) {
        run::<f64>(&mut u)
    } else {
        run::<f32>(&mut u)
    };
});
