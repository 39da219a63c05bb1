//! One driver over a named shape table: forward and forward+backward for every cell kind, the
//! DeepBench shapes, streaming steps, and in the same run the ceilings (matrixmultiply sgemm on
//! the per-step and input-projection shapes, our per-step GEMM, and the scalar reference).
//!
//! Throughput is reported as criterion "elements" = floating-point operations, with the
//! standard count: forward `2·T·B·G·H·(I+H)`, backward twice that (so forward+backward is
//! three times the forward count). `Gelem/s` in criterion's output therefore reads GFLOP/s.
//!
//! Threads: `FUSED_RNN_BENCH_THREADS` (default: all available cores) for the layer benches and
//! the 2-thread GEMM ceiling; ids carry the count (`_th2`).
//!
//! Run: `cargo bench --bench rnn` (all), `cargo bench --bench rnn -- seq_len/lstm` (a filter),
//! `cargo bench --bench rnn -- --quick --noplot` (fast), `cargo bench -- --test` (once each).

use std::hint::black_box;
use std::time::Duration;

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use fused_rnn::Direction;
use fused_rnn::bench_support::PackedStepGemm;
use fused_rnn::{
    CellKind, Directions, FinalState, GradMode, GruVariant, InitialState, InputGrads, Isa, Layer,
    Mode, RnnActivation, Stack, StreamingLayer, Upstream, reference,
};

/// A named benchmark shape.
#[derive(Clone, Copy)]
struct Shape {
    cell: CellKind,
    t: usize,
    b: usize,
    i: usize,
    h: usize,
}

impl Shape {
    fn name(&self) -> String {
        format!(
            "{}_t{}_b{}_i{}_h{}",
            self.cell.name(),
            self.t,
            self.b,
            self.i,
            self.h
        )
    }
    /// Forward flops, standard count.
    fn forward_flops(&self) -> u64 {
        2 * (self.t * self.b * self.cell.gates() * self.h * (self.i + self.h)) as u64
    }
}

/// A layer with its buffers, ready to run a shape repeatedly.
struct Bench {
    layer: Layer<f32>,
    ws_train: fused_rnn::Workspace<f32>,
    ws_infer: fused_rnn::Workspace<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    dy: Vec<f32>,
    dx: Vec<f32>,
    grads: fused_rnn::LayerGrads<f32>,
}

/// Threads for the layer benches.
fn bench_threads() -> usize {
    std::env::var("FUSED_RNN_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

impl Bench {
    fn new(s: Shape) -> Bench {
        let mut layer = Layer::<f32>::with_seeded_init(s.cell, s.i, s.h, 1).unwrap();
        layer.set_threads(bench_threads()).unwrap();
        let mut k = 0u32;
        let mut next = || {
            // A cheap deterministic sequence in [-1, 1).
            k = k.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (k >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        };
        let x = (0..s.t * s.b * s.i).map(|_| next()).collect();
        let dy = (0..s.t * s.b * s.h).map(|_| next()).collect();
        Bench {
            ws_train: layer.workspace(s.t, s.b, Mode::Training).unwrap(),
            ws_infer: layer.workspace(s.t, s.b, Mode::Inference).unwrap(),
            grads: layer.zero_grads().unwrap(),
            layer,
            x,
            y: vec![0.0; s.t * s.b * s.h],
            dy,
            dx: vec![0.0; s.t * s.b * s.i],
        }
    }

    fn forward(&mut self) {
        self.layer
            .forward(
                &mut self.ws_infer,
                Direction::Forward,
                &self.x,
                InitialState::default(),
                &mut self.y,
                FinalState::default(),
            )
            .unwrap();
        black_box(&self.y);
    }

    fn forward_backward(&mut self) {
        self.layer
            .forward(
                &mut self.ws_train,
                Direction::Forward,
                &self.x,
                InitialState::default(),
                &mut self.y,
                FinalState::default(),
            )
            .unwrap();
        let up = Upstream {
            dy: Some(&self.dy),
            ..Default::default()
        };
        let inputs = InputGrads {
            dx: Some(&mut self.dx),
            ..Default::default()
        };
        self.layer
            .backward(
                &mut self.ws_train,
                &self.x,
                up,
                &mut self.grads,
                inputs,
                GradMode::Overwrite,
            )
            .unwrap();
        black_box(&self.grads);
    }
}

fn configure(g: &mut BenchmarkGroup<'_, WallTime>, flops: u64) {
    // Large shapes take 0.1-3 s per iteration: few samples, short windows.
    let (samples, secs) = if flops > 20_000_000_000 {
        (10, 4)
    } else if flops > 1_000_000_000 {
        (10, 3)
    } else {
        (20, 2)
    };
    g.sample_size(samples);
    g.measurement_time(Duration::from_secs(secs));
    g.warm_up_time(Duration::from_millis(500));
}

fn bench_shape(c: &mut Criterion, group: &str, s: Shape, train: bool) {
    let mut bench = Bench::new(s);
    let mut g = c.benchmark_group(group);
    let fwd = s.forward_flops();
    configure(&mut g, if train { 3 * fwd } else { fwd });
    g.throughput(Throughput::Elements(fwd));
    g.bench_function(format!("{}/forward", s.name()), |b| {
        b.iter(|| bench.forward())
    });
    if train {
        g.throughput(Throughput::Elements(3 * fwd));
        g.bench_function(format!("{}/forward_backward", s.name()), |b| {
            b.iter(|| bench.forward_backward())
        });
    }
    g.finish();
}

fn seq_len(c: &mut Criterion) {
    for cell in [
        CellKind::Lstm,
        CellKind::Gru(GruVariant::ResetAfter),
        CellKind::Gru(GruVariant::ResetBefore),
        CellKind::Rnn(RnnActivation::Tanh),
    ] {
        for t in [1, 8, 32, 128, 512] {
            let s = Shape {
                cell,
                t,
                b: 32,
                i: 512,
                h: 512,
            };
            bench_shape(c, "seq_len", s, true);
        }
    }
}

fn deepbench(c: &mut Criterion) {
    let lstm = CellKind::Lstm;
    let gru = CellKind::Gru(GruVariant::ResetAfter);
    let rnn = CellKind::Rnn(RnnActivation::Tanh);
    let sq = |cell, h, b, t| Shape {
        cell,
        t,
        b,
        i: h,
        h,
    };
    for (s, train) in [
        (sq(lstm, 256, 16, 150), true),
        (sq(lstm, 512, 16, 25), true),
        (sq(lstm, 1024, 16, 25), true),
        (sq(gru, 1024, 32, 50), true),
        (sq(lstm, 256, 1, 150), false),
        (sq(gru, 1024, 1, 150), false),
        (sq(rnn, 64, 1, 96), false),
        // Small LSTM (peer comparison: PyTorch) and batch-1 T=128 (ONNX Runtime).
        (sq(lstm, 64, 16, 100), false),
        (sq(lstm, 256, 1, 128), false),
        (sq(gru, 256, 1, 128), false),
        // Inference B=32 T=64 (ONNX Runtime).
        (sq(lstm, 512, 32, 64), false),
        (sq(gru, 512, 32, 64), false),
    ] {
        bench_shape(c, "deepbench", s, train);
    }
}

fn streaming(c: &mut Criterion) {
    let mut g = c.benchmark_group("streaming");
    for cell in [CellKind::Lstm, CellKind::Gru(GruVariant::ResetAfter)] {
        let (b, i, h) = (1, 256, 256);
        let mut layer = Layer::<f32>::with_seeded_init(cell, i, h, 1).unwrap();
        let th = bench_threads();
        layer.set_threads(th).unwrap();
        let mut s = StreamingLayer::new(layer, b).unwrap();
        let x = vec![0.1f32; b * i];
        g.throughput(Throughput::Elements(
            2 * (b * cell.gates() * h * (i + h)) as u64,
        ));
        g.bench_function(
            format!("{}_b{b}_i{i}_h{h}/step_th{th}", cell.name()),
            |bch| {
                bch.iter(|| {
                    black_box(s.step(black_box(&x)).unwrap());
                })
            },
        );
    }
    g.finish();
}

/// sgemm `C[m, n] = A[m, k] · B` with B given as a PyTorch weight `[n, k]` (used transposed).
fn sgemm_nt(m: usize, k: usize, n: usize, a: &[f32], w: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && w.len() >= n * k && c.len() >= m * n);
    // SAFETY: the asserts above bound every index the GEMM touches for these dense strides;
    // c is exclusively borrowed and does not alias a or w.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            w.as_ptr(),
            1,
            k as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

fn ceiling(c: &mut Criterion) {
    let mut g = c.benchmark_group("ceiling");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(2));
    // (name, m, k, n): the per-step recurrent GEMM of LSTM B=32 H=512, the same at batch 1
    // (H=256), and the all-steps input projection of T=128.
    for (name, m, k, n) in [
        ("per_step_b32_h512_lstm", 32, 512, 2048),
        ("per_step_b1_h256_lstm", 1, 256, 1024),
        ("input_projection_t128_b32_h512_lstm", 128 * 32, 512, 2048),
    ] {
        let a = vec![0.5f32; m * k];
        let w = vec![0.25f32; n * k];
        let mut out = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        g.bench_function(format!("{name}/matrixmultiply_sgemm"), |b| {
            b.iter(|| sgemm_nt(m, k, n, black_box(&a), &w, &mut out))
        });
        if m >= 8 {
            // Two threads: rows split in halves, each half one sgemm (matrixmultiply's own
            // threading is off in this crate).
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let r = m / 2;
            g.bench_function(format!("{name}/matrixmultiply_sgemm_th2"), |b| {
                b.iter(|| {
                    pool.install(|| {
                        let (lo, hi) = out.split_at_mut(r * n);
                        rayon::join(
                            || sgemm_nt(r, k, n, black_box(&a[..r * k]), &w, lo),
                            || sgemm_nt(m - r, k, n, black_box(&a[r * k..]), &w, hi),
                        );
                    })
                })
            });
        }
        if m <= 64 {
            let packed = PackedStepGemm::new(&vec![0.25f32; k * n], k, n).unwrap();
            for isa in Isa::available() {
                g.bench_function(format!("{name}/step_gemm_{}", isa.name()), |b| {
                    b.iter(|| packed.run(isa, m, black_box(&a), &mut out).unwrap())
                });
            }
        }
    }
    // The scalar reference on a small shape, against the fused layer in `deepbench`.
    let s = Shape {
        cell: CellKind::Lstm,
        t: 100,
        b: 16,
        i: 64,
        h: 64,
    };
    let layer = Layer::<f32>::with_seeded_init(s.cell, s.i, s.h, 1).unwrap();
    let x = vec![0.1f32; s.t * s.b * s.i];
    let dims = layer.dims(s.t, s.b);
    g.throughput(Throughput::Elements(s.forward_flops()));
    g.bench_function(format!("{}/scalar_reference_forward", s.name()), |b| {
        b.iter(|| {
            black_box(reference::forward(s.cell, dims, &layer.weights(), &x, None, None).unwrap())
        })
    });
    g.finish();
}

/// Denormal cliff check: the same LSTM forward+backward on inputs whose states decay into the
/// subnormal range (x = 0, biases 0, W_hh scaled so h shrinks ~100x per step, so after ~20 of
/// the 64 steps every state and gradient is subnormal or zero) against random inputs. The target
/// is a time ratio within 1.2.
fn denormal(c: &mut Criterion) {
    let (t, b, i, h) = (64, 16, 256, 256);
    let cell = CellKind::Lstm;
    let normal = Layer::<f32>::with_seeded_init(cell, i, h, 1).unwrap();
    let w = normal.weights();
    let tiny_hh: Vec<f32> = w.weight_hh.iter().map(|v| v * 0.01).collect();
    let zeros = vec![0.0f32; w.bias_ih.len()];
    let decaying = Layer::new(
        cell,
        i,
        h,
        fused_rnn::LayerWeights {
            weight_ih: w.weight_ih,
            weight_hh: &tiny_hh,
            bias_ih: &zeros,
            bias_hh: &zeros,
        },
    )
    .unwrap();
    let h0 = vec![1.0f32; b * h];
    let c0 = vec![1.0f32; b * h];
    let mut g = c.benchmark_group("denormal");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(
        3 * 2 * (t * b * 4 * h * (i + h)) as u64,
    ));
    for (name, layer, x) in [
        ("random_states", &normal, vec![0.5f32; t * b * i]),
        ("decaying_to_subnormal", &decaying, vec![0.0f32; t * b * i]),
    ] {
        let mut ws = layer.workspace(t, b, Mode::Training).unwrap();
        let mut y = vec![0.0f32; t * b * h];
        let dy = vec![1e-3f32; t * b * h];
        let mut grads = layer.zero_grads().unwrap();
        g.bench_function(
            format!("lstm_t{t}_b{b}_i{i}_h{h}/{name}/forward_backward"),
            |bch| {
                bch.iter(|| {
                    let init = InitialState {
                        h0: Some(&h0),
                        c0: Some(&c0),
                    };
                    layer
                        .forward(
                            &mut ws,
                            Direction::Forward,
                            &x,
                            init,
                            &mut y,
                            FinalState::default(),
                        )
                        .unwrap();
                    let up = Upstream {
                        dy: Some(&dy),
                        ..Default::default()
                    };
                    layer
                        .backward(
                            &mut ws,
                            &x,
                            up,
                            &mut grads,
                            InputGrads::default(),
                            GradMode::Overwrite,
                        )
                        .unwrap();
                    black_box(&grads);
                })
            },
        );
    }
    g.finish();
}

/// Padded batches (a workspace of `Batch::Padded`) against the same batch run at its full length. LSTM and
/// GRU, B = 32, I = H = 512, T = 128, with two sets of lengths: every length distinct (64, 66,
/// ..., 124, 128: 32 segments, the most a batch of 32 can have, most of them 2 steps of a few
/// rows; 74% of the padded work), and four lengths (64, 84, 108, 128, eight rows each: 4
/// segments; 75%). Throughput counts the valid steps only, for every pass, so that GFLOP/s
/// compare useful work: the padded pass skips the padding, the full-length one computes it.
fn padded(c: &mut Criterion) {
    let distinct: Vec<usize> = (0..32)
        .map(|r| 64 + 2 * r + usize::from(r == 31) * 2)
        .collect();
    let buckets: Vec<usize> = (0..32).map(|r| [64, 84, 108, 128][r / 8]).collect();
    for cell in [CellKind::Lstm, CellKind::Gru(GruVariant::ResetAfter)] {
        let s = Shape {
            cell,
            t: 128,
            b: 32,
            i: 512,
            h: 512,
        };
        let per_step = s.forward_flops() / (s.t * s.b) as u64;
        let mut bench = Bench::new(s);
        let mut g = c.benchmark_group("padded");
        for (tag, lengths) in [("distinct_lengths", &distinct), ("four_lengths", &buckets)] {
            let useful = per_step * lengths.iter().sum::<usize>() as u64;
            let mut ws_inf = bench
                .layer
                .workspace(s.t, lengths, Mode::Inference)
                .unwrap();
            let mut ws_train = bench.layer.workspace(s.t, lengths, Mode::Training).unwrap();
            configure(&mut g, 3 * useful);
            g.throughput(Throughput::Elements(useful));
            let name = format!("{}_{tag}", s.name());
            g.bench_function(format!("{name}/forward_padded"), |b| {
                b.iter(|| {
                    let Bench { layer, x, y, .. } = &mut bench;
                    layer
                        .forward(
                            &mut ws_inf,
                            Direction::Forward,
                            x,
                            InitialState::default(),
                            y,
                            FinalState::default(),
                        )
                        .unwrap();
                    black_box(&bench.y);
                })
            });
            g.bench_function(format!("{name}/forward_full_length"), |b| {
                b.iter(|| bench.forward())
            });
            g.throughput(Throughput::Elements(3 * useful));
            g.bench_function(format!("{name}/forward_backward_padded"), |b| {
                b.iter(|| {
                    let Bench {
                        layer,
                        x,
                        y,
                        dy,
                        dx,
                        grads,
                        ..
                    } = &mut bench;
                    layer
                        .forward(
                            &mut ws_train,
                            Direction::Forward,
                            x,
                            InitialState::default(),
                            y,
                            FinalState::default(),
                        )
                        .unwrap();
                    let up = Upstream {
                        dy: Some(dy),
                        ..Default::default()
                    };
                    let inputs = InputGrads {
                        dx: Some(dx),
                        ..Default::default()
                    };
                    layer
                        .backward(&mut ws_train, x, up, grads, inputs, GradMode::Overwrite)
                        .unwrap();
                    black_box(&bench.grads);
                })
            });
            g.bench_function(format!("{name}/forward_backward_full_length"), |b| {
                b.iter(|| bench.forward_backward())
            });
        }
        g.finish();
    }
}

/// Stacks (the shapes): a bidirectional LSTM layer at B = 1, 4, 32 (I = H = 256,
/// T = 128, inference), and a 2-layer bidirectional LSTM at B = 32, I = H = 512, T = 64,
/// inference and training, fixed and with lengths spread over [T/2, T]. Flops count the valid
/// steps only (`2·G·H·(in + H)` per step, row and (layer, direction), `in` = I for layer 0 and
/// `2H` above; training three times).
fn stack(c: &mut Criterion) {
    let threads = bench_threads();
    let mut g = c.benchmark_group("stack");
    let cases: [(usize, usize, usize, usize, bool, bool); 6] = [
        (1, 1, 256, 128, false, false),
        (1, 4, 256, 128, false, false),
        (1, 32, 256, 128, false, false),
        (2, 32, 512, 64, true, false),
        (2, 32, 512, 64, true, true),
        (2, 32, 512, 64, false, true),
    ];
    for (layers, b, ih, t, train, padded) in cases {
        let mut stack =
            Stack::<f32>::with_seeded_init(CellKind::Lstm, ih, ih, layers, Directions::Both, 1)
                .unwrap();
        stack.set_threads(threads).unwrap();
        // Every length distinct where the batch allows, spread over [T/2, T].
        let lengths: Vec<usize> = (0..b).map(|r| t - r * (t / 2) / b.max(1)).collect();
        let valid: usize = if padded { lengths.iter().sum() } else { t * b };
        // Per valid step, row and direction: 2·G·H·(in + H), in = I for layer 0 and 2H above.
        let per_step: usize = (0..layers)
            .map(|k| 2 * 4 * ih * (if k == 0 { ih } else { 2 * ih } + ih))
            .sum();
        let fwd = (valid * per_step * 2) as u64;
        let mode = if train {
            Mode::Training
        } else {
            Mode::Inference
        };
        let mut ws = if padded {
            stack.workspace(t, &lengths, mode).unwrap()
        } else {
            stack.workspace(t, b, mode).unwrap()
        };
        let x = vec![0.1f32; t * b * ih];
        let dy = vec![0.01f32; t * b * 2 * ih];
        let mut y = vec![0.0f32; t * b * 2 * ih];
        let mut dx = vec![0.0f32; t * b * ih];
        let mut grads = stack.zero_grads().unwrap();
        let name = format!(
            "lstm_L{layers}_bi_t{t}_b{b}_i{ih}_h{ih}{}{}",
            if padded { "_padded" } else { "" },
            if train { "_training" } else { "" }
        );
        configure(&mut g, if train { 3 * fwd } else { fwd });
        g.throughput(Throughput::Elements(fwd));
        g.bench_function(format!("{name}/forward"), |bch| {
            bch.iter(|| {
                stack
                    .forward(
                        &mut ws,
                        &x,
                        InitialState::default(),
                        &mut y,
                        FinalState::default(),
                    )
                    .unwrap();
                black_box(&y);
            })
        });
        if train {
            g.throughput(Throughput::Elements(3 * fwd));
            g.bench_function(format!("{name}/forward_backward"), |bch| {
                bch.iter(|| {
                    stack
                        .forward(
                            &mut ws,
                            &x,
                            InitialState::default(),
                            &mut y,
                            FinalState::default(),
                        )
                        .unwrap();
                    let up = Upstream {
                        dy: Some(&dy),
                        ..Default::default()
                    };
                    let inputs = InputGrads {
                        dx: Some(&mut dx),
                        ..Default::default()
                    };
                    stack
                        .backward(&mut ws, &x, up, &mut grads, inputs, GradMode::Overwrite)
                        .unwrap();
                    black_box(&grads);
                })
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches, ceiling, streaming, deepbench, seq_len, denormal, padded, stack
);
criterion_main!(benches);
