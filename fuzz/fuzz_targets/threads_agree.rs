//! Results do not depend on the thread count or on folding, on shapes big enough for every
//! threaded path.
//!
//! `cell_forward_backward` grades the kernels against the oracle on small problems, which
//! never split over threads and never fold. This target decodes shapes up to `T` 40, `B` 40
//! (half the cases 1), `I` 1500, `H` 300 (the work capped at 2^25 multiply-adds, so that a
//! run takes milliseconds), a cell, an available ISA and 2-4 threads, and runs inference, training
//! forward and backward once on one thread, once on the decoded count and, on AVX-512, once
//! more on the AVX2 path, which never folds the batch-1 projection into the steps. Every
//! output and gradient must be the same bits: the threaded paths (batch-row shards,
//! hidden-unit slices, the split weight gradients and bias sums) and the fold compute every
//! element as the same chain of operations. Each run also panics on any `Err` and checks
//! training == inference (see `run_fused`). With the weight-gradient scratch fix of 138b4c7
//! reverted (a reset-before GRU's short `n` term landing on a thread whose scratch was sized
//! for the others' terms) it crashed within 150 s.

#![no_main]

use arbitrary::Unstructured;
use fused_rnn::{Dims, Isa};
use fused_rnn_fuzz::{Fill, pick_cell, pick_isa};
use libfuzzer_sys::fuzz_target;
use testkit::oracle::{Outputs, run_fused_on};
use testkit::random::{RandomCase, SplitMix};

/// Multiply-adds per run at most (forward), so that a run stays in the milliseconds.
const MAX_WORK: usize = 1 << 25;

fn decode(u: &mut Unstructured<'_>) -> arbitrary::Result<(RandomCase<f64>, Isa, usize)> {
    let cell = pick_cell(u)?;
    let isa = pick_isa(u)?;
    let threads = u.int_in_range(2..=4)?;
    // T first, so that short inputs (which libFuzzer starts from) still reach T >= 16, where
    // batch-1 inference folds the projection into the steps; half the cases at batch 1.
    let t = u.int_in_range(1..=40)?;
    let b = if u.arbitrary::<bool>()? {
        1
    } else {
        u.int_in_range(1..=40)?
    };
    let h = u.int_in_range(1..=300)?;
    // Within the work cap: T shrinks only where even I = 1 is too much, then I fits in the rest.
    let g = cell.gates();
    let t = t.min((MAX_WORK / (b * g * h * (h + 1))).max(1));
    let i_cap = (MAX_WORK / (t * b * g * h))
        .saturating_sub(h)
        .clamp(1, 1500);
    let i = u.int_in_range(1..=i_cap)?;
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
    let problem = RandomCase {
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
    let p32 = p.cast::<f32>();
    let one = run_fused_on(&p32, isa, 1).outputs();
    let many = run_fused_on(&p32, isa, threads).outputs();
    // The AVX2 path never folds the batch-1 projection and computes the same sums as the
    // AVX-512 path (tests/determinism.rs): the folded passes must be its bits too.
    let unfolded = (isa == Isa::Avx512 && Isa::Avx2Fma.is_available())
        .then(|| run_fused_on(&p32, Isa::Avx2Fma, 1).outputs());
    for (other, what) in [(Some(&many), "threads"), (unfolded.as_ref(), "AVX2")] {
        let Some(other) = other else { continue };
        same(&p, isa, threads, what, &one, other);
    }
});

/// `a` and `b` (every output and gradient) are the same bits, NaN payloads aside.
fn same(p: &RandomCase<f64>, isa: Isa, threads: usize, what: &str, one: &Outputs, other: &Outputs) {
    let d = p.dims;
    for ((name, a), (_, b)) in one.iter().zip(other) {
        for (j, (u, v)) in a.iter().zip(b).enumerate() {
            assert!(
                u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()),
                "{} T={} B={} I={} H={} isa={} threads={threads}: {name}[{j}] {u:e} on one \
                 thread, {v:e} against {what}",
                p.cell.name(),
                d.seq_len,
                d.batch,
                d.input,
                d.hidden,
                isa.name()
            );
        }
    }
}
