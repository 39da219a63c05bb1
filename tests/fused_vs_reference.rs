//! The fused layer against the scalar reference (the oracle): f64 to 1e-12 relative, f32 on
//! every available ISA path within the precision-derived tolerance of
//! `testkit::tolerance::f32_tolerance`, over shapes whose hidden sizes sit at, below and above
//! the SIMD width (tails), T up to 256 and H up to 130.

use fused_rnn::{CellKind, Isa};
use testkit::oracle::{run_fused, run_reference};
use testkit::random::{RandomCase, dims};
use testkit::tolerance::{assert_close, f32_tolerance, rms};

/// (T, B, I, H): H at, below and above the 8-lane width and the 16-column GEMM block, B at,
/// below and above the 4-row GEMM block, I != H.
const SHAPES: [(usize, usize, usize, usize); 10] = [
    (1, 1, 3, 1),
    (5, 2, 7, 7),
    (3, 4, 8, 8),
    (9, 3, 5, 9),
    (16, 5, 33, 16),
    (7, 1, 20, 33),
    (64, 2, 16, 65),
    (256, 2, 8, 130),
    (256, 1, 4, 17),
    (32, 6, 130, 130),
];

#[test]
fn fused_f64_equals_reference() {
    // Both compute in f64 with std's activations; they differ only in summation order (the
    // GEMMs block their K loops), which moves results by a few eps per dot product.
    const REL: f64 = 1e-12;
    for (ci, &cell) in CellKind::ALL.iter().enumerate() {
        for (si, &(t, b, i, h)) in SHAPES.iter().enumerate() {
            let c =
                RandomCase::<f64>::new(cell, dims(t, b, i, h), 7000 + 100 * ci as u64 + si as u64);
            let want = run_reference(&c).outputs();
            let got = run_fused(&c, Isa::Portable).outputs();
            for ((name, g), (_, w)) in got.iter().zip(&want) {
                let ctx = format!("{} T={t} B={b} I={i} H={h} {name}", cell.name());
                assert_close(&ctx, g, w, REL, rms(w));
            }
        }
    }
}

#[test]
fn fused_f32_matches_f64_reference_on_every_isa() {
    for isa in Isa::available() {
        for (ci, &cell) in CellKind::ALL.iter().enumerate() {
            let mut worst = 0.0f64;
            for (si, &(t, b, i, h)) in SHAPES.iter().enumerate() {
                let d = dims(t, b, i, h);
                let c32 = RandomCase::<f32>::new(cell, d, 9000 + 100 * ci as u64 + si as u64);
                let c64: RandomCase<f64> = c32.cast();
                let tol = f32_tolerance(&d);
                let want = run_reference(&c64).outputs();
                let got = run_fused(&c32, isa).outputs();
                for ((name, g), (_, w)) in got.iter().zip(&want) {
                    let floor = rms(w);
                    let ctx = format!(
                        "{} {} T={t} B={b} I={i} H={h} {name}",
                        isa.name(),
                        cell.name()
                    );
                    assert_close(&ctx, g, w, tol, floor);
                    for (a, e) in g.iter().zip(w) {
                        worst = worst.max((a - e).abs() / (tol * e.abs().max(floor)));
                    }
                }
            }
            println!(
                "{:>9} {:>17}: worst error {worst:.3} of the tolerance",
                isa.name(),
                cell.name()
            );
        }
    }
}
