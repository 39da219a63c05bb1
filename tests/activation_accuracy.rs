//! Accuracy, special values, tail handling and errors of `fused_rnn::activation`, on every
//! instruction-set path this CPU can run.
//!
//! Run with `cargo test --release --test activation_accuracy -- --nocapture` to see the
//! maximum errors found.

use fused_rnn::activation::{sigmoid, sigmoid_in_place, tanh, tanh_in_place};
use fused_rnn::{Error, Isa};
use testkit::activation::{MAX_ULP, sigmoid_ref, tanh_ref, ulp_at};

type Kernel = fn(Isa, &[f32], &mut [f32]) -> fused_rnn::Result<()>;

struct Func {
    name: &'static str,
    kernel: Kernel,
    reference: fn(f32) -> f64,
}

const FUNCS: [Func; 2] = [
    Func {
        name: "sigmoid",
        kernel: sigmoid,
        reference: sigmoid_ref,
    },
    Func {
        name: "tanh",
        kernel: tanh,
        reference: tanh_ref,
    },
];

/// Worst case found by a sweep.
#[derive(Default)]
struct Worst {
    ulp: f64,
    at: f32,
    checked: u64,
}

/// Checks `xs` against the reference: ≤ MAX_ULP where the reference is a normal f32; below
/// that exactly 0 (sigmoid's flush) or x itself (tanh of a subnormal x); ±1 exactly where the
/// reference rounds to ±1 (tanh); never a subnormal output for a normal input.
fn check_points(f: &Func, isa: Isa, xs: &[f32], ys: &mut [f32], worst: &mut Worst) {
    (f.kernel)(isa, xs, ys).unwrap();
    for (&x, &y) in xs.iter().zip(ys.iter()) {
        let r = (f.reference)(x);
        assert!(
            y == 0.0 || y.abs() >= f32::MIN_POSITIVE || x.is_subnormal(),
            "{} {isa:?}: subnormal output {y:e} at normal x = {x:e}",
            f.name
        );
        if r.abs() < f64::from(f32::MIN_POSITIVE) {
            // Only sigmoid's flush (exactly 0) and tanh of a subnormal x (x itself) get here.
            let want = if f.name == "tanh" { x } else { 0.0 };
            assert_eq!(y.to_bits(), want.to_bits(), "{} {isa:?}: x = {x:e}", f.name);
            continue;
        }
        if f.name == "tanh" && (r as f32).abs() == 1.0 {
            assert_eq!(
                y, r as f32,
                "{} {isa:?}: x = {x:e} must give exactly ±1",
                f.name
            );
        }
        let ulp = (f64::from(y) - r).abs() / ulp_at(r);
        assert!(
            ulp <= MAX_ULP,
            "{} {isa:?}: x = {x:e} ({:#010x}): got {y:e}, reference {r:e}, {ulp:.3} ULP",
            f.name,
            x.to_bits()
        );
        if ulp > worst.ulp {
            *worst = Worst {
                ulp,
                at: x,
                checked: worst.checked,
            };
        }
    }
    worst.checked += xs.len() as u64;
}

/// Every `stride`-th f32 bit pattern in [lo, hi] (both positive), and their negatives.
fn sweep(f: &Func, isa: Isa, lo: f32, hi: f32, stride: u32, worst: &mut Worst) {
    assert!(0.0 <= lo && lo <= hi);
    const CHUNK: usize = 1 << 16;
    let mut xs = Vec::with_capacity(CHUNK);
    let mut ys = vec![0.0f32; CHUNK];
    let mut bits = lo.to_bits();
    let end = hi.to_bits();
    while bits <= end {
        xs.clear();
        while xs.len() + 1 < CHUNK && bits <= end {
            let x = f32::from_bits(bits);
            xs.push(x);
            xs.push(-x);
            bits = match bits.checked_add(stride) {
                Some(b) => b,
                None => break,
            };
        }
        check_points(f, isa, &xs, &mut ys[..xs.len()], worst);
    }
}

#[test]
fn max_ulp_within_bound_on_every_path() {
    let tiny = 1.0f32 / 4096.0; // tanh's TANH_TINY
    for isa in Isa::available() {
        for f in &FUNCS {
            let mut worst = Worst::default();
            // At least 2^25 points spread over [-30, 30] (stride 61 over ~1.1e9 patterns a side).
            sweep(f, isa, 0.0, 30.0, 61, &mut worst);
            assert!(worst.checked >= 1 << 25, "only {} points", worst.checked);
            // Small |x| (relative accuracy of tanh, sigmoid near 0.5), sampled densely.
            sweep(f, isa, 1e-30, 1e-3, 89, &mut worst);
            // Every f32 around tanh's tiny threshold, its branch split and its ±1 threshold,
            // and around sigmoid's flush-to-zero threshold (-87.3365).
            sweep(
                f,
                isa,
                tiny * (1.0 - 1.0 / 64.0),
                tiny * (1.0 + 1.0 / 64.0),
                1,
                &mut worst,
            );
            sweep(f, isa, 0.6, 0.65, 1, &mut worst);
            sweep(f, isa, 8.99, 9.03, 1, &mut worst);
            sweep(f, isa, 87.2, 87.5, 1, &mut worst);
            println!(
                "{:8} {:9}: max {:.3} ULP at x = {:e} ({} points)",
                f.name,
                isa.name(),
                worst.ulp,
                worst.at,
                worst.checked
            );
        }
    }
}

#[test]
fn special_values_exact_on_every_path() {
    let inf = f32::INFINITY;
    let cases_sigmoid: [(f32, f32); 9] = [
        (0.0, 0.5),
        (-0.0, 0.5),
        (inf, 1.0),
        (-inf, 0.0),
        (-87.5, 0.0),
        (-1000.0, 0.0),
        (f32::MIN, 0.0),
        (f32::MAX, 1.0),
        (100.0, 1.0),
    ];
    let cases_tanh: [(f32, f32); 8] = [
        (inf, 1.0),
        (-inf, -1.0),
        (9.010914, 1.0),
        (-9.010914, -1.0),
        (20.0, 1.0),
        (f32::MAX, 1.0),
        (f32::MIN, -1.0),
        (1e-30, 1e-30),
    ];
    for isa in Isa::available() {
        let mut y = [0.0f32; 1];
        for (x, want) in cases_sigmoid {
            sigmoid(isa, &[x], &mut y).unwrap();
            assert_eq!(y[0].to_bits(), want.to_bits(), "sigmoid {isa:?} x = {x:e}");
        }
        for (x, want) in cases_tanh {
            tanh(isa, &[x], &mut y).unwrap();
            assert_eq!(y[0].to_bits(), want.to_bits(), "tanh {isa:?} x = {x:e}");
        }
        // ±0 keep their sign in tanh.
        for z in [0.0f32, -0.0] {
            tanh(isa, &[z], &mut y).unwrap();
            assert_eq!(y[0].to_bits(), z.to_bits(), "tanh {isa:?} of {z:?}");
        }
        // Tiny inputs (subnormal ones too) come back unchanged from tanh.
        for x in [f32::MIN_POSITIVE, 1e-40, -1e-40, f32::from_bits(1)] {
            tanh(isa, &[x], &mut y).unwrap();
            assert_eq!(y[0].to_bits(), x.to_bits(), "tanh {isa:?} of {x:e}");
        }
        // Documented: below 2^-12 (normal or not), tanh returns x itself.
        let below_tiny: Vec<f32> = (1..(1.0f32 / 4096.0).to_bits())
            .step_by(997)
            .chain([(1.0f32 / 4096.0).to_bits() - 1])
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
            .collect();
        let mut out = vec![0.0f32; below_tiny.len()];
        tanh(isa, &below_tiny, &mut out).unwrap();
        for (x, y) in below_tiny.iter().zip(&out) {
            assert_eq!(y.to_bits(), x.to_bits(), "tanh {isa:?} of {x:e}");
        }
        for nan in [f32::NAN, -f32::NAN, f32::from_bits(0x7f80_0001)] {
            sigmoid(isa, &[nan], &mut y).unwrap();
            assert!(y[0].is_nan(), "sigmoid {isa:?} of NaN gave {}", y[0]);
            tanh(isa, &[nan], &mut y).unwrap();
            assert!(y[0].is_nan(), "tanh {isa:?} of NaN gave {}", y[0]);
        }
    }
}

/// Deterministic inputs in [-12, 12] with a few special values mixed in, among them NaNs of
/// either sign with random payloads (a NaN's output bits must not depend on its position
/// either: the fuzz target found sigmoid's did, once the 4-vector loop body and the
/// single-vector code were instantiated separately).
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match i % 11 {
                3 => f32::NAN,
                5 => f32::from_bits(0x7f80_0001 | ((state >> 32) as u32 & 0x807f_ffff)),
                7 => -0.0,
                _ => ((state >> 40) as f32 / (1u64 << 24) as f32) * 24.0 - 12.0,
            }
        })
        .collect()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn every_length_matches_elementwise_and_in_place() {
    // Lengths up to 150 cover two 4-vector iterations, single vectors and a partial tail on
    // every path (8 lanes, and 16 on AVX-512).
    type InPlace = fn(Isa, &mut [f32]) -> fused_rnn::Result<()>;
    let pairs: [(Kernel, InPlace); 2] = [(sigmoid, sigmoid_in_place), (tanh, tanh_in_place)];
    for isa in Isa::available() {
        for (k, (out_of_place, in_place)) in pairs.iter().enumerate() {
            for len in 0..=150 {
                let x = inputs(len, 17 + len as u64);
                // NaN sentinels prove every output element is written.
                let mut y = vec![f32::from_bits(0x7fc0_dead); len];
                out_of_place(isa, &x, &mut y).unwrap();
                let elementwise: Vec<f32> = x
                    .iter()
                    .map(|&v| {
                        let mut o = [f32::from_bits(0x7fc0_dead)];
                        out_of_place(isa, &[v], &mut o).unwrap();
                        o[0]
                    })
                    .collect();
                assert!(
                    same_bits(&y, &elementwise),
                    "kernel {k} {isa:?} len {len}: {y:?} vs {elementwise:?}"
                );
                for (&xi, &yi) in x.iter().zip(&y) {
                    assert_eq!(xi.is_nan(), yi.is_nan(), "kernel {k} {isa:?}: {xi} -> {yi}");
                }
                let mut z = x.clone();
                in_place(isa, &mut z).unwrap();
                assert!(
                    same_bits(&z, &y),
                    "kernel {k} {isa:?} len {len}: in place differs"
                );
            }
        }
    }
}

#[test]
fn errors() {
    let x = [0.0f32; 9];
    let mut y = [0.0f32; 8];
    for isa in Isa::available() {
        for k in [sigmoid as Kernel, tanh] {
            assert_eq!(
                k(isa, &x, &mut y),
                Err(Error::BufferLength {
                    what: "output",
                    expected: 9,
                    got: 8
                })
            );
        }
    }
    for isa in [Isa::Portable, Isa::Avx2Fma, Isa::Avx512] {
        if !isa.is_available() {
            let mut y = [0.0f32; 9];
            let unavailable = Err(Error::IsaUnavailable { isa: isa.name() });
            assert_eq!(sigmoid(isa, &x, &mut y), unavailable);
            assert_eq!(tanh(isa, &x, &mut y), unavailable);
            assert_eq!(sigmoid_in_place(isa, &mut y), unavailable);
            assert_eq!(tanh_in_place(isa, &mut y), unavailable);
        }
    }
}

/// The AVX-512 activations are the AVX2 ones, operation for operation, on 16 lanes: every
/// output must have the AVX2 output's bits. Checked on every 13th f32 bit pattern (all
/// magnitudes and signs, infinities, NaNs with many payloads), in slices long enough for the
/// 4-vector loops, and on a short tail.
#[test]
fn avx512_activations_equal_avx2_bit_for_bit() {
    if !Isa::Avx512.is_available() {
        println!("no AVX-512F on this CPU: nothing to compare");
        return;
    }
    let kernels: [(&str, Kernel); 2] = [("sigmoid", sigmoid), ("tanh", tanh)];
    const CHUNK: usize = 1 << 20;
    let mut xs = Vec::with_capacity(CHUNK);
    let (mut a, mut b) = (vec![0.0f32; CHUNK], vec![0.0f32; CHUNK]);
    let mut bits: u64 = 0;
    while bits <= u32::MAX as u64 {
        xs.clear();
        while xs.len() < CHUNK && bits <= u32::MAX as u64 {
            xs.push(f32::from_bits(bits as u32));
            bits += 13;
        }
        // A tail shorter than one vector as well.
        let n = xs.len();
        for (name, k) in &kernels {
            for len in [n, n % 37] {
                k(Isa::Avx2Fma, &xs[..len], &mut a[..len]).unwrap();
                k(Isa::Avx512, &xs[..len], &mut b[..len]).unwrap();
                if let Some(i) = (0..len).find(|&i| a[i].to_bits() != b[i].to_bits()) {
                    panic!(
                        "{name}({:e} = {:#x}): AVX2 {:#x}, AVX-512 {:#x}",
                        xs[i],
                        xs[i].to_bits(),
                        a[i].to_bits(),
                        b[i].to_bits()
                    );
                }
            }
        }
    }
}
