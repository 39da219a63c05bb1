//! Results do not depend on the thread count, on shapes big enough for every threaded path.
//!
//! `cell_forward_backward` grades the kernels against the oracle on small problems, which
//! never split over threads. This target decodes shapes up to `T` 24, `B` 40, `I` 1500,
//! `H` 300 (the step work capped, so that a run takes milliseconds), a cell, an available
//! ISA and 2-4 threads, and runs inference, training forward and backward once on one thread
//! and once on the decoded count. Every output and gradient must be the same bits: the
//! threaded paths (batch-row shards, hidden-unit slices with the batch-1 projection folded into
//! the steps, the split weight gradients and bias sums) compute every element as the same
//! chain of operations. Each run also panics on any `Err` and checks training == inference
//! (see `run_fused`). Clean in its first runs; with the weight-gradient scratch fix of
//! 138b4c7 reverted (a reset-before GRU's short `n` term landing on a thread whose scratch was
//! sized for the others' terms) it crashed within 150 s.

#![no_main]

use arbitrary::Unstructured;
use fused_rnn::Dims;
use fused_rnn_fuzz::{Fill, Problem, SplitMix, pick_cell, pick_isa, run_fused_on};
use libfuzzer_sys::fuzz_target;

/// Multiply-adds per run at most (forward), so that a run stays in the milliseconds.
const MAX_WORK: usize = 1 << 25;

fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<(Problem, fused_rnn::Isa, usize)> {
    let cell = pick_cell(u)?;
    let isa = pick_isa(u)?;
    let threads = u.int_in_range(2..=4)?;
    let (b, i, h) = (
        u.int_in_range(1..=40)?,
        u.int_in_range(1..=1500)?,
        u.int_in_range(1..=300)?,
    );
    let per_step = b * cell.gates() * h * (i + h);
    let t = u.int_in_range(1..=24)?.min(MAX_WORK / per_step).max(1);
    let dims = Dims {
        seq_len: t,
        batch: b,
        input: i,
        hidden: h,
    };
    let seed: u64 = u.arbitrary()?;
    let mut rng = SplitMix(seed);
    let gh = cell.gates() * h;
    // Weights scaled as in `cell_forward_backward` (pre-activations of order 1); the values
    // themselves matter little here, only that every path runs on the same ones.
    let k = 2.0 / (i + h + 2) as f64;
    let mut random = |n: usize, scale: f64| -> Vec<f64> {
        Fill::Random
            .values(n, &mut rng)
            .into_iter()
            .map(|a| f64::from((a * scale) as f32))
            .collect()
    };
    let s = dims.state_len();
    let lstm = cell.has_cell_state();
    let with_h0: bool = u.arbitrary()?;
    let problem = Problem {
        cell,
        dims,
        weight_ih: random(gh * i, k),
        weight_hh: random(gh * h, k),
        bias_ih: random(gh, k),
        bias_hh: random(gh, k),
        x: random(dims.x_len(), 1.0),
        h0: with_h0.then(|| random(s, 1.0)),
        c0: (lstm && with_h0).then(|| random(s, 1.0)),
        dy: Some(random(dims.y_len(), 1.0)),
        dh_n: Some(random(s, 1.0)),
        dc_n: lstm.then(|| random(s, 1.0)),
    };
    Ok((problem, isa, threads))
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok((p, isa, threads)) = decode(&mut u) else {
        return;
    };
    let d = p.dims;
    let one = run_fused_on::<f32>(&p, isa, 1);
    let many = run_fused_on::<f32>(&p, isa, threads);
    for ((name, a), (_, b)) in one.iter().zip(&many) {
        for (j, (u, v)) in a.iter().zip(b).enumerate() {
            assert!(
                u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()),
                "{} T={} B={} I={} H={} isa={} threads={threads}: {name}[{j}] {u:e} on one \
                 thread, {v:e} on {threads}",
                p.cell.name(),
                d.seq_len,
                d.batch,
                d.input,
                d.hidden,
                isa.name()
            );
        }
    }
});
