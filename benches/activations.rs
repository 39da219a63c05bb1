//! Throughput of the f32 sigmoid and tanh on every available path, 4096 L1-resident elements
//! (16 KiB in, 16 KiB out).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fused_rnn::Isa;
use fused_rnn::activation::{sigmoid, tanh};

const N: usize = 4096;

/// Deterministic inputs in [-10, 10].
fn inputs() -> Vec<f32> {
    let mut state = 0x853c_49e6_748f_ea9b_u64;
    (0..N)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 20.0 - 10.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = inputs();
    let mut y = vec![0.0f32; N];
    type Kernel = fn(Isa, &[f32], &mut [f32]) -> fused_rnn::Result<()>;
    for (name, kernel) in [("sigmoid", sigmoid as Kernel), ("tanh", tanh)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(N as u64));
        for isa in Isa::available() {
            group.bench_function(isa.name(), |b| {
                b.iter(|| kernel(black_box(isa), black_box(&x), black_box(&mut y)).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
